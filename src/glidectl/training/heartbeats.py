"""What each process of a multi-process run last said it was doing, as a small JSON file per
process in the run folder's ``.heartbeats/``: the others read it without a collective (which
could hang), so the watchdog's line can name the process that lags and what it was at."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from contextlib import suppress
from dataclasses import asdict, dataclass
from pathlib import Path

from ..atomic import host_name, temp_path

# how often a process writes its heartbeat (it says it is alive, and what it is at)
PERIOD_S = 1.0


@dataclass(frozen=True)
class Beat:
    """One process's heartbeat; ``since`` and ``at`` are wall-clock times (the processes may
    run on different machines)."""

    rank: int
    host: str
    pid: int
    doing: str  # "at step 97", "busy with step 450's checkpoint", ...
    step: int | None  # the step it is at (None before the first)
    since: float  # when it began ``doing``
    at: float  # when it wrote this

    def who(self) -> str:
        return f"(host {self.host}, pid {self.pid})"


def beat_path(folder: Path, rank: int) -> Path:
    return Path(folder) / f"{rank}.json"


def read_beat(folder: Path, rank: int) -> Beat | None:
    """Process ``rank``'s heartbeat, or None when it cannot be read (none written yet, no
    shared filesystem, a partial or foreign file)."""
    try:
        data = json.loads(beat_path(folder, rank).read_text(encoding="utf-8"))
        return Beat(**data)
    except (OSError, ValueError, TypeError):
        return None


def clear(folder: Path) -> None:
    """An empty ``folder`` for this run's heartbeats (main process, run lock held): a killed
    run's are gone, so none is read as this run's."""
    shutil.rmtree(folder, ignore_errors=True)
    with suppress(OSError):
        folder.mkdir()


def remove(folder: Path) -> None:
    """``folder`` and the heartbeats in it, at the run's end (main process). Another process
    may write its last heartbeat meanwhile (its watchdog stops just after the run's last
    wait), which leaves the folder not empty: it is removed again a heartbeat later (twice
    at most)."""
    for last in (False, False, True):
        shutil.rmtree(folder, ignore_errors=True)
        if last or not folder.exists():
            return
        time.sleep(PERIOD_S)


class Heartbeats:
    """This process's heartbeat file in ``folder`` (the main process makes the folder: where
    it is missing, as on a machine without the run's shared filesystem, nothing is written).
    Writing never raises: a heartbeat that cannot be written is one the others cannot read."""

    def __init__(self, folder: Path, rank: int):
        self.folder = Path(folder)
        self.path = beat_path(folder, rank)
        self.rank = rank
        self.host = host_name()
        self.written = 0.0  # time.monotonic() of the last write
        self._lock = threading.Lock()  # the loop's thread and the watchdog's may both write

    def write(self, doing: str, step: int | None, since: float) -> None:
        """Record ``doing`` (at ``step``), begun at ``since`` (``time.monotonic()``)."""
        now = time.time()
        beat = Beat(self.rank, self.host, os.getpid(), doing, step,
                    now - (time.monotonic() - since), now)
        with self._lock:
            self.written = time.monotonic()
            if not self.folder.is_dir():
                return
            tmp = temp_path(self.path)
            try:
                tmp.write_text(json.dumps(asdict(beat)), encoding="utf-8")
                os.replace(tmp, self.path)
            except OSError:
                with suppress(OSError):
                    tmp.unlink(missing_ok=True)

    def remove(self) -> None:
        """This process's heartbeat goes (its loop has ended)."""
        with self._lock, suppress(OSError):
            self.path.unlink(missing_ok=True)
