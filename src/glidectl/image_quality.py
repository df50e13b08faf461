"""Full-reference image quality: PSNR and SSIM of images against their references.

Both take [N,3,H,W] tensors with values in [0, ``data_range``] and give one value per image.
SSIM is Wang et al. 2004 ("Image quality assessment: from error visibility to structural
similarity"): an 11×11 Gaussian window of σ 1.5, K1 = 0.01, K2 = 0.03, population
(co)variances, the map averaged over the positions where the window fits (no padding), on
each RGB channel and the channels averaged (as scikit-image's ``channel_axis`` with
``gaussian_weights=True, use_sample_covariance=False``; its default sample covariance gives
values up to about 1e-4 apart).
"""

from __future__ import annotations

import torch

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _check(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"images and references must both be [N,C,H,W] of one shape, got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    return x.double(), y.double()


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image: 10·log10(range² / MSE); ``inf`` for an
    image equal to its reference."""
    x, y = _check(x, y)
    mse = (x - y).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(data_range ** 2 / mse)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """The normalised [size, size] Gaussian window SSIM weighs each position's pixels by."""
    k = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(k ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Mean structural similarity per image (1 for an image equal to its reference), per
    channel and the channels averaged; images must be at least 11 px on each side."""
    x, y = _check(x, y)
    if min(x.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW} px a side, got "
                         f"{tuple(x.shape[-2:])}")
    channels = x.shape[1]
    w = gaussian_window().to(x.device).expand(channels, 1, SSIM_WINDOW, SSIM_WINDOW)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(t, w, groups=channels)

    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    ssim_map = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return ssim_map.flatten(2).mean(2).mean(1)
