"""Caption bytes → one caption line; bad text is rejected by reason."""

from __future__ import annotations

import random

from .images import Rejected


def decode_caption(raw: bytes | str | None) -> str | None:
    """UTF-8 text (a BOM is dropped); None stays None; invalid UTF-8 is rejected."""
    if raw is None or isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise Rejected("caption_not_utf8") from None


def pick_line(text: str | None, rng: random.Random) -> str | None:
    """One non-blank line, chosen at random when there are several (a fresh pick per fetch).

    Blank text stays as it is so the preset can reject it as ``empty_caption``.
    """
    if text is None:
        return None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return text.strip()
    return lines[0] if len(lines) == 1 else rng.choice(lines)
