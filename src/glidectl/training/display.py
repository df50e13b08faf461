"""The terminal view of a run: a rich live panel on a TTY, one plain line per log otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from ..errors import OUTPUT_FULL, WriteError, output_full


def format_eta(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def status_line(record: dict[str, Any], total_steps: int, eta: float) -> str:
    """``step 120/1000 loss 0.1234 lr 1.0e-04 12.3 img/s data 1% ETA 02:31`` (and the last
    ``val 0.1200`` once validation ran)."""
    val = f"val {record['val_loss']:.4f} " if "val_loss" in record else ""
    return (
        f"step {record['step']}/{total_steps} loss {record.get('loss', float('nan')):.4f} "
        f"{val}lr {record.get('lr', 0.0):.2e} {record.get('images_per_s', 0.0):.1f} img/s "
        f"data {100 * record.get('data_wait', 0.0):.0f}% ETA {format_eta(eta)}"
    )


MAX_SHOWN_BUCKETS = 8  # validation.timesteps buckets a line shows in full


def validation_line(record: dict[str, Any]) -> str:
    """``validation step 100: val_loss 0.1200 (t0 0.3000 t1 0.0800 ...) FID 41.2 KID 0.031``."""
    parts = [f"validation step {record['step']}:"]
    if "val_loss" in record:
        buckets = [f"{k.removeprefix('val_loss_')} {v:.4f}" for k, v in record.items()
                   if k.startswith("val_loss_t")]
        if len(buckets) > MAX_SHOWN_BUCKETS:  # the rest are in metrics.jsonl
            buckets = [*buckets[:2], "…", *buckets[-2:], f"({len(buckets)} buckets)"]
        parts.append(f"val_loss {record['val_loss']:.4f} ({' '.join(buckets)})")
    if "fid" in record:
        parts.append(f"FID {record['fid']:.2f}" + (f" KID {record['kid']:.4f}"
                                                     if "kid" in record else ""))
    if "kid_missing" in record:
        parts.append(f"KID absent: {record['kid_missing']}")
    if "fid_missing" in record:
        parts.append(f"FID/KID absent: {record['fid_missing']}")
    return " ".join(parts)


class Display:
    """Shows progress; ``live`` picks the rich panel (default: when stdout is a TTY)."""

    def __init__(
        self, total_steps: int, start_step: int = 0, live: bool | None = None,
        stream: TextIO | None = None, enabled: bool = True,
    ):
        self.total = total_steps
        self.start_step = start_step
        self.stream = stream or sys.stdout
        self.enabled = enabled
        self.live = enabled and (self.stream.isatty() if live is None else live)
        self._t0 = time.perf_counter()
        self._progress = None
        self._task = None
        self._last: dict[str, Any] = {}
        self._val: float | None = None
        self.closed = False  # the stream's reader went away (:meth:`_print`)
        self.full: WriteError | None = None  # why the stream's disk took no more (closed too)

    def __enter__(self) -> Display:
        if self.live:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                console=Console(file=self.stream), transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(
                "train", total=self.total, completed=self.start_step, info=""
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def eta(self, step: int) -> float:
        done = step - self.start_step
        if done <= 0:
            return float("inf")
        return (time.perf_counter() - self._t0) / done * (self.total - step)

    def advance(self, step: int) -> None:
        """Called every optimizer step (cheap; the live bar moves)."""
        if self._progress is not None:
            self._progress.update(self._task, completed=step)

    def log(self, record: dict[str, Any]) -> None:
        """Called every ``log.every`` steps with the metrics record."""
        if not self.enabled:
            return
        if self._val is not None:
            record = {**record, "val_loss": self._val}
        self._last = record
        if self._progress is not None:
            val = f"val {self._val:.4f}  " if self._val is not None else ""
            info = (
                f"loss {record.get('loss', float('nan')):.4f}  {val}lr {record.get('lr', 0):.2e}  "
                f"{record.get('images_per_s', 0):.1f} img/s  "
                f"data {100 * record.get('data_wait', 0):.0f}%"
            )
            self._progress.update(self._task, completed=record["step"], info=info)
        else:
            self._print(status_line(record, self.total, self.eta(record["step"])))

    def validation(self, record: dict[str, Any]) -> None:
        """A validation result: one line, and ``val`` in the status from now on."""
        if "val_loss" in record:
            self._val = float(record["val_loss"])
        self.message(validation_line(record))

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self._progress is not None:  # as written: a path's "[v2]" is no rich markup
            self._progress.console.print(text, markup=False, highlight=False)
        else:
            self._print(text)

    def _print(self, text: str) -> None:
        """A line on the stream; one whose reader is gone (``| head``, a killed ``| tee``)
        or whose disk is full (``> train.log``) turns the display off and sets
        :attr:`closed`, which the loop takes as a stop (a checkpoint, as for Ctrl-C) instead
        of ending on the error with none; a full disk's error is kept in :attr:`full`."""
        try:
            print(text, file=self.stream, flush=True)
        except OSError as exc:
            if not isinstance(exc, BrokenPipeError):
                if exc.errno not in OUTPUT_FULL:
                    raise
                self.full = WriteError(output_full(exc))
            self.enabled, self.closed = False, True
            if self.stream is sys.stdout:  # later prints (and the exit's flush) go nowhere
                import os

                sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the process's rest
