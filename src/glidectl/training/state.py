"""A run's loop state (resumed from ``state/train.json``) and what a run returns."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..greyscale import GREY_LEVELS, all_grey
from .data_stream import DataStream
from .guards import NonFiniteGuard
from .lr_schedule import SCHEDULES

RECORDS_KEPT = 1000  # metrics records a run keeps in memory; metrics.jsonl has them all


@dataclass
class TrainResult:
    """What a finished (or interrupted) run left behind. ``history`` and ``validation`` hold
    the last :data:`RECORDS_KEPT` logged and validation records (metrics.jsonl has all), so
    a run of a million steps does not keep each one in memory."""

    run_dir: Path
    step: int
    interrupted: bool = False
    checkpoint: Path | None = None
    last_loss: float = float("nan")
    history: list[dict[str, Any]] = field(default_factory=list)
    validation: list[dict[str, Any]] = field(default_factory=list)

    def logged(self, record: dict[str, Any]) -> None:
        """A metrics record was logged: keep it in ``history``."""
        _keep(self.history, record)

    def validated(self, record: dict[str, Any]) -> None:
        """A validation record was logged: keep it in ``validation``."""
        _keep(self.validation, record)


def _keep(records: list[dict[str, Any]], record: dict[str, Any]) -> None:
    """Append ``record``, dropping the oldest beyond :data:`RECORDS_KEPT`."""
    records.append(record)
    del records[:-RECORDS_KEPT]


def furthest_behind(data: dict[str, Any]) -> dict[str, Any]:
    """The data stream's state with its ``epoch`` and ``position`` those of the process
    furthest behind: every process has read the epochs before ``epoch`` whole. Processes
    cross an epoch's end at different steps, and drift apart when their shares hold
    different numbers of batches (rejected samples, unequal shards); the main process's
    alone could be epochs ahead of another's. A resume reads each process's own cursor
    (``ranks``), not these."""
    rows = [row for row in data.get("ranks") or () if len(row) >= 2]
    if not rows:
        return data
    epoch, position = min((int(row[0]), int(row[1])) for row in rows)
    return {**data, "epoch": epoch, "position": position}


def saved_window(saved: Any) -> tuple[list[float], int]:
    """A checkpoint's ``window`` (:attr:`TrainState.window`); none (absent in checkpoints
    before it was kept, or not what glidectl writes): no steps."""
    if isinstance(saved, dict):
        sums, steps = saved.get("sums"), saved.get("steps")
        if (isinstance(sums, list) and len(sums) == 3 and type(steps) is int and steps > 0
                and all(isinstance(v, int | float) and not isinstance(v, bool) for v in sums)):
            return [float(v) for v in sums], steps
    return [0.0, 0.0, 0.0], 0


class TrainState:
    """The loop's own resume state (``state/train.json``; the noise generator's state goes
    with the other RNGs)."""

    def __init__(self, stream: DataStream, guard: NonFiniteGuard, precision: str = "fp32",
                 batch: tuple[int, int] | None = None):
        self.step = 0
        self.precision = precision  # what this run computes in (fp32, bf16, fp16)
        self.saved_precision: str | None = None  # the checkpoint's; None before it was kept
        self.batch = batch  # train.batch_size (a process's) and train.grad_accum of this run
        self.saved_batch: tuple[int, int] | None = None  # the checkpoint's, where kept
        # the LR schedule (train.lr_schedule, train.warmup_steps, the run's steps): this
        # run's and the checkpoint's, where kept
        self.schedule: tuple[str, int, int] | None = None
        self.saved_schedule: tuple[str, int, int] | None = None
        # what an epoch of data.source reads (data_listing), this run's and the checkpoint's
        self.data_listing: dict[str, Any] | None = None
        self.saved_listing: dict[str, Any] | None = None
        self.stream, self.guard = stream, guard
        self.tracker_ids: dict[str, str] = {}
        self.best_val_loss = math.inf
        self.best_step: int | None = None  # the checkpoint ``best`` names (keep_best)
        # what decides val_loss (validation.loss_settings), this run's and the checkpoint's
        self.validation: dict[str, Any] | None = None
        self.saved_validation: Any = None
        # Samples accepted and rejected over all processes before this process started
        # (a resumed run's counts go on from the checkpoint's), and the totals to save.
        self.data_base: dict[str, Any] = {}
        self.data_total: dict[str, Any] = {}
        # every training image this process has seen is grey (None: none seen yet)
        self.grey_data: bool | None = None
        self.grey_images = 0  # grey images this process saw before a colour one (this start)
        # the loss, mse and vb summed over the steps since the last metrics record, and how
        # many: a stop between records saves them, so the resumed run's next record is the
        # straight run's, not one of only the steps after the resume
        self.window: tuple[list[float], int] = ([0.0, 0.0, 0.0], 0)

    def see_images(self, images: torch.Tensor) -> str | None:
        """Note whether a batch's images (as trained on, augmented) are all grey; the line
        to show when colour ends a run of grey images (one colour image in many grey ones
        switches grey sampling off, which is better said than found in the pictures)."""
        if self.grey_data is False:
            return None
        grey = all_grey(images)
        if grey or self.grey_data is None and not self.grey_images:
            self.grey_data, self.grey_images = grey, self.grey_images + grey * len(images)
            return None
        self.grey_data = False
        spread = round(float((images.amax(dim=1) - images.amin(dim=1)).max()) * 255 / 2)
        seen = f"{self.grey_images} " if self.grey_images else ""  # (0: a resumed run's)
        return (f"Note: the {seen}training images before this batch were "
                f"greyscale, but it holds colour (R, G and B up to {spread} of 255 levels "
                f"apart, more than {GREY_LEVELS}), so this run samples in colour; if the data "
                "are meant to be grey, sample with --grey (or take the colour images out).")

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step, "data": furthest_behind(self.stream.state_dict()),
            "guard": self.guard.state_dict(), "trackers": dict(self.tracker_ids),
            "data_listing": self.data_listing,
            "best_val_loss": self.best_val_loss, "best_step": self.best_step,
            "validation": self.validation,
            "data_counts": self.data_total, "precision": self.precision,
            "grey_data": self.grey_data, "batch": list(self.batch) if self.batch else None,
            "lr_schedule": list(self.schedule) if self.schedule else None,
            "window": {"sums": self.window[0], "steps": self.window[1]},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.stream.load_state_dict(state["data"])
        self.guard.load_state_dict(state["guard"])
        self.tracker_ids = {str(k): str(v) for k, v in dict(state.get("trackers", {})).items()}
        listing = state.get("data_listing")  # absent in checkpoints before it was kept
        self.saved_listing = listing if isinstance(listing, dict) else None
        self.best_val_loss = float(state.get("best_val_loss", math.inf))
        self.saved_validation = state.get("validation")  # absent before it was kept
        grey = state.get("grey_data")  # absent in checkpoints before it was kept
        self.grey_data = grey if isinstance(grey, bool) else None
        saved = state.get("precision")
        self.saved_precision = saved if isinstance(saved, str) else None
        batch = state.get("batch")  # absent in checkpoints before it was kept
        self.saved_batch = (tuple(batch) if isinstance(batch, list) and len(batch) == 2
                            and all(type(v) is int for v in batch) else None)
        schedule = state.get("lr_schedule")  # absent in checkpoints before it was kept
        self.saved_schedule = (tuple(schedule) if isinstance(schedule, list) and [
            type(v) for v in schedule] == [str, int, int] and schedule[0] in SCHEDULES
            else None)  # a name this version has no schedule for: as if not kept
        self.window = saved_window(state.get("window"))
        best = state.get("best_step")  # absent in checkpoints before it was kept
        self.best_step = best if isinstance(best, int) and not isinstance(best, bool) else None
        counts = state.get("data_counts") or {}  # absent in checkpoints before it was kept
        if counts:
            rejected = {str(k): int(v) for k, v in dict(counts["rejected"]).items()}
            again = {str(k): int(v) for k, v in dict(counts.get("repeated") or {}).items()}
            self.data_base = {"accepted": int(counts["accepted"]), "rejected": rejected,
                              "repeated": again}
