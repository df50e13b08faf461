"""Preview grids: images in [-1, 1] → one captioned PNG per preview step."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from PIL import Image, PngImagePlugin


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """[N,3,H,W] in [-1,1] → PIL images (8-bit, rounded as GLIDE's notebook does)."""
    arr = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [Image.fromarray(a.permute(1, 2, 0).cpu().numpy()) for a in arr]


def make_grid(images: list[Image.Image], cols: int | None = None, pad: int = 2) -> Image.Image:
    """Tile equally sized images row-major with ``pad`` px white gaps."""
    n = len(images)
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    w, h = images[0].size
    grid = Image.new("RGB", (cols * w + (cols - 1) * pad, rows * h + (rows - 1) * pad), "white")
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        grid.paste(im, (c * (w + pad), r * (h + pad)))
    return grid


def save_png(image: Image.Image, path: Path, text: dict[str, str]) -> Path:
    """Write a PNG with ``text`` in tEXt chunks (the generation parameters)."""
    info = PngImagePlugin.PngInfo()
    for k, v in text.items():
        info.add_text(k, v)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    image.save(tmp, format="PNG", pnginfo=info)
    tmp.replace(path)
    return path


def preview_path(directory: Path, step: int) -> Path:
    return Path(directory) / f"step-{step:06d}.png"


def side_by_side(low_res: torch.Tensor, output: torch.Tensor,
                 reference: torch.Tensor | None) -> list[Image.Image]:
    """Upsampler previews: per sample, [nearest-upscaled input | output | reference]."""
    size = output.shape[-1]
    up = torch.nn.functional.interpolate(low_res.float(), size=(size, size), mode="nearest")
    cols = [up, output] + ([reference] if reference is not None else [])
    rows = []
    for i in range(output.shape[0]):
        row = torch.cat([c[i:i + 1].float().cpu() for c in cols], dim=3)
        rows.append(row)
    return to_pil(torch.cat(rows))

