"""Step checkpoints: atomic writes (temp folder + rename), retention, ``latest``/``best``.

The layout lives in :mod:`glidectl.runs`. A checkpoint is written into ``.tmp-step-N`` and
flushed to disk; ``latest`` is pointed at it, then it is renamed into place, so a crash (a
power cut too) at any point leaves every listed checkpoint whole and ``latest`` naming the
newest (or a folder not there yet, skipped for the highest step). ``best`` (with
``checkpoint.keep_best``) names the step with the lowest validation loss; pruning never
removes the ``latest`` or ``best`` step.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from .. import runs
from ..atomic import fsync_dir, fsync_tree, write_text
from ..errors import GlidectlError

LATEST = runs.LATEST


class CheckpointManager:
    """Writes, lists, prunes and resolves the checkpoints of one run."""

    def __init__(self, directory: Path, keep_last: int = 0):
        self.directory = Path(directory)
        self.keep_last = keep_last

    def tmp_dir(self, step: int) -> Path:
        return self.directory / f".tmp-{runs.step_dir_name(step)}"

    def final_dir(self, step: int) -> Path:
        return self.directory / runs.step_dir_name(step)

    def begin(self, step: int) -> Path:
        """A fresh temp folder to fill with the checkpoint's files (main process only)."""
        tmp = self.tmp_dir(step)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        return tmp

    def discard(self, step: int) -> None:
        """Remove the temp folder of a checkpoint whose write was cut short (main process):
        its space back now."""
        shutil.rmtree(self.tmp_dir(step), ignore_errors=True)

    def commit(self, step: int) -> Path:
        """Point ``latest`` at the step, rename the temp folder into place, then prune (main
        process). The pointer goes first: a kill before the rename leaves it naming a folder
        that is not there, which readers skip for the highest step; after the rename it
        would leave ``latest`` one checkpoint behind, and a resume from there set the newer,
        whole one aside."""
        tmp, final = self.tmp_dir(step), self.final_dir(step)
        fsync_tree(tmp)  # on disk before ``latest`` names it and pruning drops older steps
        write_text(self.directory / runs.LATEST, final.name + "\n", durable=True)
        if final.exists():
            # Same step written again (e.g. a resumed run checkpoints where it started).
            old = self.directory / f".old-{runs.step_dir_name(step)}"
            if old.exists():
                shutil.rmtree(old)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old)
        else:
            os.replace(tmp, final)
        fsync_dir(self.directory)
        self.prune()
        return final

    def save(self, step: int, write: Callable[[Path], None]) -> Path:
        """One-process convenience: ``write(tmp_dir)`` then :meth:`commit`."""
        tmp = self.begin(step)
        write(tmp)
        return self.commit(step)

    def steps(self) -> list[int]:
        """Steps of the complete checkpoints, oldest first."""
        return runs.steps_in(self.directory)

    def mark_best(self, step: int) -> None:
        """Point ``best`` at a written step (main process)."""
        write_text(self.directory / runs.BEST, runs.step_dir_name(step) + "\n", durable=True)

    def best(self) -> Path | None:
        return runs.read_pointer(self.directory, runs.BEST)

    def prune(self) -> None:
        """Delete all but the newest ``keep_last`` checkpoints (never ``latest`` or ``best``)
        and stale temp folders (a step folder left aside is put back first)."""
        restore_aside(self.directory)
        for child in self.directory.iterdir():
            if child.name.startswith((".tmp-", ".old-", ".pruned-")) and child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
        if self.keep_last <= 0:
            return
        steps = self.steps()
        kept = {self.latest(), self.best()}
        for step in steps[: max(0, len(steps) - self.keep_last)]:
            path = self.final_dir(step)
            if path not in kept:
                # renamed away first: a kill mid-delete leaves no half-deleted step-N
                gone = self.directory / f".pruned-{path.name}"
                try:
                    os.replace(path, gone)
                except OSError:
                    gone = path
                shutil.rmtree(gone, ignore_errors=True)

    def latest(self) -> Path | None:
        """The checkpoint named by ``latest``, else the highest complete step, else None."""
        return runs.latest_step_dir(self.directory)


def restore_aside(checkpoints: Path) -> None:
    """Put back each step folder a kill left aside: :meth:`CheckpointManager.commit` moves
    ``step-N`` to ``.old-step-N`` for a moment when step N is written again."""
    if not checkpoints.is_dir():
        return
    for old in checkpoints.glob(".old-step-*"):
        final = old.with_name(old.name.removeprefix(".old-"))
        if old.is_dir() and not final.exists() and runs.state_dir(old).is_dir():
            try:
                os.replace(old, final)
            except OSError:  # another process of the run put it back first
                pass


