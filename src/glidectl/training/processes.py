"""How the processes of one run agree: work only the main process does, a user error on
any one process, a stop asked of any one (one process: all of it is plain calls)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import torch

from ..errors import GlidectlError, WriteError
from . import heartbeats
from .guards import StopFlag
from .heartbeats import Heartbeats
from .watchdog import Watchdog

T = TypeVar("T")

# How long the other processes wait for what only the main process does (previews, validation
# FID/KID, checkpoint writing, run-folder checks): far past the process group's own timeout,
# which ended the whole run when a preview or an FID took longer.
MAIN_WORK_TIMEOUT = timedelta(hours=24)


def collective_timeout(minutes: float, backend: str | None) -> timedelta:
    """The process group's timeout: ``train.collective_timeout_minutes``, or at 0 the
    backend's own (NCCL 10 min, gloo 30)."""
    if minutes > 0:
        return timedelta(minutes=minutes)
    from torch.distributed import constants

    if "nccl" in (backend or ""):
        return constants.default_pg_nccl_timeout or timedelta(minutes=10)
    return constants.default_pg_timeout


def timeout_handlers(minutes: float) -> list[Any]:
    """accelerate's kwargs handler that gives the process group ``minutes`` as its timeout
    (none at 0: the backend's own)."""
    if minutes <= 0:
        return []
    from accelerate.utils import InitProcessGroupKwargs

    timeout = timedelta(minutes=minutes)
    if timeout == InitProcessGroupKwargs().timeout:
        # accelerate passes on only what differs from its default (10 min), so 10 became
        # gloo's 30; a microsecond more gets through (the backends count milliseconds).
        timeout += timedelta(microseconds=1)
    return [InitProcessGroupKwargs(timeout=timeout)]


def main_work_group(acc: Any, timeout: timedelta) -> Any:
    """A gloo group for waiting on the main process (None with one process): the others
    wait there for up to :data:`MAIN_WORK_TIMEOUT`, the main process for ``timeout`` (the
    process group's), as nothing else takes them long. A process that dies still fails its
    peers' waits at once."""
    if acc.num_processes == 1:
        return None
    import torch.distributed as dist

    wait = timeout if acc.is_main_process else max(timeout, MAIN_WORK_TIMEOUT)
    return dist.new_group(backend="gloo", timeout=wait)


class Processes:
    """The run's processes, as seen from this one (made by every process, in step).
    ``timeout``: the process group's, which the main process's waits keep too."""

    def __init__(self, accelerator: Any, timeout: timedelta):
        self.accelerator = accelerator
        self.main = accelerator.is_main_process
        self.count = accelerator.num_processes
        self.rank = accelerator.process_index
        self._main_group = main_work_group(accelerator, timeout)
        self._launcher = os.getppid()
        self.watchdog = Watchdog(timeout, rank=self.rank, world=self.count,
                                 main_wait=max(timeout, MAIN_WORK_TIMEOUT)) \
            if self.count > 1 else None
        # Who says a long wait: the main process; of the others, process 1 and the first
        # of each other machine (one line per launcher's output, not one per process).
        self._says = self.main or self.rank == 1 or accelerator.is_local_main_process

    def step(self, step: int) -> None:
        """Step ``step`` begins (for the watchdog)."""
        if self.watchdog is not None:
            self.watchdog.step(step)

    def busy(self, what: str) -> None:
        """The main process's own work (``what``) begins: its watchdog keeps quiet, and its
        heartbeat tells the others."""
        if self.watchdog is not None and self.main:
            self.watchdog.busy(what)

    def beat_in(self, folder: Path) -> None:
        """The heartbeats go in ``folder``: the main process empties it (a killed run's go)
        before the others wait for it, and they call this only after that wait, so none
        reads a heartbeat that is not this run's."""
        if self.watchdog is None:
            return
        if self.main:
            heartbeats.clear(folder)
        self.watchdog.beats = Heartbeats(folder, self.rank)

    def end_beats(self) -> None:
        """The heartbeats' folder goes (main process, at the run's end or a failed setup's)."""
        if self.main and self.watchdog is not None and self.watchdog.beats is not None:
            heartbeats.remove(self.watchdog.beats.folder)

    def watching(self, say: Callable[[str], None]) -> AbstractContextManager[None]:
        """The watchdog's thread runs inside this block (several processes): it writes the
        heartbeat and may ``say`` that a step or a wait lasts."""
        if self.watchdog is None:
            return nullcontext()
        return self.watchdog.watching(say if self._says else None)

    @contextmanager
    def setting_up(self, say: Callable[[str], None]) -> Iterator[None]:
        """The watchdog's thread runs while the run is set up, as in :meth:`watching`; the
        setup is each process's own work, and a failed one takes the heartbeats with it."""
        if self.watchdog is None:
            yield
            return
        try:
            with self.watching(say):
                yield
        except BaseException:
            self.end_beats()
            raise
        self.watchdog.set_up()

    def _waiting(self, what: str) -> AbstractContextManager[None]:
        return self.watchdog.waiting(what) if self.watchdog is not None else nullcontext()

    def on_main(self, fn: Callable[[], T], what: str = "the main process's checks") -> T:
        """Run ``fn`` (``what``) on the main process and share its result (or its user
        error) with every process, so a failed check stops all ranks instead of leaving them
        waiting. The others wait in the main-work group: an FID may outlast the process
        group's timeout. The main process raises its error as it was (a WriteError exits 1);
        the others raise one of the same exit code."""
        box: list[Any] = [None]
        error: GlidectlError | None = None
        if self.main:
            self.busy(what)
            try:
                box = [("ok", fn())]
            except GlidectlError as exc:
                error, box = exc, [("error", (str(exc), isinstance(exc, WriteError)))]
        if self._main_group is not None:
            with self._waiting(what):
                torch.distributed.broadcast_object_list(box, src=0, group=self._main_group)
        status, value = box[0]
        if status == "error":
            if error is not None:
                raise error
            text, failed_write = value
            raise (WriteError if failed_write else GlidectlError)(text)
        return value

    def wait_for_main(self, what: str) -> None:
        """Wait for the main process's work (``what``: a preview, a checkpoint's files; see
        :data:`MAIN_WORK_TIMEOUT`)."""
        if self._main_group is not None:
            with self._waiting(what):
                torch.distributed.barrier(group=self._main_group)

    def on_all(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on every process; a user error on any one (a file only it reads) stops
        them all with that error, instead of leaving the others in a collective."""
        error = None
        try:
            value = fn()
        except GlidectlError as exc:
            error = str(exc)
        error = next((e for e in self.gather(error) if e), None)
        if error is not None:
            raise GlidectlError(error)
        return value

    def gather(self, value: T) -> list[T]:
        """``value`` of every process, in rank order (a collective)."""
        if self.count == 1:
            return [value]
        from accelerate.utils import gather_object

        return gather_object([value])

    def stop_requested(self, flag: StopFlag) -> bool:
        """Whether any process was asked to stop (a collective)."""
        if self.count == 1:
            return flag.requested
        if not flag.requested and os.getppid() != self._launcher:
            # The launcher (torchrun, accelerate) was killed: nobody would stop these
            # processes (each has its own session, out of Ctrl-C's reach), so stop as on Ctrl-C.
            flag.requested, flag.signal_name = True, "launcher gone"
        wanted = torch.tensor([float(flag.requested)], device=self.accelerator.device)
        return bool(self.accelerator.reduce(wanted, "sum").item() > 0)
