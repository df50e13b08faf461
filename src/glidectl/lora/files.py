"""Adapter directories in peft's format, plus glidectl metadata about the base model.

A directory holds ``adapter_config.json`` and ``adapter_model.safetensors`` (what
``peft.PeftModel.save_pretrained`` writes, keys prefixed ``base_model.model.``) and
``glidectl.json``: model kind and options, base model spec and the sha256 of its weights.
The same JSON is stored in the safetensors metadata under ``glidectl``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__, runs
from ..atomic import save_safetensors, write_json
from ..config import LoraConfig
from ..errors import GlidectlError, cause, from_here, takes
from ..extras import broken_import
from ..glide.checkpoints import foreign_lora, torch_saved
from ..ranges import is_finite_number

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PICKLED_WEIGHTS_FILE = "adapter_model.bin"  # older peft's default, read with weights_only
META_FILE = "glidectl.json"
META_KEY = "glidectl"
PEFT_PREFIX = "base_model.model."
FORMAT = "glidectl-lora/1"


def _is_lora_key(key: str) -> bool:
    return ".lora_" in key


def weights_sha256(model_or_state: nn.Module | dict[str, torch.Tensor]) -> str:
    """sha256 over the base weights (float32 bytes, sorted keys), ignoring LoRA layers.

    peft's ``.base_layer.`` renaming is undone, so the hash is the same before and after
    adapters are injected.
    """
    state = (model_or_state.state_dict() if isinstance(model_or_state, nn.Module)
             else model_or_state)
    from ..glide.checkpoints import state_sha256

    return state_sha256({k.replace(".base_layer.", "."): v for k, v in state.items()
                         if not _is_lora_key(k)})


def is_full_precision(model: nn.Module) -> bool:
    """True when every floating weight is float32 (so ``weights_sha256`` is comparable)."""
    floats = [t for t in model.state_dict().values() if t.is_floating_point()]
    return all(t.dtype == torch.float32 for t in floats)


def require_peft() -> None:
    """Import peft (LoRA's layers), or a GlidectlError saying why it does not import."""
    try:
        import peft  # noqa: F401
    except Exception as exc:
        raise GlidectlError(f"LoRA needs peft, which {broken_import(exc)}.") from None


@dataclass
class AdapterFiles:
    """An adapter read from disk: where, peft's config, its weights (peft keys) and metadata."""

    path: Path
    config: Any  # peft.LoraConfig
    state: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)
    weights_file: str = WEIGHTS_FILE  # the file in ``path`` the weights came from
    sha256: str = ""  # of that file's bytes as they were read
    config_sha256: str = ""  # of adapter_config.json's settings (alpha, rslora, ...): JSON

    @property
    def weights_path(self) -> Path:
        return self.path / self.weights_file

    @property
    def module_names(self) -> list[str]:
        """Names of the adapted modules, in file order."""
        names: dict[str, None] = {}
        for key in self.state:
            if ".lora_A." in key:
                names[key.split(".lora_A.")[0]] = None
        return list(names)


def save_adapter(
    model: nn.Module,
    directory: str | Path,
    *,
    cfg: LoraConfig,
    target_names: list[str],
    base_spec: str = "",
    base_sha256: str = "",
    step: int | None = None,
    state: dict[str, torch.Tensor] | None = None,
    adapter_name: str = "default",
    grey: bool = False,
    low_res_resample: str | None = None,
) -> Path:
    """Write a LoRA-injected model's adapter as a peft directory with glidectl metadata
    (``grey``: trained on greyscale data, so it is sampled grey by default;
    ``low_res_resample``: an upsampler's, the filter its training inputs were downscaled
    with, which ``eval --low-res DIR`` downscales references with)."""
    from peft import get_peft_model_state_dict

    from .inject import effective_scale, peft_config

    options = getattr(model, "options", None)
    if state is None:
        state = get_peft_model_state_dict(model, adapter_name=adapter_name)
    meta = {
        "format": FORMAT,
        "glidectl_version": __version__,
        "model_kind": options.kind if options is not None else "",
        "model_options": options.to_dict() if options is not None else {},
        "base_model": _recordable_spec(base_spec),
        "base_sha256": base_sha256,
        "targets": list(cfg.targets),
        "patterns": list(cfg.patterns),
        "rank": cfg.rank,
        "alpha": cfg.alpha,
        "dropout": cfg.dropout,
        "rslora": cfg.rslora,
        "effective_scale": effective_scale(cfg.rank, cfg.alpha, cfg.rslora),
        "modules": len(target_names),
        "step": step,
    }
    if grey:
        meta["grey"] = True
    if low_res_resample is not None:
        meta["low_res_resample"] = low_res_resample
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    config = peft_config(cfg, target_names)
    # peft keeps a set, written in the order of this process's string hashing: sorted, two
    # runs of one config write the same file (its sha256 is in PNGs and merged models)
    config.target_modules = sorted(config.target_modules)
    config.save_pretrained(str(out))
    tensors = {PEFT_PREFIX + k: v.detach().float().cpu().contiguous() for k, v in state.items()}
    save_safetensors(out / WEIGHTS_FILE, tensors, {"format": "pt", META_KEY: json.dumps(meta)})
    write_json(out / META_FILE, meta)
    return out


