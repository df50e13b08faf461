"""Images as tensors in [−1, 1] and as PIL images; grids; PNGs with text chunks."""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from .atomic import atomic_path, new_path
from .errors import GlidectlError, got, takes

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


def from_pil(image: Image.Image, size: int | None = None,
             resample: Image.Resampling = Image.Resampling.BICUBIC) -> torch.Tensor:
    """An RGB PIL image → [1,3,H,W] float in [−1, 1]; with ``size``, its centre square
    resized to ``size``×``size`` with ``resample`` (default bicubic)."""
    import numpy as np
    import torch

    image = image.convert("RGB")
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), resample, box=centre_square(*image.size))
    arr = torch.from_numpy(np.asarray(image, dtype=np.float32).copy())
    return (arr.permute(2, 0, 1)[None] / 127.5 - 1.0).contiguous()


def known_mask_from_pil(mask: Image.Image, size: int | None = None) -> torch.Tensor:
    """An inpainting mask image (white = repaint, black = keep) → GLIDE's [1,1,H,W] mask
    with 1 on known (kept) pixels; with ``size``, its centre square nearest-resized to
    ``size``×``size`` (the crop :func:`from_pil` takes of the image). A mask with
    transparency is read by its alpha alone, as OpenAI's image-edit masks are: transparent
    (alpha below 128) = repaint, opaque = keep, whatever its colour (such a mask is often
    the photo itself with a transparent hole); one without, by its brightness (16-bit
    levels scaled to 8 bits)."""
    import numpy as np
    import torch

    from .data.images import to_rgb

    alpha = _alpha(mask)
    if alpha is not None:  # repaint where transparent: white (255) there, black elsewhere
        mask = alpha.point(lambda a: 255 if a < 128 else 0)
    else:
        mask = to_rgb(mask)[0].convert("L")
    if size is not None and mask.size != (size, size):
        mask = mask.resize((size, size), Image.Resampling.NEAREST, box=centre_square(*mask.size))
    repaint = torch.from_numpy(np.asarray(mask, dtype=np.float32).copy()) >= 128
    return (~repaint).float()[None, None]


def _alpha(image: Image.Image) -> Image.Image | None:
    """The alpha channel of an image with a transparent pixel (alpha below 128) somewhere,
    else None: a black and white mask with a few soft-edged pixels is read by its colour."""
    if image.mode not in ("RGBA", "LA", "PA", "RGBa", "La") and "transparency" not in image.info:
        return None
    alpha = image.convert("RGBA").getchannel("A")
    return alpha if alpha.getextrema()[0] < 128 else None


def make_grid(images: list[Image.Image], cols: int | None = None, pad: int = 2) -> Image.Image:
    """Tile equally sized images row-major (every image kept) with ``pad`` px white gaps, in
    ``cols`` columns (default: √n rounded up; more columns than images: one row)."""
    images = list(images) if isinstance(images, Iterable) else images
    if not images or not isinstance(images, list) or not all(
            isinstance(im, Image.Image) for im in images):
        raise GlidectlError("make_grid() takes a list of one or more PIL images (generate()'s "
                            f"default output), got {images!r:.60}.")
    for keyword, value, least in (("cols", cols, 1), ("pad", pad, 0)):
        if value is not None and (isinstance(value, bool) or not isinstance(
                value, numbers.Integral) or value < least):
            raise takes(f"make_grid({keyword}=...)", f"a whole number >= {least}"
                        f"{' or None' if keyword == 'cols' else ''}", value)
    n = len(images)
    cols = min(cols or math.ceil(math.sqrt(n)), n)  # cols=10**9: no canvas of empty columns
    rows = math.ceil(n / cols)
    w, h = images[0].size
    if odd := next((i for i, im in enumerate(images) if im.size != (w, h)), None):
        raise GlidectlError(f"make_grid() tiles images of one size, but image {odd + 1} is "
                            f"{images[odd].width}x{images[odd].height} and image 1 "
                            f"{w}x{h}; resize them to one size first.")
    grid = Image.new("RGB", (cols * w + (cols - 1) * pad, rows * h + (rows - 1) * pad), "white")
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        grid.paste(im, (c * (w + pad), r * (h + pad)))
    return grid


