"""Demo data generated on the fly, and a scorer for whether a picture follows its caption.

``demo:shapes``: one large, roughly centred shape (circle, square, triangle) in one of six
strongly distinct colours on a white or black background, captioned "a red circle on a
white background". ``demo:colors``: the whole picture one colour, "a plain red picture".
Sample ``i`` is always the same picture; classes cycle so any window is balanced.
"""

from __future__ import annotations

import colorsys
import random
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..errors import GlidectlError

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "yellow": (240, 215, 25),
    "green": (35, 175, 55),
    "cyan": (25, 200, 225),
    "blue": (35, 65, 225),
    "purple": (155, 45, 215),
}
SHAPES = ("circle", "square", "triangle")
BACKGROUNDS: dict[str, tuple[int, int, int]] = {"white": (255, 255, 255), "black": (0, 0, 0)}
DEMOS = ("shapes", "colors")
# (fill ratio of the bounding box, centroid height within it) of each ideal shape.
_SHAPE_PROTOTYPES = {"square": (1.0, 0.5), "circle": (0.785, 0.5),
                     "triangle": (0.5, 2 / 3)}


@dataclass(frozen=True)
class DemoSample:
    """One generated picture with what is in it."""

    key: str
    image: Image.Image
    caption: str
    colour: str
    shape: str | None
    background: str


def check_demo_name(name: str) -> str:
    if name not in DEMOS:
        import difflib

        close = difflib.get_close_matches(name, DEMOS, n=1)
        hint = f" Did you mean 'demo:{close[0]}'?" if close else ""
        raise GlidectlError(
            f"Unknown demo dataset 'demo:{name}'.{hint} Available: "
            + ", ".join(f"demo:{d}" for d in DEMOS) + "."
        )
    return name


def demo_classes(name: str) -> list[tuple[str, str | None, str]]:
    """All (colour, shape, background) classes of a demo, in generation order."""
    shapes: tuple[str | None, ...] = SHAPES if name == "shapes" else (None,)
    return [(c, s, b) for b in BACKGROUNDS for s in shapes for c in COLOURS]


def caption_for(colour: str, shape: str | None, background: str) -> str:
    if shape is None:
        return f"a plain {colour} picture"
    return f"a {colour} {shape} on a {background} background"


def make_demo_sample(name: str, index: int, size: int = 64) -> DemoSample:
    """The ``index``-th picture of ``demo:<name>`` at ``size`` pixels (deterministic)."""
    classes = demo_classes(check_demo_name(name))
    colour, shape, background = classes[index % len(classes)]
    rng = random.Random(f"glidectl-demo:{name}:{index}")
    if shape is None:
        image = Image.new("RGB", (size, size), COLOURS[colour])
    else:
        image = _draw_shape(shape, COLOURS[colour], BACKGROUNDS[background], size, rng)
    return DemoSample(
        f"{name}-{index:06d}", image, caption_for(colour, shape, background),
        colour, shape, background,
    )


def _draw_shape(
    shape: str, fill: tuple[int, int, int], bg: tuple[int, int, int], size: int,
    rng: random.Random,
) -> Image.Image:
    scale = 4  # draw big, then box-downsample for clean anti-aliased edges
    big = size * scale
    side = rng.uniform(0.5, 0.7) * big
    cx = big / 2 + rng.uniform(-0.08, 0.08) * big
    cy = big / 2 + rng.uniform(-0.08, 0.08) * big
    left, top = cx - side / 2, cy - side / 2
    left = min(max(left, 0.04 * big), big * 0.96 - side)
    top = min(max(top, 0.04 * big), big * 0.96 - side)
    box = (left, top, left + side, top + side)
    canvas = Image.new("RGB", (big, big), bg)
    draw = ImageDraw.Draw(canvas)
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(left + side / 2, top), (left + side, top + side), (left, top + side)],
                     fill=fill)
    return canvas.resize((size, size), Image.Resampling.BOX)


def parse_caption(caption: str) -> tuple[str | None, str | None]:
    """The (colour, shape) words a caption asks for, or None where it names none."""
    words = re.findall(r"[a-z]+", caption.lower())
    colour = next((w for w in words if w in COLOURS), None)
    shape = next((w for w in words if w in SHAPES), None)
    return colour, shape


