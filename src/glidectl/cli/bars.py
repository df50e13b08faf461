"""The counting bar of ``sample`` (model calls) and ``dataset inspect`` (samples scanned)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def counting_bar(label: str, console: Any, *, unit: str = "", disable: bool = False,
                 transient: bool = False) -> tuple[Any, Callable[[int, int | None], None]]:
    """A rich bar on ``console``: ``label``, done of total ``unit``, rate, elapsed, left; and
    the ``on_count(done, total)`` that moves it (total None: not known yet)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
        *([TextColumn(unit)] if unit else []), TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=disable,
        transient=transient,
    )
    task = progress.add_task(label, total=None, rate="")

    def on_count(done: int, total: int | None) -> None:
        elapsed = progress.tasks[0].elapsed or 0.0
        rate = f"{done / elapsed:.2f}/s" if elapsed > 0 else ""
        progress.update(task, completed=done, total=total, rate=rate)

    return progress, on_count
