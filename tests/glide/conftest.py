"""Small GLIDE models for fast network tests."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from glidectl.glide import ModelOptions


def tiny(kind: str = "base", **changes) -> ModelOptions:
    """The golden tiny architecture (32 px, 32 channels) with the byte tokenizer."""
    values = dict(
        image_size=32, num_channels=32, num_res_blocks=1, channel_mult="1,2",
        attention_resolutions="16", num_head_channels=16, text_ctx=8, xf_width=32,
        xf_layers=2, xf_heads=2, dropout=0.0, tokenizer="byte", n_vocab=257, kind=kind,
    )
    values.update(changes)
    return ModelOptions.from_dict(values)


def tiny_inputs(options: ModelOptions, batch: int = 2, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    s = options.image_size
    tokens = torch.randint(0, options.n_vocab - 1, (batch, options.text_ctx), generator=g)
    mask = torch.ones(batch, options.text_ctx, dtype=torch.bool)
    mask[0, options.text_ctx // 2:] = False
    kw = dict(
        x=torch.randn(batch, 3, s, s, generator=g),
        timesteps=torch.tensor([10, 900][:batch] + [500] * max(0, batch - 2)),
        tokens=tokens,
        mask=mask,
    )
    if options.super_res:
        lr = options.low_res_size
        kw["low_res"] = torch.rand(batch, 3, lr, lr, generator=g) * 2 - 1
    if options.inpaint:
        kw["inpaint_image"] = torch.rand(batch, 3, s, s, generator=g) * 2 - 1
        kw["inpaint_mask"] = (torch.rand(batch, 1, s, s, generator=g) > 0.5).float()
    return kw


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Redraw every parameter as the golden README does (zero-init convs would hide bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if "embedding" in name:
                p.copy_(0.5 * noise)
            elif p.ndim >= 2:
                p.copy_(noise / p[0].numel() ** 0.5)
            elif name.endswith("weight"):
                p.copy_(1 + 0.1 * noise)
            else:
                p.copy_(0.1 * noise)
    return model



@pytest.fixture
def kit() -> SimpleNamespace:
    """Helpers for tests: ``kit.tiny(kind)``, ``kit.inputs(options)``, ``kit.randomize(m)``."""
    return SimpleNamespace(tiny=tiny, inputs=tiny_inputs, randomize=randomize)
