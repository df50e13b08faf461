"""What every source yields before decoding: a key, encoded image, raw caption, metadata."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

    from .sample_rules import SampleRules

# What image folders are read for (Pillow decodes them all; AVIF needs a Pillow built with
# it, else such files are counted as unreadable), and image files they skip with a count.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".gif", ".tif",
                    ".tiff", ".avif")
UNREAD_IMAGE_EXTENSIONS = (".heic", ".heif", ".jxl", ".svg", ".psd", ".dng", ".cr2", ".nef",
                           ".arw", ".exr", ".hdr", ".jp2", ".tga", ".ico")
# what the trainers whose layouts glidectl reads take for images: kohya-ss sd-scripts
# (library/train_util.py IMAGE_EXTENSIONS, without its optional plugins) and OneTrainer
# (modules/util/path_util.py SUPPORTED_IMAGE_EXTENSIONS); their layouts read only these
KOHYA_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
ONETRAINER_EXTENSIONS = (".bmp", ".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp")


def unit_names(paths: list[str]) -> dict[str, str]:
    """Each shard or table file as its samples' keys name it: its file name, or, where two
    share one (two img2dataset folders joined with ``::``), its path below their common
    folder, so that no two samples share a key (``validation.holdout`` holds out by key)."""
    by_name: dict[str, list[str]] = {}
    for path in paths:
        by_name.setdefault(path.rsplit("/", 1)[-1], []).append(path)
    names = {}
    for name, twins in by_name.items():
        common = os.path.commonprefix(twins).rsplit("/", 1)[0] if len(twins) > 1 else None
        for path in twins:
            names[path] = name if common is None else path[len(common) + 1:]
    return names


def not_read_by(trainer_does: str, kinds: dict[str, int], where: str,
                folder: str = "") -> str | None:
    """The sentence for image files (``kinds``: extension → count) a folder of another
    trainer's layout holds that the trainer does not read, so neither does glidectl
    (``trainer_does``: "kohya does"; ``folder``: where they are, as shown)."""
    if not (n := sum(kinds.values())):
        return None
    many = n != 1
    shown = ", ".join(f"{k} {v}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]))
    inside = f" in {folder}" if folder else ""
    return (f"{where}: {n} image file{'s' * many} ({shown}){inside} {'are' if many else 'is'} not "
            f"read, as {trainer_does} not read {'them' if many else 'it'}; convert "
            f"{'them' if many else 'it'} to PNG or JPEG to train on {'them' if many else 'it'}.")


@dataclass
class RawSample:
    """One sample as read: nothing decoded or checked yet.

    ``image`` is encoded bytes, a file path, or a ready PIL image (demo data); ``caption``
    is raw bytes or text (possibly several lines) or None; ``meta`` is parsed metadata, or
    raw JSON bytes under ``meta_bytes`` for the pipeline to parse (and reject if broken).
    ``reject`` names why a source already knows the sample is unusable (e.g.
    ``unreadable_caption``); the pipeline counts it under that reason. ``rules``: how each
    draw of it is captioned and augmented beyond the ``[data]`` options (kohya's subsets).
    ``is_reg``: a regularisation (prior-preservation) image, whose loss training weights by
    ``train.prior_loss_weight``. ``loss_weight``: the sample's own loss weight (OneTrainer's
    per-concept ``loss_weight``), applied on top. ``empty_ok``: the source means the empty
    caption (kohya trains an image with neither a caption file nor class words on it), so it
    is not rejected as ``empty_caption``. ``again``: a later read, within one training epoch,
    of an image read several times an epoch (kohya's repeats): a rejection of it is counted
    apart, so each image is counted once an epoch. ``prior_prediction``: trained towards the
    base model's own prediction instead of the data (OneTrainer's PRIOR_PREDICTION
    concepts; LoRA runs).
    """

    key: str
    image: bytes | str | os.PathLike[str] | Image.Image | None
    caption: bytes | str | None
    meta: dict[str, Any] = field(default_factory=dict)
    meta_bytes: bytes | None = None
    reject: str | None = None
    rules: SampleRules | None = None
    is_reg: bool = False
    loss_weight: float = 1.0
    empty_ok: bool = False
    again: bool = False
    prior_prediction: bool = False
