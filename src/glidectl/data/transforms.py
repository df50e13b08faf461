"""Image and text transforms run inside the DataLoader workers.

Images are cropped and resized in one PIL call (crop box in source pixels, antialiased
bicubic); upsampler pairs take the low-res image from the very same high-res crop.
"""

from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFilter

RESAMPLE = {"box": Image.Resampling.BOX, "bicubic": Image.Resampling.BICUBIC}


@dataclass
class ImageTransform:
    """Short side to ``size``, then a random (train) or centre crop; aspect ratio kept.

    ``crop_scale=(lo, hi)`` takes a random square crop covering ``lo..hi`` of the largest
    square first (random-resized-crop without distortion); ``(1, 1)`` disables it.
    """

    size: int
    random_crop: bool = True
    crop_scale: tuple[float, float] = (1.0, 1.0)
    flip: bool = False

    def draft_size(self) -> int:
        """Smallest short side a JPEG may be drafted to and still fill the crop."""
        lo = max(min(self.crop_scale), 1e-3)
        return math.ceil(self.size / math.sqrt(min(lo, 1.0)))

    def crop_box(self, width: int, height: int, rng: random.Random) -> tuple[float, ...]:
        side = float(min(width, height))
        lo, hi = sorted(float(s) for s in self.crop_scale)
        if self.random_crop and (lo, hi) != (1.0, 1.0):
            side *= math.sqrt(rng.uniform(max(lo, 1e-3), min(hi, 1.0)))
        if self.random_crop:
            left, top = rng.uniform(0, width - side), rng.uniform(0, height - side)
        else:
            left, top = (width - side) / 2, (height - side) / 2
        return (left, top, left + side, top + side)

    def __call__(self, img: Image.Image, rng: random.Random) -> Image.Image:
        box = self.crop_box(img.width, img.height, rng)
        out = img.resize(
            (self.size, self.size), Image.Resampling.BICUBIC, box=box, reducing_gap=3.0
        )
        if self.flip and rng.random() < 0.5:
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return out


@dataclass
class LowResTransform:
    """The upsampler's input: the high-res crop downscaled, optionally degraded.

    Blur radius ~ U(0, blur), JPEG quality ~ U(jpeg_quality, 95) and Gaussian noise with
    std ~ U(0, noise) in [-1, 1] units; the result stays 8-bit like GLIDE's sampled 64 px.
    """

    size: int
    resample: str = "bicubic"
    blur: float = 0.0
    jpeg_quality: int = 0
    noise: float = 0.0

    def __call__(self, high: Image.Image, rng: random.Random) -> Image.Image:
        low = high.resize((self.size, self.size), RESAMPLE[self.resample])
        if self.blur > 0:
            low = low.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, self.blur)))
        if self.jpeg_quality > 0:
            buf = io.BytesIO()
            low.save(buf, "JPEG", quality=rng.randint(min(self.jpeg_quality, 95), 95))
            low = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
        if self.noise > 0:
            std = rng.uniform(0.0, self.noise) * 127.5
            arr = np.asarray(low, dtype=np.float32)
            arr = arr + np.random.default_rng(rng.getrandbits(32)).normal(0, std, arr.shape)
            low = Image.fromarray(arr.round().clip(0, 255).astype(np.uint8), "RGB")
        return low


def to_tensor(img: Image.Image) -> torch.Tensor:
    """8-bit RGB PIL image → float ``[3, H, W]`` in [-1, 1]."""
    arr = np.asarray(img.convert("RGB") if img.mode != "RGB" else img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


class TextEncoder:
    """Caption → (tokens, mask) with caption dropout; picklable for spawned workers."""

    def __init__(self, tokenizer: Any, ctx: int, uncond_p: float = 0.0) -> None:
        self.tokenizer = tokenizer
        self.ctx = int(ctx)
        self.uncond_p = float(uncond_p)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        tok = self.tokenizer
        if not isinstance(tok, str) and getattr(tok, "name", None) == "gpt2":
            source = getattr(tok, "source", "")
            state["tokenizer"] = ("gpt2", "" if source.startswith("tiktoken:") else source)
        return state

    def _tok(self) -> Any:
        if isinstance(self.tokenizer, (str, tuple)):
            from ..tokenizer import get_tokenizer

            name, vocab = (self.tokenizer, "") if isinstance(self.tokenizer, str) else (
                self.tokenizer
            )
            self.tokenizer = get_tokenizer(name, vocab or None)
        return self.tokenizer

    def count(self, caption: str) -> int:
        return self._tok().count(caption)

    def __call__(
        self, caption: str, rng: random.Random
    ) -> tuple[torch.Tensor, torch.Tensor, str]:
        if self.uncond_p > 0 and rng.random() < self.uncond_p:
            caption = ""
        return (*self.encode(caption), caption)

    def encode(self, caption: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The tokens and mask of ``caption``, without dropout."""
        tok = self._tok()
        ids = tok.encode(caption) if caption else []
        tokens, mask = tok.padded_tokens_and_mask(ids, self.ctx)
        return (torch.from_numpy(np.asarray(tokens, dtype=np.int64)),
                torch.from_numpy(np.asarray(mask, dtype=np.bool_)))
