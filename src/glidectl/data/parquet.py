"""Parquet files: a file, a glob or a folder of them; one row is one sample.

Work units are row groups (``"<file index>:<row group>"``), so ranks and workers split a
dataset without reading it first. The image column holds encoded bytes, a path (relative to
the Parquet file's folder) or datasets' ``{"bytes", "path"}`` struct; other columns reach
the preset as metadata (LAION: ``similarity``, ``punsafe``, ``pwatermark``, ``width``, …).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import GlidectlError
from ..extras import install_hint
from .records import RawSample, unit_names
from .stats import RejectionCounter
from .tables import CAPTION_COLUMNS, IMAGE_COLUMNS, link_hint, pick_column, row_sample
from .walk import files_with_suffix


def pyarrow_parquet() -> Any:
    """``pyarrow.parquet``, or one sentence naming the extra that installs it."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise GlidectlError(
            f"Reading Parquet needs pyarrow; install it with: {install_hint('hf')}."
        ) from None
    return pq


def expand_parquet(spec: str) -> list[str]:
    """The .parquet files of a file, glob or folder (sorted); a file or folder whose name
    holds ``*?[`` is read as named."""
    if os.path.isdir(spec):
        files = files_with_suffix(spec, (".parquet",))
    elif any(c in spec for c in "*?[") and not os.path.exists(spec):  # not 'a [x].parquet'
        files = sorted(glob.glob(spec, recursive=True))
    else:
        files = [spec] if os.path.isfile(spec) else []
    if not files:
        raise GlidectlError(
            f"No Parquet files found for {spec!r}; pass a .parquet file, a glob like "
            "'data/*.parquet' or a folder that holds them."
        )
    return files


ROWS_AT_ONCE = 64  # rows decoded at once: a row may hold a large image


@dataclass
class ParquetSource:
    """Rows of Parquet files; ``groups[i]`` is the row count of each row group of file i
    (None for a file whose footer cannot be read: counted as ``bad_parquet`` when read).
    ``image_column``/``caption_column`` are the first readable file's; ``per_file[i]`` holds
    file i's own, as files joined from two datasets may name them differently."""

    spec: str
    files: list[str]
    groups: list[list[int] | None]
    image_column: str
    caption_column: str | None
    columns: list[str] = field(default_factory=list)
    names: dict[str, str] | None = field(default=None, repr=False, compare=False)
    per_file: list[tuple[str, str | None] | None] = field(default_factory=list, repr=False)

    kind = "parquet"
    splits_samples = False

    @classmethod
    def open(cls, spec: str, cfg: Any) -> ParquetSource:
        pq = pyarrow_parquet()
        files = expand_parquet(spec)
        groups: list[list[int] | None] = []
        per_file: list[tuple[str, str | None] | None] = []
        columns: list[str] = []
        failed: tuple[str, list[str], str, GlidectlError] | None = None
        for path in files:
            try:
                meta = pq.ParquetFile(path).metadata
            except Exception:  # a damaged footer: the file counts as bad data when read
                groups.append(None)
                per_file.append(None)
                continue
            groups.append([meta.row_group(g).num_rows for g in range(meta.num_row_groups)])
            names = list(meta.schema.to_arrow_schema().names)
            columns = columns or names
            key = "image_column"
            try:  # each file's own: files joined from two datasets may differ (jpg, image)
                image = pick_column(names, cfg.image_column, IMAGE_COLUMNS, key, spec,
                                    required=True)
                key = "caption_column"  # none found: every row would be missing_caption
                caption = pick_column(names, cfg.caption_column, CAPTION_COLUMNS, key, spec,
                                      required=True)
                per_file.append((str(image), caption))
            except GlidectlError as exc:
                per_file.append(None)
                failed = failed or (path, names, key, exc)
        if not columns:
            raise GlidectlError(
                f"None of the {len(files)} Parquet file(s) of {spec!r} can be read; check "
                "that they are Parquet files."
            )
        found = [(path, cols) for path, cols in zip(files, per_file, strict=True) if cols]
        if failed and not found:  # no file has them: the columns to set are named
            raise failed[3]
        if failed:
            path, names, key, _ = failed
            other, (image, caption) = found[0]
            wanted = str(getattr(cfg, key) or "")
            defaults = IMAGE_COLUMNS if key == "image_column" else CAPTION_COLUMNS
            column = (f"column {wanted!r} (data.{key}" if wanted else
                      f"{key.split('_')[0]} column ({', '.join(defaults)}")
            raise GlidectlError(
                f"Parquet file {path!r} of {spec!r} has no {column}; its columns: "
                f"{', '.join(names) or 'none'}), while {other!r} has "
                f"{image if key == 'image_column' else caption!r}; give the files the same "
                "column names, or point data.source at the files that share them.")
        image, caption = found[0][1]
        return cls(spec, files, groups, image, caption, columns, per_file=per_file)

    @property
    def num_samples(self) -> int:
        return sum(sum(g) for g in self.groups if g)

    def describe(self) -> str:
        return self.spec

    def hint(self, reason: str) -> str | None:
        """What to do about rows rejected as ``reason`` (image links)."""
        return link_hint(reason, self.image_column)

    def units(self) -> list[str]:
        return [f"{i}:{g}" for i, groups in enumerate(self.groups)
                for g in (range(len(groups)) if groups is not None else [-1])]

    def read(self, unit: str, counter: RejectionCounter) -> Iterator[RawSample]:
        pq = pyarrow_parquet()
        index, group = (int(part) for part in unit.split(":"))
        path = self.files[index]
        if self.names is None:  # once: a file's name in its samples' keys
            self.names = unit_names(self.files)
        name = self.names.get(path, os.path.basename(path))
        if group < 0:
            counter.reject("bad_parquet", name)
            return
        first = sum((self.groups[index] or [])[:group])
        base = os.path.dirname(path)
        image_column, caption_column = (self.per_file[index] if self.per_file else None) or (
            self.image_column, self.caption_column)
        r = 0
        try:  # a few rows at a time: pandas writes a whole table as one row group
            table = pq.ParquetFile(path, buffer_size=1 << 20, pre_buffer=False)  # streamed
            batches = iter(table.iter_batches(batch_size=ROWS_AT_ONCE, row_groups=[group]))
        except Exception:  # noqa: BLE001 - pyarrow's errors of a damaged file
            counter.reject("bad_parquet", f"{name}:{group}")
            return
        while True:
            try:
                rows = next(batches).to_pylist()
            except StopIteration:
                return
            except Exception:  # noqa: BLE001 - damaged past here: the group's rest
                counter.reject("bad_parquet", f"{name}:{group}")
                return
            for row in rows:
                yield row_sample(row, f"{name}/{first + r}", image_column, caption_column,
                                 base)
                r += 1
