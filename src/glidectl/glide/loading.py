"""``load_model``: one entry point for every way of naming GLIDE weights.

``openai:base`` (any registered model source), an OpenAI ``.pt``, a glidectl ``.safetensors``,
a training run folder (``checkpoints/latest`` → ``ema.safetensors`` before ``model.safetensors``),
a ``checkpoints/`` folder or one ``step-NNNNNN`` folder.
"""

from __future__ import annotations

import os
import re
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from .. import runs
from ..errors import GlidectlError, a_or_an, from_here, keyword_errors, takes
from .checkpoints import (
    StateDict,
    adapter_not_model,
    check_kind,
    is_safetensors,
    load_openai_pt,
    read_weights,
)
from .options import ModelOptions
from .unet import GlideUNet, create_model

_SOURCE_RE = re.compile(r"^([A-Za-z][\w.-]*):(.+)$")
READ_TRIES = 5  # a run folder's checkpoint replaced while it was read: resolved again
T = TypeVar("T")


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
    raise GlidectlError(runs.no_checkpoint_yet(path) or
        f"Folder {str(path)!r} is not a training run (no checkpoints/step-NNNNNN with "
        "ema.safetensors or model.safetensors); pass a run folder or a weights file."
    )


def resolve_spec(spec: str | Path, download: bool = True) -> Path:
    """A file path for ``spec``: an existing path, a run folder, or ``source:name``."""
    path = runs.followed_pointer(Path(spec).expanduser())
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
        if source_name.lower() in ("http", "https", "ftp", "file"):
            raise GlidectlError(
                f"Model {str(spec)!r} is a URL, and models are not fetched from URLs; "
                "download the file and pass its path, or for OpenAI's run glidectl download "
                "NAME and pass openai:NAME (GLIDECTL_OPENAI_URL names a mirror).")
        raise GlidectlError(registry.unknown_message(source_name).replace(
            "Unknown model source", "Unknown model source (or missing file)"))
    raise GlidectlError(runs.missing_step(path) or _other_case_word(spec) or (
        f"Model {str(spec)!r}{from_here(spec)} not found: pass openai:<kind>, a .pt or "
        ".safetensors file, or a training run folder."))


def _other_case_word(spec: str | Path) -> str:
    """For a missing ``spec`` that is a word of the model flags in another case (``NONE``,
    ``Auto``), the sentence naming the words as they are taken (lower-case), else ''."""
    if str(spec).lower() not in ("none", "auto"):
        return ""
    return (f"Model {str(spec)!r}{from_here(spec)} not found; the words --base and "
            "--upsampler take are lower-case: none (no model; --base none with --low-res) and "
            "auto (--upsampler only: OpenAI's upsampler for OpenAI's base).")


def check_spec(spec: str | Path) -> Path | None:
    """The weights file ``spec`` names, found without reading or downloading it: None for a
    model source's model not downloaded yet (fetched when it loads). A spec that names no
    model (a missing file, a folder that is no run, a run with no checkpoint yet) is its
    one sentence."""
    match = _SOURCE_RE.match(str(spec))
    if match and not Path(spec).expanduser().exists() and not str(spec).startswith(("/", ".")):
        from .. import plugins

        registry = plugins.model_sources()
        source, name = match.groups()
        if source in registry:
            try:
                return resolve_spec(spec, download=False)
            except GlidectlError:
                try:
                    known = name in registry.get(source).names()
                except GlidectlError:  # a source that cannot list: its load will say
                    known = True
                if known:  # not downloaded: loading fetches it
                    return None
                raise
    return resolve_spec(spec, download=False)


def check_spec_kind(spec: Any, keyword: str) -> None:
    """One sentence for a ``keyword`` given what is no spec: a loaded model, None, a number."""
    if isinstance(spec, str | os.PathLike):
        return
    got = f"a {type(spec).__name__}" if isinstance(spec, torch.nn.Module) else (
        f"{spec!r:.60} ({type(spec).__name__})")
    instead = (f"; to sample with a model already loaded, use GlidePipeline({keyword}model)"
               if isinstance(spec, torch.nn.Module) and keyword in ("base=", "upsampler=")
               else "")
    raise GlidectlError(f"{keyword} takes a model spec (openai:base, a weights file or a "
                        f"training run folder), got {got}{instead}.")


def follows_latest(spec: str | Path) -> bool:
    """Whether ``spec`` is a run or checkpoints folder: the file it names changes as its
    training checkpoints (and prunes), unlike a file's or a step folder's."""
    path = Path(spec).expanduser()
    return path.is_dir() and runs.step_weights(path) is None


def _same_file(pinned: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(pinned), os.stat(path))
    except OSError:
        return False