def names_adapter(spec: str | Path) -> bool:
    """Whether ``spec`` names a LoRA adapter: its folder or its weights file."""
    path = Path(spec)
    folder = path if path.is_dir() else path.parent if path.name == WEIGHTS_FILE else None
    return folder is not None and (folder / runs.ADAPTER_CONFIG).is_file()


def _recordable_spec(spec: str) -> str:
    """``spec`` as an adapter records its base: a path that is there as an absolute path (a
    relative one meant the folder training ran in, which a later command need not run in);
    any other spec (openai:base, a model not downloaded yet) as given."""
    path = Path(spec).expanduser()
    try:
        there = bool(spec) and path.exists()
    except (OSError, ValueError):  # a name the OS cannot take
        return spec
    return os.path.abspath(path) if there else spec


def read_adapter(path: str | Path) -> AdapterFiles:
    """Read an adapter dir (its .safetensors, or a LoRA run: its latest EMA adapter, all of
    one checkpoint however its training prunes meanwhile).

    Bad input is a GlidectlError.
    """
    from ..glide.loading import follows_latest, read_resolved

    p = Path(path).expanduser()
    if follows_latest(p) and not (p / CONFIG_FILE).is_file():  # a LoRA run or checkpoints/
        return read_resolved(p, _read_adapter, resolve=latest_adapter)[1]
    return _read_adapter(p)


