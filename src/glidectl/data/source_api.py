"""What a data source plugin registers: how to recognise a ``data.source`` and open it.

Third-party sources register a :class:`SourceType` through the
``register_data_sources(register)`` hook, exactly like the built-ins in
``glidectl.data.builtin_sources``. No torch here: sources register with ``glidectl --help``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from .records import RawSample
from .stats import RejectionCounter


class Source(Protocol):
    """Work units (shards, files, row groups; as strings) and how to read one into raw
    samples. ``splits_samples``: one unit is one sample; ``num_samples``: None if unknown.
    A source may also say, by an optional ``repeats(unit) -> int``, that training reads a
    one-sample unit (whose key is the unit) that many times per epoch."""

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


def epoch_units(source: Any, units: list[str]) -> list[str]:
    """``units`` as one training epoch reads them: each as many times as the source's
    optional ``repeats(unit)`` says (kohya's folder repeats), else once."""
    repeats = getattr(source, "repeats", None)
    return units if not callable(repeats) else [u for u in units for _ in range(repeats(u))]


def samples_per_epoch(source: Any) -> int | None:
    """Samples one training epoch reads: ``num_samples`` with each unit counted as often as
    the optional ``repeats(unit)`` says."""
    repeats = getattr(source, "repeats", None)
    if not callable(repeats) or not source.num_samples:
        return source.num_samples
    return sum(repeats(u) for u in source.units())


def reads_per_epoch(source: Any, key: str) -> int:
    """Times one training epoch reads the sample ``key`` (see :func:`epoch_units`)."""
    repeats = getattr(source, "repeats", None)
    return int(repeats(key)) if callable(repeats) and source.splits_samples else 1


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
