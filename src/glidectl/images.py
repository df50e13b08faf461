"""Images as tensors in [−1, 1] and as PIL images; grids; PNGs with text chunks."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, PngImagePlugin

from .atomic import atomic_path

if TYPE_CHECKING:
    import torch


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """[N,3,H,W] in [−1, 1] → 8-bit RGB PIL images (rounded as GLIDE's notebook does)."""
    import torch

    arr = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [Image.fromarray(a.permute(1, 2, 0).cpu().numpy()) for a in arr]


def from_pil(image: Image.Image, size: int | None = None) -> torch.Tensor:
    """An RGB PIL image → [1,3,H,W] float in [−1, 1], bicubic-resized to ``size`` if given."""
    import numpy as np
    import torch

    image = image.convert("RGB")
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    arr = torch.from_numpy(np.asarray(image, dtype=np.float32).copy())
    return (arr.permute(2, 0, 1)[None] / 127.5 - 1.0).contiguous()


def known_mask_from_pil(mask: Image.Image, size: int | None = None) -> torch.Tensor:
    """An inpainting mask image (white = repaint, black = keep) → GLIDE's [1,1,H,W] mask
    with 1 on known (kept) pixels, nearest-resized to ``size`` if given."""
    import numpy as np
    import torch

    mask = mask.convert("L")
    if size is not None and mask.size != (size, size):
        mask = mask.resize((size, size), Image.Resampling.NEAREST)
    repaint = torch.from_numpy(np.asarray(mask, dtype=np.float32).copy()) >= 128
    return (~repaint).float()[None, None]


def make_grid(images: list[Image.Image], cols: int | None = None, pad: int = 2) -> Image.Image:
    """Tile equally sized images row-major (every image kept) with ``pad`` px white gaps."""
    n = len(images)
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    w, h = images[0].size
    grid = Image.new("RGB", (cols * w + (cols - 1) * pad, rows * h + (rows - 1) * pad), "white")
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        grid.paste(im, (c * (w + pad), r * (h + pad)))
    return grid


def save_png(image: Image.Image, path: str | Path, text: dict[str, str]) -> Path:
    """Write a PNG with ``text`` as tEXt/iTXt chunks (the generation parameters)."""
    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_itxt(key, value) if not value.isascii() else info.add_text(key, value)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", pnginfo=info)
    return Path(path)
