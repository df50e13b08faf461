"""Step checkpoints: atomic writes (temp dir + rename), retention, and a ``latest`` pointer.

Layout of ``checkpoints/step-000500/``: ``model.safetensors`` and ``ema.safetensors``
(exported weights with the model options in their metadata) and ``state/`` (the resume
state: optimizer, scheduler, scaler, RNGs of every process, EMA, data position).
``checkpoints/latest`` is a text file holding the newest step dir's name; it is written
last, so a crash at any point leaves every listed checkpoint whole.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from ..errors import GlidectlError

STEP_RE = re.compile(r"step-(\d+)")
LATEST = "latest"


def step_dir_name(step: int) -> str:
    return f"step-{step:06d}"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text_atomic(path: Path, text: str) -> None:
    """Write a small file through a temp file and ``os.replace``."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class CheckpointManager:
    """Writes, lists, prunes and resolves the checkpoints of one run."""

    def __init__(self, directory: Path, keep_last: int = 0):
        self.directory = Path(directory)
        self.keep_last = keep_last

    def tmp_dir(self, step: int) -> Path:
        return self.directory / f".tmp-{step_dir_name(step)}"

    def begin(self, step: int) -> Path:
        """A fresh temp folder to fill with the checkpoint's files (main process only)."""
        tmp = self.tmp_dir(step)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        return tmp

    def commit(self, step: int) -> Path:
        """Rename the temp folder into place, update ``latest``, then prune (main process)."""
        tmp = self.tmp_dir(step)
        final = self.directory / step_dir_name(step)
        if final.exists():
            # Same step written again (e.g. a resumed run checkpoints where it started).
            old = self.directory / f".old-{step_dir_name(step)}"
            if old.exists():
                shutil.rmtree(old)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old)
        else:
            os.replace(tmp, final)
        _fsync_dir(self.directory)
        write_text_atomic(self.directory / LATEST, final.name + "\n")
        self.prune()
        return final

    def save(self, step: int, write: Callable[[Path], None]) -> Path:
        """One-process convenience: ``write(tmp_dir)`` then :meth:`commit`."""
        tmp = self.begin(step)
        write(tmp)
        return self.commit(step)

    def steps(self) -> list[int]:
        """Steps of the complete checkpoints, oldest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for child in self.directory.iterdir():
            match = STEP_RE.fullmatch(child.name)
            if match and child.is_dir():
                found.append(int(match.group(1)))
        return sorted(found)

    def prune(self) -> None:
        """Delete all but the newest ``keep_last`` checkpoints and stale temp folders."""
        for child in self.directory.iterdir():
            if child.name.startswith((".tmp-", ".old-")) and child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
        if self.keep_last <= 0:
            return
        steps = self.steps()
        latest = self.latest()
        for step in steps[: max(0, len(steps) - self.keep_last)]:
            path = self.directory / step_dir_name(step)
            if latest is not None and path == latest:
                continue
            shutil.rmtree(path, ignore_errors=True)

    def latest(self) -> Path | None:
        """The checkpoint named by ``latest``, else the highest complete step, else None."""
        pointer = self.directory / LATEST
        if pointer.is_file():
            name = pointer.read_text(encoding="utf-8").strip()
            path = self.directory / name
            if name and path.is_dir():
                return path
        steps = self.steps()
        return self.directory / step_dir_name(steps[-1]) if steps else None


def latest_under(path: Path) -> Path | None:
    """The latest step dir in a run folder (``path/checkpoints``) or a checkpoints folder."""
    for candidate in (Path(path) / "checkpoints", Path(path)):
        if candidate.is_dir():
            found = CheckpointManager(candidate).latest()
            if found is not None:
                return found
    return None


def resolve_checkpoint(spec: str, run_checkpoints: Path | None = None) -> Path:
    """``latest`` (in this run), a step dir, a checkpoints/ dir or a run dir → a step dir."""
    if spec == LATEST:
        if run_checkpoints is None:
            raise GlidectlError("--resume latest needs a run: pass --name or --resume RUN_DIR.")
        found = CheckpointManager(run_checkpoints).latest()
        if found is None:
            raise GlidectlError(
                f"--resume latest: no checkpoint in {str(run_checkpoints)!r}; "
                "train first or pass a checkpoint path."
            )
        return found
    path = Path(spec)
    if (path / "state").is_dir():
        return path
    found = latest_under(path)
    if found is not None:
        return found
    raise GlidectlError(
        f"--resume {spec!r}: not a checkpoint (a checkpoints/step-NNNNNN folder with a state/ "
        "folder) nor a run folder with checkpoints; pass 'latest' or an existing checkpoint."
    )


def run_of_checkpoint(step_dir: Path) -> Path:
    """runs/<name>/checkpoints/step-N → runs/<name>."""
    return step_dir.resolve().parent.parent
