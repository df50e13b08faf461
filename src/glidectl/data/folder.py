"""An image folder: recursive, captions from sidecar ``.txt`` (or kohya's ``.caption``) files
or ``metadata.jsonl``; kohya's ``N_words`` folders (only the images at their top) repeated and
captioned as kohya reads them (:mod:`glidectl.data.kohya`), with ``data.reg_source``'s
regularisation images (kohya's ``reg_data_dir``) read as often as
:func:`~glidectl.data.kohya.reg_draws` matches them.

Keys are paths relative to the root, so ``a/cat.jpg`` and ``b/cat.jpg`` are distinct
samples. ``metadata.jsonl`` (or ``metadata.csv``, ``metadata.parquet``) rows name
``file_name`` relative to the folder holding that metadata file and carry the caption in
``text`` (Hugging Face's imagefolder convention); other fields reach the preset as metadata.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import GlidectlError, one_line
from .captions import caption_file_text, decode_caption, read_regular, read_sidecar, text_lines
from .images import Rejected
from .kohya import (
    FOLDER_NAME,
    KohyaFolder,
    counted_past_max,
    has_images,
    kohya_below_note,
    kohya_like,
    layout_notes,
    ordinary_folder_note,
    parse_folder,
    reg_draws,
    unread_reg_note,
)
from .records import (
    IMAGE_EXTENSIONS,
    KOHYA_EXTENSIONS,
    UNREAD_IMAGE_EXTENSIONS,
    RawSample,
    not_read_by,
)
from .shards import SHARD_SUFFIXES
from .stats import RejectionCounter
from .tables import CAPTION_COLUMNS, caption_value, pick_column
from .walk import walk

METADATA_FILES = ("metadata.jsonl", "metadata.csv", "metadata.parquet")
CAPTION_SUFFIXES = (".txt", ".TXT", ".caption")  # the first that exists is read
REG_PREFIX = "reg:"  # data.reg_source's images are units "reg:1_dog/a.png"


# what Hugging Face's imagefolder takes for split folders at a dataset's top
SPLIT_FOLDERS = {"train", "test", "validation", "valid", "val", "dev", "eval"}


def json_sidecar(image: Path) -> dict[str, Any] | None:
    """The JSON object beside ``image`` (its name with ``.json`` for its extension, as
    img2dataset writes one per image), else None (none there, or not a JSON object)."""
    raw, _ = read_regular(image.with_name(image.stem + ".json"))
    if raw is None:
        return None
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _outside(rel: str) -> bool:
    """Whether a metadata row's ``file_name`` (joined to its file's folder) names a file
    outside the data folder (absolute, or climbing out with ``..``): no image the folder
    scan finds, though the file may exist."""
    norm = os.path.normpath(rel)
    return os.path.isabs(norm) or norm == ".." or norm.startswith("../")


@dataclass
class FolderSource:
    """Images under ``root`` (any depth, linked folders too, extensions case-insensitive)."""

    root: Path
    files: list[str] = field(default_factory=list)
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    bad_metadata: int = 0
    bad_metadata_first: str = ""  # where the first bad row or file is, and what is wrong
    unread: Counter[str] = field(default_factory=Counter)  # image files of other kinds
    not_kohya: Counter[str] = field(default_factory=Counter)  # in N_words folders, kohya skips
    shards: list[str] = field(default_factory=list)  # webdataset shards beside the images
    unreadable: list[str] = field(default_factory=list)  # folders that could not be listed
    kohya: dict[str, KohyaFolder] = field(default_factory=dict)  # by top folder; {}: not kohya's
    kohya_ordinary: str = ""  # why N_words folders at the top are not read in kohya's layout
    kohya_below: list[str] = field(default_factory=list)  # folders laid out as kohya's, below
    reg: FolderSource | None = None  # data.reg_source, kohya's reg_data_dir
    reg_draws: dict[str, int] = field(default_factory=dict)  # reg unit → reads per epoch
    reg_note: str | None = None  # kohya's "some of reg images are not used"
    # uncaptioned images whose caption file keeps the image's extension ("a.jpg.txt")
    named_with_ext: Counter[str] = field(default_factory=Counter)
    caption_column: str = ""  # data.caption_column: the metadata rows' caption ("": text)
    metadata_files: list[str] = field(default_factory=list)  # read, relative to the root

    kind = "folder"
    splits_samples = True

    @classmethod
    def scan(cls, root: str | os.PathLike[str], kohya: bool = True,
             caption_column: str = "") -> FolderSource:
        """Scan ``root``; ``kohya``: read kohya's layout (only ``N_words`` folders at the
        top) as kohya does, with repeats and folder-name captions; ``caption_column``: the
        metadata rows' caption column (data.caption_column; "": ``text``, else ``caption``)."""
        root = Path(root)
        if not root.is_dir():
            raise GlidectlError(f"Image folder {str(root)!r} does not exist; pass a folder.")
        src = cls(root, caption_column=caption_column)
        with_sidecar: set[str] = set()  # kohya images with a caption file beside them
        for dirpath, dirnames, filenames in walk(root, src.unreadable):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel_dir = PurePosixPath(Path(dirpath).relative_to(root).as_posix())
            if str(rel_dir) == "." and kohya and kohya_like(dirnames):
                folders = {d: parse_folder(d) for d in dirnames}
                past_max = counted_past_max(list(folders.values()))
                if past_max or has_images(filenames):
                    src.kohya_ordinary = ordinary_folder_note(root, dirnames, past_max)
                else:  # kohya's train_data_dir: only such folders
                    src.kohya = folders
            elif str(rel_dir) == "." and kohya and (named := [
                    d for d in dirnames if FOLDER_NAME.fullmatch(d)
                    and not counted_past_max([parse_folder(d)])]):
                others = [d for d in dirnames if d not in named]  # a logs/ beside 5_zwx person/
                src.kohya_ordinary = ordinary_folder_note(root, named, [], others)
            elif (len(rel_dir.parts) == 1 and kohya and not src.kohya and kohya_like(dirnames)
                  and not has_images(filenames)
                  and not counted_past_max([parse_folder(d) for d in dirnames])):
                src.kohya_below.append(str(rel_dir))  # e.g. kohya_ss's project "img" folder
            names = set(filenames) | set(dirnames)  # a caption path may be a folder
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                rel = (rel_dir / name).as_posix() if str(rel_dir) != "." else name
                if name.lower().endswith(IMAGE_EXTENSIONS):
                    folder = src.kohya.get(rel.partition("/")[0])
                    if folder is not None and len(rel_dir.parts) > 1:
                        folder.deeper += 1  # kohya reads only the top of an N_words folder
                        continue
                    if folder is not None and not name.lower().endswith(KOHYA_EXTENSIONS):
                        src.not_kohya[Path(name).suffix.lower()] += 1  # a .gif, a .tif scan
                        continue
                    if folder is not None:
                        folder.images += 1
                        if folder.repeats == 0:
                            continue  # a "0_" folder is left out, as kohya leaves it out
                        stem = PurePosixPath(name).stem
                        if any(stem + suffix in names for suffix in CAPTION_SUFFIXES):
                            with_sidecar.add(rel)
                    src.files.append(rel)
                elif name in METADATA_FILES:
                    src._read_metadata(Path(dirpath) / name, rel_dir)
                elif name.lower().endswith(UNREAD_IMAGE_EXTENSIONS):
                    src.unread[Path(name).suffix.lower()] += 1
                elif name.lower().endswith(SHARD_SUFFIXES):
                    src.shards.append(rel)
        src.files.sort()
        src._check_caption_column()
        for rel in src.files:
            if src.kohya and rel not in with_sidecar and src._metadata_caption(rel) is None:
                src.kohya[rel.partition("/")[0]].named += 1
        return src

    def add_reg(self, root: str | os.PathLike[str]) -> None:
        """Read ``root`` as kohya's ``reg_data_dir`` (only ``N_class`` folders: each image N
        times, captioned "class" without a caption of its own), each image as often per epoch
        as :func:`~glidectl.data.kohya.reg_draws` matches it to this folder's reads."""
        root = Path(root)
        name = f"data.reg_source {str(root)!r}"
        if not root.is_dir():
            raise GlidectlError(f"{name} is not a folder; give kohya's reg_data_dir (a folder "
                                "of 'N_class' folders such as '1_dog'), or set "
                                "data.reg_source = \"\" to train without one.")
        reg = FolderSource.scan(root, kohya=True)
        if not reg.kohya:
            raise GlidectlError(f"{name} does not hold only 'N_class' folders (such as "
                                "'1_dog'), as kohya's reg_data_dir does; move its images into "
                                "such folders.")
        if not reg.files:
            raise GlidectlError(f"{name} holds no images ({' '.join(IMAGE_EXTENSIONS)}) in its "
                                "'N_class' folders; put the regularisation images there, or "
                                "set data.reg_source = \"\" to train without them.")
        train = sum(self.repeats(u) for u in self.files)
        repeats = [reg.repeats(u) for u in reg.files]
        draws = reg_draws(train, repeats)
        per_folder: Counter[str] = Counter()
        for unit, n in zip(reg.files, draws, strict=True):
            per_folder[unit.partition("/")[0]] += n
            self.reg_draws[REG_PREFIX + unit] = n
        for top, folder in reg.kohya.items():
            folder.reg, folder.draws = True, per_folder[top]
        self.reg, self.reg_note = reg, unread_reg_note(name, draws, repeats, train)

    def _read_metadata(self, path: Path, rel_dir: PurePosixPath) -> None:
        shown = (rel_dir / path.name).as_posix()
        if path.suffix == ".parquet":  # Hugging Face's imagefolder reads it too
            self._add_rows(self._parquet_rows(path, shown), shown, rel_dir)
            return
        raw, why = read_regular(path)  # a named pipe is not opened: it would wait
        if raw is None:
            self._bad_metadata(f"{shown!r}, " + ("not a regular file (a pipe or a device)"
                                                 if why == "not a regular file" else "unreadable"))
            return
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            self._bad_metadata(f"{shown!r}, not UTF-8")
            return
        text = text.replace("\r\n", "\n").replace("\r", "\n")  # as read_text's newlines
        self.metadata_files.append(shown)
        rows: list[tuple[int, Any]] = []
        if path.suffix == ".csv":
            reader = csv.DictReader(io.StringIO(text, newline=""))
            rows = [(reader.line_num, row) for row in reader]
        else:
            for number, line in enumerate(text_lines(text), start=1):
                if not line.strip():
                    continue
                try:
                    rows.append((number, json.loads(line)))
                except json.JSONDecodeError:
                    self._bad_metadata(f"{shown!r} line {number}, not JSON")
        self._add_rows(rows, shown, rel_dir)

    def _parquet_rows(self, path: Path, shown: str) -> list[tuple[int, Any]]:
        """The rows of a ``metadata.parquet`` (its own row numbers); none, said as a bad
        metadata file, when it cannot be read."""
        from .parquet import pyarrow_parquet

        pq = pyarrow_parquet()  # no pyarrow: one sentence naming the extra that brings it
        try:
            table = pq.read_table(path)
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            self._bad_metadata(f"{shown!r}, not a readable Parquet file "
                               f"({one_line(str(exc))[:80]})")
            return []
        self.metadata_files.append(shown)
        return list(enumerate(table.to_pylist(), start=1))

    def _add_rows(self, rows: list[tuple[int, Any]], shown: str, rel_dir: PurePosixPath
                  ) -> None:
        """Metadata rows by the image their ``file_name`` names, relative to ``rel_dir``."""
        for number, row in rows:
            if isinstance(row, dict) and None in row:  # csv's DictReader: fields past the header
                self._bad_metadata(f"{shown!r} line {number}, more fields than its header "
                                   "names (quote a caption holding a comma)")
                continue
            name = row.get("file_name") if isinstance(row, dict) else None
            if not isinstance(name, str) or not name:
                where = "row" if shown.endswith(".parquet") else "line"
                self._bad_metadata(f"{shown!r} {where} {number}, no file_name")
                continue
            rel = (rel_dir / name).as_posix() if str(rel_dir) != "." else name
            self.metadata[PurePosixPath(rel).as_posix()] = row

    def _check_caption_column(self) -> None:
        """Refuse a data.caption_column that no metadata row holds, as tables refuse it."""
        if self.caption_column and self.metadata:
            columns = list(dict.fromkeys(k for row in self.metadata.values() for k in row))
            pick_column(columns, self.caption_column, CAPTION_COLUMNS, "caption_column",
                        str(self.root / self.metadata_files[0]), required=True)

    def _bad_metadata(self, where: str) -> None:
        self.bad_metadata += 1
        self.bad_metadata_first = self.bad_metadata_first or where

    def _metadata_caption(self, rel: str) -> str | None:
        """The row's ``data.caption_column`` (unset: ``text``, else ``caption``): a string,
        or a list of captions (as diffusers' training scripts take them), one picked per
        fetch like a file's lines."""
        return self._row_caption(self.metadata.get(rel))

    def _row_caption(self, row: dict[str, Any] | None) -> str | None:
        """A metadata row's caption, as :meth:`_metadata_caption` picks it (None: no row)."""
        if row is None:
            return None
        value = (row.get(self.caption_column) if self.caption_column
                 else row.get("text", row.get("caption")))
        text = caption_value(value)
        return text if isinstance(text, str) else None

    def _caption_column_hint(self) -> str | None:
        """The string column that metadata rows without a caption hold instead (diffusers'
        ``--caption_column``), and the key to set; None when they hold none."""
        found: Counter[str] = Counter()
        for rel in self.files:
            row = self.metadata.get(rel)
            if row is not None and self._metadata_caption(rel) is None:
                found.update(k for k, v in row.items()
                             if k != "file_name" and isinstance(caption_value(v), str))
        if not found:
            return None
        column, n = found.most_common(1)[0]
        wanted = repr(self.caption_column) if self.caption_column else "'text' or 'caption'"
        return (f"{n} metadata row{'s' * (n != 1)} {'have' if n != 1 else 'has'} no {wanted} "
                f"but a string column {column!r}: set "
                f"data.caption_column = \"{column}\" to read {'their' if n != 1 else 'its'} "
                "captions from it.")

    def __len__(self) -> int:
        return len(self.files) + len(self.reg_draws)

    def repeats(self, unit: str) -> int:
        """Times per epoch training reads ``unit`` (its kohya folder's count, else once; a
        regularisation image: as matched by :meth:`add_reg`)."""
        if unit in self.reg_draws:
            return self.reg_draws[unit]
        folder = self.kohya.get(unit.partition("/")[0])
        return folder.repeats if folder is not None else 1

    @property
    def num_samples(self) -> int:
        return len(self.files) + len(self.reg_draws)

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
        if self.shards:
            out.append(self._shards_note())
        out += layout_notes(self.root, list(self.kohya.values()))
        out += filter(None, [not_read_by("kohya's trainers do", self.not_kohya,
                                         repr(str(self.root)), "its 'N_words' folders")])
        if self.kohya_ordinary:
            out.append(self.kohya_ordinary)
        if self.kohya_below:
            out.append(kohya_below_note(self.root, self.kohya_below))
        if self.bad_metadata:
            n = self.bad_metadata
            what = "row or file" if n == 1 else "rows or files"
            first = f"{'first: ' * (n > 1)}{self.bad_metadata_first}"
            out.append(f"{str(self.root)!r}: {n} metadata {what} could not be read ({first}); "
                       "their images get no caption from them: write one JSON object a line "
                       "(or a CSV row) with file_name and text.")
        tops = {PurePosixPath(f).parts[0] for f in self.files if "/" in f}
        if "train" in tops and tops & SPLIT_FOLDERS - {"train"} and tops <= SPLIT_FOLDERS \
                and not any("/" not in f for f in self.files):
            split = ["train/", *(f"{t}/" for t in sorted(tops - {"train"}))]
            shown = ", ".join(split[:-1]) + f" and {split[-1]}"
            out.append(f"{str(self.root)!r} is laid out in splits ({shown}), as "
                       "Hugging Face's imagefolder writes them, and every split is trained "
                       f"on; point data.source at {str(self.root / 'train')!r} (or hf:"
                       f"{self.root}, which reads the train split), and validation.source at "
                       "another split.")
        if stray := [rel for rel in sorted(set(self.metadata) - set(self.files))
                     if _outside(rel) or not (self.root / rel).exists()]:
            n = len(stray)
            out.append(f"{str(self.root)!r}: {n} metadata row{'s' * (n != 1)} name{'s' * (n == 1)}"
                       f" no image file there (first: {stray[0]!r}, read relative to its "
                       "metadata file's folder, as Hugging Face's imagefolder reads "
                       "file_name); fix file_name, or their images get no caption from it.")
        if self.reg is not None:
            out += self.reg.notes() + ([self.reg_note] if self.reg_note else [])
        return out

    def _shards_note(self) -> str:
        """The webdataset shards an image folder leaves out, and how to read them."""
        n, first = len(self.shards), self.shards[0]
        shown = ", ".join(repr(p) for p in self.shards[:3]) + ", …" * (n > 3)
        suffix = next(s for s in SHARD_SUFFIXES if first.lower().endswith(s))
        pattern = self.root / PurePosixPath(first).parent / f"*{suffix}"
        return (f"{str(self.root)!r}: {n} webdataset shard{'s' * (n != 1)} left out ({shown}): "
                "an image folder reads its images only; to read the shards, point data.source "
                f"at them (data.source = {str(pattern)!r}).")

    def units(self) -> list[str]:
        return self.files + list(self.reg_draws)

    def _note_named_with_ext(self, image: Path) -> None:
        """Note the caption file of an uncaptioned ``image`` named with the image's
        extension kept (``a.jpg.txt``, as some captioning tools write them)."""
        for suffix in CAPTION_SUFFIXES:
            if image.with_name(image.name + suffix).is_file():
                self.named_with_ext[image.name + suffix] += 1
                return

    def hint(self, reason: str) -> str | None:
        """For images rejected as ``reason``: where the captions of those read so far are
        instead (None: nowhere seen)."""
        if reason != "missing_caption":
            return None
        if not (names := self.named_with_ext):
            return self._caption_column_hint()
        n, first = len(names), next(iter(names))
        stem, suffix = first.rsplit(".", 2)[0], first.rpartition(".")[1:]
        some = f"{n} image{'s' * (n != 1)} without a caption file {'have' if n != 1 else 'has'}"
        return (f"{some} one named with the image's extension kept, as {first!r}, which is "
                "not read: a caption file is the image's name with its extension replaced "
                f"({stem + ''.join(suffix)!r}); rename {'them' if n != 1 else 'it'}.")

    def kohya_table(self) -> list[dict[str, Any]]:
        """Per kohya folder (then data.reg_source's): its repeats, images, reads per epoch
        and folder-name captions (``dataset inspect``; empty when the folder is not in
        kohya's layout)."""
        reg = self.reg.kohya.values() if self.reg is not None else ()
        return [folder.to_dict() for folder in (*self.kohya.values(), *reg)]

    def read(self, unit: str, counter: RejectionCounter) -> Iterator[RawSample]:
        if self.reg is not None and unit in self.reg_draws:
            for raw in self.reg.read(unit.removeprefix(REG_PREFIX), counter):
                yield replace(raw, key=unit, is_reg=True)
            return
        path = self.root / unit
        row = self.metadata.get(unit)
        if row is None:  # img2dataset's `files` output: each image's .json (caption, sizes, …)
            row = json_sidecar(path)
        sidecar, unreadable = read_sidecar(path, CAPTION_SUFFIXES)
        caption: bytes | str | None = sidecar
        # there, but not readable (a folder, permissions): not a missing caption
        reject = "unreadable_caption" if unreadable is not None else None
        meta: dict[str, Any] = {}
        if row is not None:
            meta = {k: v for k, v in row.items() if k != "file_name"}
        if caption is None:
            caption = self._row_caption(row)
        folder = self.kohya.get(unit.partition("/")[0])
        blank_first = False  # kohya trains the empty caption of a blank first line
        if folder is not None and sidecar is not None:  # kohya trains the first line only
            with suppress(Rejected):  # not UTF-8: rejected as such where it is decoded
                text = decode_caption(sidecar) or ""
                caption = caption_file_text(text, any_line=False)
                blank_first = not caption and bool(text.strip())  # an empty file: refused
        by_name = caption is None and reject is None and folder is not None
        if caption is None and reject is None and folder is None:
            self._note_named_with_ext(path)
        if by_name:  # kohya's class words caption uncaptioned images ("10_": the empty one)
            caption = folder.words
        yield RawSample(key=unit, image=path, caption=caption, meta=meta, reject=reject,
                        empty_ok=(by_name or blank_first) and not caption)
