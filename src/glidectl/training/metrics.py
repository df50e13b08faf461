"""metrics.jsonl (one JSON object per logged step) and the throughput meter."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import atomic_path, json_safe
from ..errors import write_error


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _line(record: dict[str, Any]) -> str:
    """``record`` as one JSON line: a top-level number that is not finite (a diverged loss)
    as its name (``"nan"``, ``"inf"``), one deeper down as null; never the bare ``NaN``
    token, which is not JSON."""
    return json.dumps(json_safe({k: _clean(v) for k, v in record.items()}),
                      allow_nan=False) + "\n"


class MetricsFile:
    """Appends one JSON line per record; flushed at once so a crash keeps what was logged."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self._fh = open(self.path, "a", encoding="utf-8")
        except OSError as exc:
            raise write_error(self.path, exc) from None

    def write(self, record: dict[str, Any]) -> None:
        try:
            self._fh.write(_line(record))
            self._fh.flush()
        except OSError as exc:  # a full disk: a torn last line, skipped by read_metrics
            raise write_error(self.path, exc) from None

    def close(self) -> None:
        with suppress(OSError):  # what a full disk did not take is lost either way
            self._fh.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All records of a metrics.jsonl file; a torn line (a crash or a full disk mid-write)
    is skipped."""
    lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    return [record for line in lines if (record := _record(line)) is not None]


def _record(line: str) -> dict[str, Any] | None:
    """One line's record; None for a torn line or one that holds no JSON object."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def truncate_after(path: Path, step: int) -> None:
    """Drop records past ``step`` (a resumed run re-logs the steps it repeats). The file is
    read a line at a time and written again only when a line goes (a record past ``step``,
    a torn line) or is mended (an older file's NaN tokens), so a long run's resume holds no
    list of its records and rewrites none of them for nothing."""
    path = Path(path)
    if not path.is_file():
        return
    first = next((i for i, (line, kept) in enumerate(_kept_lines(path, step))
                  if kept != line), None)
    if first is None:
        return
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as out:
        out.writelines(kept for _, kept in _kept_lines(path, step, as_read=first))


def _kept_lines(path: Path, step: int, as_read: int = 0) -> Iterator[tuple[str, str]]:
    """Each line of ``path`` and what :func:`truncate_after` keeps of it: the line itself,
    '' when it goes, or its record as :class:`MetricsFile` writes it when the line holds
    what that never writes (a NaN token, no line end). The first ``as_read`` lines, known
    to be kept as they are, are not parsed again."""
    tokens: list[str] = []

    def token(name: str) -> float:
        tokens.append(name)
        return float(name)

    decoder = json.JSONDecoder(parse_constant=token)  # one, not one per line (json.loads)
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh):
            if number < as_read:
                yield line, line
                continue
            tokens.clear()
            try:
                record = decoder.decode(line)
            except json.JSONDecodeError:
                record = None
            if not isinstance(record, dict) or _past(record.get("step"), step):
                yield line, ""
            else:
                yield line, _line(record) if tokens or not line.endswith("\n") else line


def _past(logged: Any, step: int) -> bool:
    """Whether a record's ``step`` is a number past ``step``; a record whose step is no
    number (a hand-edited or damaged line) is kept as it was, not a traceback."""
    return isinstance(logged, int | float) and not isinstance(logged, bool) and logged > step


class Throughput:
    """Images/s and the share of wall time spent waiting for data, over a logging window
    less the time spent :meth:`paused` (previews, validation, checkpoints)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.start = time.perf_counter()
        self.images = 0
        self.data_wait = 0.0

    def add(self, images: int, data_wait: float) -> None:
        self.images += images
        self.data_wait += data_wait

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Leave the time inside out of the window (the window's start moves on by it)."""
        began = time.perf_counter()
        try:
            yield
        finally:
            self.start += time.perf_counter() - began

    def read(self) -> dict[str, float]:
        elapsed = max(1e-9, time.perf_counter() - self.start)
        return {
            "images_per_s": self.images / elapsed,
            "data_wait": min(1.0, self.data_wait / elapsed),
        }


def dataset_counts(dataset: Any) -> dict[str, Any]:
    """``{"accepted": n, "rejected": {reason: n}}`` of one process's dataset ({}: it keeps
    no counts)."""
    stats = getattr(dataset, "stats", None)
    counts = stats() if callable(stats) else stats
    if not isinstance(counts, dict):
        return {}
    return {"accepted": int(counts.get("accepted", 0)),
            "rejected": {str(k): int(v) for k, v in (counts.get("rejected") or {}).items()},
            "repeated": {str(k): int(v) for k, v in (counts.get("repeated") or {}).items()}}


def add_counts(*counts: dict[str, Any]) -> dict[str, Any]:
    """The sum of :func:`dataset_counts` results ({} when none keeps counts)."""
    present = [c for c in counts if c]
    if not present:
        return {}
    sums: dict[str, dict[str, int]] = {"rejected": {}, "repeated": {}}
    for c in present:
        for kind, total in sums.items():
            for reason, n in (c.get(kind) or {}).items():
                total[reason] = total.get(reason, 0) + int(n)
    return {"accepted": sum(int(c.get("accepted", 0)) for c in present),
            **{kind: dict(sorted(total.items())) for kind, total in sums.items()}}


def skipped_note(history: list[dict[str, Any]]) -> str:
    """'; data: 6 of 16 samples skipped (missing_caption 6; ...)' from the last logged counts,
    or '' when none were skipped: a folder of uncaptioned images trains on without a word."""
    last = next((r for r in reversed(history) if "data_skipped" in r), None)
    if not last or not last["data_skipped"]:
        return ""
    reasons = ", ".join(f"{k.removeprefix('data_skipped_')} {v}" for k, v in last.items()
                        if k.startswith("data_skipped_") and v)
    again = last.get("data_repeats_skipped", 0)
    seen = last["data_skipped"] + again + last.get("data_accepted", 0)
    if again:  # kohya's repeats: each image once, and the reads of its repeats
        n = last["data_skipped"]
        return (f"; data: {n} sample{'s' * (n != 1)} skipped ({reasons}), "
                f"{last['data_skipped'] + again} of {seen} reads with their repeats; "
                "glidectl dataset inspect lists them")
    return (f"; data: {last['data_skipped']} of {seen} samples skipped ({reasons}; "
            "glidectl dataset inspect lists them)")


def data_counts(counts: dict[str, Any]) -> dict[str, int]:
    """Accepted and skipped (rejected) sample counts as metrics, by reason (an image that
    an epoch reads at kohya's repeats once; ``data_repeats_skipped``: its further reads)."""
    if not counts:
        return {}
    rejected = counts.get("rejected") or {}
    out = {"data_accepted": int(counts.get("accepted", 0)),
           "data_skipped": int(sum(rejected.values()))}
    out.update({f"data_skipped_{k}": int(v) for k, v in rejected.items()})
    if again := int(sum((counts.get("repeated") or {}).values())):
        out["data_repeats_skipped"] = again
    return out


@dataclass
class RunOutputs:
    """Where a run's records go: metrics.jsonl and the trackers (main process)."""

    result: Any  # the engine's TrainResult
    metrics: MetricsFile | None = None
    trackers: Any = None  # trackers.Trackers

    def write(self, record: dict[str, Any], step: int) -> None:
        if self.metrics is not None:
            self.metrics.write(record)
        if self.trackers is not None:
            self.trackers.log(record, step)

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
        if self.trackers is not None:
            self.trackers.finish()
