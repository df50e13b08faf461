"""One line on the main process of a multi-process run when a step, or a wait for the other
processes, lasts far longer than usual: a process that hangs (stopped, stuck in I/O, its
machine cut off) otherwise leaves the others silent until the process group's timeout."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta

TIMEOUT_KEY = "train.collective_timeout_minutes"


def duration(seconds: float) -> str:
    """``0.25 s``, ``45 s``, ``2 min``, ``1.5 h``."""
    if seconds < 10:
        return f"{seconds:.2g} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.3g} min"
    return f"{seconds / 3600:.3g} h"


@dataclass(frozen=True)
class _Mark:
    doing: str  # "at step 120", "waiting for the other processes after step 120's preview"
    since: float
    step: int | None = None  # the step begun, for step marks
    own: bool = False  # the main process's own work (a preview, a checkpoint): not reported


class Watchdog:
    """What the main thread is at (:meth:`step`, :meth:`busy`, :meth:`waiting`), read by a
    daemon thread that says once per mark when it has lasted over ``after`` seconds and
    three times the longest step so far (the first step left out: warm-up, compiling). The
    thread only reads the mark, never a collective: a hung collective cannot hang it, and
    it cannot disturb one."""

    def __init__(self, timeout: timedelta, after: float = 60.0):
        self.timeout = timeout
        # Before the group gives up: half its timeout when that is under two minutes.
        self.after = min(after, timeout.total_seconds() / 2)
        self.longest = 0.0
        self._mark: _Mark | None = None
        self._at = "before the first step"  # where a wait returns to
        self._steps = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ the main thread
    def step(self, step: int) -> None:
        """Step ``step`` begins (its time counts toward the longest step)."""
        self._at = f"at step {step}"
        self._set(_Mark(self._at, time.monotonic(), step=step))

    def busy(self, what: str) -> None:
        """The main process's own work (``what``: "step 120's preview") begins."""
        self._set(_Mark(f"busy with {what}", time.monotonic(), own=True))

    @contextlib.contextmanager
    def waiting(self, what: str) -> Iterator[None]:
        """Waiting for the other processes after ``what``; then back at the step, afresh."""
        self._set(_Mark(f"waiting for the other processes after {what}", time.monotonic()))
        try:
            yield
        finally:
            self._set(_Mark(self._at, time.monotonic()))

    def _set(self, mark: _Mark) -> None:
        last = self._mark
        if last is not None and last.step is not None:
            self._steps += 1
            if self._steps > 1:
                self.longest = max(self.longest, mark.since - last.since)
        self._mark = mark  # one assignment: the thread sees the old mark or the new one

    # ------------------------------------------------------------------ the thread
    def line(self, doing: str, waited: float) -> str:
        usual = f" (steps took {duration(self.longest)} at most)" if self.longest else ""
        limit = duration(self.timeout.total_seconds())
        return (f"Still {doing} after {duration(waited)}{usual}: another process of this "
                "run may be stuck (stopped, waiting on a disk, its machine cut off); if so, "
                f"the run stops when it has not answered for {limit} ({TIMEOUT_KEY}).")

    @contextlib.contextmanager
    def watching(self, say: Callable[[str], None]) -> Iterator[None]:
        """The thread runs (and may call ``say``) inside this block."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, args=(say,), daemon=True,
                                        name="glidectl-watchdog")
        self._thread.start()
        try:
            yield
        finally:
            self._stop.set()
            self._thread.join(timeout=5)

    def _watch(self, say: Callable[[str], None]) -> None:
        said = None
        while not self._stop.wait(max(0.2, min(5.0, self.after / 4))):
            mark = self._mark
            if mark is None or mark.own or mark is said:
                continue
            waited = time.monotonic() - mark.since
            if waited >= max(self.after, 3 * self.longest):
                said = mark
                say(self.line(mark.doing, waited))
