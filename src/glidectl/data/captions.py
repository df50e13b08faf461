"""Caption bytes → one caption line; bad text is rejected by reason."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from ..prompt_files import is_text, text_lines
from .images import Rejected


def decode_caption(raw: bytes | str | None) -> str | None:
    """UTF-8 text (a BOM is dropped); None stays None; invalid UTF-8, bytes holding a NUL
    (UTF-16 text without a BOM) and a string with a lone surrogate (JSON's ``"\ud800"``),
    which no tokenizer can encode, are rejected."""
    if raw is None:
        return raw
    if isinstance(raw, str):
        if not is_text(raw):
            raise Rejected("caption_not_utf8")
        return raw
    if b"\0" in raw:  # UTF-16 without a byte-order mark decodes as UTF-8 with NULs
        raise Rejected("caption_not_utf8")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise Rejected("caption_not_utf8") from None


def caption_file_text(text: str, any_line: bool) -> str:
    """A caption file's text as kohya's ``read_caption`` (``DreamBoothDataset``) keeps it,
    read as text (``"\\r\\n"`` and ``"\\r"`` end a line too): its first line, stripped,
    even when blank, or with ``any_line`` (``enable_wildcard``) its non-blank lines, each
    stripped."""
    lines = text_lines(text)
    if not any_line:
        return lines[0].strip()
    return "\n".join(line.strip() for line in lines if line.strip())


def pick_line(text: str | None, rng: random.Random) -> str | None:
    """One non-blank line, chosen at random when there are several (a fresh pick per fetch).

    Blank text stays as it is so the preset can reject it as ``empty_caption``.
    """
    if text is None:
        return None
    lines = [line.strip() for line in text_lines(text) if line.strip()]
    if not lines:
        return text.strip()
    return lines[0] if len(lines) == 1 else rng.choice(lines)


def read_regular(path: Path) -> tuple[bytes | None, str | None]:
    """``path``'s bytes, or None and why it cannot be read (a folder, not a regular file,
    the OS error); ``(None, None)`` when nothing is there. Only a regular file is opened (a
    named pipe would wait for a writer)."""
    if path.is_dir():
        return None, "a folder"
    if not path.exists():
        return None, None
    if not path.is_file():
        return None, "not a regular file"
    try:
        return path.read_bytes(), None
    except OSError as exc:
        return None, exc.strerror or str(exc)


def read_sidecar(image: Path, suffixes: Sequence[str]) -> tuple[bytes | None,
                                                                tuple[Path, str] | None]:
    """The caption file beside ``image`` (the first of ``suffixes`` there: ``image``'s
    name with its suffix replaced): its bytes, or, when it is there but cannot be read
    (:func:`read_regular`), its path and why; ``(None, None)`` when none is there."""
    for suffix in suffixes:
        path = image.with_name(image.stem + suffix)
        raw, why = read_regular(path)
        if why is not None:
            return None, (path, why)
        if raw is not None:
            return raw, None
    return None, None
