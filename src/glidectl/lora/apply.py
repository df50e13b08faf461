"""Adapters onto a base network: checks, attach (unmerged), apply (merged), merged files."""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from .. import runs
from ..errors import GlidectlError, a_or_an, cause
from .files import (
    CONFIG_FILE,
    AdapterFiles,
    is_full_precision,
    read_adapter,
    require_peft,
    weights_sha256,
)
from .spec import LoraSpec, parse_lora_spec

# Options that change parameter shapes: an adapter only fits a base that agrees on all of them.
_ARCH_OPTIONS = (
    "image_size", "num_channels", "num_res_blocks", "channel_mult", "num_heads",
    "num_head_channels", "num_heads_upsample", "attention_resolutions", "text_ctx", "xf_width",
    "xf_layers", "xf_heads", "xf_final_ln", "xf_padding", "tokenizer", "n_vocab",
)


class LoraMismatchWarning(UserWarning):
    """The adapter was trained on other weights of the same architecture."""


def check_base(
    model: nn.Module, adapter: AdapterFiles, check_hash: bool = True,
    model_sha256: str | None = None,
) -> None:
    """Raise GlidectlError when ``adapter`` was trained on another kind or shape of model;
    warn when it was trained on other weights (``model_sha256``: the base's known hash)."""
    options = getattr(model, "options", None)
    meta = adapter.meta
    if options is None or not meta:
        return
    kind = meta.get("model_kind")
    if kind and kind != options.kind:
        raise GlidectlError(
            f"LoRA adapter {str(adapter.path)!r} was trained for {a_or_an(repr(kind))} model "
            f"but is being loaded onto {a_or_an(repr(options.kind))} model; use it with "
            f"{a_or_an(kind)} model."
        )
    _check_architecture(adapter, options)
    if check_hash and _warn_merged_already(model, adapter):
        return
    want = meta.get("base_sha256")
    if check_hash and want and model_sha256 is None and is_full_precision(model):
        model_sha256 = weights_sha256(model)
    if check_hash and want and model_sha256 and model_sha256 != want:
        warnings.warn(
            f"LoRA adapter {str(adapter.path)!r} was trained on other weights "
            f"({meta.get('base_model') or 'unknown base'}); results may differ.",
            LoraMismatchWarning, stacklevel=3,
        )


def _check_architecture(adapter: AdapterFiles, options: Any) -> None:
    """Raise GlidectlError when ``adapter`` was trained on a network whose shapes differ
    from one built with ``options``."""
    meta = adapter.meta
    saved = meta.get("model_options") or {}
    diffs = [k for k in _ARCH_OPTIONS if k in saved and saved[k] != getattr(options, k, None)]
    if diffs:
        k = diffs[0]
        raise GlidectlError(
            f"LoRA adapter {str(adapter.path)!r} was trained on a different "
            f"{meta.get('model_kind') or 'model'} architecture ({k}={saved[k]!r} there, "
            f"{getattr(options, k)!r} here); load it onto its base model "
            f"{meta.get('base_model') or '(unknown)'!r}."
        )


def check_known_base(adapter: AdapterFiles, spec: str) -> None:
    """:func:`check_base`'s kind and architecture checks against the model ``spec`` names,
    where its options are known without reading weights or downloading (OpenAI's models by
    name, a .safetensors header): before a load that may take minutes."""
    from types import SimpleNamespace

    from ..model_cost import known_options

    if (options := known_options(spec)) is not None:
        check_base(SimpleNamespace(options=options), adapter, check_hash=False)  # type: ignore[arg-type]


