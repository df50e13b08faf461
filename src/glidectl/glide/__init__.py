"""The GLIDE networks (checkpoint-compatible with OpenAI's), their options and checkpoints.

Names are imported lazily so that ``glidectl.glide.sources`` (a default plugin) and the
options can be used without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from .options import KINDS, SIZES, ModelOptions, official_options, preset_options

_LAZY = {
    "GlideUNet": "unet",
    "create_model": "unet",
    "load_model": "loading",
    "load_openai_pt": "checkpoints",
    "read_weights": "checkpoints",
    "save_weights": "checkpoints",
}

__all__ = ["KINDS", "SIZES", "ModelOptions", "official_options", "preset_options", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
