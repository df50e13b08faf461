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
    samples. ``splits_samples``: one unit is one sample; ``num_samples``: None if unknown."""

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
