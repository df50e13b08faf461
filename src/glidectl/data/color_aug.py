"""kohya's ``color_aug``: a hue shift or a "gamma" on one draw in three, as kohya-ss
sd-scripts' ``AugHelper.color_aug`` (``library/train_util.py``) applies it to the resized
crop.

With probability 0.33 (``random() <= 0.33``), then one of two halves (``random() > 0.5``):

- a hue shift of ``uniform(-8, 8)`` in OpenCV's 8-bit hue units (0..179, so ±16°), made
  ``+180`` when negative and added modulo 180, the result truncated to 8 bits. kohya hands
  its RGB array to ``cv2.COLOR_BGR2HSV`` and back, so the channels are read in reverse
  order; the 8-bit conversions below follow OpenCV's ``RGB2HSV_b`` (fixed point, 12
  fractional bits) and ``HSV2RGB_b`` (``modules/imgproc/src/color_hsv.simd.hpp``), and
  give OpenCV 5.1's (x86-64 wheel) results on every 8-bit colour and HSV triple
  (``benchmarks/bench_color_aug.py``);
- else each 0..255 value raised to ``uniform(0.95, 1.05)`` (on the raw values, as kohya
  does, not on values scaled to 0..1), clipped to 0..255 and truncated to 8 bits.

Saturation and value are never jittered. Every draw comes from the sample's own ``rng``,
so a resumed epoch makes the same images.
"""

from __future__ import annotations

import random

import numpy as np
from PIL import Image

CHANCE = 0.33  # kohya's ``random.random() <= 0.33``
HUE_SHIFT = 8.0  # kohya's ``hue_shift_limit``, OpenCV hue units (degrees / 2)
GAMMA = (0.95, 1.05)
_SHIFT = 12  # OpenCV's hsv_shift: fixed-point fraction bits


def _tables() -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's ``sdiv_table`` and ``hdiv_table180`` (``saturate_cast<int>``: rounded)."""
    i = np.arange(256, dtype=np.float64)
    with np.errstate(divide="ignore"):
        sdiv = np.where(i > 0, np.rint((255 << _SHIFT) / i), 0)
        hdiv = np.where(i > 0, np.rint((180 << _SHIFT) / (6.0 * i)), 0)
    return sdiv.astype(np.int64), hdiv.astype(np.int64)


_SDIV, _HDIV = _tables()


def bgr_to_hsv8(arr: np.ndarray) -> np.ndarray:
    """OpenCV's 8-bit ``COLOR_BGR2HSV`` of an ``[H, W, 3]`` uint8 array (H in 0..180)."""
    b, g, r = (arr[..., i].astype(np.int64) for i in range(3))
    v = np.maximum(np.maximum(r, g), b)
    diff = v - np.minimum(np.minimum(r, g), b)
    s = (diff * _SDIV[v] + (1 << (_SHIFT - 1))) >> _SHIFT
    h = np.where(v == r, g - b, np.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
    h = (h * _HDIV[diff] + (1 << (_SHIFT - 1))) >> _SHIFT
    h = np.where(h < 0, h + 180, h)
    return np.stack([h, s, v], axis=-1).astype(np.uint8)


# OpenCV's sector table: which of (v, p, q, t) are b, g, r in each sixth of the hue circle
_SECTORS = np.array([[1, 3, 0], [1, 0, 2], [3, 0, 1], [0, 2, 1], [0, 1, 3], [2, 1, 0]])


def _one_minus(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``1 - a*b`` in float32 with one rounding, as the fused multiply-add the compiler makes
    of OpenCV's ``v_sub(one, v_mul(a, b))`` (the float32 product is exact in float64)."""
    return (1.0 - a.astype(np.float64) * b.astype(np.float64)).astype(np.float32)


def hsv8_to_bgr(hsv: np.ndarray) -> np.ndarray:
    """OpenCV's 8-bit ``COLOR_HSV2BGR`` as its vector path (``HSV2RGB_b`` with
    ``HSV2RGB_simd``) computes it, the path that converts every pixel of an image whose width
    is a multiple of the vector width (kohya's crops): float32 arithmetic, each channel
    truncated, not rounded, to 8 bits."""
    f32 = np.float32
    h = hsv[..., 0].astype(f32) * f32(6.0 / 180.0)
    s = hsv[..., 1].astype(f32) * f32(1.0 / 255.0)
    v = hsv[..., 2].astype(f32) * f32(1.0 / 255.0)
    whole = np.trunc(h)
    frac = h - whole
    sector = (whole - np.trunc(whole * f32(1.0 / 6.0)) * f32(6.0)).astype(np.int64)
    one = f32(1.0)
    tab = np.stack([v, v * (one - s), v * _one_minus(s, frac), v * _one_minus(s, one - frac)],
                   -1)
    bgr = np.take_along_axis(tab, _SECTORS[sector], axis=-1)
    return np.clip(np.trunc(bgr * f32(255.0)), 0, 255).astype(np.uint8)


def color_aug(img: Image.Image, rng: random.Random) -> Image.Image:
    """``img`` (RGB) after kohya's ``color_aug`` draw from ``rng`` (often unchanged)."""
    if rng.random() > CHANCE:
        return img
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    if rng.random() > 0.5:
        shift = rng.uniform(-HUE_SHIFT, HUE_SHIFT)
        if shift < 0:
            shift += 180
        hsv = bgr_to_hsv8(arr)  # kohya's RGB array read as BGR, as cv2 reads it
        hsv[..., 0] = ((hsv[..., 0] + shift) % 180).astype(np.uint8)
        out = hsv8_to_bgr(hsv)
    else:
        gamma = rng.uniform(*GAMMA)
        out = np.clip(arr.astype(np.float64) ** gamma, 0, 255).astype(np.uint8)
    return Image.fromarray(out, "RGB")
