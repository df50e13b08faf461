"""``PATH[:SCALE]`` adapter specs as given to ``--lora`` (no torch import here)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import GlidectlError
from ..ranges import FLAGS, check


@dataclass(frozen=True)
class LoraSpec:
    """One adapter to apply: its directory (or .safetensors file) and a strength multiplier."""

    path: str
    scale: float = 1.0


def parse_lora_spec(text: str | LoraSpec | tuple[str, float]) -> LoraSpec:
    """``"dir"`` → scale 1; ``"dir:0.7"`` → scale 0.7. A suffix that is not a number stays
    part of the path (so ``C:\\adapters\\x`` works). The scale has the range of
    ``lora merge --scale`` (finite, -10 to 10); outside it is a GlidectlError naming --lora."""
    if isinstance(text, LoraSpec):
        return text
    if isinstance(text, tuple):
        scale = float(text[1])
        check(f"--lora {str(text[0])!r}: the scale", scale, FLAGS["--scale"])
        return LoraSpec(str(text[0]), scale)
    raw = str(text).strip()
    path, sep, tail = raw.rpartition(":")
    if sep and path and "/" not in tail and "\\" not in tail:
        try:
            scale = float(tail)
        except ValueError:
            raise GlidectlError(
                f"--lora {raw!r}: the scale after ':' must be a number, e.g. {path}:0.8."
            ) from None
        check(f"--lora {raw!r}: the scale after ':'", scale, FLAGS["--scale"])
        return LoraSpec(path, scale)
    if not raw:
        raise GlidectlError("--lora needs an adapter directory, e.g. --lora runs/my-lora/lora.")
    return LoraSpec(raw, 1.0)
