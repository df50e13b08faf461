"""Turning a ``data.source`` string into a source through the registered source types.

``name:SPEC`` selects a type by name (``demo:shapes``, ``folder:PATH``, ``wds:SPEC``,
``parquet:PATH``, ``hf:NAME_OR_PATH``); a plain path or pattern goes to the first type that
claims it, in priority order (Parquet files, then shards, then image folders).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import GlidectlError, from_here
from ..runs import run_holding, run_setting
from .demo import make_demo_sample
from .records import RawSample
from .source_api import Source, SourceType
from .stats import RejectionCounter

__all__ = ["DemoSource", "Source", "open_source"]


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


def source_types() -> list[SourceType]:
    """Registered source types, in the order plain paths are offered to them."""
    from .. import plugins

    return sorted((e.obj for e in plugins.data_sources()), key=lambda t: (t.priority, t.name))


def source_type(spec: str | list[str]) -> tuple[SourceType | None, str | list[str]]:
    """The registered type that opens ``spec`` (``data.source``) and what it is handed:
    ``name:SPEC`` selects a type by name, a plain path the first type that claims it
    (None: none does)."""
    from .. import plugins

    registry = plugins.data_sources()
    if not isinstance(spec, str):
        return registry.get("webdataset"), spec
    spec = spec.strip()
    prefix, sep, rest = spec.partition(":")
    if sep and len(prefix) > 1 and prefix.lower() in registry and not _is_url(spec):
        return registry.get(prefix), rest
    path = os.path.expanduser(spec)
    return next((k for k in source_types() if k.claims is not None and k.claims(path)),
                None), path


def open_source(spec: str | list[str], cfg: Any, resolution: int = 64,
                name: str = "Data source") -> Source:
    """The source for ``spec`` (``data.source``) with the ``[data]`` options ``cfg``;
    ``name``: what a message calls it (the config key, where it came from one)."""
    if isinstance(spec, str) and not spec.strip():
        raise GlidectlError("data.source is empty; set it to a folder, shards or demo:shapes.")
    kind, given = source_type(spec)
    if isinstance(given, str) and (found := run_holding(os.path.expanduser(given))):
        raise GlidectlError(_run_not_data(name, spec, *found))
    if kind is not None:
        return kind.open(given, cfg, resolution)
    exists = os.path.exists(given)
    if not exists and (close := _misspelt_type(spec)):
        raise GlidectlError(f"{name} {spec!r} does not exist, and {spec.partition(':')[0]!r} "
                            f"is no source type; did you mean {close + ':'!r}?")
    what = (" is a file, not a kind of source glidectl reads" if exists
            else f"{from_here(given)} does not exist")
    if exists and _in_a_folder(given):
        folder = os.path.dirname(given) or "."
        what += f" (for the images beside it, pass its folder {folder!r})"
    raise GlidectlError(
        f"{name} {spec!r}{what}; pass an image folder, webdataset shards "
        "(directory, glob or 'shard-{00000..00009}.tar'), Parquet files, a kohya dataset "
        "config (.toml), a OneTrainer concepts file (.json), hf:NAME or demo:shapes."
    )


def _run_not_data(name: str, spec: str, run: Path, part: str) -> str:
    """The sentence for a training run's folder, or a part of its checkpoints, given as
    data: what it is, and the data the run trained on (its config.toml's data.source)."""
    what = {"folder": "a glidectl training run's folder",
            "checkpoints": f"the checkpoints folder of the glidectl training run {str(run)!r}",
            "checkpoint": f"part of a checkpoint of the glidectl training run {str(run)!r}",
            }[part]
    trained = run_setting(run, "data", "source")
    trained = trained if isinstance(trained, str) and trained.strip() else None
    return (f"{name} {spec!r} is {what}, not a dataset; pass the images it trained on"
            + (f" (its config.toml's data.source: {trained!r})" if trained else "")
            + " or another dataset.")


def _misspelt_type(spec: str | list[str]) -> str | None:
    """The registered source type a ``name:`` prefix of ``spec`` is a likely typo of."""
    from .. import plugins

    if not isinstance(spec, str):
        return None
    prefix, sep, _ = spec.partition(":")
    if not sep or len(prefix) < 2 or not prefix.isidentifier():
        return None
    close = difflib.get_close_matches(prefix.lower(), plugins.data_sources().names(), n=1,
                                      cutoff=0.7)
    return close[0] if close else None


def _in_a_folder(path: str) -> bool:
    """Whether ``path`` is an image or a caption/metadata file of an image folder."""
    from .records import IMAGE_EXTENSIONS

    low = os.path.basename(path).lower()
    return (low.endswith((*IMAGE_EXTENSIONS, ".txt", ".caption"))
            or low in ("metadata.jsonl", "metadata.csv"))


def _is_url(spec: str) -> bool:
    return "://" in spec.split("::", 1)[0]
