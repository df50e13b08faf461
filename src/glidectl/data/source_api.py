"""What a data source plugin registers: how to recognise a ``data.source`` and open it.

Third-party sources register a :class:`SourceType` through the
``register_data_sources(register)`` hook, exactly like the built-ins in
``glidectl.data.builtin_sources``. No torch here: sources register with ``glidectl --help``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from .records import RawSample
from .stats import RejectionCounter


class Source(Protocol):
    """Work units (shards, files, row groups; as strings) and how to read one into raw
    samples. ``splits_samples``: one unit is one sample; ``num_samples``: None if unknown.
    A source may also say, by an optional ``repeats(unit) -> int``, that training reads a
    one-sample unit (whose key is the unit) that many times per epoch, or by an optional
    ``reads(unit, epoch) -> int`` how often in a given epoch (counts that change from epoch
    to epoch, as OneTrainer's fractional repeats do; it takes precedence)."""

    kind: str
    splits_samples: bool
    num_samples: int | None

    def units(self) -> list[str]: ...

    def read(self, unit: str, counter: RejectionCounter) -> Iterator[RawSample]: ...

    def describe(self) -> str: ...


def source_notes(source: Any) -> list[str]:
    """A source's warnings about what it leaves out (its optional ``notes()``)."""
    notes = getattr(source, "notes", None)
    return list(notes()) if callable(notes) else []


def _counter(source: Any, epoch: int) -> Any:
    """``unit -> reads in epoch``, from the source's optional ``reads`` or ``repeats``
    (None: each unit once)."""
    reads = getattr(source, "reads", None)
    if callable(reads):
        return lambda unit: reads(unit, epoch)
    repeats = getattr(source, "repeats", None)
    return repeats if callable(repeats) else None


def epoch_units(source: Any, units: list[str], epoch: int = 0) -> list[str]:
    """``units`` as training epoch ``epoch`` reads them: each as many times as the source's
    optional ``reads(unit, epoch)`` or ``repeats(unit)`` says (kohya's folder repeats), else
    once."""
    count = _counter(source, epoch)
    return units if count is None else [u for u in units for _ in range(count(u))]


def samples_per_epoch(source: Any) -> int | None:
    """Samples one training epoch (the first, where counts change per epoch) reads:
    ``num_samples`` with each unit counted as often as the source says."""
    count = _counter(source, 0)
    if count is None or not source.num_samples:
        return source.num_samples
    return sum(count(u) for u in source.units())


def data_listing(source: Any, *, shuffle_buffer: int = 0,
                 resampled: bool = False) -> dict[str, Any] | None:
    """What a training epoch of ``source`` reads, and in which order, to tell a resume on
    other data: ``{"samples": per epoch (None: unknown), "sha256": of its unit list,
    "shuffle_buffer": the sample shuffle's (None: the source shuffles whole units),
    "resampled": ...}`` (None: no source)."""
    if source is None or not callable(getattr(source, "units", None)):
        return None
    digest = hashlib.sha256("\0".join(map(str, source.units())).encode("utf-8", "replace"))
    return {"samples": samples_per_epoch(source), "sha256": digest.hexdigest(),
            "shuffle_buffer": None if source.splits_samples else int(shuffle_buffer),
            "resampled": bool(resampled)}


def _toml(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def listing_change(saved: Any, now: dict[str, Any] | None, name: str) -> list[str]:
    """How the data ``name`` now differ from the ``saved`` :func:`data_listing`, or are
    read otherwise ("'imgs' now lists 10 samples an epoch, not 16", 'data.shuffle_buffer 4
    → 100'; none: the same, or either is unknown)."""
    if not isinstance(saved, dict) or now is None:
        return []
    changes = []
    if saved.get("sha256") != now["sha256"]:
        was, n = saved.get("samples"), now["samples"]
        if was != n and isinstance(was, int) and n is not None:
            changes.append(f"{name!r} now lists {n} sample{'s' * (n != 1)} an epoch, not {was}")
        else:
            changes.append(f"{name!r} now lists other files"
                           + (f" ({n} samples an epoch, as before)" if was == n and n else ""))
    for key in ("shuffle_buffer", "resampled"):  # absent in checkpoints before they were kept
        was = saved.get(key)
        if was is not None and now[key] is not None and was != now[key]:
            changes.append(f"data.{key} {_toml(was)} → {_toml(now[key])}")
    return changes


def reads_per_epoch(source: Any, key: str) -> int:
    """Times one training epoch (the first) reads the sample ``key`` (see
    :func:`epoch_units`)."""
    count = _counter(source, 0)
    return int(count(key)) if count is not None and source.splits_samples else 1


def epoch_without(per_epoch: int, keys: Iterable[str], reads: Callable[[str], int]) -> int:
    """Samples an epoch of ``per_epoch`` reads less the held-out ``keys``, each as often as
    ``reads(key)`` says an epoch reads it (validation.holdout's count, for training and
    ``dataset inspect`` alike)."""
    return max(0, per_epoch - sum(reads(k) for k in keys))


#: ``open(spec, data_cfg, resolution) -> Source``; ``spec`` has the ``name:`` prefix removed.
OpenFn = Callable[[str, Any, int], Source]


@dataclass(frozen=True)
class SourceType:
    """A kind of ``data.source``: ``name:SPEC`` always selects it; ``claims(spec)`` lets it
    recognise plain paths (tried in ascending ``priority``)."""

    name: str
    open: OpenFn
    description: str = ""
    claims: Callable[[str], bool] | None = None
    priority: int = 100
