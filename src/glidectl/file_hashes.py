"""sha256 of files (weights, schedule files), each read once per process while unchanged."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

_SHA256_SEEN: dict[tuple[int, int, int, int], str] = {}  # by (device, inode, size, mtime)


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes (the model hash in metadata.json). A file this process has
    hashed is not read again while it is the same file, unchanged (same inode, size and
    modification time): a remake checks a 1.5 GB checkpoint and then records it. As git
    does, a file modified in the last 2 s is always read (clocks stamp files coarsely, so
    a rewrite that quick could keep its time)."""
    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if key in _SHA256_SEEN:
            return _SHA256_SEEN[key]
        h = hashlib.sha256()
        while block := fh.read(chunk):
            h.update(block)
    digest = h.hexdigest()
    if time.time() - st.st_mtime > 2:
        if len(_SHA256_SEEN) >= 256:
            _SHA256_SEEN.clear()
        _SHA256_SEEN[key] = digest
    return digest
