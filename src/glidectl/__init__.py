"""glidectl: finetune and sample OpenAI's GLIDE text-to-image diffusion models."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Library API, imported on first use so that ``import glidectl`` does not import torch.
_LAZY: dict[str, str] = {
    "load_model": "glidectl.glide.loading",
    "generate": "glidectl.pipeline",
    "GlidePipeline": "glidectl.pipeline",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'glidectl' has no attribute {name!r}")
