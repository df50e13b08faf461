"""How a small dataset is cut into training batches: as many DataLoader workers as each hold
a batch (a worker batches only its own share), and batches that run on across epochs when
one process's epoch is shorter than a batch (kohya's way with a handful of images)."""

from __future__ import annotations


def workers_for(asked: int, per_process: int | None, batch_size: int) -> int:
    """The DataLoader workers to use for ``data.workers = asked`` when each process reads
    ``per_process`` samples an epoch (None: unknown, or endless): at most as many as each
    get a full batch, and at least one."""
    if asked <= 1 or not per_process:
        return asked
    return max(1, min(asked, per_process // batch_size))


def spans_epochs(per_process: int | None, batch_size: int) -> bool:
    """Whether batches run on across epochs: one process's epoch holds fewer samples than a
    batch, so each batch takes the rest from the next epoch (a fresh shuffle)."""
    return bool(per_process) and per_process < batch_size


def _held(n: int, batch_size: int, world: int) -> str:
    """'10 samples per process make 2 batches of 4', or '3 samples are fewer than a batch
    of 4'."""
    held = f"{n} sample{'s' * (n != 1)}{' per process' * (world > 1)}"
    if n < batch_size:
        return f"{held} {'are' if n != 1 else 'is'} fewer than a batch of {batch_size}"
    k = n // batch_size
    return f"{held} make {k} batch{'es' * (k != 1)} of {batch_size}"


def workers_note(asked: int, used: int, per_process: int | None, batch_size: int,
                 world: int = 1) -> str | None:
    """The one line that says why fewer workers read than ``data.workers`` asks."""
    if used == asked:
        return None
    used = max(used, 1)
    why = _held(per_process, batch_size, world) if per_process else "the run started so"
    return (f"data.workers = {asked}: using {used} DataLoader worker{'s' * (used != 1)}, as "
            f"{why} and a worker batches only its own share (one holding less than a batch "
            "would leave it out).")


def repeat_note(per_process: int | None, batch_size: int, world: int = 1) -> str | None:
    """The one line that says batches span epochs, so images repeat."""
    if not per_process or not spans_epochs(per_process, batch_size):
        return None
    return (f"{_held(per_process, batch_size, world)}: each batch runs on into the next "
            "epoch (a fresh shuffle), so images repeat.")


def batch_notes(per_process: int | None, batch_size: int, asked: int,
                world: int = 1) -> list[str]:
    """What training does with an epoch of ``per_process`` samples, batches of
    ``batch_size`` and ``data.workers = asked``: the workers it leaves out, and whether
    batches span epochs (empty when neither)."""
    used = workers_for(asked, per_process, batch_size)
    spans = used <= 1 and spans_epochs(per_process, batch_size)
    return [n for n in (workers_note(asked, used, per_process, batch_size, world),
                        repeat_note(per_process, batch_size, world) if spans else None) if n]
