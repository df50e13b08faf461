"""Learning-rate schedules: linear warmup, then constant, cosine or linear decay to zero."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

SCHEDULES = ("constant", "cosine", "linear")


def lr_factor(name: str, warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """The multiplier of the peak LR at optimizer step ``step`` (0-based)."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown LR schedule {name!r}; use one of {', '.join(SCHEDULES)}")

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        if name == "constant":
            return 1.0
        span = max(1, total_steps - warmup_steps)
        progress = min(1.0, max(0.0, (step - warmup_steps) / span))
        if name == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0 - progress

    return factor


def warmup_note(name: str, warmup_steps: int, total_steps: int) -> str | None:
    """A warning when the run ends before its warmup does, else None."""
    if warmup_steps < total_steps:
        return None
    after = f" (train.lr_schedule = {name!r} never starts)" if name != "constant" else ""
    return (f"Warning: train.warmup_steps = {warmup_steps} is not below the run's "
            f"{total_steps} steps, so training ends in the warmup{after}; lower "
            "train.warmup_steps.")


def make_scheduler(
    optimizer: torch.optim.Optimizer, name: str, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepped once per optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(name, warmup_steps, total_steps))
