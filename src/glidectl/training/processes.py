"""How the processes of one run agree: work only the main process does, a user error on
any one process, a stop asked of any one (one process: all of it is plain calls)."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import torch

from ..errors import GlidectlError
from .guards import StopFlag

T = TypeVar("T")

# How long the other processes wait for what only the main process does (previews, validation
# FID/KID, run-folder checks): far past the process group's own timeout (NCCL 10 min, gloo
# 30 min), which ended the whole run when a preview or an FID took longer.
MAIN_WORK_TIMEOUT = timedelta(hours=24)


def main_work_group(acc: Any) -> Any:
    """A gloo group, with :data:`MAIN_WORK_TIMEOUT`, for waiting on the main process (None
    with one process). A process that dies still fails its peers' waits at once."""
    if acc.num_processes == 1:
        return None
    import torch.distributed as dist

    return dist.new_group(backend="gloo", timeout=MAIN_WORK_TIMEOUT)


class Processes:
    """The run's processes, as seen from this one (made by every process, in step)."""

    def __init__(self, accelerator: Any):
        self.accelerator = accelerator
        self.main = accelerator.is_main_process
        self.count = accelerator.num_processes
        self._main_group = main_work_group(accelerator)
        self._launcher = os.getppid()

    def on_main(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the main process and share its result (or its user error) with
        every process, so a failed check stops all ranks instead of leaving them waiting.
        The others wait in the main-work group: an FID may outlast the process group's
        timeout."""
        box: list[Any] = [None]
        if self.main:
            try:
                box = [("ok", fn())]
            except GlidectlError as exc:
                box = [("error", str(exc))]
        if self._main_group is not None:
            torch.distributed.broadcast_object_list(box, src=0, group=self._main_group)
        status, value = box[0]
        if status == "error":
            raise GlidectlError(value)
        return value

    def wait_for_main(self) -> None:
        """Wait for the main process's preview (see :data:`MAIN_WORK_TIMEOUT`)."""
        if self._main_group is not None:
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
