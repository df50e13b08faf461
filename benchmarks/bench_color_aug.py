"""kohya's color_aug as glidectl applies it (``glidectl.data.color_aug``): the time of one
hue or gamma draw on a 64 px crop and, where OpenCV is importable (it is no dependency of
glidectl: ``pip install opencv-python-headless`` to check), how many pixels differ from
kohya's own calls (``cv2.cvtColor`` BGR2HSV, the hue shift, HSV2BGR) on every 8-bit
colour, every HSV triple and random 64 px images.

Usage: python benchmarks/bench_color_aug.py [--images N]
"""

from __future__ import annotations

import argparse
import random
import timeit

import numpy as np
from bench_args import positive_int
from PIL import Image


def kohya_hue(cv2, arr: np.ndarray, shift: float) -> np.ndarray:
    """kohya's hue branch of ``AugHelper.color_aug``, with OpenCV."""
    hsv = cv2.cvtColor(arr, cv2.COLOR_BGR2HSV)
    hsv[:, :, 0] = (hsv[:, :, 0] + shift) % 180
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def compare(cv2, images: int) -> None:
    from glidectl.data.color_aug import bgr_to_hsv8, hsv8_to_bgr

    every = np.arange(1 << 24, dtype=np.uint32)
    colours = np.stack([(every >> 16) & 255, (every >> 8) & 255, every & 255], -1)
    colours = colours.astype(np.uint8).reshape(4096, 4096, 3)
    differ = (bgr_to_hsv8(colours) != cv2.cvtColor(colours, cv2.COLOR_BGR2HSV)).any(-1)
    print(f"BGR2HSV: {int(differ.sum())} of {1 << 24} colours differ from OpenCV")
    h, s, v = np.meshgrid(np.arange(180), np.arange(256), np.arange(256), indexing="ij")
    triples = np.stack([h, s, v], -1).astype(np.uint8).reshape(180 * 256, 256, 3)
    differ = (hsv8_to_bgr(triples) != cv2.cvtColor(triples, cv2.COLOR_HSV2BGR)).any(-1)
    print(f"HSV2BGR: {int(differ.sum())} of {triples.size // 3} HSV triples differ from OpenCV "
          "(its vector path: rows of 256 pixels)")
    bad = 0
    for seed in range(images):
        arr = np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        shift = random.Random(seed).uniform(-8, 8)
        shift += 180 if shift < 0 else 0
        ours = bgr_to_hsv8(arr)
        ours[..., 0] = ((ours[..., 0] + shift) % 180).astype(np.uint8)
        bad += int((hsv8_to_bgr(ours) != kohya_hue(cv2, arr, shift)).any(-1).sum())
    print(f"hue branch: {bad} of {images * 64 * 64} pixels of {images} random 64 px images "
          "differ from kohya's")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--images", type=positive_int, default=100,
                        help="Random images to compare.")
    args = parser.parse_args()
    from glidectl.data.color_aug import color_aug

    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8))
    for name, wanted in (("hue", True), ("gamma", False)):
        seed = next(i for i in range(1000) if (lambda r: r.random() <= 0.33 and (
            r.random() > 0.5) is wanted)(random.Random(i)))
        seconds = timeit.timeit(lambda s=seed: color_aug(img, random.Random(s)), number=200)
        print(f"{name} draw on a 64 px crop: {seconds / 200 * 1e6:.0f} µs")
    try:
        import cv2
    except ImportError:
        print("OpenCV is not installed: no comparison with kohya's calls.")
        return
    compare(cv2, args.images)


if __name__ == "__main__":
    main()