def _read_adapter(path: Path) -> AdapterFiles:
    p = path
    if not p.exists():  # a mistyped path: not "no adapter directory"
        raise GlidectlError(
            f"LoRA adapter {str(path)!r}{from_here(path)} does not exist; pass the folder "
            "written by 'glidectl lora' (runs/<name>)."
        )
    if p.is_file() and not (p.parent / CONFIG_FILE).is_file():
        keys = _keys(p) if p.suffix == ".safetensors" else []
        if foreign := foreign_lora(p, keys):
            raise GlidectlError(foreign)
        if any(".lora_A." in k for k in keys):  # peft's weights file without its config
            raise GlidectlError(
                f"{str(path)!r} holds LoRA weights but no {CONFIG_FILE} beside it; put back "
                f"the {CONFIG_FILE} saved with it (peft's save_pretrained writes both).")
        raise GlidectlError(
            f"{str(path)!r} is not a LoRA adapter: pass the folder written by 'glidectl lora' "
            f"(runs/<name>), an adapter folder or its {WEIGHTS_FILE}."
        )
    directory = p.parent if p.is_file() else p
    if directory.is_dir() and not (directory / CONFIG_FILE).is_file():
        directory = latest_adapter(directory)  # a LoRA run or checkpoint folder
    weights, config_file = directory / WEIGHTS_FILE, directory / CONFIG_FILE
    if not weights.is_file() and (directory / PICKLED_WEIGHTS_FILE).is_file():
        weights = directory / PICKLED_WEIGHTS_FILE
    if not directory.is_dir() or not weights.is_file() or not config_file.is_file():
        raise GlidectlError(
            f"{str(path)!r} is not a LoRA adapter directory (it needs {CONFIG_FILE} and "
            f"{WEIGHTS_FILE}); pass the folder written by 'glidectl lora'."
        )
    require_peft()  # slow to import: after the cheap checks
    from peft import LoraConfig as PeftLoraConfig
    from safetensors import safe_open

    try:
        raw = json.loads(config_file.read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        if raw.get("peft_type", "LORA") != "LORA":
            raise ValueError(f"peft_type is {raw.get('peft_type')!r}, not LORA")
    except (ValueError, TypeError, OSError) as exc:
        raise GlidectlError(f"{str(config_file)!r} is not a readable LoRA config ({exc}).") from exc
    _check_config_values(raw, config_file)  # before peft parses (and trips over) them
    try:
        config = PeftLoraConfig.from_pretrained(str(directory))
    except Exception as exc:  # peft's parsing of what it does not expect raises anything
        raise GlidectlError(f"{str(config_file)!r} is not a readable LoRA config "
                            f"({cause(exc)}).") from exc
    file_meta: dict[str, str] = {}
    if weights.name == PICKLED_WEIGHTS_FILE:
        state = _pickled_state(weights)
    else:
        try:
            with safe_open(str(weights), framework="pt") as f:
                file_meta = dict(f.metadata() or {})
                state = {k.removeprefix(PEFT_PREFIX): f.get_tensor(k) for k in f.keys()}
        except Exception as exc:  # safetensors raises its own error types for bad headers
            raise GlidectlError(torch_saved(weights, PICKLED_WEIGHTS_FILE) or (
                f"Cannot read {str(weights)!r} ({str(exc).strip()[:160]}); the file is damaged."
            )) from exc
    meta_file = directory / META_FILE
    source = meta_file if meta_file.is_file() else weights
    try:
        text = meta_file.read_text(encoding="utf-8") if meta_file.is_file() \
            else file_meta.get(META_KEY, "{}")
        meta = json.loads(text)
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
        if not isinstance(meta.get("model_options") or {}, dict):
            raise ValueError(f"model_options is {json.dumps(meta['model_options'])[:40]}, "
                             "not a JSON object")
    except (ValueError, OSError) as exc:
        raise GlidectlError(
            f"{str(source)!r} does not hold the adapter's glidectl metadata ({cause(exc)}); "
            "the adapter is damaged: use another checkpoint's adapter."
        ) from None
    embedded = sorted({k.split(".lora_embedding_")[0] for k in state if ".lora_embedding_" in k})
    if embedded:  # peft's nn.Embedding LoRA: its layers were left out without a word
        raise GlidectlError(
            f"LoRA adapter {str(directory)!r} adapts {', '.join(embedded[:3])} with peft's "
            "embedding LoRA (lora_embedding_A/B), which glidectl does not apply; save the "
            "adapter without embeddings in target_modules, or merge it with peft "
            "(merge_and_unload) and pass the merged weights as the model.")
    if not any(".lora_A." in k for k in state):
        raise GlidectlError(f"{str(weights)!r} holds no LoRA weights (no '.lora_A.' tensors).")
    _check_rank(config, state, config_file)
    bad = next((k for k, v in state.items() if v.is_floating_point()
                and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise GlidectlError(f"{str(weights)!r} holds NaN or infinite values ({bad}); the "
                            "adapter is damaged: use another checkpoint's adapter.")
    extra = [k for k in state if not _is_lora_key(k)]
    bias = getattr(config, "bias", "none")
    if extra and bias != "none" and all(k.endswith(".bias") for k in extra):
        raise GlidectlError(
            f"LoRA adapter {str(directory)!r} was saved with peft's bias={bias!r}: it carries "
            f"{len(extra)} of the model's biases, which glidectl does not apply; save it with "
            "bias='none', or merge it with peft (merge_and_unload) and pass the merged weights "
            "as the model.")
    whole = sorted({k.rsplit(".", 1)[0] for k in extra})
    if whole:
        raise GlidectlError(
            f"LoRA adapter {str(directory)!r} also replaces whole modules (peft's "
            f"modules_to_save: {', '.join(whole[:3])}{' …' if len(whole) > 3 else ''}), which "
            "glidectl does not apply; save the adapter without modules_to_save, or merge it "
            "with peft (merge_and_unload) and pass the merged weights as the model."
        )
    if getattr(config, "modules_to_save", None):  # named, with no weights saved for them
        raise GlidectlError(f"{str(config_file)!r} names modules_to_save, which glidectl "
                            "does not apply; save the adapter without them, or merge it with "
                            "peft (merge_and_unload) and pass the merged weights as the model.")
    from ..pipeline import file_sha256

    settings = json.dumps(raw, sort_keys=True).encode()  # its settings, not its spacing
    return AdapterFiles(directory, config, state, meta, weights.name, file_sha256(weights),
                        hashlib.sha256(settings).hexdigest())


ALPHA_MAX = 1e6  # far past any adapter's lora_alpha; 1e300 made the merged weights NaN
RANK = "no rank (a whole number of at least 1)"
SCALE = f"no scale (a number up to {ALPHA_MAX:g})"
_FLAGS = ("use_rslora", "use_dora", "lora_bias", "fan_in_fan_out", "use_qalora",
          "ensure_weight_tying")
_BIASES = ("none", "all", "lora_only")
# LoRA variants and layer selections peft applies but glidectl does not (it adapts exactly
# the modules the weights hold): set, they failed in peft or left modules out
_NOT_APPLIED = ("layers_to_transform", "layers_pattern", "layer_replication",
                "target_parameters", "trainable_token_indices", "alora_invocation_tokens",
                "arrow_config", "kasa_config", "velora_config", "monteclora_config",
                "megatron_config", "use_bdlora")


def _is_rank(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _is_scale(value: Any) -> bool:
    return is_finite_number(value) and abs(value) <= ALPHA_MAX


def _said(config_file: Path, said: str) -> GlidectlError:
    return GlidectlError(f"{str(config_file)!r} says {said}; put back the {CONFIG_FILE} saved "
                         "with these weights.")


def _check_config_values(raw: dict[str, Any], config_file: Path) -> None:
    """One sentence for a value in adapter_config.json (``raw``) that peft reads without a
    word and then fails on with a traceback, NaN weights or, silently, other weights."""
    def has(name: str, fits: Callable[[Any], bool]) -> bool:
        return name not in raw or fits(raw[name])  # left out: peft's default, which fits

    if not has("r", _is_rank):
        raise _said(config_file, f"r = {raw['r']!r}, which is {RANK}")
    if not has("lora_alpha", _is_scale):
        raise _said(config_file, f"lora_alpha = {raw['lora_alpha']!r:.40}, which is {SCALE}")
    if not has("lora_dropout", lambda v: is_finite_number(v) and 0 <= v < 1):
        raise _said(config_file, f"lora_dropout = {raw['lora_dropout']!r:.40}, which is no "
                                 "dropout (a number from 0 up to but not including 1)")
    for name, fits, what in (("rank_pattern", _is_rank, RANK),
                             ("alpha_pattern", _is_scale, SCALE)):
        _check_pattern(config_file, name, raw.get(name, {}), fits, what)
    for name in _FLAGS:
        if not has(name, lambda v: v is None or isinstance(v, bool)):
            raise _said(config_file, f"{name} = {raw[name]!r:.40}, which is neither true nor "
                                     "false")
    if not has("bias", lambda v: v in _BIASES):
        raise _said(config_file, f"bias = {raw['bias']!r:.40}, which is none of "
                                 f"{', '.join(map(repr, _BIASES))}")
    if not has("init_lora_weights", lambda v: isinstance(v, bool) or v == "gaussian"):
        raise GlidectlError(
            f"{str(config_file)!r} says init_lora_weights = {raw['init_lora_weights']!r:.40}, "
            "which glidectl does not apply (an initialisation that changes the base model's "
            "weights); save the adapter as plain LoRA (init_lora_weights true, false or "
            "'gaussian') with peft.")
    if not has("exclude_modules", lambda v: v is None or (isinstance(v, str) and not
                                                          _regex_problem(v))
               or (isinstance(v, list) and all(isinstance(m, str) for m in v))):
        raise _said(config_file, f"exclude_modules = {raw['exclude_modules']!r:.40}, which "
                                 "is no module pattern (a regular expression) or list of "
                                 "module names")
    for name in _NOT_APPLIED:
        if not has(name, lambda v: v is None or v is False or (isinstance(v, dict | list | str)
                                                               and not v)):
            raise GlidectlError(
                f"{str(config_file)!r} sets {name}, which glidectl does not apply; save the "
                "adapter without it, or merge it with peft (merge_and_unload) and pass the "
                "merged weights as the model.")


def _check_pattern(config_file: Path, name: str, pattern: Any, fits: Callable[[Any], bool],
                   what: str) -> None:
    """``rank_pattern`` or ``alpha_pattern``: an object of module patterns (regular
    expressions, as peft matches them) to values that ``fits``, each ``what`` it says."""
    if not isinstance(pattern, dict):
        raise _said(config_file, f"{name} = {pattern!r:.40}, which is no object of module "
                                 "patterns and their values")
    for key, value in pattern.items():
        problem = _regex_problem(rf"(.*\.)?({key})$")
        if problem:
            raise _said(config_file, f"{name} has the key {key!r:.40}, which is no module "
                                     f"pattern (a regular expression: {problem})")
        if not fits(value):
            raise _said(config_file, f"{name}[{key!r:.40}] = {value!r:.40}, which is {what}")


def _regex_problem(pattern: str) -> str | None:
    """Why ``pattern`` is no regular expression, or None."""
    try:
        re.compile(pattern)
    except re.error as exc:
        return str(exc)
    return None


def _pattern_key(pattern: dict[str, Any], module: str) -> str | None:
    """The first key of a ``rank_pattern`` or ``alpha_pattern`` matching ``module``, as peft
    picks it (None: the config's ``r`` or ``lora_alpha`` applies)."""
    return next((key for key in pattern if re.match(rf"(.*\.)?({key})$", module)), None)


def _as_json(value: Any) -> Any:
    """``value`` as adapter_config.json holds it (peft reads a list of names as a set)."""
    return sorted(value) if isinstance(value, set) else value


def _excluded(exclude: str | set[str] | list[str] | None, module: str) -> bool:
    """Whether peft's ``exclude_modules`` leaves ``module`` out."""
    if not exclude:
        return False
    if isinstance(exclude, str):
        return re.fullmatch(exclude, module) is not None
    return module in exclude or any(module.endswith(f".{m}") for m in exclude)


def _check_rank(config: Any, state: dict[str, torch.Tensor], config_file: Path) -> None:
    """A config whose ``r`` (or ``rank_pattern``) is not its weights' rank, or whose
    ``exclude_modules`` leaves out a module the weights adapt: one sentence naming the config,
    not a shape mismatch blamed on the base model (or that module silently left out)."""
    ranks = {k.split(".lora_A.")[0]: v.shape[0] for k, v in state.items()
             if ".lora_A." in k and v.ndim >= 2}
    exclude = getattr(config, "exclude_modules", None)
    left_out = next((m for m in ranks if _excluded(exclude, m)), None)
    if left_out is not None:
        raise _said(config_file, f"exclude_modules = {_as_json(exclude)!r:.40}, which leaves "
                                 f"out {left_out!r}, a module the weights beside it adapt")
    pattern = config.rank_pattern
    if not pattern:
        if ranks and set(ranks.values()) != {config.r}:
            have = ", ".join(map(str, sorted(set(ranks.values()))))
            raise _said(config_file, f"r = {config.r} but the weights beside it have rank {have}")
        return
    for module, have in ranks.items():
        key = _pattern_key(pattern, module)
        said = f"r = {config.r}" if key is None else f"rank_pattern[{key!r}] = {pattern[key]}"
        if have != (config.r if key is None else pattern[key]):
            raise _said(config_file, f"{said} but the weights beside it have rank {have} for "
                                     f"{module!r}")


def recorded_base(adapter: AdapterFiles, named: str) -> str:
    """The base model spec ``adapter`` records ("" for none, or a scratch base; a relative
    path found from the adapter's folder as :func:`_beside_adapter` does); a base that is not
    there is one sentence naming ``named`` (the adapter as the user gave it)."""
    base = str(adapter.meta.get("base_model") or "")
    if base in ("", "scratch"):
        return ""
    base = _beside_adapter(base, adapter.path)
    step = Path(os.path.abspath(adapter.path)).parent
    own = runs.run_of_step_dir(step) / runs.BASE_FILE if runs.is_step_dir(step) else None
    if Path(base).name == runs.BASE_FILE and own is not None and own.is_file() and not \
            Path(base).expanduser().is_file():  # a scratch LoRA run moved: its own base file
        base = str(own)
    from ..glide.loading import check_spec

    try:
        check_spec(base)
    except GlidectlError:
        raise GlidectlError(
            f"{named} was trained on {base!r}{from_here(base)}, which is not there (moved, "
            "pruned by its run's checkpoint.keep_last, or named from another folder); pass "
            "that model with --base.") from None
    return base


def _beside_adapter(base: str, directory: Path) -> str:
    """A relative ``base`` an adapter records (written before bases were recorded as absolute
    paths: relative to the folder training ran in, which holds the run) found from the
    adapter's folder or the nearest folder above it that holds it; else ``base`` as given
    (relative to the current folder)."""
    if Path(base).expanduser().is_absolute():
        return base
    for folder in (Path(os.path.abspath(directory)), *Path(os.path.abspath(directory)).parents):
        try:
            if (folder / base).exists():
                return str(folder / base)
        except (OSError, ValueError):  # a name the OS cannot take: check_spec says so
            break
    return base


def base_for_loras(loras: list[str], default: str) -> tuple[str, str | None]:
    """The base model the first base-model adapter among ``loras`` (``PATH[:SCALE]``) was
    trained on, as ``lora merge`` reads it, and a line saying so (None when that is
    ``default``); ``default`` when none records one. ``sample`` and ``eval`` without --base."""
    from .spec import parse_lora_spec

    for spec in loras:
        path = parse_lora_spec(spec).path
        adapter = read_adapter(path)
        if str(adapter.meta.get("model_kind") or "base").startswith("upsample"):
            continue
        recorded = recorded_base(adapter, f"--lora {path}")
        if recorded:
            note = f"Base: {recorded} (recorded by --lora {path}; --base chooses another)."
            return recorded, note if recorded != default else None
    return default, None


def grey_stages(loras: list[str]) -> set[str]:
    """The stages ("base", "upsample") an adapter among ``loras`` (``PATH[:SCALE]``) trained
    on greyscale data adapts (its metadata records ``grey``): eval draws them grey by
    default, as the pipeline does for ``sample --lora``. One that cannot be read is left
    to the models' load, which names what is wrong with it."""
    from .spec import parse_lora_spec

    stages = set()
    for spec in loras:
        try:
            adapter = read_adapter(parse_lora_spec(spec).path)
        except GlidectlError:
            continue
        if adapter.meta.get("grey") is True:
            kind = str(adapter.meta.get("model_kind") or "base")
            stages.add("upsample" if kind.startswith("upsample") else "base")
    return stages


def _pickled_state(path: Path) -> dict[str, torch.Tensor]:
    """peft's ``adapter_model.bin`` (torch.save of tensors), read with ``weights_only=True``."""
    from ..glide.checkpoints import torch_load_weights

    obj = torch_load_weights(path)
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise GlidectlError(f"{str(path)!r} is not a LoRA adapter's weights (a dict of tensors).")
    return {k.removeprefix(PEFT_PREFIX): v for k, v in obj.items()}


def latest_adapter(run: Path | str, ema: bool | None = None) -> Path:
    """The adapter dir of a LoRA run's latest checkpoint (EMA when present, unless ``ema``
    is False); a step dir or an adapter dir is resolved the same way."""
    if not isinstance(run, str | os.PathLike):
        raise takes("latest_adapter()", "a LoRA run folder's path (runs/<name>, as "
                    "'glidectl lora' wrote it)", run)
    if ema is not None and not isinstance(ema, bool):
        raise takes("latest_adapter(ema=...)", "True, False or None", ema)
    p = Path(run).expanduser()
    if not p.exists():
        raise GlidectlError(f"LoRA run {str(run)!r}{from_here(run)} does not exist; pass the "
                            "folder written by 'glidectl lora' (runs/<name>).")
    if (p / runs.ADAPTER_CONFIG).is_file():
        return p
    found = [n for n in (WEIGHTS_FILE, PICKLED_WEIGHTS_FILE) if (p / n).is_file()]
    if found:  # an adapter folder that lost its config
        raise GlidectlError(
            f"{str(run)!r} holds {found[0]} but no {CONFIG_FILE}; put back the {CONFIG_FILE} "
            "saved with it (peft's save_pretrained writes both).")
    step_dir = p if runs.step_adapter(p) is not None else runs.latest_under(p)
    if step_dir is None:
        raise GlidectlError(runs.no_checkpoint_yet(p) or
            f"{str(run)!r} is not a LoRA adapter, checkpoint or run folder; pass the folder "
            "written by 'glidectl lora' (runs/<name>)."
        )
    found = runs.step_adapter(step_dir, ema)
    if found is None:
        names = {True: "lora-ema/", False: "lora/", None: "lora-ema/ or lora/"}[ema]
        if runs.step_weights(step_dir) is not None:  # a model's run given as an adapter
            raise GlidectlError(
                f"{str(run)!r} holds a model's weights, not a LoRA adapter; name it as the "
                "base model (--base) and the folder 'glidectl lora' wrote as the adapter.")
        raise GlidectlError(f"{str(step_dir)!r} holds no LoRA adapter ({names}).")
    return found


def _keys(path: Path) -> list[str]:
    """The tensor names of a .safetensors file (none when it cannot be read as one)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return list(f.keys())
    except Exception:  # noqa: BLE001 - not a readable safetensors file: no names to judge
        return []
