"""Guidance tools beyond the scale: a σ interval, rescaling, dynamic thresholding of x0.

All act on the denoiser's predictions (:class:`~glidectl.samplers.denoiser.GlideDenoiser`)
and are off by default.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import GlidectlError


def check_guidance_tools(interval: Sequence[float] | None, rescale: float,
                         dynamic_threshold: float | None) -> tuple[float, float] | None:
    """Validate the three settings (one sentence per mistake); the interval as a tuple."""
    if interval is not None:
        if len(interval) != 2 or not 0 <= float(interval[0]) < float(interval[1]):
            raise GlidectlError(f"The guidance interval must be LO,HI with 0 <= LO < HI (σ "
                                f"values), got {tuple(interval)!r}.")
        interval = (float(interval[0]), float(interval[1]))
    if not 0 <= rescale <= 1:
        raise GlidectlError(f"The guidance rescale φ must be between 0 and 1, got {rescale!r}.")
    if dynamic_threshold is not None and not 50 <= dynamic_threshold <= 100:
        raise GlidectlError("The dynamic-threshold percentile must be between 50 and 100 "
                            f"(Imagen uses 99.5), got {dynamic_threshold!r}.")
    return interval


def parse_interval(text: str) -> tuple[float, float]:
    """``"LO,HI"`` → (lo, hi), for the command line."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise GlidectlError(f"--guidance-interval takes two σ values LO,HI such as 0.3,5, "
                            f"got {text!r}.") from None
    return lo, hi


def in_interval(sigma: float, interval: tuple[float, float] | None) -> bool:
    """Whether guidance applies at σ (Kynkäänniemi et al. 2024, "Applying Guidance in a
    Limited Interval Improves Sample and Distribution Quality in Diffusion Models")."""
    return interval is None or interval[0] <= sigma <= interval[1]


def rescale_guidance(guided: torch.Tensor, cond: torch.Tensor, phi: float) -> torch.Tensor:
    """Lin et al. 2024 ("Common Diffusion Noise Schedules and Sample Steps are Flawed", §3.4):
    scale each guided x0 to its conditional prediction's standard deviation, mixed by φ."""
    dims = tuple(range(1, guided.ndim))
    factor = cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True).clamp_min(
        1e-12)
    return guided * (phi * factor + (1 - phi))


def dynamic_threshold(x0: torch.Tensor, percentile: float) -> torch.Tensor:
    """Imagen's dynamic thresholding (Saharia et al. 2022, §2.3): s = the percentile of |x0|
    per image, at least 1; x0 is clipped to [−s, s] and divided by s."""
    flat = x0.reshape(len(x0), -1).abs()
    s = torch.quantile(flat.float(), percentile / 100, dim=1).to(x0.dtype).clamp_min(1.0)
    s = s.reshape(-1, *([1] * (x0.ndim - 1)))
    return torch.maximum(torch.minimum(x0, s), -s) / s
