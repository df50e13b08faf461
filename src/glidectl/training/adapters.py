"""Which parameters train and how the network is wrapped: the engine's hook for LoRA.

The engine asks an adapter three things: ``prepare(model)`` (freeze or wrap; returns the
module to train), ``trainable(model)`` (named parameters the optimizer and EMA see), and
``export_state(model)`` (the state_dict written as model.safetensors). An adapter may also
define ``save_checkpoint(model, step_dir, step, ema)`` and ``load_checkpoint(model, step_dir)``
to write/read its own weight files instead (LoRA writes adapter folders), and
``prior_model(model)``, a context in which the model predicts as the base model (LoRA:
adapters off), for OneTrainer's PRIOR_PREDICTION concepts. Full finetuning is
:class:`PartsAdapter`; a LoRA adapter implements the same protocol and is passed to
:func:`glidectl.training.engine.train` (see ``glidectl.lora.training``).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

# Parameter name prefixes of GLIDE's text transformer (OpenAI's Text2ImUNet names).
TEXT_PREFIXES = (
    "token_embedding", "positional_embedding", "padding_embedding",
    "transformer.", "final_ln.", "transformer_proj.",
)
PARTS = ("all", "unet", "text")


def is_text_param(name: str) -> bool:
    return name.startswith(TEXT_PREFIXES)


class ModelAdapter(Protocol):
    """The hook the engine uses to pick what trains (full finetune, parts, LoRA, ...)."""

    name: str

    def prepare(self, model: nn.Module) -> nn.Module: ...

    def trainable(self, model: nn.Module) -> list[tuple[str, nn.Parameter]]: ...

    def export_state(self, model: nn.Module) -> dict[str, torch.Tensor]: ...


class PartsAdapter:
    """Full finetuning of all of the network, the UNet only, or the text encoder only.

    "text" also trains every ``encoder_kv`` projection: they carry the text into the
    frozen UNet's attention, so text-only training would otherwise have no effect path
    that adapts to the new features.
    """

    def __init__(self, part: str = "all"):
        if part not in PARTS:
            raise ValueError(f"unknown trainable part {part!r}; use one of {', '.join(PARTS)}")
        self.part = part
        self.name = f"parts:{part}"

    def wants(self, name: str) -> bool:
        if self.part == "all":
            return True
        if self.part == "unet":
            return not is_text_param(name)
        return is_text_param(name) or ".encoder_kv." in f".{name}"

    def prepare(self, model: nn.Module) -> nn.Module:
        for name, param in model.named_parameters():
            param.requires_grad_(self.wants(name))
        return model

    def trainable(self, model: nn.Module) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    def export_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
