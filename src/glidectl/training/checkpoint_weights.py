"""The weights of a step checkpoint: written from the model in training (the EMA weights
beside them), read back on resume and checked against the network the config builds."""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path
from typing import Any

import torch

from .. import runs
from ..config import override
from ..errors import GlidectlError, a_or_an
from .adapters import ModelAdapter
from .ema import EMA


def write_weights(folder: Path, step: int, model: torch.nn.Module, adapter: ModelAdapter,
                  ema: EMA | None, options: Any, meta: dict[str, str]) -> None:
    """The weights (or the adapter's own files) of step ``step`` into ``folder``, ``meta``
    in their headers (main process)."""
    from ..glide import save_weights

    writer = getattr(adapter, "save_checkpoint", None)
    if writer is not None:  # e.g. LoRA: adapter folders instead of full weights
        from ..callables import takes_keyword

        takes_meta = takes_keyword(writer, "meta")  # a plugin's may not
        writer(model, folder, step, ema, **({"meta": meta} if takes_meta else {}))
        return
    save_weights(adapter.export_state(model), folder / runs.MODEL_FILE, options, meta)
    if ema is not None:
        with ema.swapped():
            save_weights(adapter.export_state(model), folder / runs.EMA_FILE, options, meta)


def check_resume_kind(step_dir: Path, adapter: ModelAdapter | None) -> None:
    """A LoRA run's checkpoint resumed by ``train``/``upsample`` (no adapter that reads its
    own files), or a full run's by ``lora``: one sentence naming the command that resumes
    it, before any of its files is read."""
    lora = getattr(adapter, "load_checkpoint", None) is not None
    has_weights = runs.step_weights(step_dir) is not None
    has_adapter = runs.step_adapter(step_dir) is not None
    run = runs.run_of_step_dir(step_dir)
    quoted = shlex.quote(str(run))
    if not lora and has_adapter and not has_weights:
        raise GlidectlError(
            f"{str(run)!r} is a LoRA run (its checkpoints hold adapters, not a model); resume "
            f"it with glidectl lora --resume {quoted}.")
    if lora and has_weights and not has_adapter:
        raise GlidectlError(
            f"{str(run)!r} is a full training run, not a LoRA run; resume it with glidectl "
            f"{_command_of(run)} --resume {quoted}, or train adapters on it in a new LoRA run "
            f"(--set model.init={quoted} --set train.name=NAME).")


def _command_of(run: Path) -> str:
    """``upsample`` for a run of an upsampler (its config.toml says so), else ``train``."""
    kind = runs.run_setting(run, "model", "kind")
    return "upsample" if str(kind).startswith("upsample") else "train"


def load_weights(step_dir: Path, model: torch.nn.Module, adapter: ModelAdapter,
                 options: Any, cfg: Any = None) -> None:
    """A checkpoint's weights into ``model`` to resume it; a damaged file or the weights of
    another network is a :class:`GlidectlError` saying what to do (naming the keys of
    ``cfg``, the run's config, that build another network than the run's config.toml)."""
    loader = getattr(adapter, "load_checkpoint", None)
    if loader is not None:
        check_scratch_network(cfg, step_dir)
        loader(model, step_dir)
        return
    from ..glide import read_weights

    try:
        state_dict, saved = read_weights(step_dir / runs.MODEL_FILE)
    except GlidectlError as exc:  # damaged, truncated: an earlier checkpoint may do
        raise GlidectlError(f"{str(exc).rstrip('.')}; resume from another checkpoint "
                            "or start a new run.") from None
    want = options.time_embed_max_freq
    if saved.time_embed_max_freq != want:
        raise GlidectlError(
            f"Checkpoint {str(step_dir)!r} was trained with model.time_embed_max_freq = "
            f"{saved.time_embed_max_freq} but the config says {want}; set "
            f"model.time_embed_max_freq = {saved.time_embed_max_freq} to resume it."
        )
    if saved.kind != options.kind:  # another kind of model: the other command resumes it
        command = "upsample" if saved.super_res else "train"
        run = shlex.quote(str(runs.run_of_step_dir(step_dir)))
        raise GlidectlError(
            f"Cannot resume from {str(step_dir)!r}: it holds {a_or_an(repr(saved.kind))} "
            f"model, but the config builds {a_or_an(repr(options.kind))} one; resume it with "
            f"its own config: glidectl {command} --resume {run}.")
    try:
        model.load_state_dict(state_dict)
    except RuntimeError:  # other shapes: the config builds another network
        changed = _shape_keys_changed(cfg, runs.run_of_step_dir(step_dir))
        advice = ("resume with the run's own config (--resume RUN without --config reads "
                  "RUN/config.toml)") if not changed else _changed_advice(changed)
        raise GlidectlError(
            f"Cannot resume from {str(step_dir)!r}: its weights do not fit the model "
            f"this config builds ({_options_diff(saved, options)}); {advice}."
        ) from None


