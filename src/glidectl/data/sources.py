"""Turning a ``data.source`` string into a source: demo data, an image folder or shards."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..errors import GlidectlError
from .demo import check_demo_name, make_demo_sample
from .folder import FolderSource
from .images import IMAGE_EXTENSIONS
from .records import RawSample
from .shards import SHARD_SUFFIXES, ShardSource, is_remote
from .stats import RejectionCounter


class Source(Protocol):
    """Work units (files, shards, indices as strings) and how to read one into raw samples."""

    kind: str
    splits_samples: bool  # True: one unit is one sample (split units across processes)
    num_samples: int | None

    def units(self) -> list[str]: ...

    def read(self, unit: str, counter: RejectionCounter) -> Iterator[RawSample]: ...

    def describe(self) -> str: ...


@dataclass
class DemoSource:
    """``demo:<name>``: ``size`` pictures generated on the fly at ``resolution`` pixels."""

    name: str
    size: int = 4096
    resolution: int = 64

    kind = "demo"
    splits_samples = True

    @property
    def num_samples(self) -> int:
        return self.size

    def describe(self) -> str:
        return f"demo:{self.name}"

    def units(self) -> list[str]:
        return [str(i) for i in range(self.size)]

    def read(self, unit: str, counter: RejectionCounter) -> Iterator[RawSample]:
        sample = make_demo_sample(self.name, int(unit), self.resolution)
        meta = {"colour": sample.colour, "shape": sample.shape, "background": sample.background}
        yield RawSample(key=sample.key, image=sample.image, caption=sample.caption, meta=meta)


def _has_images(folder: Path) -> bool:
    for _, _, files in os.walk(folder):
        if any(f.lower().endswith(IMAGE_EXTENSIONS) for f in files):
            return True
    return False


def open_source(
    spec: str | Sequence[str], *, image_key: str = "jpg;png;jpeg;webp",
    caption_key: str = "txt", metadata_key: str = "json", demo_size: int = 4096,
    resolution: int = 64,
) -> Source:
    """``demo:<name>``, ``folder:PATH``, ``wds:SPEC``, a folder of images, or shards.

    A directory holding ``.tar`` shards and no images is read as webdataset shards.
    """
    if not isinstance(spec, str):
        return ShardSource.open(list(spec), image_key, caption_key, metadata_key)
    spec = spec.strip()
    if not spec:
        raise GlidectlError("data.source is empty; set it to a folder, shards or demo:shapes.")
    if spec.startswith("demo:"):
        if demo_size < 1:
            raise GlidectlError(f"data.demo_size must be at least 1, got {demo_size}.")
        return DemoSource(check_demo_name(spec[5:]), demo_size, resolution)
    if spec.startswith("folder:"):
        return FolderSource.scan(os.path.expanduser(spec[7:]))
    for prefix in ("wds:", "webdataset:"):
        if spec.startswith(prefix):
            return ShardSource.open(spec[len(prefix):], image_key, caption_key, metadata_key)
    path = Path(os.path.expanduser(spec))
    if path.is_dir():
        tars = any(p.name.lower().endswith(SHARD_SUFFIXES) for p in path.iterdir())
        if tars and not _has_images(path):
            return ShardSource.open(str(path), image_key, caption_key, metadata_key)
        return FolderSource.scan(path)
    looks_like_shards = (
        is_remote(spec) or "::" in spec or any(c in spec for c in "{*?[")
        or spec.lower().endswith(SHARD_SUFFIXES)
    )
    if looks_like_shards:
        return ShardSource.open(spec, image_key, caption_key, metadata_key)
    raise GlidectlError(
        f"Data source {spec!r} does not exist; pass an image folder, webdataset shards "
        "(directory, glob or 'shard-{00000..00009}.tar') or demo:shapes."
    )
