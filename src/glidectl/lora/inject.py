"""Putting trainable LoRA adapters into a GLIDE network."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..config import LoraConfig
from ..errors import GlidectlError
from .files import require_peft
from .targets import check_targets, resolve_targets

ADAPTER_NAME = "default"


def effective_scale(rank: int, alpha: float, rslora: bool = False) -> float:
    """The factor on B·A: alpha/r, or alpha/sqrt(r) with rank-stabilised LoRA."""
    return alpha / math.sqrt(rank) if rslora else alpha / rank


def check_lora_config(cfg: LoraConfig) -> None:
    """Raise GlidectlError for values no adapter can be built from."""
    if cfg.rank < 1:
        raise GlidectlError(f"lora.rank must be >= 1, got {cfg.rank}.")
    if cfg.alpha <= 0:
        raise GlidectlError(f"lora.alpha must be > 0, got {cfg.alpha}.")
    if not 0.0 <= cfg.dropout < 1.0:
        raise GlidectlError(f"lora.dropout must be in [0, 1), got {cfg.dropout}.")
    if not cfg.targets and not cfg.patterns:
        raise GlidectlError("LoRA needs lora.targets (attention, mlp, conv, all) or lora.patterns.")
    check_targets(cfg.targets, cfg.patterns)


def peft_config(cfg: LoraConfig, target_names: list[str]) -> Any:
    """peft's LoraConfig for exactly these module names."""
    from peft import LoraConfig as PeftLoraConfig

    return PeftLoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        use_rslora=cfg.rslora,
        target_modules=list(target_names),
        bias="none",
        init_lora_weights=True,
    )


def lora_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The adapter weights (``...lora_A...`` / ``...lora_B...``) of a LoRA-injected model."""
    return [(n, p) for n, p in model.named_parameters() if ".lora_A." in n or ".lora_B." in n]


def inject_lora(model: nn.Module, cfg: LoraConfig, adapter_name: str = ADAPTER_NAME) -> list[str]:
    """Wrap the selected modules with fresh LoRA layers (B = 0, so outputs are unchanged),
    freeze everything else and keep the adapters in float32. Returns the adapted names."""
    require_peft()
    from peft import inject_adapter_in_model

    check_lora_config(cfg)
    names = resolve_targets(model, cfg.targets, cfg.patterns)
    inject_adapter_in_model(peft_config(cfg, names), model, adapter_name=adapter_name)
    for p in model.parameters():
        p.requires_grad_(False)
    for _, p in lora_parameters(model):
        p.data = p.data.float()  # fp32 master copies even when the base body runs in fp16
        p.requires_grad_(True)
    return names


@contextmanager
def adapters_off(model: nn.Module) -> Iterator[nn.Module]:
    """The base model inside the block: every LoRA layer of ``model`` bypassed (peft's
    ``BaseTunerLayer.enable_adapters(False)``; OneTrainer's ``BaseModelSetup.prior_model``
    unhooks its LoRA modules the same way), then on again with each adapter weight's
    ``requires_grad`` as it was (peft's switch resets it)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    grads = [(p, p.requires_grad) for _, p in lora_parameters(model)]
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield model
    finally:
        for layer in layers:
            layer.enable_adapters(True)
        for p, wanted in grads:
            p.requires_grad_(wanted)


@dataclass
class LoraSummary:
    modules: int
    trainable: int
    total: int
    scale: float

    def line(self) -> str:
        pct = 100.0 * self.trainable / max(self.total, 1)
        return (
            f"LoRA: {self.modules} modules, {self.trainable:,} trainable parameters "
            f"({pct:.2f}% of {self.total:,}), effective scale {self.scale:g}"
        )


def lora_summary(model: nn.Module, cfg: LoraConfig, modules: int) -> LoraSummary:
    """Counts printed at the start of a LoRA run."""
    trainable = sum(p.numel() for _, p in lora_parameters(model))
    total = sum(p.numel() for p in model.parameters())
    return LoraSummary(modules, trainable, total, effective_scale(cfg.rank, cfg.alpha, cfg.rslora))