def set_aside_after(checkpoints: Path, step: int, previews: Path | None = None
                    ) -> tuple[Path, list[str], list[str]] | None:
    """Move the checkpoints after ``step`` into ``abandoned-after-step-N/`` (``-2``, … when
    taken) and point ``latest`` at ``step``: a resume from an earlier checkpoint leaves them
    from the run before it, where pruning would delete the new run's checkpoints first and
    ``step-N`` would name either run's weights. The run's ``previews`` of those later steps
    go (first) to a folder of the same name in it, so the new branch's grids replace none
    and each names its branch's checkpoint. A ``best`` pointer naming one of them is removed
    first: the new branch writes a step of that name again, which ``best`` would then name
    whatever its val_loss (the caller points it at the resumed state's best again). No
    checkpoint is deleted. Returns the folder and the names of the checkpoints and previews
    moved, or None when no checkpoint is later (main process only)."""
    later = [s for s in runs.steps_in(checkpoints) if s > step]
    if not later:
        return None
    best = checkpoints / runs.BEST
    if best.is_file() and best.read_text(encoding="utf-8", errors="replace").strip() in {
            runs.step_dir_name(s) for s in later}:
        best.unlink()
    base = checkpoints / f"{runs.ABANDONED}{runs.step_dir_name(step)}"
    dest, k = base, 2
    while dest.exists():
        dest, k = base.with_name(f"{base.name}-{k}"), k + 1
    dest.mkdir()
    pngs = _set_aside_previews(previews, step, dest.name) if previews is not None else []
    names = [runs.step_dir_name(s) for s in later]
    for name in names:
        os.replace(checkpoints / name, dest / name)
    fsync_dir(checkpoints)
    write_text(checkpoints / runs.LATEST, runs.step_dir_name(step) + "\n", durable=True)
    return dest, names, pngs


def _set_aside_previews(previews: Path, step: int, name: str) -> list[str]:
    """Move the preview grids after ``step`` into ``previews/<name>/`` (one there already
    stays where it is: nothing is replaced); returns the names moved."""
    later = sorted(p.name for p in previews.glob("step-*.png") if p.is_file()
                   and (s := runs.step_of(p.with_suffix(""))) is not None and s > step)
    dest = previews / name
    moved = []
    for png in later:
        if not moved:
            dest.mkdir(exist_ok=True)
        if not (dest / png).exists():
            os.replace(previews / png, dest / png)
            moved.append(png)
    if moved:
        fsync_dir(previews)
    return moved


def resolve_checkpoint(spec: str, run_checkpoints: Path | None = None) -> Path:
    """``latest`` (in this run), a step dir, a checkpoints/ dir or a run dir → a step dir.
    Training resolves its resume point here, so a step folder left aside is put back first."""
    path = Path(spec)
    for folder in {run_checkpoints, path, path / runs.CHECKPOINTS_DIR, path.parent} - {None}:
        if folder.name == runs.CHECKPOINTS_DIR:
            restore_aside(folder)
    if spec == runs.LATEST:
        if run_checkpoints is None:
            raise GlidectlError("--resume latest needs a run: pass --name or --resume RUN_DIR.")
        found = runs.latest_step_dir(run_checkpoints)
        if found is None:
            raise GlidectlError(
                f"--resume latest: no checkpoint in {str(run_checkpoints)!r}; "
                "train first or pass a checkpoint path."
            )
        if not runs.state_dir(found).is_dir():
            raise GlidectlError(no_resume_state(spec, found))
        return found
    if runs.state_dir(path).is_dir():
        return path
    found = runs.latest_under(path)
    if found is not None and runs.state_dir(found).is_dir():
        return found
    if found is not None:
        raise GlidectlError(no_resume_state(spec, found))
    if not runs.set_aside_copies(path.parent, runs.step_of(path) or 0) and \
            (missing := runs.missing_step(path)):  # pruned, or past the run's newest
        raise GlidectlError(f"--resume {missing}")  # (a set-aside step: the line below)
    raise GlidectlError(
        f"--resume {spec!r}: not a checkpoint (a checkpoints/step-NNNNNN folder with a state/ "
        "folder) nor a run folder with checkpoints; pass 'latest' or an existing checkpoint."
    )


def no_resume_state(spec: str, step_dir: Path) -> str:
    """The sentence for a checkpoint ``--resume`` found without its ``state/`` folder (deleted
    to save space, say): the checkpoints beside it that have one, or ``model.init``."""
    whole = [step_dir.parent / runs.step_dir_name(s) for s in runs.steps_in(step_dir.parent)
             if runs.state_dir(step_dir.parent / runs.step_dir_name(s)).is_dir()]
    ways = [f"resume from the newest that has one ({str(whole[-1])!r})"] if whole else []
    if runs.step_weights(step_dir) is not None:  # full weights (a LoRA run's are adapters)
        ways.append(f"start a new run from its weights with --set model.init={str(step_dir)!r}")
    what = " or ".join(ways) or "start a new run"
    return (f"--resume {spec!r}: checkpoint {str(step_dir)!r} has no state/ folder (the "
            f"optimizer, EMA and data position a resume needs); {what}.")
