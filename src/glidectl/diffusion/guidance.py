"""Classifier-free guidance as in GLIDE's text2im notebook.

The batch is [cond rows..., uncond rows...] (uncond = empty caption). The first half of x_t is
duplicated so both halves see the same image, the model runs ONCE over all rows, and the
guided ε = ε_uncond + s·(ε_cond − ε_uncond) is written into both halves; the learned-variance
channels are kept row by row (cond rows keep theirs, uncond rows theirs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

GuidedFn = Callable[..., torch.Tensor]


def guide_output(model_output: torch.Tensor, scale: float, eps_channels: int = 3) -> torch.Tensor:
    """Apply guidance to a ``[2N, 2C, ...]`` output of a [cond, uncond] batch."""
    if model_output.shape[0] % 2:
        raise ValueError("classifier-free guidance needs an even batch: [cond rows, uncond rows]")
    eps, rest = model_output[:, :eps_channels], model_output[:, eps_channels:]
    cond, uncond = eps.chunk(2)
    guided = uncond + scale * (cond - uncond)
    return torch.cat([torch.cat([guided, guided]), rest], dim=1)


def classifier_free_guidance(
    model_fn: GuidedFn, scale: float, eps_channels: int = 3
) -> GuidedFn:
    """Wrap ``model_fn(x_t, t, *args, **kwargs)`` (whose conditioning kwargs already hold the
    [cond, uncond] rows) so one call returns guided outputs for the whole batch."""

    def guided(x_t: torch.Tensor, t: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if x_t.shape[0] % 2:
            raise ValueError(
                "classifier-free guidance needs an even batch: [cond rows, uncond rows]"
            )
        half = x_t[: x_t.shape[0] // 2]
        out = model_fn(torch.cat([half, half]), t, *args, **kwargs)
        return guide_output(out, scale, eps_channels)

    return guided