def _as_array(image: Any) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float64)
    if hasattr(image, "detach"):  # a torch tensor [3, H, W] in [-1, 1]
        arr = image.detach().float().cpu().clamp(-1, 1).numpy()
        return (np.transpose(arr, (1, 2, 0)) + 1.0) * 127.5
    arr = np.asarray(image, dtype=np.float64)
    if arr.ndim == 3 and arr.shape[0] == 3 and arr.shape[-1] != 3:
        arr = np.transpose(arr, (1, 2, 0))
    return arr


def nearest_colour(rgb: np.ndarray) -> str | None:
    """The palette colour whose hue is closest, or None for a grey (unsaturated) colour."""
    h, s, v = colorsys.rgb_to_hsv(*(float(c) / 255.0 for c in rgb))
    if s < 0.25 or v < 0.2:
        return None

    def hue_gap(name: str) -> float:
        ph = colorsys.rgb_to_hsv(*(c / 255.0 for c in COLOURS[name]))[0]
        d = abs(ph - h)
        return min(d, 1.0 - d)

    return min(COLOURS, key=hue_gap)


def _shift_all(mask: np.ndarray, op: Any) -> np.ndarray:
    padded = np.pad(mask, 1, constant_values=False)
    h, w = mask.shape
    out = padded[1:h + 1, 1:w + 1].copy()
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            out = op(out, padded[dy:dy + h, dx:dx + w])
    return out


def _open3(mask: np.ndarray) -> np.ndarray:
    """Morphological opening with a 3×3 square: drops specks of noise, keeps the shape."""
    return _shift_all(_shift_all(mask, np.logical_and), np.logical_or)


def classify_shape(mask: np.ndarray) -> str | None:
    """circle / square / triangle from the bounding-box fill ratio and centroid height."""
    opened = _open3(mask)
    ys, xs = np.nonzero(opened if opened.sum() >= 8 else mask)
    if len(ys) < 8:
        return None
    top, bottom, left, right = ys.min(), ys.max(), xs.min(), xs.max()
    height, width = bottom - top + 1, right - left + 1
    if height < 3 or width < 3:
        return None
    fill = min(len(ys) / (height * width), 1.0)
    centroid = (ys.mean() - top + 0.5) / height

    def gap(name: str) -> float:
        f, c = _SHAPE_PROTOTYPES[name]
        return (fill - f) ** 2 + (centroid - c) ** 2

    return min(SHAPES, key=gap)


def score_image(image: Any, caption: str) -> dict[str, Any]:
    """Does ``image`` show the colour and shape ``caption`` asks for?

    ``image`` is a PIL image, an ``[H, W, 3]`` uint8 array or a ``[3, H, W]`` tensor in
    [-1, 1]. The background is the border's median colour; the foreground is what differs
    from it clearly; its core's hue gives the colour and its outline the shape.
    Returns ``colour_ok``/``shape_ok`` (None when the caption names no colour/shape),
    the detected ``colour``/``shape`` and ``ok`` (both satisfied).
    """
    want_colour, want_shape = parse_caption(caption)
    arr = _as_array(image)[..., :3]
    border = np.concatenate([arr[:2].reshape(-1, 3), arr[-2:].reshape(-1, 3),
                             arr[:, :2].reshape(-1, 3), arr[:, -2:].reshape(-1, 3)])
    background = np.median(border, axis=0)
    dist = np.linalg.norm(arr - background, axis=-1)
    if want_shape is None and want_colour is not None:
        # A plain picture: its overall colour is the answer.
        colour = nearest_colour(np.median(arr.reshape(-1, 3), axis=0))
        shape = None
    elif dist.max() < 40:
        colour, shape = None, None
    else:
        mask = dist > 0.5 * dist.max()
        core = dist >= np.percentile(dist[mask], 50)
        colour = nearest_colour(arr[core].mean(axis=0))
        shape = classify_shape(mask)
    colour_ok = None if want_colour is None else colour == want_colour
    shape_ok = None if want_shape is None else shape == want_shape
    return {
        "colour_ok": colour_ok,
        "shape_ok": shape_ok,
        "ok": colour_ok is not False and shape_ok is not False,
        "colour": colour,
        "shape": shape,
        "expected_colour": want_colour,
        "expected_shape": want_shape,
    }