def _changed_advice(changed: list[tuple[str, Any, Any]]) -> str:
    """``KEY = NOW here, but the run trained with WAS; resume without ...``: the fix for
    config keys (:func:`_shape_keys_changed`) that build another network than the run's."""
    return (f"{' and '.join(f'{k} = {now!r}' for k, now, _ in changed)} here, but the run "
            f"trained with {' and '.join(repr(was) for _, _, was in changed)}; resume "
            f"without the --set (or --config) that changes it, or with "
            f"{' '.join(f'--set {override(k, was)}' for k, _, was in changed)}")


SHAPE_KEYS = (("model", "size"), ("model", "tokenizer"), ("model", "init"),
              ("data", "resolution"))
# the keys that always build another scratch network (a resume at another data.resolution
# may fit the same weights)
NETWORK_KEYS = (("model", "size"), ("model", "tokenizer"))


def check_scratch_network(cfg: Any, step_dir: Path,
                          keys: tuple[tuple[str, str], ...] = (("model", "kind"), *SHAPE_KEYS)
                          ) -> None:
    """A run on a scratch network resumed with a config that builds another one (one of
    ``keys`` changed: for an adapter run (LoRA) model.kind, size, tokenizer or
    data.resolution, where the adapter's own check could only say the base weights differ;
    for any run, before the network is built, model.size or tokenizer, whose GPT-2
    vocabulary may not even load offline): one sentence naming the keys."""
    run = runs.run_of_step_dir(step_dir)
    if cfg is None or cfg.model.init != "scratch" or \
            runs.run_setting(run, "model", "init") != "scratch":
        return
    changed = _shape_keys_changed(cfg, run, keys)
    if changed:
        raise GlidectlError(
            f"Cannot resume from {str(step_dir)!r}: it trained on a scratch network its "
            f"run's config builds, and this config builds another; {_changed_advice(changed)}.")


# the config keys that decide a network's shapes (model.kind is refused before)


def _shape_keys_changed(cfg: Any, run: Path, keys: tuple[tuple[str, str], ...] = SHAPE_KEYS
                        ) -> list[tuple[str, Any, Any]]:
    """``(key, value in cfg, value in the run's config.toml)`` of each of ``keys`` the two
    set differently (none without ``cfg`` or a readable config.toml)."""
    if cfg is None:
        return []
    changed = []
    for section, key in keys:
        now, was = getattr(getattr(cfg, section), key), runs.run_setting(run, section, key)
        if was is not None and was != now:
            changed.append((f"{section}.{key}", now, was))
    return changed


def _options_diff(saved: Any, built: Any) -> str:
    """The model options two networks differ in, as ``name saved (config: built)``."""
    pairs = [(f.name, getattr(saved, f.name), getattr(built, f.name))
             for f in dataclasses.fields(saved)]
    differ = [f"{name} {a!r} (config: {b!r})" for name, a, b in pairs if a != b]
    return ", ".join(differ[:3]) or "other shapes"
