"""What a dataset preset is: a pure filter from a sample's metadata to a caption or a reason.

Third-party presets register a :class:`DatasetPreset` through the
``register_dataset_presets(register)`` hook, exactly like the built-ins in
``glidectl.data.presets``. No torch here: presets load with ``glidectl --help``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class Reject:
    """Why a sample was left out, e.g. ``Reject("similarity")``; counted by reason."""

    reason: str


#: ``select(metadata, caption, options) -> caption | Reject``. ``metadata`` is the sample's
#: JSON (webdataset ``json`` key or a ``metadata.jsonl`` row, ``{}`` when absent), ``caption``
#: the text under the caption key (one line of it) or None, ``options`` the DataConfig.
SelectFn = Callable[[Mapping[str, Any], "str | None", Any], "str | Reject"]


@dataclass(frozen=True)
class DatasetPreset:
    """A named caption rule and filter for a dataset layout."""

    name: str
    select: SelectFn
    description: str = ""
    needs_metadata: bool = False


def clean_caption(text: Any) -> str | None:
    """A caption with runs of whitespace collapsed, or None when ``text`` is not a string."""
    if not isinstance(text, str):
        return None
    return _SPACES.sub(" ", text).strip()


def first_text(meta: Mapping[str, Any], keys: Sequence[str]) -> str | None:
    """The first non-blank string among ``meta[k]`` for ``k`` in ``keys``."""
    for key in keys:
        text = clean_caption(meta.get(key))
        if text:
            return text
    return None


def number(meta: Mapping[str, Any], keys: Sequence[str]) -> float | None:
    """The first finite number among ``meta[k]`` (numeric strings count), else None."""
    for key in keys:
        value = meta.get(key)
        if isinstance(value, bool) or value is None:
            continue
        try:
            out = float(value)
        except (TypeError, ValueError):
            continue
        if out == out and out not in (float("inf"), float("-inf")):
            return out
    return None


def has_skip_word(caption: str, skip_words: Sequence[str]) -> bool:
    """True when a skip word (or phrase) occurs as whole words, case-insensitively."""
    lowered = caption.lower()
    for word in skip_words:
        word = word.strip().lower()
        if word and re.search(r"(?<!\w)" + re.escape(word) + r"(?!\w)", lowered):
            return True
    return False


def finish_caption(caption: Any, options: Any) -> str | Reject:
    """The checks every built-in preset ends with: present, non-empty, no skip word."""
    if caption is None:
        return Reject("missing_caption")
    text = clean_caption(caption)
    if text is None:
        return Reject("missing_caption")
    if not text:
        return Reject("empty_caption")
    if has_skip_word(text, list(getattr(options, "skip_words", []) or [])):
        return Reject("skip_word")
    return text
