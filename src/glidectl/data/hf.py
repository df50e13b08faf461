"""Hugging Face datasets: ``hf:NAME_OR_PATH``, a folder written by ``save_to_disk`` or a Hub
dataset (or a local folder of data files) read as a stream; ``data.split`` picks the split.

Images stay encoded (``Image(decode=False)``) until glidectl's own decoder sees them, so
broken images are counted like any other bad data and skipped rows are never decoded.
Work units are blocks of rows (saved datasets) or the stream's shards (its data files).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import GlidectlError, from_here
from ..extras import install_hint
from .records import RawSample
from .stats import RejectionCounter
from .tables import CAPTION_COLUMNS, IMAGE_COLUMNS, link_hint, pick_column, row_sample

BLOCK_ROWS = 1000  # rows per work unit of a saved dataset
SAVED_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(?:/[A-Za-z0-9][\w.-]*)?")  # NAME or USER/NAME


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise GlidectlError(
            f"hf: sources need the datasets library; install it with: {install_hint('hf')}."
        ) from None
    return datasets


def _offline() -> bool:
    """Whether HF_HUB_OFFLINE or HF_DATASETS_OFFLINE keeps datasets off the network."""
    from ..ranges import switched_on

    return any(map(switched_on, ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")))


def _local_path(name: str) -> str | None:
    """The folder ``hf:NAME`` means, None for a Hub dataset name; one sentence for a path
    that is no folder (a file, or nothing: datasets would ask the Hub for it)."""
    path = os.path.expanduser(name)
    if os.path.isdir(path):
        return path
    if os.path.exists(path):
        raise GlidectlError(
            f"hf:{name} is a file, not a folder; pass its folder (hf:FOLDER), or the file "
            "without hf: (a .parquet file, for one, reads as Parquet).")
    if HUB_NAME.fullmatch(name):
        return None
    raise GlidectlError(
        f"hf:{name}: the folder {path!r}{from_here(path)} does not exist; pass a folder "
        "written by save_to_disk or holding data files, or a Hub dataset name (hf:USER/NAME).")


def _check_hub(name: str) -> None:
    """One sentence at once when ``name`` is a Hub dataset and the Hub's host does not
    resolve (no network), instead of huggingface_hub's retries (about 25 s)."""
    if os.path.isdir(name) or _offline():
        return
    import socket
    from urllib.parse import urlsplit

    host = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or ""
    try:
        socket.getaddrinfo(host, 443)
    except OSError as exc:
        raise GlidectlError(
            f"Cannot open Hugging Face dataset {name!r}: the Hub ({host}) cannot be reached "
            f"({exc.strerror or exc}); connect to the network, pass a local folder (hf:PATH), "
            "or set HF_DATASETS_OFFLINE=1 to read it from the cache.") from None


def is_saved(path: str) -> bool:
    """True for a folder written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``."""
    return os.path.isdir(path) and any(
        os.path.isfile(os.path.join(path, m)) for m in SAVED_MARKERS)