def merged_records(model: nn.Module) -> tuple[str, list[dict[str, Any]]]:
    """The .safetensors file ``model`` was loaded from and the ``lora_merged`` records of the
    merges it holds (``lora merge``'s), ``("", [])`` for none; kept on the model when a
    ``--lora`` is merged into it (its file no longer holds its weights then)."""
    import json

    from ..glide.checkpoints import read_metadata

    if "glidectl_merged" in model.__dict__:
        return model.__dict__["glidectl_merged"]
    source = getattr(model, "glidectl_source", None)
    if not source or not str(source[1]).endswith(".safetensors"):
        return "", []
    try:
        records = json.loads(read_metadata(source[1]).get("lora_merged") or "[]")
    except (GlidectlError, ValueError):
        return "", []
    if not isinstance(records, list):
        return "", []
    return str(source[1]), [r for r in records if isinstance(r, dict)]


def _warn_merged_already(model: nn.Module, adapter: AdapterFiles) -> bool:
    """Warn, and return True, when ``adapter`` is among the merges the file ``model`` was
    loaded from records: applied again, it counts twice (its base hash only says "other
    weights")."""
    file, records = merged_records(model)
    prior = next((r for r in records if adapter.sha256
                  and r.get("adapter_sha256") == adapter.sha256), None)
    if prior is None:
        return False
    scale = prior.get("scale")
    at = f" (at scale {scale:g})" if isinstance(scale, int | float) else ""
    warnings.warn(
        f"LoRA adapter {str(adapter.path)!r} is merged into {file!r} already{at}, so it now "
        "counts twice; use that file without it, or the model it was merged into with it, "
        "to apply it once.", LoraMismatchWarning, stacklevel=4)
    return True


def attach_adapter(
    model: nn.Module, adapter: AdapterFiles | str, scale: float = 1.0,
    adapter_name: str = "default", check_hash: bool = True, model_sha256: str | None = None,
) -> int:
    """Inject ``adapter`` as live (unmerged) LoRA layers scaled by ``scale``; returns how many
    of its modules matched. None matching, or mismatched shapes, is a GlidectlError."""
    require_peft()
    from peft import inject_adapter_in_model, set_peft_model_state_dict
    from peft.tuners.lora import LoraLayer

    if not isinstance(adapter, AdapterFiles):
        adapter = read_adapter(adapter)
    check_base(model, adapter, check_hash, model_sha256)
    modules = dict(model.named_modules())
    names = adapter.module_names
    matched = [n for n in names if n in modules]
    if not matched:
        raise GlidectlError(
            f"None of the {len(names)} modules of LoRA adapter {str(adapter.path)!r} exist in "
            "this model; it was trained for another network."
        )
    if len(matched) < len(names):
        warnings.warn(
            f"LoRA adapter {str(adapter.path)!r}: {len(names) - len(matched)} of {len(names)} "
            "modules are not in this model and are skipped.", LoraMismatchWarning, stacklevel=2,
        )
    keep = set(matched)
    state = {k: v for k, v in adapter.state.items() if k.split(".lora_")[0] in keep}
    config = copy.deepcopy(adapter.config)
    config.target_modules = matched
    config.inference_mode = True
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    try:
        inject_adapter_in_model(config, model, adapter_name=adapter_name)
        result = set_peft_model_state_dict(model, state, adapter_name=adapter_name)
    except (RuntimeError, ValueError) as exc:
        raise GlidectlError(
            f"LoRA adapter {str(adapter.path)!r} does not fit this model "
            f"({cause(exc, 200)}); load it onto its base model."
        ) from exc
    missing = [k for k in result.missing_keys if f".{adapter_name}." in k and ".lora_" in k]
    if missing or result.unexpected_keys:
        raise GlidectlError(
            f"LoRA adapter {str(adapter.path)!r} does not fit this model "
            f"({len(missing)} missing, {len(result.unexpected_keys)} unexpected tensors)."
        )
    params = dict(model.named_parameters())
    for n, flag in flags.items():
        if n in params:
            params[n].requires_grad_(flag)
    for module in model.modules():
        if isinstance(module, LoraLayer):
            module.set_scale(adapter_name, scale)
    return len(matched)


