"""Reading OpenAI ``.pt`` checkpoints and reading/writing glidectl ``.safetensors`` weights.

A glidectl ``.safetensors`` file carries its model options (JSON) and tokenizer name in the
safetensors metadata, so it needs nothing else to be rebuilt. An OpenAI ``.pt`` file is a plain
state_dict: its kind is read from the input conv's channels and its options are the official
ones of that kind (a custom-sized ``.pt`` needs its options passed in).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import pickle
import re
import shlex
import struct
import warnings
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..atomic import save_safetensors
from ..errors import GlidectlError, a_or_an, cause
from .options import ModelOptions, official_options

StateDict = dict[str, torch.Tensor]
IN_CHANNELS_KIND = {3: "base", 6: "upsample", 7: "base-inpaint", 10: "upsample-inpaint"}
META_OPTIONS = "glidectl.model_options"
META_TOKENIZER = "glidectl.tokenizer"
META_KIND = "glidectl.kind"
_FIRST_KEY = "input_blocks.0.0.weight"
_EMA_WRAPPERS = ("ema", "model_ema", "ema_model")  # where trainers keep the EMA copy


class CheckpointWarning(UserWarning):
    """Something about a checkpoint file worth a line (which of its copies was loaded)."""


def _require_file(path: Path) -> None:
    if not path.exists():
        raise GlidectlError(f"Checkpoint {str(path)!r} does not exist; check the path.")
    if not path.is_file():
        raise GlidectlError(f"Checkpoint {str(path)!r} is not a file.")


def _upcast(state: Mapping[str, Any], path: Path) -> StateDict:
    """Tensors only, floats upcast to float32 (OpenAI ships some as fp16); a tensor of
    another dtype (int, complex) is one sentence."""
    out: StateDict = {}
    for key, value in state.items():
        if isinstance(value, int | float | str | bool | None):
            continue  # a trainer's bookkeeping beside the weights ("step", "epoch")
        if not isinstance(value, torch.Tensor):
            raise GlidectlError(
                f"{str(path)!r} is not a GLIDE state_dict: entry {key!r} is "
                f"{a_or_an(type(value).__name__)}, not a tensor."
            )
        if not value.is_floating_point():  # an int or complex weight: a traceback later
            raise GlidectlError(
                f"{str(path)!r} is not a GLIDE state_dict: tensor {key!r} holds "
                f"{str(value.dtype).removeprefix('torch.')} numbers, where GLIDE's weights are "
                "floats; pass the file as it was trained or exported.")
        if value.dtype != torch.float32:
            value = value.float()
        out[key] = value
    return out


def key_problem(state: Mapping[Any, Any]) -> str | None:
    """Why a loaded mapping's keys are not a state_dict's (a key that is no string), else
    None."""
    for key in state:
        if not isinstance(key, str):
            return f"its key {key!r:.40} is {a_or_an(type(key).__name__)}, not a parameter name"
    return None


def _unprefixed(state: Mapping[str, Any], path: Path) -> Mapping[str, Any]:
    """The model's own keys of a state_dict saved through a wrapper: DDP's ``module.``,
    torch.compile's ``_orig_mod.``, Lightning's ``model.``, ema-pytorch's ``ema_model.``.

    Keys outside the prefix (an EMA's ``step``) are dropped; of several wrapped copies the
    EMA one is taken (ema-pytorch keeps ``online_model.`` beside ``ema_model.``).
    """
    if _FIRST_KEY in state:
        return state
    prefixes = sorted(k[: -len(_FIRST_KEY)] for k in state
                      if isinstance(k, str) and k.endswith("." + _FIRST_KEY))
    if len(prefixes) > 1:
        ema = [p for p in prefixes if "ema" in p.lower()]
        if len(ema) != 1:
            raise GlidectlError(
                f"{str(path)!r} holds {len(prefixes)} models (keys under "
                f"{', '.join(repr(p) for p in prefixes)}); save the one you want as its own "
                "state_dict."
            )
        prefixes = ema
    if not prefixes:
        return state
    prefix = prefixes[0]
    return {k[len(prefix):]: v for k, v in state.items()
            if isinstance(k, str) and k.startswith(prefix)}


def adapter_not_model(path: str | Path) -> str:
    """The sentence for a LoRA adapter (file or folder) given where a model is wanted."""
    return (f"{str(path)!r} is a LoRA adapter, not a model; apply it to its base model with "
            f"--lora {shlex.quote(str(path))}, or fold it in with: glidectl lora merge "
            f"{shlex.quote(str(path))} -o "
            "merged.safetensors.")


FOREIGN_LORA_KEYS = (".lora_down.", ".lora_up.", ".lora.down.", ".lora.up.")
#: where diffusers' LoRA files of peft's keys (lora_A/lora_B) keep Stable Diffusion's networks
FOREIGN_LORA_PREFIXES = ("unet.", "text_encoder.", "text_encoder_2.")


def foreign_lora(path: str | Path, keys: Iterable[str]) -> str | None:
    """The sentence for a LoRA file of kohya's or diffusers' format (``lora_down``/``lora_up``
    keys, or diffusers' ``unet.…lora_A.`` ones: made for Stable Diffusion's networks), or
    None when ``keys`` are not one's."""
    keys = list(keys)
    if any(part in k for k in keys for part in FOREIGN_LORA_KEYS):
        what = "lora_down/lora_up keys"
    elif any(k.startswith(FOREIGN_LORA_PREFIXES) and ".lora_A." in k for k in keys):
        what = "lora_A/lora_B keys under unet. or text_encoder."
    else:
        return None
    return (f"{str(path)!r} is a LoRA file in kohya's or diffusers' format ({what}, made "
            "for another network than GLIDE); glidectl reads peft adapter folders "
            "(adapter_config.json and adapter_model.safetensors), as glidectl lora and peft's "
            "save_pretrained write them.")


def _not_a_model(path: str | Path) -> str:
    """The sentence for a file without GLIDE's input conv: a file of a checkpoint's
    ``state/`` (resume state, not weights) names that checkpoint's folder."""
    from .. import runs

    step_dir = Path(path).parent.parent
    if Path(path).parent.name == runs.STATE_DIR and runs.is_step_dir(step_dir):
        return (f"{str(path)!r} is a checkpoint's resume state (read by --resume), not model "
                f"weights; pass its checkpoint folder {str(step_dir)!r} instead.")
    return (f"{str(path)!r} is not a GLIDE checkpoint: it has no {_FIRST_KEY!r} conv weight; "
            "pass a GLIDE model's weights file or a training run folder.")

# --------------------------------------------------------------------------- identification
def identify_kind(shapes: Mapping[str, Sequence[int]], path: str | Path = "checkpoint") -> str:
    """The model kind from the input conv's channels: 3 / 6 / 7 / 10 → base / upsample / …"""
    shape = shapes.get(_FIRST_KEY)
    if shape is None and (foreign := foreign_lora(path, shapes)):
        raise GlidectlError(foreign)
    if shape is None and any(".lora_A." in k for k in shapes):
        raise GlidectlError(adapter_not_model(path))
    if shape is None or len(shape) != 4:
        raise GlidectlError(_not_a_model(path))
    kind = IN_CHANNELS_KIND.get(int(shape[1]))
    if kind is None:
        raise GlidectlError(
            f"{str(path)!r} has {shape[1]} input channels; GLIDE models have 3 (base), "
            "6 (upsample), 7 (base-inpaint) or 10 (upsample-inpaint)."
        )
    if "positional_embedding" not in shapes:
        raise GlidectlError(
            f"{str(path)!r} has no text transformer (positional_embedding); it is not a "
            "text-conditional GLIDE model."
        )
    return kind


@cache
def expected_shapes(options_json: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """Ordered (key, shape) of the model these options build (built on the meta device)."""
    from .unet import create_model

    with torch.device("meta"):
        model = create_model(ModelOptions.from_json(options_json))
    return tuple((k, tuple(v.shape)) for k, v in model.state_dict().items())


def mismatch(shapes: Mapping[str, Sequence[int]], options: ModelOptions) -> str | None:
    """None when ``shapes`` fits ``options``, else a short description of the first problems."""
    want = dict(expected_shapes(options.to_json()))
    missing = [k for k in want if k not in shapes]
    unexpected = [k for k in shapes if k not in want]
    wrong = [k for k in want if k in shapes and tuple(shapes[k]) != want[k]]
    parts = []
    if missing:
        parts.append(f"missing keys {', '.join(missing[:3])}" + (" …" if len(missing) > 3 else ""))
    if unexpected:
        more = " …" if len(unexpected) > 3 else ""
        parts.append(f"unexpected keys {', '.join(unexpected[:3])}{more}")
    if wrong:
        k = wrong[0]
        parts.append(f"{k} has shape {list(shapes[k])}, expected {list(want[k])}")
    return "; ".join(parts) or None


def check_state_dict(state: Mapping[str, torch.Tensor], options: ModelOptions, path: Path) -> None:
    """Refuse a state_dict that does not fit ``options``, naming the first differing keys."""
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    problem = mismatch(shapes, options)
    if problem:
        raise GlidectlError(
            f"{str(path)!r} does not fit {a_or_an(options.kind)} model with its options: {problem}."
        )


def infer_options(
    state: Mapping[str, torch.Tensor], path: Path, kind: str | None = None
) -> ModelOptions:
    """Options for a state_dict without metadata: the official options of its kind."""
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    found = identify_kind(shapes, path)
    if kind is not None and found != kind:
        raise GlidectlError(
            f"{str(path)!r} holds {a_or_an(found)} model, but {a_or_an(kind)} model is needed; "
            f"pass {a_or_an(kind)} checkpoint."
        )
    options = official_options(found)
    problem = mismatch(shapes, options)
    if problem:
        raise GlidectlError(
            f"{str(path)!r} looks like {a_or_an(found)} model but not OpenAI's official one "
            f"({problem}); a file without model options needs them: in Python, glidectl.glide's "
            "save_weights(load_model(path, options=ModelOptions(...)), 'model.safetensors') "
            "writes a copy that records them."
        )
    return options


# --------------------------------------------------------------------------- OpenAI .pt
#: What torch.load raises for a file that is no (whole, weights-only) torch.save file.
TORCH_LOAD_ERRORS = (RuntimeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile,
                     ValueError, OSError, AttributeError, KeyError, IndexError, struct.error)


def is_safetensors(path: Path) -> bool:
    """Whether ``path`` holds a safetensors file whatever its name says (a file renamed
    ``.pt``): 8 bytes of header length, a header that fits in the file, starting with ``{``."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
            size = f.seek(0, 2)
    except OSError:
        return False
    if len(head) < 9:
        return False
    length = int.from_bytes(head[:8], "little")
    return head[8:9] == b"{" and 2 <= length <= min(size - 8, 100 * 2**20)


def python_objects_in(exc: BaseException) -> str | None:
    """The global a weights-only load refused (``GLOBAL collections.OrderedDict``), if that
    is what ``exc`` says: a pickle that would build (or run) Python objects."""
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    return found.group(1) if found else None


def torch_load_weights(path: Path) -> Any:
    """What ``torch.save`` wrote to ``path``, read with ``weights_only=True`` (tensors and
    plain containers, never Python objects); a file that is not that is a GlidectlError."""
    _require_file(path)
    try:
        with warnings.catch_warnings():  # torch's own notes on pickle protocols: not ours
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except TORCH_LOAD_ERRORS as exc:
        found = python_objects_in(exc)
        if found:  # never loaded
            raise GlidectlError(
                f"Cannot read checkpoint {str(path)!r}: it holds Python objects "
                f"({found}), not only weights, and glidectl never loads those; "
                "use a .safetensors file or a plain state_dict saved with torch.save."
            ) from exc
        if "Unsupported operand" in str(exc) and _is_pickle(path):  # not torch.save's
            raise GlidectlError(
                f"Cannot read checkpoint {str(path)!r}: it is a plain pickle, not a file "
                "torch.save writes, and glidectl never unpickles those (they can run code); "
                "use a .safetensors file or a state_dict saved with torch.save."
            ) from exc
        from .official_files import not_torch_format

        with contextlib.suppress(OSError):
            if (what := not_torch_format(path)) is not None:  # torch's words would mislead
                raise GlidectlError(
                    f"Cannot read checkpoint {str(path)!r}: {what}; {_refetch(path)}.") from exc
        raise GlidectlError(
            f"Cannot read checkpoint {str(path)!r} ({cause(exc)}); the file is damaged, "
            f"truncated or not a PyTorch checkpoint: {_refetch(path)}."
        ) from exc


def _is_pickle(path: Path) -> bool:
    """Whether ``path`` starts as a pickle of protocol 2 or later does (PROTO 2..5)."""
    with contextlib.suppress(OSError), open(path, "rb") as f:
        head = f.read(2)
        return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5
    return False


def _refetch(path: Path) -> str:
    """What to do with a damaged weights file: fetch it again when it is in the download
    cache (never advise deleting a file of the user's own, a run's pointer for one)."""
    from .download import cache_dir

    with contextlib.suppress(OSError, ValueError):
        if path.resolve().is_relative_to(cache_dir().resolve()):
            return ("delete it and fetch it again (glidectl download skips a file its cache "
                    "holds)")
    return "pass another weights file"


def load_openai_pt(
    path: str | Path, options: ModelOptions | None = None, kind: str | None = None
) -> tuple[StateDict, ModelOptions]:
    """A state_dict saved with ``torch.save`` (OpenAI's format) and the options it fits.

    Without ``options`` the file must be one of OpenAI's four official models. Half-precision
    tensors are upcast to float32. ``kind`` (if given) must match the file's kind.
    """
    path = Path(path)
    obj = torch_load_weights(path)
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model", *_EMA_WRAPPERS):
            if isinstance(obj.get(wrapper), Mapping) and _FIRST_KEY not in obj:
                ema = next((k for k in _EMA_WRAPPERS if isinstance(obj.get(k), Mapping)), None)
                if ema and wrapper not in _EMA_WRAPPERS:
                    warnings.warn(CheckpointWarning(
                        f"{str(path)!r} holds {wrapper!r} and {ema!r} weights; loaded "
                        f"{wrapper!r}. To use the EMA copy, save it alone "
                        f"(torch.save(checkpoint[{ema!r}], 'ema.pt')) and load that file."),
                        stacklevel=2)
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping):
        raise GlidectlError(f"{str(path)!r} holds a {type(obj).__name__}, not a state_dict.")
    if {"state", "param_groups"} <= obj.keys():  # torch.optim's state_dict
        raise GlidectlError(
            f"{str(path)!r} holds an optimizer's state (torch.optim's state and param_groups), "
            "not model weights; pass the model's weights file saved beside it (guided-"
            "diffusion's modelNNNNNN.pt or ema_RATE_NNNNNN.pt, not optNNNNNN.pt).")
    if (problem := key_problem(obj)) is not None:
        raise GlidectlError(f"{str(path)!r} is not a GLIDE state_dict: {problem}.")
    state = _upcast(_unprefixed(obj, path), path)
    return state, _checked_options(state, options, path, kind)


def _checked_options(state: Mapping[str, Any], options: ModelOptions | None, path: Path,
                     kind: str | None) -> ModelOptions:
    """``options`` checked against ``state`` (and ``kind``), else inferred from ``state``."""
    if options is None:
        return infer_options(state, path, kind)
    check_kind(options, kind, path)
    check_state_dict(state, options, path)
    return options


def check_kind(options: ModelOptions, kind: str | None, path: Path) -> None:
    if kind is not None and options.kind != kind:
        raise GlidectlError(
            f"{str(path)!r} holds {a_or_an(options.kind)} model, but {a_or_an(kind)} model is "
            f"needed; pass {a_or_an(kind)} checkpoint."
        )


# --------------------------------------------------------------------------- safetensors
def save_weights(
    model_or_state: nn.Module | Mapping[str, torch.Tensor],
    path: str | Path,
    options: ModelOptions | None = None,
    metadata: Mapping[str, Any] | None = None,
    replace: bool = True,
) -> Path:
    """Write weights as .safetensors with the options (JSON) and tokenizer in the metadata.

    Written through a temp file and an atomic rename. ``options`` defaults to the model's own;
    ``replace=False`` keeps a file that is at ``path`` by then (``FileExistsError``).
    """

    if isinstance(model_or_state, nn.Module):
        model = model_or_state
        for wrapper in ("_orig_mod", "module"):  # torch.compile / DDP wrappers
            inner = getattr(model, wrapper, None)
            model = inner if isinstance(inner, nn.Module) else model
        options = options or getattr(model, "options", None)
        state = model.state_dict()
    else:
        state = dict(model_or_state)
    if options is None:
        raise ValueError("save_weights needs options for a bare state_dict")
    meta = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    meta.update({
        "format": "pt",
        META_OPTIONS: options.to_json(),
        META_TOKENIZER: options.tokenizer,
        META_KIND: options.kind,
    })
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    return save_safetensors(path, tensors, meta, replace)


def state_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over tensors (sorted keys; name, shape and float32 bytes of each): the same
    for weights in memory, as saved and as read back, whatever file holds them."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach()
        t = t.float() if t.is_floating_point() else t
        h.update(f"{key}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def metadata_or_empty(path: str | Path) -> dict[str, str]:
    """A .safetensors file's metadata; empty for another kind of file or a damaged one."""
    if Path(path).suffix != ".safetensors":
        return {}
    try:
        return read_metadata(path)
    except GlidectlError:
        return {}


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a .safetensors file."""
    from safetensors import safe_open

    path = Path(path)
    _require_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise _bad_safetensors(path, exc) from exc


def torch_saved(path: Path, rename: str) -> str | None:
    """The sentence for a file ``torch.save`` wrote (a zip archive holding its
    ``data.pkl``) under a .safetensors name, naming ``rename`` to give it; else None."""
    with contextlib.suppress(OSError, zipfile.BadZipFile, ValueError):
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                if any(n.endswith("data.pkl") for n in archive.namelist()):
                    return (f"{str(path)!r} was written by torch.save, not as safetensors; "
                            f"rename it to {rename!r}, a name glidectl reads such a file under "
                            "(with weights_only=True).")
    return None


def _bad_safetensors(path: Path, exc: Exception) -> GlidectlError:
    if said := torch_saved(path, path.with_suffix(".pt").name):
        return GlidectlError(said)
    return GlidectlError(
        f"Cannot read weights {str(path)!r} ({cause(exc)}); the file is damaged, truncated or "
        "not a .safetensors file."
    )


def read_weights(
    path: str | Path, kind: str | None = None, options: ModelOptions | None = None
) -> tuple[StateDict, ModelOptions]:
    """State_dict (float32) and options of a .safetensors file.

    Options come from the file's metadata, else from ``options``, else the file must be one
    of OpenAI's official models.
    """
    from safetensors.torch import load_file

    path = Path(path)
    meta = read_metadata(path)
    try:
        state = _upcast(_unprefixed(load_file(str(path)), path), path)
    except GlidectlError:
        raise
    except Exception as exc:
        raise _bad_safetensors(path, exc) from exc
    if options is None:
        options = metadata_options(path, meta)
    return state, _checked_options(state, options, path, kind)


def metadata_options(path: str | Path, meta: dict[str, str] | None = None
                     ) -> ModelOptions | None:
    """The model options a .safetensors file records in its metadata (``meta``, else read
    from its header), None when it records none."""
    meta = read_metadata(path) if meta is None else meta
    if META_OPTIONS not in meta:
        return None
    try:
        return ModelOptions.from_json(meta[META_OPTIONS])
    except (ValueError, TypeError) as exc:
        raise GlidectlError(f"{str(path)!r} has unreadable model options: {exc}.") from exc
    except GlidectlError as exc:  # options this version cannot build (a newer glidectl's?)
        from .. import __version__

        raise GlidectlError(
            f"{str(path)!r} records model options glidectl {__version__} cannot build "
            f"({str(exc).rstrip('.')}); a newer glidectl may have written it: upgrade, or "
            "pass another weights file.") from exc