def read_resolved(spec: str | Path, read: Callable[[Path], T], download: bool = True,
                  resolve: Callable[[Path], Path] | None = None) -> tuple[Path, T]:
    """``read(path)`` on the weights file ``spec`` resolves to (``resolve(spec)``: another
    file or folder, such as a LoRA run's adapter folder), every read in it of that one file.
    A run folder's latest checkpoint may be pruned, or written again, by its training while
    it is read: the file is held open (so no new file can take its place) and, when it is
    gone or replaced by the end, ``spec`` is resolved and read anew."""
    def find() -> Path:
        return resolve(Path(spec)) if resolve else resolve_spec(spec, download=download)

    if not follows_latest(spec):
        path = find()
        return path, read(path)
    for attempt in range(READ_TRIES):
        path = find()
        try:
            pinned = os.open(path, os.O_RDONLY)
        except FileNotFoundError:  # pruned since it was resolved
            time.sleep(0.05 * attempt)
            continue
        except OSError:  # unreadable: said by ``read`` in its own words
            return path, read(path)
        try:
            result = read(path)
        except (GlidectlError, OSError):
            if _same_file(pinned, path):
                raise
            result = None  # the file went while it was read
        finally:
            moved = not _same_file(pinned, path)
            os.close(pinned)
        if not moved:
            return path, result
        time.sleep(0.05 * attempt)
    raise GlidectlError(
        f"The latest checkpoint of {str(spec)!r} was replaced {READ_TRIES} times while it "
        "was read (its training checkpoints that often); run again, or pass one "
        "checkpoints/step-NNNNNN folder of it.")


def read_checkpoint(
    path: str | Path, kind: str | None = None, options: ModelOptions | None = None
) -> tuple[StateDict, ModelOptions]:
    """State_dict and options from a .pt/.pth/.bin (torch.save) or .safetensors file; the
    cached file of ``openai:NAME`` must hold NAME (:func:`check_cached`) before ``kind``."""
    from .sources import cached_official

    path = Path(path)
    named = cached_official(path)
    wanted = None if named else kind
    if path.suffix == ".safetensors" or is_safetensors(path):  # also one named .pt or .bin
        state, opts = read_weights(path, kind=wanted, options=options)
    else:
        state, opts = load_openai_pt(path, options=options, kind=wanted)
    if named:
        check_cached(path, named, opts.kind)
        check_kind(opts, kind, path)
    return state, opts


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


def _pipeline_loras(match: re.Match[str]) -> str:
    """``with --lora X`` as a Python caller applies adapter X."""
    return f"with GlidePipeline.from_specs(base, loras=[{shlex.split(match.group(1))[0]!r}])"


@keyword_errors({}, {r"with --lora (.+?)(?=, or )": _pipeline_loras})
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

    check_spec_kind(spec, "load_model()")
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise GlidectlError("load_model(dtype=...) takes a float torch dtype such as "
                            "torch.bfloat16, "
                            f"got {dtype!r:.40} ({type(dtype).__name__}); autocast is the "
                            "precision= of GlidePipeline and generate().")
    if kind is not None and not isinstance(kind, str):
        raise takes("load_model(kind=...)", "a model kind such as 'base' or 'upsample', or "
                    "None", kind)
    if options is not None and not isinstance(options, ModelOptions):
        raise takes("load_model(options=...)", "a glidectl.glide.ModelOptions (for a custom-"
                    "sized .pt file) or None", options)
    device = pick_device(str(device))
    path, (state, opts) = read_resolved(
        spec, lambda path: read_checkpoint(path, kind=kind, options=options), download)
    model = build_from_state(state, opts, device=device, dtype=dtype)
    # GlidePipeline(model) records it and takes its recommended settings, as from_specs does,
    # while its weights are as read (weights_versions: any in-place change moves them)
    model.glidectl_source = (str(spec), str(path), weights_versions(model))
    return model


def check_cached(path: Path, official: str, kind: str) -> None:
    """One sentence when ``openai:NAME``'s cached file (``path``, NAME ``official``) holds
    another kind of model: a file put there by hand (OpenAI's ``base_inpaint.pt`` saved as
    ``base.pt``) is said as the cache's, not used as another kind, by every command."""
    if kind != official:
        raise GlidectlError(
            f"{str(path)!r}, the cached openai:{official}, holds {a_or_an(kind)} model, not "
            f"OpenAI's {official}; delete it and run glidectl download {official}.")


def weights_versions(model: torch.nn.Module) -> tuple[int, ...]:
    """The parameters' version counters: an optimizer step, ``load_state_dict`` or any
    in-place change moves one, so a model changed since it was loaded is told apart."""
    return tuple(p._version for p in model.parameters())