def merge_and_unload(model: nn.Module, adapter: str | Path | None = None) -> nn.Module:
    """Fold every live LoRA layer into its base weights and put the plain layers back.

    What peft refuses to merge (NaN weights, say) is a GlidectlError naming ``adapter``."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            try:
                module.merge(safe_merge=True)
            except (RuntimeError, ValueError) as exc:
                what = f"LoRA adapter {str(adapter)!r}" if adapter is not None else "A LoRA adapter"
                raise GlidectlError(
                    f"{what} cannot be merged into this model ({cause(exc, 200)}); check its "
                    f"{CONFIG_FILE} and the scale, or use another checkpoint's adapter."
                ) from exc
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.get_base_layer())
    for attr in ("peft_config", "_hf_peft_config_loaded"):
        if attr in model.__dict__:
            delattr(model, attr)
    # the file load_model read no longer holds these weights: GlidePipeline(model) records
    # the model as in memory, not as that file (the merges that file held still count)
    model.__dict__["glidectl_merged"] = merged_records(model)
    model.__dict__.pop("glidectl_source", None)
    return model


def apply_loras(
    model: nn.Module,
    specs: Iterable[str | LoraSpec | tuple[str, float]],
    check_hash: bool = True,
) -> nn.Module:
    """Apply ``--lora PATH[:SCALE]`` adapters by merging them into ``model``'s weights.

    Returns the same model, with ``model.applied_loras`` listing path, scale and modules.
    Wrong kind or architecture is a GlidectlError; other base weights only warn.
    """
    read = _read_all(specs)
    hashed = _records_a_base(read)
    for spec, adapter in read:
        _merge(model, adapter, spec, check_hash, hashed)
    return model


def _read_all(specs: Iterable[str | LoraSpec | tuple[str, float]]
              ) -> list[tuple[LoraSpec, AdapterFiles]]:
    """Each ``PATH[:SCALE]`` spec with its adapter, all read before any is merged (an
    adapter given twice is warned of: merged twice, it counts twice)."""
    read = [(spec, read_adapter(spec.path)) for spec in map(parse_lora_spec, specs)]
    _warn_given_twice(read)
    return read


def _warn_given_twice(read: list[tuple[LoraSpec, AdapterFiles]]) -> None:
    """Warn in one line per adapter that ``read`` holds more than once (the same weights and
    settings, by whatever path): its merges add up, so it applies at the sum of its scales."""
    seen: dict[tuple[str, str], list[LoraSpec]] = {}
    for spec, adapter in read:
        key = (adapter.sha256, adapter.config_sha256)
        seen.setdefault(key if all(key) else (str(adapter.path.resolve()), ""), []).append(spec)
    for given in (g for g in seen.values() if len(g) > 1):
        total = sum(s.scale for s in given)
        names = " and ".join(repr(_spec_text(s)) for s in given)
        warnings.warn(
            f"LoRA adapter {given[0].path!r} is given {_times(len(given))} ({names}), so it "
            f"applies at scale {total:g} in all; pass it once, as "
            f"{given[0].path}:{total:g} for that strength.", LoraMismatchWarning, stacklevel=4)


def _times(n: int) -> str:
    """``twice``, ``3 times``, ..."""
    return "twice" if n == 2 else f"{n} times"


def _spec_text(spec: LoraSpec) -> str:
    """``spec`` as ``--lora`` takes it: ``PATH``, or ``PATH:SCALE`` for a scale other than 1."""
    return spec.path if spec.scale == 1 else f"{spec.path}:{spec.scale:g}"


def _records_a_base(read: list[tuple[LoraSpec, AdapterFiles]]) -> bool:
    """Whether an adapter among ``read`` records its base weights' sha256 (so the weights
    are hashed before the first merge, whichever adapter comes first)."""
    return any(adapter.meta.get("base_sha256") for _, adapter in read)


def _merge(model: nn.Module, adapter: AdapterFiles, spec: LoraSpec, check_hash: bool,
           hashed: bool = False) -> None:
    """Merge one adapter read from ``spec.path``; ``model.applied_loras`` lists it
    (``hashed``: a stacked adapter records a base sha256, so hash the weights now)."""
    # Stacked adapters are all checked against the weights before the first was merged.
    base_hash = getattr(model, "base_sha256", None)
    if check_hash and base_hash is None and (hashed or adapter.meta.get("base_sha256")):
        base_hash = weights_sha256(model) if is_full_precision(model) else ""
    n = attach_adapter(model, adapter, spec.scale, "glidectl_lora", check_hash, base_hash)
    merge_and_unload(model, adapter.path)
    model.applied_loras = [*getattr(model, "applied_loras", []),
                           {"path": spec.path, "scale": spec.scale, "modules": n}]
    if base_hash is not None:
        model.base_sha256 = base_hash


def check_output(out: Path, force: bool = False, what: str = "merged file",
                 example: str = "merged.safetensors") -> None:
    """Raise unless ``out`` may be written by ``lora merge`` (or ``glidectl export``: ``what``
    it writes, an ``example`` file name): a .safetensors path that is not a folder, not in a
    checkpoint folder (followed through links), and not an existing file unless ``force``."""
    if out.suffix != ".safetensors":
        raise GlidectlError(f"-o {str(out)!r}: merged weights are written as .safetensors.")
    if out.is_dir():
        raise GlidectlError(f"Output {str(out)!r} is a folder; pass a file path to --output, "
                            f"e.g. {str(out / example)!r}.")
    written = next((d for d in Path(os.path.abspath(out)).parents if runs.is_step_dir(d)), None)
    step_dir = written or next((d for d in out.resolve().parents if runs.is_step_dir(d)), None)
    if step_dir is not None:  # a checkpoint's files are its run's (a base, an adapter)
        how = "is inside" if written else "links into"
        raise GlidectlError(f"Output {str(out)!r} {how} checkpoint folder "
                            f"{_as_given(step_dir, out)!r}; write the {what} outside "
                            "checkpoints/.")
    if (out.exists() or out.is_symlink()) and not force:
        raise taken(out)


def taken(out: Path, meanwhile: str = "") -> GlidectlError:
    """The error for an output file that is there (``meanwhile``: how it came)."""
    return GlidectlError(f"Output {str(out)!r} already exists{meanwhile}; pass --force to "
                         "overwrite it or choose another --output.")


def save_new(save: Callable[..., Path], out: Path, force: bool, *args: Any,
             **kwargs: Any) -> Path:
    """``save(..., replace=force)``: without --force a file another process wrote to ``out``
    while this one worked is kept, and said (two exports to one file both "succeeded")."""
    try:
        return save(*args, replace=force, **kwargs)
    except FileExistsError:
        raise taken(out, " (written while this command ran)") from None


def _as_given(folder: Path, given: Path) -> str:
    """``folder`` (absolute) relative to the current folder when the path the user ``given``
    is relative and ``folder`` is below the current folder (not it: '.' says nothing); else
    as it is."""
    if not given.is_absolute():
        for here in (Path(os.getcwd()), Path.cwd().resolve()):
            if folder.is_relative_to(here) and folder != here:
                return str(folder.relative_to(here))
    return str(folder)


def _check_not_an_input(out: Path, inputs: dict[str, Path | None]) -> None:
    """Refuse an ``out`` that is one of the files the merge reads (even with --force: the
    base or the adapter would be lost)."""
    for what, path in inputs.items():
        if path is not None and out.exists() and path.exists() and out.samefile(path):
            raise GlidectlError(f"Output {str(out)!r} is the {what}'s own file; write the merged "
                                "weights to another --output.")


@dataclass
class MergeResult:
    path: Path
    modules: int
    adapter_modules: int


def merge_adapter(
    adapter_path: str | Path, base: str, output: str | Path, scale: float = 1.0,
    force: bool = False,
) -> MergeResult:
    """Write base + scale·adapter as one glidectl .safetensors checkpoint; an existing
    ``output`` is replaced only with ``force``."""
    import json

    from ..atomic import remove_stale_temps
    from ..glide import load_model, save_weights
    from ..glide.loading import check_spec, read_resolved
    from ..out_dir import check_out_dir

    out = Path(output)
    check_output(out, force)
    check_out_dir(out.parent, "--output folder")
    remove_stale_temps(out.parent, out.name)  # what a killed merge into it left
    adapter = read_adapter(adapter_path)
    _check_not_an_input(out, {"base model": check_spec(base),
                              "LoRA adapter": adapter.weights_path})
    check_known_base(adapter, base)  # before a download of OpenAI's model
    # the model and its sampling defaults of one file (a training base run moves on)
    base_file, (model, defaults) = read_resolved(
        base, lambda path: (load_model(path), _sampling_defaults(str(path))))
    model.float()
    base_sha256 = weights_sha256(model)  # what the adapter's own base_sha256 is compared to
    _, merged_before = merged_records(model)  # a merged file's merges stay on the record
    n = attach_adapter(model, adapter, scale, "glidectl_lora", model_sha256=base_sha256)
    merge_and_unload(model, adapter.path)
    # as given, and what was read (a LoRA run or base run folder names its latest step,
    # which moves on as it trains), by names and sha256s: no local folder, and the same
    # bytes however the paths were typed
    meta = {"lora_merged": json.dumps([*merged_before, {
        "adapter": _spec_record(adapter_path), "scale": scale, "base": _spec_record(base),
        "modules": n, "adapter_dir": runs.portable_name(adapter.path),
        "adapter_sha256": adapter.sha256, "adapter_config_sha256": adapter.config_sha256,
        "base_file": runs.portable_name(base_file), "base_sha256": base_sha256,
    }])}
    meta.update(defaults)
    if model.options.super_res:  # the filter eval downscales references with: the adapter's
        from ..eval_upsampler_inputs import RESAMPLE_KEY, adapter_resample, training_resample

        meta[RESAMPLE_KEY] = (adapter_resample(adapter.path, adapter.meta)
                              or training_resample(base_file))
    if adapter.meta.get("grey") is True:  # trained on greyscale data: the merge draws grey
        from ..sampling_defaults import RECOMMENDED_KEY, recommended_object, with_adapter_grey

        sampling = recommended_object(meta.get(RECOMMENDED_KEY))  # "[1]": no recommendation
        meta[RECOMMENDED_KEY] = json.dumps(with_adapter_grey(sampling, True))
    save_new(save_weights, out, force, model, out, metadata=meta)
    return MergeResult(out, n, len(adapter.module_names))


def _spec_record(spec: str | Path) -> str:
    """A model or adapter spec as ``lora merge`` records it: a model source's
    (``openai:base``) as given, a path by :func:`~glidectl.runs.portable_name`."""
    from ..glide.loading import _SOURCE_RE

    if _SOURCE_RE.match(str(spec)) and not Path(spec).expanduser().exists():
        return str(spec)
    return runs.portable_name(spec)


def _sampling_defaults(base: str) -> dict[str, str]:
    """The base checkpoint's recommended sampling settings (glidectl-trained weights), so a
    merged model samples by default as its base did; {} for files without them."""
    from ..glide.checkpoints import read_metadata
    from ..glide.loading import resolve_spec
    from ..pipeline import RECOMMENDED_KEY

    path = resolve_spec(base, download=False)
    if path.suffix != ".safetensors":
        return {}
    recorded = read_metadata(path)
    return {RECOMMENDED_KEY: recorded[RECOMMENDED_KEY]} if RECOMMENDED_KEY in recorded else {}


def _fits(model: nn.Module, adapter: AdapterFiles) -> bool:
    """Whether every module ``adapter`` adapts is in ``model`` with the in and out sizes of
    its LoRA weights."""
    modules = dict(model.named_modules())
    for name in adapter.module_names:
        weight = getattr(modules.get(name), "weight", None)
        a = next((v for k, v in adapter.state.items() if k.startswith(f"{name}.lora_A.")), None)
        b = next((v for k, v in adapter.state.items() if k.startswith(f"{name}.lora_B.")), None)
        if weight is None or a is None or b is None or a.dim() < 2 or weight.dim() < 2 or (
                a.shape[1], b.shape[0]) != (weight.shape[1], weight.shape[0]):
            return False
    return True


def apply_loras_by_kind(
    models: Sequence[nn.Module | None], specs: Iterable[str | LoraSpec | tuple[str, float]],
) -> list[dict[str, Any]]:
    """Apply each adapter to the loaded model of the kind it was trained for (e.g. base and
    upsampler of one pipeline); one without metadata goes to the first model. Returns what
    was applied, per adapter: path, scale, modules, the model kind, the sha256 of the
    adapter file and of its config's settings, and the adapter folder read (``dir``: a LoRA
    run's latest step moves on as it trains)."""
    loaded = [m for m in models if m is not None]
    applied: list[dict[str, Any]] = []
    read = _read_all(specs)
    hashed = _records_a_base(read)
    for spec, adapter in read:
        kind = adapter.meta.get("model_kind")
        target = next((m for m in loaded if not kind or m.options.kind == kind), None)
        if not kind and len(loaded) > 1:  # peft's own adapter: the model whose layers fit
            fits = [m for m in loaded if _fits(m, adapter)]
            target = fits[0] if fits else target
            if len(fits) > 1:
                warnings.warn(
                    f"LoRA {spec.path!r} does not say which model it is for (no model_kind) "
                    f"and fits both the {fits[0].options.kind} and the {fits[1].options.kind} "
                    f"model: it is applied to the {fits[0].options.kind} model; to apply it to "
                    f"the other, fold it in with: glidectl lora merge {spec.path} --base MODEL "
                    "-o merged.safetensors, and load that instead.", LoraMismatchWarning,
                    stacklevel=2)
        if target is None:
            raise _no_model_for(spec.path, str(kind), [m.options.kind for m in loaded])
        _merge(target, adapter, spec, True, hashed)
        applied.append({**target.applied_loras[-1], "kind": target.options.kind,
                        "sha256": adapter.sha256, "config_sha256": adapter.config_sha256,
                        "dir": str(adapter.path.absolute()),
                        "grey": adapter.meta.get("grey") is True,
                        "low_res_resample": _resample(adapter)})
    return applied


