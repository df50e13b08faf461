"""One line when a step, or a wait for the other processes of a multi-process run, lasts far
longer than usual: a process that hangs (stopped, stuck in I/O, its machine cut off)
otherwise leaves the others silent until the process group's timeout. The main process's
line names the processes that lag, the others' what the main process is busy with, from
their heartbeats (:mod:`.heartbeats`)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta

from .heartbeats import PERIOD_S, Beat, Heartbeats, read_beat

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


STUCK = "(stopped, waiting on a disk, its machine cut off)"
# A gap between two of the thread's wakes this much longer than its wait (less its own work):
# the process did not run meanwhile (stopped with Ctrl-Z or SIGSTOP), and that time is not a
# wait's.
STOPPED_S = 2 * PERIOD_S


@dataclass(frozen=True)
class _Mark:
    doing: str  # "at step 120", "waiting for the other processes after step 120's preview"
    since: float
    step: int | None = None  # the step begun, for step marks
    watched: bool = True  # said when it lasts (not the main process's own work, nor the
    # others' steps: the main process says those)
    stopped: float = 0.0  # the process's time stopped so far (Watchdog.stopped) when it began


def _heard_long_ago(beat: Beat, waited: float, now: float) -> float | None:
    """How long ago ``beat`` was written, when that is over half of ``waited`` (and two
    heartbeats: a live process writes one a second); else None."""
    age = max(0.0, now - beat.at)
    return age if age > max(2 * PERIOD_S, waited / 2) else None


def lag(beat: Beat, step: int | None, waited: float, now: float,
        final: bool = False) -> str | None:
    """How the process of ``beat`` lags one that has waited ``waited`` s at ``step``: not
    heard from for long, or at an earlier step; None when its heartbeat shows it keeping up.
    ``final``: the last look before the line names no one, where two heartbeats missed are
    long (one stopped well into the wait, after a checkpoint, has a heartbeat younger than
    half of it)."""
    if (age := _heard_long_ago(beat, 0.0 if final else waited, now)) is not None:
        return (f"process {beat.rank} {beat.who()} was last heard from {duration(age)} ago, "
                f"{beat.doing}")
    if step is not None and beat.step is not None and beat.step < step:
        return (f"process {beat.rank} {beat.who()} has been {beat.doing} for "
                f"{duration(max(0.0, now - beat.since))}")
    return None


def main_doing(beat: Beat | None, waited: float, now: float) -> str:
    """What the main process's heartbeat says it is doing, for a process that has waited
    ``waited`` s for it."""
    if beat is None:
        return f"the main process may be slow or stuck {STUCK}"
    if (age := _heard_long_ago(beat, waited, now)) is not None:
        return (f"the main process {beat.who()} was last heard from {duration(age)} ago, "
                f"{beat.doing}: it may be stuck {STUCK}")
    return (f"the main process {beat.who()} has been {beat.doing} for "
            f"{duration(max(0.0, now - beat.since))}")


class Watchdog:
    """What the main thread of process ``rank`` (of ``world``) is at (:meth:`step`,
    :meth:`busy`, :meth:`waiting`), read by a daemon thread that writes it as this
    process's heartbeat about once a second (with ``beats``) and says once per mark when it
    has lasted over ``after`` seconds and three times the longest step so far (the first
    step left out: warm-up, compiling). The main process says so of its steps and of its
    waits for the others, the others of their waits for the main process's own work (for
    up to ``main_wait``), the setup's too (until :meth:`set_up`). Time the process itself did
    not run (stopped with Ctrl-Z or SIGSTOP) counts toward no mark. The thread only reads the
    mark and files, never a collective: a hung collective cannot hang it, and it cannot
    disturb one."""

    def __init__(self, timeout: timedelta, after: float = 60.0, *, rank: int = 0,
                 world: int = 1, main_wait: timedelta | None = None):
        self.timeout = timeout
        # Before the group gives up: half its timeout when that is under two minutes.
        self.after = min(after, timeout.total_seconds() / 2)
        self.main = rank == 0
        self.world = world
        self.main_wait = main_wait or timeout
        self.beats: Heartbeats | None = None
        self.longest = 0.0
        self._mark: _Mark | None = None
        # where a wait returns to, and whether it is said when it lasts: the setup is each
        # process's own work (the main process's tells the others in its heartbeat)
        self._at, self._at_watched = "busy with the setup", False
        self._step: int | None = None
        self._steps = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._period = min(PERIOD_S / 4, max(0.05, self.after / 4))  # the thread's wait
        # (the thread's last wake, None while it works or does not run; the seconds this
        # process did not run while watched, counted at that wake): one tuple, so the main
        # thread reads both of the same wake
        self._ran: tuple[float | None, float] = (None, 0.0)

    # ------------------------------------------------------------------ the main thread
    def step(self, step: int) -> None:
        """Step ``step`` begins (its time counts toward the longest step)."""
        self._at, self._at_watched, self._step = f"at step {step}", self.main, step
        self._set(self._begin(self._at, step=step, watched=self.main))

    def set_up(self) -> None:
        """The setup is done: a wait returns to before the first step (said by the main
        process when it lasts, as a step is)."""
        if self._step is None:
            self._at, self._at_watched = "before the first step", self.main

    def busy(self, what: str) -> None:
        """The main process's own work (``what``: "step 120's preview") begins; its
        heartbeat says so at once, as the others may wait long for it."""
        mark = self._begin(f"busy with {what}", watched=False)
        self._set(mark)
        if self.beats is not None:
            self.beats.write(mark.doing, self._step, mark.since)

    @contextlib.contextmanager
    def waiting(self, what: str) -> Iterator[None]:
        """Waiting for the other processes (the main process's work, on the others) after
        ``what``; then back at the step, afresh."""
        doing = f"waiting for the other processes after {what}" if self.main else \
            f"waiting for the main process to finish {what}"
        self._set(self._begin(doing))
        try:
            yield
        finally:
            self._set(self._begin(self._at, watched=self._at_watched))

    def _begin(self, doing: str, **kwargs) -> _Mark:
        """A mark of ``doing`` that begins now."""
        now = time.monotonic()
        return _Mark(doing, now, stopped=self._stopped_by(now), **kwargs)

    def _set(self, mark: _Mark) -> None:
        last = self._mark
        if last is not None and last.step is not None:
            self._steps += 1
            if self._steps > 1:
                self.longest = max(self.longest, self.lasted(last, mark.since))
        self._mark = mark  # one assignment: the thread sees the old mark or the new one

    def lasted(self, mark: _Mark, now: float) -> float:
        """Seconds from ``mark`` to ``now`` (``time.monotonic()``) that this process ran."""
        return max(0.0, now - mark.since - (self._stopped_by(now) - mark.stopped))

    @property
    def stopped(self) -> float:
        """Seconds this process did not run while watched (see STOPPED_S), so far as the
        thread has counted them."""
        return self._ran[1]

    def _stopped_by(self, now: float) -> float:
        """Seconds this process did not run until ``now``: those the thread counted, and the
        time since its last wake when that is already a stop's (after a stop the main thread
        may end a step before the thread wakes and counts it)."""
        woke, stopped = self._ran
        if woke is not None and (gap := now - woke - self._period) > STOPPED_S:
            return stopped + gap
        return stopped

    # ------------------------------------------------------------------ the thread
    def line(self, mark: _Mark, waited: float, final: bool = True) -> str | None:
        """What to say of ``mark``, waited at for ``waited`` seconds; None, unless ``final``,
        while the main process names no process that lags (one stopped a moment ago has a
        heartbeat too fresh to tell it from a live one yet)."""
        usual = f" (steps took {duration(self.longest)} at most)" if self.longest else ""
        still = f"Still {mark.doing} after {duration(waited)}{usual}"
        now = time.time()
        if not self.main:
            beat = read_beat(self.beats.folder, 0) if self.beats is not None else None
            return (f"{still}: {main_doing(beat, waited, now)}; this process waits for it for "
                    f"up to {duration(self.main_wait.total_seconds())}.")
        limit = duration(self.timeout.total_seconds())
        tail = f"the run stops when it has not answered for {limit} ({TIMEOUT_KEY})."
        lagging = [said for said in (lag(beat, self._step, waited, now, final)
                                     for beat in self._peers() if beat is not None) if said]
        if not lagging:
            if not final:
                return None
            return (f"{still}: another process of this run may be stuck {STUCK}; if so, "
                    f"{tail}")
        more = f"; and {len(lagging) - 3} more" if len(lagging) > 3 else ""
        which = "it" if len(lagging) == 1 else "one of them"
        return (f"{still}: {'; '.join(lagging[:3])}{more}: {which} may be stuck {STUCK}; "
                f"if so, {tail}")

    def _peers(self) -> list[Beat | None]:
        """The other processes' heartbeats (None where one cannot be read)."""
        if self.beats is None:
            return []
        return [read_beat(self.beats.folder, rank) for rank in range(1, self.world)]

    @contextlib.contextmanager
    def watching(self, say: Callable[[str], None] | None) -> Iterator[None]:
        """The thread runs (and may call ``say``; None: it only writes heartbeats) inside
        this block; this process's heartbeat goes at its end."""
        if self._mark is None:
            self._set(self._begin(self._at, watched=False))
        self._stop.clear()
        self._ran = (time.monotonic(), self.stopped)
        self._thread = threading.Thread(target=self._watch, args=(say,), daemon=True,
                                        name="glidectl-watchdog")
        self._thread.start()
        try:
            yield
        finally:
            self._stop.set()
            self._thread.join(timeout=5)
            self._ran = (None, self.stopped)
            if self.beats is not None:
                self.beats.remove()

    def _watch(self, say: Callable[[str], None] | None) -> None:
        # A stop is counted from one wake to the next, less the thread's own work (a
        # heartbeat write or a line on a slow disk is the process running): one that lands
        # while the thread is awake counts as well as one in its wait.
        said = None
        while True:
            if self._stop.wait(self._period):
                return
            now = time.monotonic()
            self._ran = (now, self._stopped_by(now))
            mark = self._mark
            if mark is None:
                continue
            if self.beats is not None and now - self.beats.written >= PERIOD_S:
                with self._own_work():
                    self.beats.write(mark.doing, self._step, mark.since)
            if say is None or not mark.watched or mark is said:
                continue
            waited = self.lasted(mark, time.monotonic())
            due = max(self.after, 3 * self.longest)
            if waited >= due:
                # a peer's heartbeat shows its stop only once it is old: wait up to half the
                # time again (short of the timeout) for one to name, then say it unnamed
                last = self.beats is None or waited >= min(
                    1.5 * due, (due + self.timeout.total_seconds()) / 2)
                with self._own_work():
                    line = self.line(mark, waited, final=last)
                    if line is not None:
                        said = mark
                        say(line)

    @contextlib.contextmanager
    def _own_work(self) -> Iterator[None]:
        """The thread's own work: its time is the process running, not a stop (and once
        the watch has ended, no wake is left to count from: a write that outlasted it)."""
        stopped = self.stopped
        self._ran = (None, stopped)
        try:
            yield
        finally:
            if not self._stop.is_set():
                self._ran = (time.monotonic(), stopped)
