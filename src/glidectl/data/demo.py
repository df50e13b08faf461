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
# What the scorer can tell apart: the demo's shapes and a diamond (a square on its corner),
# which no caption asks for.
SHAPE_CLASSES = (*SHAPES, "diamond")
BACKGROUNDS: dict[str, tuple[int, int, int]] = {"white": (255, 255, 255), "black": (0, 0, 0)}
DEMOS = ("shapes", "colors")


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
        image = draw_shape(shape, COLOURS[colour], BACKGROUNDS[background], size, rng)
    return DemoSample(
        f"{name}-{index:06d}", image, caption_for(colour, shape, background),
        colour, shape, background,
    )


def draw_shape(
    shape: str, fill: tuple[int, int, int], bg: tuple[int, int, int], size: int,
    rng: random.Random,
) -> Image.Image:
    """One ``shape`` (a demo shape, or "diamond") of colour ``fill`` on ``bg``, side 50–70 %
    of ``size``, near the centre, anti-aliased."""
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
    elif shape == "diamond":  # never in the data: the scorer's tests draw it
        draw.polygon([(left + side / 2, top), (left + side, top + side / 2),
                      (left + side / 2, top + side), (left, top + side / 2)], fill=fill)
    else:
        draw.polygon([(left + side / 2, top), (left + side, top + side), (left, top + side)],
                     fill=fill)
    return canvas.resize((size, size), Image.Resampling.BOX)


_BACKGROUND = re.compile(r"\bon an? (\w+) background")


def parse_caption(caption: str) -> tuple[str | None, str | None]:
    """The (colour, shape) words a caption asks for, or None where it names none (a
    "diamond" counts: LoRA demos teach it); a colour in its "on a … background" clause is
    the background's, not the shape's."""
    words = re.findall(r"[a-z]+", _BACKGROUND.split(caption.lower(), maxsplit=1)[0])
    colour = next((w for w in words if w in COLOURS), None)
    shape = next((w for w in words if w in SHAPE_CLASSES), None)
    return colour, shape


_DEMO_WORDS = re.compile(r"an? (?:\w+ )?\w+ on an? \w+ background|a plain \w+ picture")


def is_demo_prompt(caption: str) -> bool:
    """A caption in the demos' own words ("a red circle on a white background", "a plain red
    picture", "a zorblax on a black background"): what :func:`score_image` can judge. A photo
    caption that merely names a colour ("a red car in the rain") is not."""
    return bool(_DEMO_WORDS.fullmatch(" ".join(caption.lower().split()).rstrip(".")))


def parse_background(caption: str) -> str | None:
    """The background a caption asks for ("white", "black", or a word the demos never draw,
    which no image matches), or None."""
    match = _BACKGROUND.search(caption.lower())
    return match.group(1) if match else None


