"""Diffusion arithmetic only tests need (the library never recovers ε from x0)."""

from __future__ import annotations

import torch


def eps_from_xstart(diffusion, xt: torch.Tensor, t: torch.Tensor,
                    x0: torch.Tensor) -> torch.Tensor:
    """ε with ``xt = √ᾱ_t·x0 + √(1−ᾱ_t)·ε`` (the inverse of ``predict_xstart_from_eps``)."""
    ac = torch.from_numpy(diffusion.alphas_cumprod)[t.long().cpu()].to(xt.device)
    ac = ac.to(torch.promote_types(xt.dtype, torch.float32)).reshape(-1, *[1] * (xt.ndim - 1))
    return (xt / ac.sqrt() - x0) / (1.0 / ac - 1.0).sqrt()
