"""One training engine for base models, upsamplers and LoRA (see :mod:`.engine`).

Import :func:`train` lazily: ``glidectl --help`` must not import torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Trainer", "TrainResult", "train", "export_weights"]


def __getattr__(name: str) -> Any:
    if name in ("Trainer", "TrainResult", "train"):
        from . import engine

        return getattr(engine, name)
    if name == "export_weights":
        from .export import export_weights

        return export_weights
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