@dataclass
class HFSource:
    """A Hugging Face dataset split; the dataset object opens lazily in each process."""

    name: str
    split: str
    saved: bool
    image_column: str
    caption_column: str | None
    rows: int | None
    shards: int
    _ds: Any = field(default=None, repr=False)

    kind = "hf"
    splits_samples = False

    @classmethod
    def open(cls, spec: str, cfg: Any) -> HFSource:
        name = spec.strip()
        if not name:
            raise GlidectlError("data.source 'hf:' names no dataset; use hf:NAME or hf:PATH.")
        path = _local_path(name)
        src = cls(path or name, str(cfg.split), bool(path and is_saved(path)), "", None,
                  None, 1)
        ds = src.dataset()
        columns = list(ds.column_names or [])
        if not columns and not src.saved:  # a stream without declared features: peek
            columns = list(next(iter(ds), {}).keys())
        features = getattr(ds, "features", None) or {}
        image_like = [c for c in columns if type(features.get(c)).__name__ == "Image"]
        src.image_column = str(pick_column(
            columns, cfg.image_column, (*IMAGE_COLUMNS, *image_like), "image_column",
            f"hf:{name}", required=True))
        src.caption_column = pick_column(columns, cfg.caption_column, CAPTION_COLUMNS,
                                         "caption_column", f"hf:{name}", required=True)
        if src.saved:
            src.rows = len(ds)
            src.shards = max(1, -(-src.rows // BLOCK_ROWS))
        else:
            src.shards = int(ds.num_shards)
            info = getattr(ds, "info", None)
            splits = getattr(info, "splits", None) or {}
            known = splits.get(src.split) if hasattr(splits, "get") else None
            src.rows = getattr(known, "num_examples", None) or None
        src._ds = None
        return src

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_ds": None}  # each worker opens its own

    def dataset(self) -> Any:
        """The split as a datasets object with images left encoded."""
        if self._ds is not None:
            return self._ds
        datasets = _datasets()
        try:
            if self.saved:
                ds = datasets.load_from_disk(self.name)
                if isinstance(ds, datasets.DatasetDict):
                    if self.split not in ds:
                        raise GlidectlError(
                            f"hf:{self.name} has no split {self.split!r} (splits: "
                            f"{', '.join(ds)}); set data.split to one of them.")
                    ds = ds[self.split]
            else:
                _check_hub(self.name)
                ds = datasets.load_dataset(self.name, split=self.split, streaming=True)
        except GlidectlError:
            raise
        except Exception as exc:
            if isinstance(exc, ConnectionError) and _offline():
                raise GlidectlError(
                    f"Hugging Face dataset {self.name!r} is not in the local cache, and "
                    "HF_DATASETS_OFFLINE or HF_HUB_OFFLINE keeps it from the Hub; unset them "
                    "with the network connected to download it, or pass a local folder "
                    "(hf:PATH).") from None
            why = (str(exc).strip().splitlines() or [""])[0].rstrip(".")[:200]
            raise GlidectlError(
                f"Cannot open Hugging Face dataset {self.name!r} (split {self.split!r}): "
                f"{type(exc).__name__}: {why}; check the name, data.split and the network "
                "(or HF_DATASETS_OFFLINE)."
            ) from None
        features = getattr(ds, "features", None) or {}
        for column, feature in features.items():
            if type(feature).__name__ == "Image" and getattr(feature, "decode", False):
                ds = ds.cast_column(column, datasets.Image(decode=False))
        self._ds = ds
        return ds

    @property
    def num_samples(self) -> int | None:
        return self.rows

    def describe(self) -> str:
        return f"hf:{self.name}"

    def hint(self, reason: str) -> str | None:
        """What to do about rows rejected as ``reason`` (image links)."""
        return link_hint(reason, self.image_column)

    def units(self) -> list[str]:
        return [str(i) for i in range(self.shards)]

    def read(self, unit: str, counter: RejectionCounter) -> Iterator[RawSample]:
        index = int(unit)
        ds = self.dataset()
        try:
            if self.saved:
                start = index * BLOCK_ROWS
                blocks: Any = [ds[start:min(start + BLOCK_ROWS, len(ds))]]
            else:  # .iter(), not iter(): datasets would split the shard again per worker
                start = 0
                blocks = ds.shard(num_shards=self.shards, index=index).iter(BLOCK_ROWS)
            rows = (dict(zip(block, values, strict=True)) for block in blocks
                    for values in zip(*block.values(), strict=True))
            prefix = f"{self.split}/" if self.saved else f"{self.split}/shard{index}/"
            for r, row in enumerate(rows, start=start):
                yield row_sample(row, f"{prefix}{r}", self.image_column, self.caption_column)
        except GlidectlError:
            raise
        except Exception:  # a damaged data file: the rest of this unit is lost
            counter.reject("bad_rows", f"hf:{self.name}#{unit}")