def _no_model_for(path: str, kind: str, have: list[str]) -> GlidectlError:
    """The sentence for an adapter of ``kind`` with no model of its kind among ``have``."""
    flag = "--upsampler" if kind.startswith("upsample") else "--base"
    return GlidectlError(
        f"LoRA {path!r} was trained for {a_or_an(repr(kind))} model, but the loaded models "
        f"are {', '.join(have) or 'none'}; load {a_or_an(kind)} model ({flag}) or drop this "
        "--lora.")


def check_adapter_stages(specs: Iterable[str | LoraSpec], base: str | None,
                         upsampler: str | None) -> None:
    """Before any model loads (or downloads): an adapter among ``specs`` trained for a stage
    that gets no model (an upsampler's without ``upsampler``, a base model's without
    ``base``), or for another architecture than that stage's model where it is known without
    reading weights, is the sentence :func:`apply_loras_by_kind` would say once they had
    loaded."""
    have = [stage for stage, spec in (("base", base), ("upsample", upsampler)) if spec]
    for spec in map(parse_lora_spec, specs):
        adapter = read_adapter(spec.path)
        kind = str(adapter.meta.get("model_kind") or "")
        if not kind:  # peft's own: goes to the model its layers fit, once loaded
            continue
        model = upsampler if kind.startswith("upsample") else base
        if not model:
            raise _no_model_for(spec.path, kind, have)
        check_known_base(adapter, model)


def _resample(adapter: Any) -> str | None:
    """The ``data.low_res_resample`` an upsampler's adapter trained with (None: unrecorded)."""
    from ..eval_upsampler_inputs import adapter_resample

    return adapter_resample(adapter.path, adapter.meta)
