"""Guards that stop a run cleanly: non-finite losses, Ctrl-C and a lost process."""

from __future__ import annotations

import math
import re
import signal
from types import FrameType

from ..errors import GlidectlError


class Diverged(GlidectlError):
    """Too many non-finite losses or gradients in a row (:class:`NonFiniteGuard`)."""


class NonFiniteGuard:
    """Counts skipped steps; raises after ``limit`` non-finite losses (or gradient norms) in
    a row."""

    def __init__(self, limit: int):
        self.limit = limit
        self.in_a_row = 0
        self.total = 0

    def check(self, loss: float, step: int, detail: str = "", what: str = "loss") -> bool:
        """True if ``loss`` is finite (train on); False to skip the step. ``step``: the step
        being tried; ``what``: the name of the value checked (the loss or gradient norm)."""
        if math.isfinite(loss):
            self.in_a_row = 0
            return True
        self.in_a_row += 1
        self.total += 1
        if self.limit > 0 and self.in_a_row >= self.limit:
            raise Diverged(
                f"Training stopped at step {step}: the {what} was {loss} for {self.in_a_row} "
                f"steps in a row{detail}; lower train.lr, set train.grad_clip, try "
                "train.precision = \"bf16\" or \"fp32\", or check the data for broken images."
            )
        return False

    def state_dict(self) -> dict[str, int]:
        return {"in_a_row": self.in_a_row, "total": self.total}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.in_a_row = int(state.get("in_a_row", 0))
        self.total = int(state.get("total", 0))


class StopFlag:
    """Turns the first SIGINT/SIGTERM into a flag the loop checks; a second one interrupts."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_name = ""
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()


class StoppedAgain(GlidectlError):
    """A second Ctrl-C/SIGTERM cut the run short (its save too): exit code 130, as Ctrl-C."""

    exit_code = 130


class WorkerLost(GlidectlError):
    """A data loader worker died (the system's out-of-memory killer, most often): not the
    user's input, so exit code 1."""

    exit_code = 1


def worker_lost(exc: BaseException) -> str | None:
    """torch's account of a data loader worker that died, else None."""
    text = str(exc).strip()
    return text.rstrip(".") if text.startswith("DataLoader worker (pid") else None


class PeerLost(GlidectlError):
    """Another process of a multi-process run died; not the user's input, so exit code 1."""

    exit_code = 1


# What gloo's transport says when the other end of a collective is gone.
_PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "Broken pipe")


def peer_lost(exc: BaseException) -> bool:
    """Whether a collective failed because another process of the run died."""
    import torch.distributed as dist

    return isinstance(exc, dist.DistBackendError) or any(
        words in str(exc) for words in _PEER_GONE)


def peer_silent(exc: BaseException) -> float | None:
    """The seconds a collective waited for another process before gloo gave up (one that is
    stuck, or whose machine is cut off, rather than dead), else None."""
    found = re.search(r"Timed out waiting (\d+)ms", str(exc))
    return int(found.group(1)) / 1000 if found else None
