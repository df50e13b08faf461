"""An image folder: recursive, captions from sidecar ``.txt`` (or kohya's ``.caption``) files
or ``metadata.jsonl``.

Keys are paths relative to the root, so ``a/cat.jpg`` and ``b/cat.jpg`` are distinct
samples. ``metadata.jsonl`` (or ``metadata.csv``) rows name ``file_name`` relative to the
folder holding that metadata file and carry the caption in ``text`` (Hugging Face's
imagefolder convention); other fields reach the preset as metadata.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import GlidectlError
from .records import IMAGE_EXTENSIONS, UNREAD_IMAGE_EXTENSIONS, RawSample
from .stats import RejectionCounter
from .walk import walk

METADATA_FILES = ("metadata.jsonl", "metadata.csv")
KOHYA_FOLDER = re.compile(r"(\d+)_\S.*")  # kohya's "10_sks dog": 10 repeats, class "sks dog"
CAPTION_SUFFIXES = (".txt", ".TXT", ".caption")  # the first that exists is read


@dataclass
class FolderSource:
    """Images under ``root`` (any depth, linked folders too, extensions case-insensitive)."""

    root: Path
    files: list[str] = field(default_factory=list)
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    bad_metadata: int = 0
    unread: Counter[str] = field(default_factory=Counter)  # image files of other kinds
    unreadable: list[str] = field(default_factory=list)  # folders that could not be listed
    kohya: list[str] = field(default_factory=list)  # kohya's "N_name" folders at the top

    kind = "folder"
    splits_samples = True

    @classmethod
    def scan(cls, root: str | os.PathLike[str]) -> FolderSource:
        root = Path(root)
        if not root.is_dir():
            raise GlidectlError(f"Image folder {str(root)!r} does not exist; pass a folder.")
        src = cls(root)
        for dirpath, dirnames, filenames in walk(root, src.unreadable):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel_dir = PurePosixPath(Path(dirpath).relative_to(root).as_posix())
            if str(rel_dir) == "." and dirnames and all(map(KOHYA_FOLDER.fullmatch, dirnames)):
                src.kohya = list(dirnames)  # kohya's train_data_dir holds only such folders
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                rel = (rel_dir / name).as_posix() if str(rel_dir) != "." else name
                if name.lower().endswith(IMAGE_EXTENSIONS):
                    src.files.append(rel)
                elif name in METADATA_FILES:
                    src._read_metadata(Path(dirpath) / name, rel_dir)
                elif name.lower().endswith(UNREAD_IMAGE_EXTENSIONS):
                    src.unread[Path(name).suffix.lower()] += 1
        src.files.sort()
        return src

    def _read_metadata(self, path: Path, rel_dir: PurePosixPath) -> None:
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError):
            self.bad_metadata += 1
            return
        if path.suffix == ".csv":
            rows: list[Any] = list(csv.DictReader(text.splitlines()))
        else:
            rows = []
            for line in text.splitlines():
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    self.bad_metadata += 1
        for row in rows:
            name = row.get("file_name") if isinstance(row, dict) else None
            if not isinstance(name, str) or not name:
                self.bad_metadata += 1
                continue
            rel = (rel_dir / name).as_posix() if str(rel_dir) != "." else name
            self.metadata[PurePosixPath(rel).as_posix()] = row

    def __len__(self) -> int:
        return len(self.files)

    @property
    def num_samples(self) -> int:
        return len(self.files)

    def describe(self) -> str:
        return str(self.root)

    def notes(self) -> list[str]:
        """What the scan left out: image files of kinds not read, unreadable metadata rows."""
        out = []
        if self.unread:
            kinds = ", ".join(f"{k} {n}" for k, n in self.unread.most_common())
            n = self.unread.total()
            out.append(f"{str(self.root)!r}: {n} image file{'s' * (n != 1)} of kinds glidectl "
                       f"does not read left out ({kinds}); convert them to PNG or JPEG.")
        if self.unreadable:
            n = len(self.unreadable)
            shown = ", ".join(repr(p) for p in self.unreadable[:3]) + ", …" * (n > 3)
            out.append(f"{n} folder{'s' * (n != 1)} under {str(self.root)!r} could not be read "
                       f"and {'are' if n != 1 else 'is'} left out ({shown}); check "
                       f"{'their' if n != 1 else 'its'} permissions.")
        if self.kohya:
            shown = ", ".join(repr(d) for d in self.kohya[:3]) + ", …" * (len(self.kohya) > 3)
            out.append(f"{str(self.root)!r} has kohya-style folders ({shown}): glidectl reads "
                       "each image once per epoch, not the folder's number of times, and takes "
                       "no caption from the folder's name; give images without one a .txt.")
        if self.bad_metadata:
            n = self.bad_metadata
            what = "row or file" if n == 1 else "rows or files"
            out.append(f"{str(self.root)!r}: {n} metadata {what} could not be read "
                       "(not JSON/CSV, or no file_name); their images get no caption from them.")
        return out

    def units(self) -> list[str]:
        return list(self.files)

    def read(self, unit: str, counter: RejectionCounter) -> Iterator[RawSample]:
        path = self.root / unit
        row = self.metadata.get(unit)
        caption: bytes | str | None = None
        reject = None
        for suffix in CAPTION_SUFFIXES:
            sidecar = path.with_suffix(suffix)
            if sidecar.is_file():
                try:
                    caption = sidecar.read_bytes()
                except OSError:  # there, but not readable: not a missing caption
                    reject = "unreadable_caption"
                break
        meta: dict[str, Any] = {}
        if row is not None:
            meta = {k: v for k, v in row.items() if k != "file_name"}
            if caption is None:
                text = meta.get("text", meta.get("caption"))
                caption = text if isinstance(text, str) else None
        yield RawSample(key=unit, image=path, caption=caption, meta=meta, reject=reject)
