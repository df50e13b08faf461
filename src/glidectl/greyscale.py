"""Greyscale images: the projection that makes an x0 prediction grey, and the test that tells
grey training data (whose models then recommend sampling with the projection)."""

from __future__ import annotations

import torch

# R, G and B of a grey training pixel may differ by this many of 255 levels: a greyscale
# picture saved as an RGB JPEG comes back with chroma rounding of a level or two
GREY_LEVELS = 2
GREY_NOTE = ("The training data are greyscale: samples of this run are drawn grey "
             "(glidectl sample --no-grey draws them in colour).")


def to_grey(images: torch.Tensor) -> torch.Tensor:
    """[N,3,H,W] → the nearest grey images: each pixel's R = G = B = their mean (the
    orthogonal projection onto grey, so a grey image is left as it is)."""
    return images.mean(dim=1, keepdim=True).expand_as(images).contiguous()


def all_grey(images: torch.Tensor) -> bool:
    """Whether every image of [N,3,H,W] in [−1, 1] is grey: at each pixel R, G and B within
    :data:`GREY_LEVELS` of 255 levels of one another."""
    spread = images.detach().amax(dim=1) - images.detach().amin(dim=1)
    return bool((spread <= GREY_LEVELS * 2 / 255 + 1e-6).all())
