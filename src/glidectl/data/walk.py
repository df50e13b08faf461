"""Walking a data folder: links to folders are followed, each real folder read once."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path


def walk(root: str | os.PathLike[str], unreadable: list[str] | None = None
         ) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk(root)`` top-down that also enters symlinked folders; a folder reached twice
    (a link loop, two links to one folder) is read the first time only. Callers may prune
    the yielded folder names in place, as with ``os.walk``. Folders that cannot be listed
    are appended to ``unreadable``."""
    seen: set[str] = set()
    errors = (lambda exc: unreadable.append(str(exc.filename))) if unreadable is not None else None
    for dirpath, dirnames, filenames in os.walk(root, onerror=errors, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        yield dirpath, dirnames, filenames


def files_with_suffix(root: str | os.PathLike[str], suffixes: Sequence[str]) -> list[str]:
    """Sorted paths of the files under ``root`` whose lower-cased names end with a suffix."""
    ends = tuple(suffixes)
    return sorted(
        os.path.join(dirpath, name)
        for dirpath, _, names in walk(root)
        for name in names
        if name.lower().endswith(ends) and os.path.isfile(os.path.join(dirpath, name))
    )


def visible_files(root: str | os.PathLike[str], suffixes: Sequence[str]) -> list[Path]:
    """Sorted paths of the files under ``root`` (linked folders too) whose lower-cased names
    end with a suffix, hidden files and folders (``.ipynb_checkpoints``) left out, as an
    image folder's training scan leaves them."""
    ends, found = tuple(suffixes), []
    for dirpath, dirnames, filenames in walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [Path(dirpath, name) for name in filenames
                  if not name.startswith(".") and name.lower().endswith(ends)]
    return sorted(found)
