"""``load_model``: one entry point for every way of naming GLIDE weights.

``openai:base`` (any registered model source), an OpenAI ``.pt``, a glidectl ``.safetensors``,
a training run folder (``checkpoints/latest`` → ``ema.safetensors`` before ``model.safetensors``),
a ``checkpoints/`` folder or one ``step-NNNNNN`` folder.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import torch

from .. import runs
from ..errors import GlidectlError
from .checkpoints import StateDict, adapter_not_model, load_openai_pt, read_weights
from .options import ModelOptions
from .unet import GlideUNet, create_model

_SOURCE_RE = re.compile(r"^([A-Za-z][\w.-]*):(.+)$")


class LoraRunError(GlidectlError):
    """A LoRA run (adapters only) where a model was wanted; callers may say what to do."""


def weights_in_dir(path: Path) -> Path:
    """The weights file of a run folder, a checkpoints/ folder or a step folder (EMA first)."""
    direct = runs.step_weights(path)
    if direct is not None:
        return direct
    if (path / runs.ADAPTER_CONFIG).is_file():
        raise GlidectlError(adapter_not_model(path))
    step = runs.latest_under(path)
    if step is not None:
        found = runs.step_weights(step)
        if found is not None:
            return found
        if runs.step_adapter(step) is not None:
            raise LoraRunError(
                f"{str(path)!r} is a LoRA run: its checkpoints hold adapters, not a model; "
                f"pass its base model with --lora {shlex.quote(str(path))}, or merge it first "
                f"with: glidectl lora merge {shlex.quote(str(path))} -o merged.safetensors."
            )
        raise GlidectlError(
            f"Checkpoint folder {str(step)!r} has neither ema.safetensors nor "
            "model.safetensors; pick another checkpoint."
        )
    raise GlidectlError(
        f"Folder {str(path)!r} is not a training run (no checkpoints/step-NNNNNN with "
        "ema.safetensors or model.safetensors); pass a run folder or a weights file."
    )


def resolve_spec(spec: str | Path, download: bool = True) -> Path:
    """A file path for ``spec``: an existing path, a run folder, or ``source:name``."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return weights_in_dir(path)
    if path.exists():
        return path
    match = _SOURCE_RE.match(str(spec))
    if match and not str(spec).startswith(("/", ".")):
        from .. import plugins

        registry = plugins.model_sources()
        source_name, name = match.groups()
        if source_name in registry:
            return Path(registry.get(source_name).resolve(name, download=download))
        raise GlidectlError(registry.unknown_message(source_name).replace(
            "Unknown model source", "Unknown model source (or missing file)"))
    raise GlidectlError(
        f"Model {str(spec)!r} not found: pass openai:<kind>, a .pt or .safetensors file, "
        "or a training run folder."
    )


def read_checkpoint(
    path: str | Path, kind: str | None = None, options: ModelOptions | None = None
) -> tuple[StateDict, ModelOptions]:
    """State_dict and options from a .pt/.pth/.bin (torch.save) or .safetensors file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return read_weights(path, kind=kind, options=options)
    return load_openai_pt(path, options=options, kind=kind)


def build_from_state(
    state: StateDict,
    options: ModelOptions,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> GlideUNet:
    """A model holding ``state``: built on the meta device, then the weights assigned."""
    with torch.device("meta"):
        model = create_model(options)
    model.load_state_dict(state, strict=True, assign=True)
    if options.use_fp16:
        model.convert_to_fp16()
    model.to(device=device)
    if dtype is not None:
        model.to(dtype=dtype)
    return model.eval()


def load_model(
    spec: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    *,
    kind: str | None = None,
    options: ModelOptions | None = None,
    download: bool = True,
) -> GlideUNet:
    """Load GLIDE weights named by ``spec`` into a ready model (eval mode).

    ``spec``: ``openai:<kind>``, a .pt / .safetensors file, or a training run folder.
    ``kind`` makes a checkpoint of another kind an error; ``options`` is needed only for a
    custom-sized .pt file (they have no options of their own). ``dtype`` casts all weights
    (e.g. ``torch.bfloat16`` to halve memory); the network then computes in it.
    ``device`` may be ``auto``; one this machine lacks is one clear error, before any reading.
    """
    from ..devices import pick_device

    device = pick_device(str(device))
    path = resolve_spec(spec, download=download)
    state, opts = read_checkpoint(path, kind=kind, options=options)
    return build_from_state(state, opts, device=device, dtype=dtype)
