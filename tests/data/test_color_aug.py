"""kohya's color_aug: one draw in three shifts the hue (±8 OpenCV units, read as BGR) or
raises the raw 0..255 values to a gamma in [0.95, 1.05]; the rest are left alone."""

from __future__ import annotations

import colorsys
import random

import numpy as np
from PIL import Image

from glidectl.data.color_aug import bgr_to_hsv8, color_aug


def vivid(size: int = 24, seed: int = 0) -> Image.Image:
    """Saturated pixels of every hue (one channel full, one low)."""
    arr = np.random.default_rng(seed).integers(0, 256, (size, size, 3))
    rows = np.arange(size * size)
    flat = arr.reshape(-1, 3)
    flat[rows, flat.argmax(1)] = 255
    flat[rows, flat.argmin(1)] //= 4
    return Image.fromarray(arr.astype(np.uint8), "RGB")


def _hue_shift_degrees(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Per saturated, bright pixel: how far its hue turned, in degrees (-180..180)."""
    out = []
    for a, b in zip(before.reshape(-1, 3) / 255.0, after.reshape(-1, 3) / 255.0, strict=True):
        h0, s0, v0 = colorsys.rgb_to_hsv(*a)
        if s0 > 0.5 and v0 > 0.3:
            out.append((colorsys.rgb_to_hsv(*b)[0] - h0) * 360)
    turned = np.asarray(out)
    return (turned + 180) % 360 - 180


def test_a_third_of_draws_shift_the_hue_or_apply_kohyas_gamma():
    img = vivid()
    arr = np.asarray(img)
    changed, branches = 0, {"hue": 0, "gamma": 0}
    for i in range(240):
        out = color_aug(img, random.Random(i))
        replay = random.Random(i)  # kohya's draws, in kohya's order
        if replay.random() > 0.33:
            assert out is img
            continue
        changed += 1
        got = np.asarray(out)
        if replay.random() > 0.5:
            branches["hue"] += 1
            shift = replay.uniform(-8, 8)  # OpenCV hue units: 2 degrees each
            # kohya hands RGB to COLOR_BGR2HSV: a +shift there turns the RGB hue backwards
            turned = _hue_shift_degrees(arr, got)
            assert len(turned) > 50 and np.all(np.abs(turned + 2 * shift) <= 5), shift
        else:
            branches["gamma"] += 1
            gamma = replay.uniform(0.95, 1.05)
            expected = np.clip(arr.astype(np.float64) ** gamma, 0, 255).astype(np.uint8)
            assert np.array_equal(got, expected)
    assert 0.26 < changed / 240 < 0.40
    assert min(branches.values()) > 20


def test_hsv_follows_opencvs_8_bit_conversion():
    """OpenCV's fixed-point BGR2HSV: H in 0..179 (degrees / 2), S and V in 0..255; the
    channels are read as B, G, R."""
    pixels = np.array([[[0, 0, 255], [255, 0, 0], [0, 255, 0], [128, 128, 128],
                        [10, 200, 30]]], dtype=np.uint8)
    hsv = bgr_to_hsv8(pixels)[0].astype(int)
    for (b, g, r), (h, s, v) in zip(pixels[0] / 255.0, hsv, strict=True):
        h0, s0, v0 = colorsys.rgb_to_hsv(r, g, b)
        assert abs(h - h0 * 180) <= 0.5 or abs(h - h0 * 180) >= 179.5
        assert abs(s - s0 * 255) <= 0.5 and abs(v - v0 * 255) <= 0.5
