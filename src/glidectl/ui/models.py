"""What the web UI may load: known model sources and a models folder, never free-form paths.

Also the model cache (loaded once per spec, the last few used kept across requests) and a
memory read-out.
No gradio import here, so this module is tested without gradio.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import GlidectlError, PluginError

WEIGHT_SUFFIXES = (".safetensors", ".pt")
NONE_LABEL = "(none)"
KEEP_MODELS = 2  # loaded pipelines kept (each: base, upsampler, LoRAs at one scale)


@dataclass(frozen=True)
class ModelChoice:
    """One selectable model: the label shown, the spec handed to the loader and its kind."""

    label: str
    spec: str
    kind: str | None  # None when the kind is only known after loading (.pt files)


FOREIGN = "foreign"  # the kind of a .safetensors file that holds no GLIDE model


def _file_kind(path: Path) -> str | None:
    """The kind a weights file records, else the one its input conv's shape says (the
    header alone is read); :data:`FOREIGN` for a .safetensors file that is no GLIDE model
    (a kohya LoRA, a Stable Diffusion checkpoint, a damaged file), which no list offers;
    None when only loading can tell (a .pt file)."""
    if path.suffix != ".safetensors":
        return None
    from safetensors import SafetensorError, safe_open

    from ..glide.checkpoints import META_KIND, _unprefixed, identify_kind

    try:  # the header alone: the kind recorded, else the shapes loading would identify
        with safe_open(str(path), framework="pt") as f:
            if recorded := (f.metadata() or {}).get(META_KIND):
                return recorded
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        return identify_kind(_unprefixed(shapes, path), path)
    except (GlidectlError, SafetensorError, OSError, RuntimeError, ValueError):
        return FOREIGN


class ModelListWarning(UserWarning):
    """A model source whose models could not be listed."""


def _source_choices() -> list[ModelChoice]:
    """``source:name`` for every registered source's model already on disk (no download);
    its kind from the file's metadata, else from a model name that is a kind (``openai``'s)."""
    from .. import plugins
    from ..glide.options import KINDS

    out = []
    registry = plugins.model_sources()
    for name in registry.names():
        source = registry.get(name)
        try:
            models = source.names()
        except GlidectlError as exc:  # one broken source leaves the others listed
            warnings.warn(f"{exc} Its models are left out of the lists.", ModelListWarning,
                          stacklevel=2)
            continue
        for model in models:
            try:
                path = Path(source.resolve(model, download=False))
            except PluginError as exc:  # it failed, rather than say "not on disk"
                warnings.warn(f"{exc} {name}:{model} is left out of the lists.",
                              ModelListWarning, stacklevel=2)
                continue
            except (GlidectlError, OSError):
                continue
            kind = _file_kind(path) or (model if model in KINDS else None)
            out.append(ModelChoice(f"{name}:{model}", f"{name}:{model}", kind))
    return out


def _dir_choices(models_dir: Path) -> list[ModelChoice]:
    """Weights files and training run folders directly inside ``models_dir``."""
    if not models_dir.is_dir():
        return []
    from ..glide.loading import read_resolved

    out = []
    for child in sorted(models_dir.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_file() and child.suffix in WEIGHT_SUFFIXES:
            if (kind := _file_kind(child)) != FOREIGN:
                out.append(ModelChoice(child.name, str(child), kind))
        elif child.is_dir():
            try:  # the kind of the checkpoint it names, not of one its training pruned
                _, kind = read_resolved(child, _file_kind, download=False)
            except GlidectlError:
                continue
            out.append(ModelChoice(f"{child.name}/", str(child), kind))
    return out


def list_models(models_dir: str | Path | None) -> list[ModelChoice]:
    """Cached source models first, then the models folder's files and run folders."""
    choices = _source_choices()
    if models_dir is not None:
        choices += _dir_choices(Path(models_dir))
    return choices


OFFERED_KINDS = (None, "base", "upsample")  # the page has no mask input: no inpaint kinds


def base_choices(choices: list[ModelChoice]) -> list[ModelChoice]:
    return [c for c in choices if c.kind in (None, "base")]


def upsampler_choices(choices: list[ModelChoice]) -> list[ModelChoice]:
    return [c for c in choices if c.kind in (None, "upsample")]


def _adapter_kind(adapter_dir: Path) -> str | None:
    return _adapter_meta(adapter_dir).get("model_kind")


