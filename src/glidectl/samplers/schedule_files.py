"""Schedule files (``glidectl fit-steps``) read once per run: ``fit-steps`` replaces a file
it refits, and a run reading it per batch would make its first pictures with one version and
the rest with the next. No torch here: ``eval`` uses it before any model loads.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

# schedule file (absolute path) → its bytes as first read, inside :func:`read_once`
_READ: ContextVar[dict[str, bytes] | None] = ContextVar("glidectl_schedule_files", default=None)


@contextmanager
def read_once() -> Iterator[None]:
    """Within the block (or the function it decorates) each schedule file is read from disk
    once: ``glidectl fit-steps`` replacing it meanwhile changes none of the block's
    pictures, nor the sha256 recorded for them. Blocks inside one share its reads."""
    token = _READ.set({}) if _READ.get() is None else None
    try:
        yield
    finally:
        if token is not None:
            _READ.reset(token)


def schedule_bytes(path: str | Path) -> bytes:
    """A schedule file's bytes: inside :func:`read_once`, as first read there."""
    read = _READ.get()
    key = os.path.abspath(path)
    if read is not None and key in read:
        return read[key]
    data = Path(path).read_bytes()
    if read is not None:
        read[key] = data
    return data
