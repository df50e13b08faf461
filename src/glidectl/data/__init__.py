"""Training data: image folders, webdataset shards and demo data, with presets and transforms.

``build_dataset(cfg.data, tokenizer=..., image_size=64, text_ctx=128)`` is the entry point.
Attributes load lazily so ``glidectl --help`` (which loads the presets plugin) avoids torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "build_dataset": "dataset",
    "StreamDataset": "dataset",
    "open_source": "sources",
    "RejectionCounter": "stats",
    "DataError": "stats",
    "no_valid_data_error": "stats",
    "DatasetPreset": "preset_api",
    "Reject": "preset_api",
    "score_image": "demo",
    "make_demo_sample": "demo",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'glidectl.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
