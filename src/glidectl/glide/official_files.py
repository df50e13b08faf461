"""Is a downloaded file OpenAI's checkpoint of the name it was fetched under?

``glidectl download`` asks before a file enters the cache: a mirror's HTML error page, a
body cut short or a resumed ``.part`` whose first bytes belong to another file would
otherwise be cached under the checkpoint's name and fail only when a command loads it.
The checks read no weights into memory: the zip archive's checksums, then the state_dict's
keys and shapes (memory-mapped) against the official model built on the meta device.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path

import torch

from ..errors import a_or_an, cause
from .checkpoints import (
    _FIRST_KEY,
    IN_CHANNELS_KIND,
    TORCH_LOAD_ERRORS,
    key_problem,
    mismatch,
    python_objects_in,
)
from .options import official_options

_HTML_STARTS = (b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")
# torch.save's format before torch 1.6 (a pickled magic number first): no zip checksums to
# check, but torch.load reads it, so a checkpoint saved so is checked by its keys and shapes
LEGACY_START = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."


def official_file_problem(path: Path, kind: str) -> str | None:
    """Why ``path`` is not OpenAI's ``kind`` checkpoint, in a clause that starts "it …";
    None when it is: a whole torch zip archive (or a file in torch's format before 1.6)
    holding that model's keys and shapes."""
    with open(path, "rb") as fh:
        head = fh.read(1024)  # the format's first bytes, read once
    legacy = head.startswith(LEGACY_START)
    problem = None if legacy else _archive_problem(path, head)
    if problem:
        return problem
    try:  # the old format cannot be memory-mapped: read whole, once
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=not legacy)
    except TORCH_LOAD_ERRORS as exc:
        found = python_objects_in(exc)
        if found:
            return f"it holds Python objects ({found}), not only weights"
        return f"torch cannot read it ({cause(exc)})"
    if not isinstance(state, Mapping):
        return f"it holds {a_or_an(type(state).__name__)}, not a state_dict"
    if (problem := key_problem(state)) is not None:
        return problem
    ints = next((k for k, v in state.items()
                 if isinstance(v, torch.Tensor) and not v.is_floating_point()), None)
    if ints is not None:  # every loader refuses those: not the file its name says
        dtype = str(state[ints].dtype).removeprefix("torch.")
        return f"its tensor {ints!r} holds {dtype} numbers, where OpenAI's weights are floats"
    shapes = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
    return _model_problem(shapes, kind)


def _archive_problem(path: Path, head: bytes) -> str | None:
    """Why ``path`` (first bytes ``head``) is not a whole zip archive (torch.save's format),
    None when it is: every entry's CRC-32 is checked, which a resumed download with a
    foreign start fails."""
    if not zipfile.is_zipfile(path):
        return _not_a_zip(head)
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as exc:
        return f"it is a damaged zip archive ({cause(exc)})"
    return f"its entry {bad!r} is damaged (a checksum mismatch)" if bad else None


def not_torch_format(path: Path) -> str | None:
    """What ``path`` is when it is in no format ``torch.save`` writes (a zip archive, the
    format before 1.6, a pickle), in a clause that starts "it …"; None when it is one."""
    from .checkpoints import _is_pickle

    with open(path, "rb") as fh:
        head = fh.read(1024)
    if head.startswith(LEGACY_START) or _is_pickle(path) or zipfile.is_zipfile(path):
        return None
    return _not_a_zip(head)


def _not_a_zip(head: bytes) -> str:
    """What a file that is no zip archive is, as far as its first bytes (``head``) tell."""
    if not head:
        return "it is empty"
    if head.startswith(b"PK\x03\x04"):
        return "it is cut short (a zip archive without its end)"
    if head.lstrip().lower().startswith(_HTML_STARTS):
        return ("it is a web page (a server's error or sign-in page), not a PyTorch "
                "checkpoint")
    if _is_text(head):
        return "it is a text file, not a PyTorch checkpoint"
    return "it is not a PyTorch checkpoint (torch.save's zip archive)"


def _is_text(head: bytes) -> bool:
    """Whether the first bytes of a file are UTF-8 text (one character cut at the end)."""
    if b"\0" in head:
        return False
    for cut in range(4):
        try:
            head[:len(head) - cut].decode("utf-8")
            return True
        except UnicodeDecodeError:
            continue
    return False


def _model_problem(shapes: Mapping[str, tuple[int, ...]], kind: str) -> str | None:
    """Why state_dict ``shapes`` are not OpenAI's ``kind`` model, None when they are."""
    first = shapes.get(_FIRST_KEY)
    found = IN_CHANNELS_KIND.get(first[1]) if first is not None and len(first) == 4 else None
    if found is not None and found != kind:
        return f"it holds {a_or_an(found)} model, not {a_or_an(kind)} model"
    problem = mismatch(shapes, official_options(kind))
    return f"it does not fit OpenAI's {kind} model ({problem})" if problem else None
