"""metrics.jsonl (one JSON object per logged step) and the throughput meter."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from ..atomic import write_text


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsFile:
    """Appends one JSON line per record; flushed at once so a crash keeps what was logged."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fh = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All records of a metrics.jsonl file."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def truncate_after(path: Path, step: int) -> None:
    """Drop records past ``step`` (a resumed run re-logs the steps it repeats)."""
    path = Path(path)
    if not path.is_file():
        return
    kept = [r for r in read_metrics(path) if int(r.get("step", 0)) <= step]
    write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


class Throughput:
    """Images/s and the share of wall time spent waiting for data, over a logging window."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.start = time.perf_counter()
        self.images = 0
        self.data_wait = 0.0

    def add(self, images: int, data_wait: float) -> None:
        self.images += images
        self.data_wait += data_wait

    def read(self) -> dict[str, float]:
        elapsed = max(1e-9, time.perf_counter() - self.start)
        return {
            "images_per_s": self.images / elapsed,
            "data_wait": min(1.0, self.data_wait / elapsed),
        }
