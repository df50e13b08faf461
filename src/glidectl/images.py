"""Images as tensors in [−1, 1] and as PIL images; grids; PNGs with text chunks."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from .atomic import atomic_path, new_path

if TYPE_CHECKING:
    import torch


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """[N,3,H,W] in [−1, 1] → 8-bit RGB PIL images (rounded as GLIDE's notebook does)."""
    import torch

    arr = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [Image.fromarray(a.permute(1, 2, 0).cpu().numpy()) for a in arr]


def centre_square(width: int, height: int) -> tuple[float, float, float, float]:
    """The largest centred square of a ``width``×``height`` image, as a PIL box."""
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    return (left, top, left + side, top + side)


def from_pil(image: Image.Image, size: int | None = None) -> torch.Tensor:
    """An RGB PIL image → [1,3,H,W] float in [−1, 1]; with ``size``, its centre square
    bicubic-resized to ``size``×``size``."""
    import numpy as np
    import torch

    image = image.convert("RGB")
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BICUBIC,
                             box=centre_square(*image.size))
    arr = torch.from_numpy(np.asarray(image, dtype=np.float32).copy())
    return (arr.permute(2, 0, 1)[None] / 127.5 - 1.0).contiguous()


def known_mask_from_pil(mask: Image.Image, size: int | None = None) -> torch.Tensor:
    """An inpainting mask image (white = repaint, black = keep) → GLIDE's [1,1,H,W] mask
    with 1 on known (kept) pixels; with ``size``, its centre square nearest-resized to
    ``size``×``size`` (the crop :func:`from_pil` takes of the image)."""
    import numpy as np
    import torch

    mask = mask.convert("L")
    if size is not None and mask.size != (size, size):
        mask = mask.resize((size, size), Image.Resampling.NEAREST, box=centre_square(*mask.size))
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


def save_png(image: Image.Image, path: str | Path, text: dict[str, str], *,
             replace: bool = True) -> Path:
    """Write a PNG with ``text`` as tEXt/iTXt chunks (the generation parameters);
    ``replace=False`` raises ``FileExistsError`` instead of replacing a file."""
    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_itxt(key, value) if not value.isascii() else info.add_text(key, value)
    with (atomic_path if replace else new_path)(path) as tmp:
        image.save(tmp, format="PNG", pnginfo=info)
    return Path(path)


def enlarge(image: Image.Image, min_size: int = 64) -> Image.Image:
    """Nearest-neighbour enlargement by a whole factor until the short side is ≥ ``min_size``
    (pixels stay sharp squares; a 16 px sample becomes 64 px)."""
    factor = max(1, math.ceil(min_size / min(image.size)))
    if factor == 1:
        return image
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


def _wrap(text: str, width_px: int, font: ImageFont.ImageFont, max_lines: int) -> list[str]:
    """Greedy word wrap to ``width_px``; the last line ends in "..." when text is left over."""
    words, lines, line = text.split(), [], ""
    for word in words:
        candidate = f"{line} {word}".strip()
        if font.getlength(candidate) <= width_px or not line:
            line = candidate
        else:
            lines.append(line)
            line = word
    if line:
        lines.append(line)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1].rstrip(".") + "..."
    for i, ln in enumerate(lines):  # a single word longer than the tile is cut
        while font.getlength(ln) > width_px and len(ln) > 4:
            ln = ln[:-4] + "..."
        lines[i] = ln
    return lines


def captioned_grid(images: list[Image.Image], captions: list[str], cols: int | None = None,
                   min_size: int = 64, max_lines: int = 3, pad: int = 4) -> Image.Image:
    """A grid a person can read: each tile enlarged (nearest) to ≥ ``min_size`` px and its
    caption printed under it (wrapped, at most ``max_lines`` lines)."""
    font = ImageFont.load_default()
    tiles = [enlarge(im.convert("RGB"), min_size) for im in images]
    w = max(t.width for t in tiles)
    line_h = int(font.getbbox("Ag")[3]) + 2
    text_h = line_h * max_lines + pad
    cells = []
    for tile, caption in zip(tiles, captions, strict=True):
        cell = Image.new("RGB", (w, tile.height + text_h), "white")
        cell.paste(tile, ((w - tile.width) // 2, 0))
        draw = ImageDraw.Draw(cell)
        for k, line in enumerate(_wrap(caption or "(empty caption)", w, font, max_lines)):
            draw.text((2, tile.height + pad // 2 + k * line_h), line, fill="black", font=font)
        cells.append(cell)
    h = max(c.height for c in cells)
    cells = [c if c.height == h else _pad_to(c, w, h) for c in cells]
    return make_grid(cells, cols=cols, pad=pad)


def _pad_to(image: Image.Image, w: int, h: int) -> Image.Image:
    out = Image.new("RGB", (w, h), "white")
    out.paste(image, (0, 0))
    return out
