"""Built-in dataset presets (a default plugin): caption rules and metadata filters.

Each filter is a pure function ``(metadata, caption, options) -> caption | Reject`` where
``options`` is the ``[data]`` config section (``min_size``, ``aspect_range``,
``similarity_range``, ``max_punsafe``, ``max_pwatermark``, ``nsfw_allowed``,
``skip_words``). No torch import here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..hookspecs import hookimpl
from .preset_api import DatasetPreset, Reject, clean_caption, finish_caption, first_text, number

ENGLISH_CODES = {"en", "eng", "english"}
# DataComp's CLIP score fields for the original caption; a generated caption's score is the
# same field prefixed with "generated_".
DATACOMP_SCORES = ("clip_l14_similarity_score", "clip_b32_similarity_score", "clip_score")
GENERATED_CAPTION_KEYS = ("generated_caption", "recaption", "re_caption")


def _range(options: Any, name: str, default: tuple[float, float]) -> tuple[float, float]:
    value = list(getattr(options, name, default) or default)
    return (float(value[0]), float(value[1])) if len(value) == 2 else default


def select_simple(meta: Mapping[str, Any], caption: str | None, options: Any) -> str | Reject:
    """The text under the caption key (else metadata ``caption``/``text``), as is."""
    if caption is None:
        caption = first_text(meta, ("caption", "text"))
    return finish_caption(caption, options)


def select_laion(meta: Mapping[str, Any], caption: str | None, options: Any) -> str | Reject:
    """LAION/img2dataset metadata: original size, aspect ratio, CLIP similarity, the
    ``punsafe``/``pwatermark`` probabilities (LAION's float fields) and the NSFW tag."""
    if not meta:
        return Reject("missing_metadata")
    if caption is None:
        caption = first_text(meta, ("caption", "TEXT", "text"))
    width = number(meta, ("original_width", "WIDTH", "width"))
    height = number(meta, ("original_height", "HEIGHT", "height"))
    min_size = int(getattr(options, "min_size", 0) or 0)
    if width is not None and height is not None:
        if min(width, height) < min_size:
            return Reject("too_small_original")
        lo, hi = _range(options, "aspect_range", (0.0, float("inf")))
        if height <= 0 or not lo <= width / height <= hi:
            return Reject("aspect_ratio")
    similarity = number(meta, ("similarity", "clip_similarity", "similarity_score"))
    if similarity is not None:
        lo, hi = _range(options, "similarity_range", (-1.0, 1.0))
        if not lo <= similarity <= hi:
            return Reject("similarity")
    for field, reason, key in (("punsafe", "punsafe", "max_punsafe"),
                               ("pwatermark", "watermark", "max_pwatermark")):
        value = number(meta, (field,))
        if value is not None and value > float(getattr(options, key, 1.0)):
            return Reject(reason)
    tag = meta.get("NSFW", meta.get("nsfw", meta.get("punsafe_tag")))
    if isinstance(tag, str) and tag.strip():
        allowed = {str(t).upper() for t in getattr(options, "nsfw_allowed", []) or []}
        if tag.strip().upper() not in allowed:
            return Reject("nsfw")
    return finish_caption(caption, options)


def looks_english(text: str) -> bool:
    """Most letters are ASCII (a cheap, dependency-free language guess)."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return False
    return sum(c.isascii() for c in letters) / len(letters) >= 0.9


def select_alamy(meta: Mapping[str, Any], caption: str | None, options: Any) -> str | Reject:
    """Stock-photo metadata: caption (or title) from the JSON; English only."""
    text = first_text(meta, ("caption", "title", "description")) or clean_caption(caption)
    if not text:
        return finish_caption(text, options)
    language = meta.get("language", meta.get("lang"))
    if isinstance(language, str) and language.strip():
        if language.strip().lower().split("-")[0].split("_")[0] not in ENGLISH_CODES:
            return Reject("not_english")
    elif not looks_english(text):
        return Reject("not_english")
    return finish_caption(text, options)


def select_synthetic(meta: Mapping[str, Any], caption: str | None, options: Any) -> str | Reject:
    """Synthetic-caption datasets: ``short_caption``, else ``long_caption``, else the text."""
    text = first_text(meta, ("short_caption", "long_caption"))
    return finish_caption(text if text is not None else caption, options)


def select_datacomp(meta: Mapping[str, Any], caption: str | None, options: Any) -> str | Reject:
    """The better of the original and the generated caption by their CLIP scores."""
    original = first_text(meta, ("caption", "text")) or clean_caption(caption)
    generated = first_text(meta, GENERATED_CAPTION_KEYS)
    candidates: list[tuple[float, int, str]] = []
    for field in DATACOMP_SCORES:
        score_o = number(meta, (field,))
        score_g = number(meta, (f"generated_{field}",))
        if score_o is None and score_g is None:
            continue
        if original and score_o is not None:
            candidates.append((score_o, 1, original))
        if generated and score_g is not None:
            candidates.append((score_g, 0, generated))
        break
    if candidates:
        score, _, text = max(candidates)
        lo, hi = _range(options, "similarity_range", (-1.0, 1.0))
        if not lo <= score <= hi:
            return Reject("similarity")
        return finish_caption(text, options)
    return finish_caption(original or generated, options)


BUILTIN_PRESETS = (
    DatasetPreset("simple", select_simple, "Caption key + image key, no filtering."),
    DatasetPreset(
        "laion", select_laion,
        "LAION metadata filters: min_size, aspect_range, similarity_range, max_punsafe, "
        "max_pwatermark, nsfw_allowed, skip_words.", needs_metadata=True,
    ),
    DatasetPreset("alamy", select_alamy, "English captions from the metadata JSON.",
                  needs_metadata=True),
    DatasetPreset("synthetic", select_synthetic,
                  "Caption from JSON short_caption, then long_caption.", needs_metadata=True),
    DatasetPreset("datacomp", select_datacomp,
                  "Best of original vs generated caption by CLIP score.", needs_metadata=True),
)


@hookimpl
def register_dataset_presets(register):
    """The built-in presets."""
    for preset in BUILTIN_PRESETS:
        register(preset.name, preset)
