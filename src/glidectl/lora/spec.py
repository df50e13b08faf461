"""``PATH[:SCALE]`` adapter specs as given to ``--lora`` (no torch import here)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import GlidectlError
from ..ranges import FLAGS, check, plain_number


@dataclass(frozen=True)
class LoraSpec:
    """One adapter to apply: its directory (or .safetensors file) and a strength multiplier."""

    path: str
    scale: float = 1.0


def parse_lora_spec(text: str | LoraSpec | tuple[str, float]) -> LoraSpec:
    """``"dir"`` → scale 1; ``"dir:0.7"`` → scale 0.7. A suffix holding a path separator stays
    part of the path (so ``C:\\adapters\\x`` works), and so does any suffix of a path that
    exists whole where the part before its last ':' does not (a folder ``lora:v2``). The
    scale has the range of ``lora merge --scale`` (finite, -10 to 10); outside it, a second
    scale or no path before ':' is a GlidectlError naming --lora."""
    if isinstance(text, LoraSpec):
        return text
    if isinstance(text, tuple):
        scale = float(text[1])
        check(f"--lora {str(text[0])!r}: the scale", scale, FLAGS["--scale"])
        return LoraSpec(str(text[0]), scale)
    raw = str(text).strip()
    path, sep, tail = raw.rpartition(":")
    if sep and not path and tail:
        raise GlidectlError(f"--lora {raw!r} names no adapter before ':'; pass PATH:SCALE, "
                            "e.g. runs/my-lora:0.5.")
    whole = _exists(raw) and not _exists(path)
    if sep and path and "/" not in tail and "\\" not in tail and not whole:
        if not _is_number(tail):
            raise GlidectlError(f"--lora {raw!r}: the scale after ':' must be a plain decimal "
                                f"number, e.g. {path}:0.8.")
        scale = float(tail)
        check(f"--lora {raw!r}: the scale after ':'", scale, FLAGS["--scale"])
        first, _, extra = path.rpartition(":")
        if first and not _exists(path) and _is_number(extra):
            raise GlidectlError(f"--lora {raw!r}: give one scale after the path, e.g. "
                                f"{first}:0.8.")
        return LoraSpec(path, scale)
    if not raw:
        raise GlidectlError("--lora was given no path; pass a LoRA run folder or an adapter "
                            "folder, e.g. --lora runs/my-lora.")
    return LoraSpec(raw, 1.0)


def _exists(path: str) -> bool:
    try:
        return bool(path) and os.path.exists(os.path.expanduser(path))
    except (OSError, ValueError):  # a name the OS cannot take (NUL, too long)
        return False


def _is_number(text: str) -> bool:
    """Whether ``text`` is a scale as ``PATH:SCALE`` takes one (a plain decimal number)."""
    return plain_number(text)