def save_png(image: Image.Image, path: str | Path, text: dict[str, str], *,
             replace: bool = True) -> Path:
    """Write a PNG with ``text`` as tEXt/iTXt chunks (the generation parameters);
    ``replace=False`` raises ``FileExistsError`` instead of replacing a file."""
    if not isinstance(image, Image.Image):
        raise GlidectlError(f"save_png() takes a PIL image (generate()'s default output), got "
                            f"{type(image).__name__}; pass output='pil' to generate().")
    if not isinstance(path, str | os.PathLike):
        raise takes("save_png()", "a file's path as its path", path)
    if not isinstance(text, Mapping):
        raise takes("save_png()", "a dict of text as its text (image.info; {} for none)", text)
    for key, value in text.items():
        if not (isinstance(key, str) and isinstance(value, str)):
            raise GlidectlError(f"save_png(): text[{key!r:.40}] is {got(value)}, but PNG text "
                                "chunks hold text; pass text values as str.")
    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_itxt(key, value) if not value.isascii() else info.add_text(key, value)
    with (atomic_path if replace else new_path)(path) as tmp:
        image.save(tmp, format="PNG", pnginfo=info)
    return Path(path)


def png_text(params: Mapping[str, Any]) -> dict[str, str]:
    """The PNG text chunks of an image's generation ``params`` (``sample`` and the web UI
    write the same): each one set under its name (lists and dicts as JSON, as
    ``parameters`` holds them), and all of them as JSON in ``parameters``."""
    text = {k: json.dumps(v) if isinstance(v, (dict, list)) else str(v)
            for k, v in params.items() if v is not None}
    text["parameters"] = json.dumps(params)
    return text


def enlarge(image: Image.Image, min_size: int = 64) -> Image.Image:
    """Nearest-neighbour enlargement by a whole factor until the short side is ≥ ``min_size``
    (pixels stay sharp squares; a 16 px sample becomes 64 px)."""
    size = _enlarged_size(image.size, min_size)
    return image if size == image.size else image.resize(size, Image.Resampling.NEAREST)


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
    return [_cut(ln, width_px, font) for ln in lines]  # a word longer than the tile is cut


def _cut(line: str, width_px: int, font: ImageFont.ImageFont) -> str:
    """``line``, or its longest start (one character at least) that fits ``width_px`` with
    "..." after it: a binary search, as a 5,000-character caption word took minutes measured
    one character shorter at a time."""
    if font.getlength(line) <= width_px or len(line) <= 4:
        return line
    lo, hi = 1, len(line) - 4
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if font.getlength(line[:mid] + "...") <= width_px:
            lo = mid
        else:
            hi = mid - 1
    return line[:lo] + "..."


def captioned_grid(images: list[Image.Image], captions: list[str], cols: int | None = None,
                   min_size: int = 64, max_lines: int = 3, pad: int = 4) -> Image.Image:
    """A grid a person can read: each tile enlarged (nearest) to ≥ ``min_size`` px and its
    caption printed under it (wrapped, at most ``max_lines`` lines). Each cell is drawn
    straight into the grid, so building it holds the grid and one cell, not a copy of every
    image (eval's grid of thousands)."""
    font = ImageFont.load_default()
    sizes = [_enlarged_size(im.size, min_size) for im in images]
    w = max(width for width, _ in sizes)
    line_h = int(font.getbbox("Ag")[3]) + 2
    text_h = line_h * max_lines + pad
    h = max(height for _, height in sizes) + text_h
    cols = cols or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    grid = Image.new("RGB", (cols * w + (cols - 1) * pad, rows * h + (rows - 1) * pad), "white")
    for i, (image, caption) in enumerate(zip(images, captions, strict=True)):
        r, c = divmod(i, cols)
        x, y = c * (w + pad), r * (h + pad)
        tile = enlarge(image.convert("RGB"), min_size)
        grid.paste(tile, (x + (w - tile.width) // 2, y))
        text = Image.new("RGB", (w, text_h), "white")  # the caption, cut at its cell's edges
        draw = ImageDraw.Draw(text)
        for k, line in enumerate(_wrap(caption or "(empty caption)", w, font, max_lines)):
            draw.text((2, pad // 2 + k * line_h), line, fill="black", font=font)
        grid.paste(text, (x, y + tile.height))
    return grid


def _enlarged_size(size: tuple[int, int], min_size: int) -> tuple[int, int]:
    """The size :func:`enlarge` gives an image of ``size``."""
    factor = max(1, math.ceil(min_size / min(size)))
    return size[0] * factor, size[1] * factor
