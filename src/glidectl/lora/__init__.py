"""LoRA adapters for GLIDE networks: targets, training hook, adapter files, apply and merge.

Built on peft (Linear, Conv1d and Conv2d layers). Names are imported lazily so that the CLI
can parse ``--lora PATH[:SCALE]`` without importing torch or peft.
"""

from __future__ import annotations

import importlib
from typing import Any

from .spec import LoraSpec, parse_lora_spec

_LAZY = {
    "PRESETS": "targets",
    "resolve_targets": "targets",
    "effective_scale": "inject",
    "inject_lora": "inject",
    "lora_summary": "inject",
    "LoraTrainingAdapter": "training",
    "train_lora": "training",
    "latest_adapter": "files",
    "AdapterFiles": "files",
    "base_for_loras": "files",
    "grey_stages": "files",
    "read_adapter": "files",
    "recorded_base": "files",
    "save_adapter": "files",
    "weights_sha256": "files",
    "attach_adapter": "apply",
    "apply_loras": "apply",
    "apply_loras_by_kind": "apply",
    "check_adapter_stages": "apply",
    "check_base": "apply",
    "merge_adapter": "apply",
    "merge_and_unload": "apply",
}

__all__ = ["LoraSpec", "parse_lora_spec", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