def lora_grey(spec: str) -> bool:
    """Whether the LoRA adapter (or LoRA run's latest) ``spec`` names was trained on
    greyscale data (its ``glidectl.json`` says ``grey``)."""
    from ..lora.files import latest_adapter

    try:
        return _adapter_meta(latest_adapter(Path(spec))).get("grey") is True
    except GlidectlError:
        return False


def _adapter_meta(adapter_dir: Path) -> dict[str, Any]:
    import json

    try:
        meta = json.loads((adapter_dir / "glidectl.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def lora_choices(models_dir: str | Path | None) -> list[ModelChoice]:
    """LoRA adapter folders and LoRA run folders in ``models_dir``; kind = the model it fits.
    Adapters of a kind the page offers no model of (an inpainting model's) are left out."""
    if models_dir is None or not Path(models_dir).is_dir():
        return []
    from ..lora.files import latest_adapter

    out = []
    for child in sorted(Path(models_dir).iterdir()):
        if not child.is_dir() or child.name.startswith("."):
            continue
        try:
            adapter = latest_adapter(child)
        except GlidectlError:
            continue
        if (kind := _adapter_kind(adapter)) in OFFERED_KINDS:
            out.append(ModelChoice(f"{child.name}/", str(child), kind))
    return out


def pick(choices: list[ModelChoice], label: str | None, what: str) -> ModelChoice | None:
    """The choice whose label is ``label``; anything not listed is refused (no free paths)."""
    if label in (None, "", NONE_LABEL):
        return None
    for choice in choices:
        if choice.label == label:
            return choice
    raise GlidectlError(f"Unknown {what} {label!r}: it is not (or no longer) among the "
                        "models on disk; reload the page for the current list.")


def checkpoint_now(spec: str) -> tuple[Any, ...] | None:
    """What a spec names now: a run folder's step folder and its inode (a step written again
    is another folder); a weights file's, or an adapter folder's files', inode, size and
    mtime (a file exported again under its name is other weights); None for sources."""
    from .. import runs

    path = Path(spec)
    step = runs.latest_under(path) if path.is_dir() else None
    try:
        if step is not None:
            return (str(step), step.stat().st_ino)
        files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
        return tuple((str(f), (st := f.stat()).st_ino, st.st_size, st.st_mtime_ns)
                     for f in files)
    except OSError:  # pruned just now, or a source's name: the next look finds what is there
        return None


class ModelCache:
    """Loaded objects by key, at most ``size`` of them (thread-safe): each key is loaded once
    and kept while its ``version`` (the checkpoints a run folder names) stays the same and
    fewer than ``size`` others were used since; an object is dropped before the next load,
    so switching between models, LoRAs or LoRA scales never holds more than ``size``."""

    def __init__(self, size: int = KEEP_MODELS) -> None:
        self.size = max(1, int(size))
        self._items: OrderedDict[Any, tuple[Any, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0

    def get(self, key: Any, load: Callable[[], Any], version: Any = None) -> Any:
        """The object for ``key``, loaded now when absent or of another ``version`` (the
        old one is let go first: one copy in memory)."""
        with self._lock:
            held = self._items.get(key)
            if held is not None and held[0] == version:
                self._items.move_to_end(key)
                return held[1]
            if held is not None:  # an older checkpoint of a run: let go before the newer
                del self._items[key]
                held = None  # the last reference
                _release()
            elif len(self._items) >= self.size:  # before loading: at most ``size`` in memory
                self._items.popitem(last=False)
                _release()
            self._items[key] = (version, load())
            self.loads += 1
            return self._items[key][1]

    def values(self) -> list[Any]:
        return [value for _, value in self._items.values()]

    def __contains__(self, key: Any) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)


def _release() -> None:
    """Free what a dropped model held now: its reference cycles, and on a GPU the cached
    blocks (so the memory read-out and other processes see it returned)."""
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def memory_use(device: str = "cuda") -> str:
    """Memory in use (and peak) of ``device`` when it is an active CUDA GPU (``cuda:1``'s own
    counters, not the current GPU's), else this process's resident memory."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and str(device).startswith("cuda") and torch.cuda.is_available() \
            and torch.cuda.is_initialized():
        used = torch.cuda.memory_allocated(device) / 2**30
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        return f"GPU {device} {used:.2f} GiB in use (peak {peak:.2f} GiB)"
    rss = _rss_bytes()
    return f"process RSS {rss / 2**20:.0f} MiB"


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # not Linux: the peak is the best we have
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if os.uname().sysname == "Darwin" else peak * 1024