def _as_array(image: Any) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float64)
    if not hasattr(image, "shape"):  # nested lists
        image = np.asarray(image, dtype=np.float64)
    shape, tensor = tuple(image.shape), hasattr(image, "detach")
    channels_first = len(shape) == 3 and shape[0] == 3
    if not (channels_first or (not tensor and len(shape) == 3 and shape[-1] in (3, 4))):
        raise GlidectlError(
            f"score_image takes one image (PIL, an [H, W, 3] array or a [3, H, W] tensor), got "
            f"{type(image).__name__} of shape {list(shape)}; score a batch one image at a "
            "time: [score_image(x, caption) for x in images].")
    if tensor:  # [3, H, W] in [-1, 1]
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


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected region of ``mask`` (a shape, not the specks around it)."""
    labels = np.zeros(mask.shape, dtype=np.int32)
    best, best_size, label = None, 0, 0
    for start in zip(*np.nonzero(mask), strict=True):
        if labels[start]:
            continue
        label += 1
        stack, size = [start], 0
        labels[start] = label
        while stack:
            y, x = stack.pop()
            size += 1
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if (0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx]
                        and not labels[ny, nx]):
                    labels[ny, nx] = label
                    stack.append((ny, nx))
        if size > best_size:
            best, best_size = label, size
    return labels == best if best is not None else mask


def _coverage(shape: str, cy: float, cx: float, area: float, h: int, w: int,
              scale: int = 4) -> np.ndarray:
    """How much of each pixel of an ``h`` × ``w`` grid an ideal ``shape`` of ``area`` pixels
    covers, its centroid at (``cy``, ``cx``) in pixel units (supersampled ``scale``²)."""
    ys = (np.arange(h * scale) + 0.5) / scale - cy
    xs = (np.arange(w * scale) + 0.5) / scale - cx
    dy, dx = np.meshgrid(ys, xs, indexing="ij")
    if shape == "square":
        half = np.sqrt(area) / 2
        inside = (np.abs(dy) <= half) & (np.abs(dx) <= half)
    elif shape == "circle":
        inside = dy ** 2 + dx ** 2 <= area / np.pi
    elif shape == "diamond":
        inside = np.abs(dy) + np.abs(dx) <= np.sqrt(2 * area) / 2
    else:  # triangle as drawn: apex up, base = height = side, centroid 2/3 of the way down
        side = np.sqrt(2 * area)
        depth = dy + 2 * side / 3
        inside = (depth >= 0) & (depth <= side) & (np.abs(dx) <= depth / 2)
    return inside.reshape(h, scale, w, scale).mean(axis=(1, 3))


def classify_shape(mask: np.ndarray, coverage: np.ndarray | None = None) -> str | None:
    """circle / square / triangle / diamond: the ideal shape that overlaps the blob most.

    ``mask`` says which pixels are the shape; ``coverage`` (optional, 0..1 per pixel) how much
    of each it covers, so anti-aliased and blurred edges count in part. Each candidate gets
    the blob's area and centroid (moments, which a stray pixel or a ragged edge barely
    moves) and is scored by intersection over union; a blob that is neither round nor square
    is whichever it is closest to, not a circle by default.
    """
    # The largest region after an opening (specks of noise gone), grown back by two pixels
    # so edges and thin tips (a triangle's apex, a diamond's corners) stay in.
    opened = _open3(mask)
    core = _largest_component(opened if opened.sum() >= 8 else mask)
    region = _shift_all(_shift_all(core, np.logical_or), np.logical_or)
    weight = np.where(region, mask if coverage is None else coverage, 0.0).astype(np.float64)
    area = float(weight.sum())
    ys, xs = np.nonzero(core)
    if area < 8 or np.ptp(ys) < 2 or np.ptp(xs) < 2:
        return None
    rows, cols = np.indices(weight.shape)
    cy, cx = (rows * weight).sum() / area + 0.5, (cols * weight).sum() / area + 0.5

    def overlap(name: str) -> float:
        ideal = _coverage(name, cy, cx, area, *weight.shape)
        return float(np.minimum(weight, ideal).sum() / np.maximum(weight, ideal).sum())

    return max(SHAPE_CLASSES, key=overlap)


def classify_background(rgb: np.ndarray, tolerance: float = 96.0) -> str | None:
    """"white" or "black" when ``rgb`` is within ``tolerance`` (Euclidean, 0..255 scale) of
    it; None for anything else (a dark red or an olive is not black)."""
    name = min(BACKGROUNDS, key=lambda b: float(np.linalg.norm(rgb - BACKGROUNDS[b])))
    return name if np.linalg.norm(rgb - BACKGROUNDS[name]) <= tolerance else None


def score_image(image: Any, caption: str) -> dict[str, Any]:
    """Does ``image`` show the colour, shape and background ``caption`` asks for?

    ``image`` is a PIL image, an ``[H, W, 3]`` uint8 array or a ``[3, H, W]`` tensor in
    [-1, 1]. The background is the border's median colour (it must be near white or black);
    the foreground is what differs from it clearly; its core's hue gives the colour and the
    ideal shape that overlaps it most the shape (a diamond is a shape of its own, never a
    match).
    Returns ``colour_ok``/``shape_ok``/``background_ok`` (None when the caption names no
    colour/shape/background), the detected ``colour``/``shape``/``background``, ``score``
    (the share of the named attributes that match: a red triangle on black for "a red circle
    on a white background" scores 1/3) and ``ok`` (all of them match).
    """
    want_colour, want_shape = parse_caption(caption)
    want_background = parse_background(caption)
    arr = _as_array(image)[..., :3]
    border = np.concatenate([arr[:2].reshape(-1, 3), arr[-2:].reshape(-1, 3),
                             arr[:, :2].reshape(-1, 3), arr[:, -2:].reshape(-1, 3)])
    background_rgb = np.median(border, axis=0)
    background = classify_background(background_rgb)
    dist = np.linalg.norm(arr - background_rgb, axis=-1)
    if want_shape is None and want_colour is not None:
        # A plain picture: its overall colour is the answer.
        colour = nearest_colour(np.median(arr.reshape(-1, 3), axis=0))
        shape = None
    elif dist.max() < 40:
        colour, shape = None, None
    else:
        # Half way to the foreground's typical distance (not its maximum, which noise
        # inflates) separates the shape from the background.
        mask = dist > 0.5 * dist.max()
        level = np.percentile(dist[mask], 75)
        mask = dist > 0.5 * level
        core = dist >= np.percentile(dist[mask], 50)
        colour = nearest_colour(arr[core].mean(axis=0))
        shape = classify_shape(mask, np.clip(dist / level, 0.0, 1.0))
    checks = {
        "colour_ok": None if want_colour is None else colour == want_colour,
        "shape_ok": None if want_shape is None else shape == want_shape,
        "background_ok": None if want_background is None else background == want_background,
    }
    named = [v for v in checks.values() if v is not None]
    return {
        **checks,
        "score": sum(named) / len(named) if named else None,
        "ok": all(named),
        "colour": colour,
        "shape": shape,
        "background": background,
        "expected_colour": want_colour,
        "expected_shape": want_shape,
        "expected_background": want_background,
    }
