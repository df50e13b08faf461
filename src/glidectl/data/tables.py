"""Rows of tables (Parquet, Hugging Face datasets) as raw samples: which column holds the
image and the caption, and everything else as the preset's metadata."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import GlidectlError
from .records import RawSample

IMAGE_COLUMNS = ("image", "jpg", "png", "jpeg", "webp")
CAPTION_COLUMNS = ("text", "caption", "txt")
JSON_CAPTION_KEYS = ("caption", "text", "TEXT")  # the built-in presets' JSON caption fields
LINK_COLUMNS = ("url", "image_url", "img_url", "link")  # LAION's metadata: URL, TEXT, ...
LINK_REASON = "image_url"  # an image cell holding an http(s) link: glidectl downloads nothing
FETCH_FIRST = ("glidectl downloads no images: fetch them first (img2dataset writes shards or "
               "Parquet that hold them) and point data.source at those")


def pick_column(
    columns: Sequence[str], wanted: str, candidates: Sequence[str], key: str, source: str,
    *, required: bool,
) -> str | None:
    """``wanted`` (which must exist), else the first of ``candidates`` present (any case)."""
    if wanted:
        if wanted in columns:
            return wanted
        raise GlidectlError(
            f"data.{key} is {wanted!r}, but {source!r} has no such column (columns: "
            f"{', '.join(columns) or 'none'}); set data.{key} to one of them."
        )
    lowered = {c.lower(): c for c in columns}
    for name in candidates:
        if name in lowered:
            return lowered[name]
    if required:
        what, holds = (("caption", "the captions") if key == "caption_column" else
                       ("image", "image bytes or paths"))
        link = next((lowered[n] for n in LINK_COLUMNS if n in lowered), None)
        if what == "image" and link is not None:  # image links only, as LAION's metadata
            raise GlidectlError(
                f"Found no image column in {source!r} (columns: {', '.join(columns)}), only "
                f"links in {link!r}, and {FETCH_FIRST}, or set data.image_column to a column "
                "of image bytes or paths.")
        raise GlidectlError(
            f"Found no {what} column in {source!r} (columns: {', '.join(columns) or 'none'}); "
            f"set data.{key} to the column that holds {holds}."
        )
    return None


def link_hint(reason: str, column: str) -> str | None:
    """For rows rejected as ``reason``: what to do when their image cells were links."""
    if reason != LINK_REASON:
        return None
    return f"Column {column!r} holds image links, and {FETCH_FIRST}."


def is_link(value: Any) -> bool:
    """An image cell that is an http(s) URL, not a path or bytes."""
    return isinstance(value, str) and value.lstrip().lower().startswith(("http://", "https://"))


def _jsonable(value: Any) -> bool:
    if value is None or isinstance(value, (str, int, float, bool)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_jsonable(v) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _jsonable(v) for k, v in value.items())
    return False


def image_value(value: Any, base_dir: str | None) -> Any:
    """Bytes, a path (relative paths under ``base_dir``), a PIL image, or None."""
    if isinstance(value, Mapping):  # datasets' Image feature: {"bytes": ..., "path": ...}
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        if not value:
            return None
        return os.path.join(base_dir, value) if base_dir and not os.path.isabs(value) else value
    if hasattr(value, "mode") and hasattr(value, "size"):  # an already decoded PIL image
        return value
    return None


def caption_value(value: Any) -> str | bytes | None:
    """A caption cell: text, or a list of captions joined a line each (None: neither)."""
    if isinstance(value, (str, bytes)):
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return "\n".join(value)  # several captions: one is picked per fetch
    return None


def json_caption(meta: Mapping[str, Any], column: str = "") -> str | None:
    """A webdataset sample's JSON caption that the presets, which read strings only, miss:
    a list of captions (joined a line each: one is picked per fetch) under ``caption`` or
    ``text``, or what the field ``column`` (data.caption_column) holds."""
    for key in (column,) if column else JSON_CAPTION_KEYS:
        text = caption_value(meta.get(key))
        if isinstance(text, str) and text.strip():
            return text
    return None


def row_sample(
    row: Mapping[str, Any], key: str, image_column: str, caption_column: str | None,
    base_dir: str | None = None,
) -> RawSample:
    """One table row as a raw sample; other JSON-like columns become metadata."""
    meta = {
        k: v for k, v in row.items()
        if k not in (image_column, caption_column) and _jsonable(v)
    }
    caption = caption_value(row.get(caption_column)) if caption_column else None
    image = row.get(image_column)
    path = image.get("path") if isinstance(image, Mapping) and not image.get("bytes") else image
    if is_link(path):  # not a file beside the table: rejected as a link, never opened
        return RawSample(key=key, image=None, caption=caption, meta=meta, reject=LINK_REASON)
    return RawSample(key=key, image=image_value(image, base_dir), caption=caption, meta=meta)
