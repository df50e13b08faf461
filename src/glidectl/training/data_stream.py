"""Deterministic, resumable batches from an iterable dataset, with or without workers.

Each DataLoader worker collates its own batches, and the stream takes them in a fixed order,
worker 0, 1, …, W-1 and round again (a worker that has run out is passed over), whatever
order the workers finish them in. The cursor records, per worker, how many raw samples it
had taken for the batches the loop consumed (datasets tag samples with ``_cursor``), and
whose turn is next; a resumed stream hands those counts to the dataset
(``set_resume``), which skips that many samples per worker before decoding anything.
Datasets without ``set_resume`` are skipped sample by sample instead.

A small dataset (:mod:`glidectl.data.batching`) is read by only as many workers as each hold
a batch, and when one process's epoch is shorter than a batch, its one worker reads the
epochs one after another and cuts batches across them; a batch that ends in a later epoch
moves the cursor to that epoch, so a resume inside such a run continues exactly.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from ..data.batching import repeat_note, spans_epochs, workers_for, workers_note
from ..errors import GlidectlError
from .metrics import add_counts, dataset_counts

_EPOCH_END = object()


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors, keep strings (captions) as lists."""
    out: dict[str, Any] = {}
    for key in items[0]:
        values = [item[key] for item in items]
        if isinstance(values[0], torch.Tensor):
            out[key] = torch.stack(values)
        elif isinstance(values[0], np.ndarray):
            out[key] = torch.from_numpy(np.stack(values))
        else:
            out[key] = values
    return out


def _as_is(item: Any) -> Any:
    return item


def _what_was_read(dataset: Any, counts: dict[str, Any] | None = None) -> str:
    """' (1 valid sample, 6 rejected (missing_caption: 6))': what an epoch too short for one
    batch held, from its ``counts`` (else the dataset's own; '' when it keeps none)."""
    stats = getattr(dataset, "stats", None)
    if counts is None and stats is None:
        return ""
    from ..data.stats import RejectionCounter

    counter = RejectionCounter.from_dict(stats() if counts is None else counts)
    n = counter.accepted
    skipped = f", {counter.summary()}" if counter.total_rejected else ""
    return f" ({n} valid sample{'s' * (n != 1)}{skipped})"


def _dead_worker(items: Any, wait: float = 2.0) -> str | None:
    """torch's words for a loader worker that died (a lost connection mid-batch is how its
    death can show up first), once the system has reaped it; None if none did."""
    import signal

    deadline = time.monotonic() + wait
    while True:
        for worker in getattr(items, "_workers", ()):
            code = worker.exitcode
            if code is not None and code < 0:
                return f"DataLoader worker (pid {worker.pid}) is killed by signal: " \
                       f"{signal.strsignal(-code)}."
            if code:
                return f"DataLoader worker (pid {worker.pid}) exited unexpectedly with exit " \
                       f"code {code}."
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)


class WorkerBatches(IterableDataset):
    """Full batches of ``batch_size`` from one worker, tagged ``_worker``, ``_cursor`` and
    ``_epoch`` (where the batch ended), then an end marker ``{"_worker": w, "_end": True}``.
    ``span`` (one worker, an epoch shorter than a batch): the epochs from ``epoch`` on are read
    one after another and batches cut across them, without end."""

    def __init__(self, dataset: IterableDataset, batch_size: int, skip: list[int],
                 epoch: int = 0, span: bool = False):
        super().__init__()
        self.dataset, self.batch_size, self.skip = dataset, batch_size, skip
        self.epoch, self.span = epoch, span

    def _items(self, skip: int) -> tuple[Iterator[dict[str, Any]], int]:
        """The dataset's samples after the first ``skip``, and how many were drawn to skip."""
        items = iter(self.dataset)
        counted = 0
        if skip and not hasattr(self.dataset, "set_resume"):  # skip by drawing samples
            for counted, _ in enumerate(items, start=1):
                if counted >= skip:
                    break
        return items, counted

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker = 0 if info is None else info.id
        skip = self.skip[worker] if worker < len(self.skip) else 0
        epoch = self.epoch
        batch: list[dict[str, Any]] = []
        passed = getattr(self.dataset, "passed_counts", None)
        done: dict[str, Any] = {}  # the counts of this worker's earlier passes (span)
        while True:
            items, counted = self._items(skip)
            for item in items:
                counted += 1
                cursor = item.pop("_cursor", counted)
                batch.append(item)
                if len(batch) == self.batch_size:
                    yield {**collate(batch), "_worker": worker, "_cursor": int(cursor),
                           "_epoch": epoch, **_counts(done, passed)}
                    batch = []
            done = _counts(done, passed).get("_counts", done)
            if not self.span or (counted == 0 and not skip):  # an empty epoch ends it
                break
            epoch, skip = epoch + 1, 0  # the batch goes on with the next epoch's shuffle
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(epoch)
            if hasattr(self.dataset, "set_resume"):
                self.dataset.set_resume([0])
        yield {"_worker": worker, "_end": True, **({"_counts": done} if done else {})}


def _counts(done: dict[str, Any], passed: Callable[[], dict[str, Any]] | None
            ) -> dict[str, Any]:
    """``{"_counts": ...}``: the samples a worker has counted up to the one it handed on
    last (``done``, of its earlier passes, and its pass under way), for the batch it hands
    over; {} for a dataset that keeps no such counts."""
    now = passed() if callable(passed) else {}
    return {"_counts": add_counts(done, now)} if now else {}


EMPTY_EPOCHS = 8  # epochs in a row without a batch for one process, after it read one


class DataStream:
    """Endless micro-batches for this process with a resumable cursor.

    ``epoch``/``position`` (batches taken this epoch) and the per-worker cursor advance on
    the consumer side (what the loop actually took), so prefetching workers never make a
    checkpoint skip data. ``workers`` is what ``data.workers`` asks; ``self.workers`` the
    DataLoader workers that read (fewer for a small dataset, see :meth:`notes`).
    """

    def __init__(self, dataset: IterableDataset, *, batch_size: int, rank: int = 0,
                 world: int = 1, seed: int = 0, workers: int = 0):
        if not isinstance(dataset, IterableDataset):
            raise TypeError("DataStream reads iterable datasets (glidectl.data.build_dataset)")
        self.dataset = dataset
        self.batch_size = batch_size
        self.rank, self.world, self.seed, self.asked = rank, world, seed, int(workers)
        self.global_batch = batch_size * world
        self._use_workers(workers_for(self.asked, self.per_process, batch_size))
        self.last_wait = 0.0
        self._read = False  # a batch read by this run (here, or before its checkpoint)
        self._empty = 0  # epochs in a row that gave this process no batch
        # the counts of the samples taken (counts): of the loaders closed before, and per
        # worker, of this one's; _counting: the batches carry counts
        self._counted: dict[str, Any] = {}
        self._counting_now: dict[int, dict[str, Any]] = {}
        self._counting = False
        self._kept_workers = False  # the worker count is the resumed checkpoint's
        self._start_epoch(0)
        self._ranks: list[list[int]] | None = None
        self._iter: Iterator[Any] | None = None

    @property
    def per_process(self) -> int | None:
        """Samples one process reads an epoch (the smallest share), when the dataset says
        how many it holds and ends (None for an endless, resampled one)."""
        n = getattr(self.dataset, "num_samples", None)
        return None if not n or getattr(self.dataset, "resampled", False) else n // self.world

    def counts(self) -> dict[str, Any]:
        """:func:`~glidectl.training.metrics.dataset_counts` of the samples this process
        has taken (those of each worker up to its batch taken last, and of the epochs before):
        not the ones DataLoader workers read ahead, which a resume reads and counts again.
        A dataset that does not count per batch gives its own counts."""
        if not self._counting:
            return dataset_counts(self.dataset)
        return add_counts(self._counted, *self._counting_now.values())

    def _took_counts(self, worker: int, item: dict[str, Any]) -> None:
        """Keep the counts a taken batch (or a worker's end marker) carries."""
        counts = item.pop("_counts", None)
        if counts:
            self._counting_now[worker], self._counting = counts, True

    def _use_workers(self, workers: int) -> None:
        self.workers, self.slots = int(workers), max(int(workers), 1)
        self.span = self.slots == 1 and spans_epochs(self.per_process, self.batch_size)

    def notes(self) -> list[str]:
        """Why fewer workers read than ``data.workers`` asks, and that batches span epochs."""
        return [n for n in (
            workers_note(self.asked, self.workers, self.per_process, self.batch_size,
                         self.world),
            repeat_note(self.per_process, self.batch_size, self.world) if self.span else None)
            if n]

    def _start_epoch(self, epoch: int) -> None:
        self.epoch, self.position, self.next_worker = epoch, 0, 0
        self.cursors = [0] * self.slots
        self.ended = [False] * self.slots

    def epochs_read(self) -> float | None:
        """The epochs this process has read so far, by its cursor (its saved one after a
        resume), when the data's length is known."""
        n = self.per_process
        return None if not n else self.epoch + sum(self.cursors) / n

    def steps_per_epoch(self, grad_accum: int) -> int | None:
        """Optimizer steps per epoch, when the data's length is known."""
        n = getattr(self.dataset, "num_samples", None)
        return None if not n else max(1, n // self.global_batch // grad_accum)

    def total_steps(self, epochs: int, grad_accum: int) -> int | None:
        """Optimizer steps for ``epochs`` epochs, when the data's length is known: the
        epochs' micro-batches (each epoch's full batches; batches that span epochs take
        ``epochs`` × the epoch's samples) in steps of ``grad_accum``, the last one whole
        (accumulation runs on across an epoch's end, so it may read into one more epoch)."""
        n = getattr(self.dataset, "num_samples", None)
        if not n:
            return None
        if self.span:
            return max(1, math.ceil(epochs * n / (self.global_batch * grad_accum)))
        return max(1, math.ceil(epochs * (n // self.global_batch) / grad_accum))

    def _epoch(self) -> Iterator[Any]:
        """This epoch's batches in worker order, from the cursor on; then ``_EPOCH_END``."""
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch)
        if hasattr(self.dataset, "set_resume"):
            self.dataset.set_resume(list(self.cursors))
        fresh = self.position == 0
        # this loader's workers count from 0 (a resumed epoch: after their cursors)
        self._counted = add_counts(self._counted, *self._counting_now.values())
        self._counting_now = {}
        # its own generator, from the run's seed and the epoch: the loader draws its workers'
        # base seed from the global one otherwise, one draw more after a resume than the
        # straight run made, which moved every dropout mask after it
        loader = DataLoader(
            WorkerBatches(self.dataset, self.batch_size, list(self.cursors), self.epoch,
                          self.span), batch_size=None, num_workers=self.workers,
            collate_fn=_as_is, generator=torch.Generator().manual_seed(
                (int(self.seed) * 1_000_003 + self.epoch) % 2**63),
        )
        items = iter(loader)
        pending: dict[int, deque[dict[str, Any]]] = {w: deque() for w in range(self.slots)}
        got = False
        try:
            while not all(self.ended):
                w = self.next_worker
                if self.ended[w]:
                    self.next_worker = (w + 1) % self.slots
                    continue
                while not pending[w]:
                    try:
                        item = next(items)
                    except StopIteration:  # a worker left without its end marker
                        item = {"_worker": w, "_end": True}
                    except (ConnectionError, EOFError) as exc:  # it died handing a batch over
                        raise RuntimeError(_dead_worker(items) or str(exc)) from exc
                    except RuntimeError as exc:  # "(pid(s) N) exited unexpectedly": but how?
                        if "exited unexpectedly" in str(exc) and (how := _dead_worker(items)):
                            raise RuntimeError(how) from exc
                        raise
                    pending[int(item["_worker"])].append(item)
                item = pending[w].popleft()
                if item.get("_end"):
                    self._took_counts(w, item)
                    self.ended[w] = True
                    self.next_worker = (w + 1) % self.slots
                    continue
                got = True
                yield item
        finally:  # stop the workers now, not whenever the loader is garbage-collected
            shutdown = getattr(items, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
        self._empty = self._empty + 1 if fresh and not got else 0
        # A later epoch may give one process no batch where its reshuffled share of the
        # files holds too few usable samples (held out, rejected): it reads the next one.
        if fresh and not got and (not self._read or self._empty >= EMPTY_EPOCHS):
            counter = getattr(self.dataset, "counter", lambda: None)()
            none_valid = counter is not None and counter.accepted == 0
            if none_valid and self.world == 1:  # not the workers' split: nothing to batch
                raise self.dataset.no_valid_data(counter)
            share = "" if self.world == 1 else (
                f" to process {self.rank} of {self.world}, which reads only its share of the "
                "files or shards")
            fewer = "" if self.world == 1 else ", run fewer processes or split the data into "\
                "more files"
            asked = f"data.workers = {self.asked}" if self.asked == self.slots else \
                f"{self.slots} workers (data.workers = {self.asked})"
            if self._kept_workers:  # a resume refuses another data.workers
                asked = f"the {self.slots} workers the run's checkpoint was saved with"
            lower = "" if self._kept_workers else \
                " lower data.workers (0: one process reads them all),"
            workers = "" if self.slots == 1 or none_valid else (  # each batches its share
                f": with {asked} each worker makes batches of only its "
                f"own share of them;{lower}")
            # this epoch's counts: after a resume, the process's since it began are more
            epoch = add_counts(*self._counting_now.values()) or None if self._counting else None
            raise GlidectlError(
                f"The training data gave not one batch of {self.batch_size}{share}"
                f"{_what_was_read(self.dataset, epoch)}{workers or ';'} check "
                f"data.source (see `glidectl dataset inspect`){fewer} or lower "
                "train.batch_size."
            )
        yield _EPOCH_END

    def _batches(self) -> Iterator[Any]:
        while True:
            yield from self._epoch()

    def next(self) -> dict[str, Any]:
        """The next micro-batch; measures the wait in ``last_wait``."""
        if self._iter is None:
            self._iter = self._batches()
        t0 = time.perf_counter()
        batch = next(self._iter)
        while batch is _EPOCH_END:
            self._start_epoch(self.epoch + 1)
            batch = next(self._iter)
        self.last_wait = time.perf_counter() - t0
        self._read = True
        self._ranks = None  # gathered cursors are stale now
        w, epoch = int(batch.pop("_worker")), int(batch.pop("_epoch"))
        if epoch != self.epoch:  # a batch that ran on into a later epoch
            self._start_epoch(epoch)
        self._took_counts(w, batch)
        self.cursors[w] = int(batch.pop("_cursor"))
        self.next_worker = (w + 1) % self.slots
        self.position += 1
        return batch

    def close(self) -> None:
        """Stop this epoch's DataLoader workers now (the cursor is kept)."""
        if self._iter is not None:
            self._iter.close()
            self._iter = None

    def global_positions(self, b: int) -> list[int]:
        """Where this process's ``b`` samples sit in the global batch: interleaved
        (j·world + rank), as the stream is sharded sample by sample."""
        return [j * self.world + self.rank for j in range(b)]

    def _row(self) -> list[int]:
        return [self.epoch, self.position, self.next_worker, self.slots, *self.cursors,
                *(int(e) for e in self.ended)]

    def gather_ranks(self, gather: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Collect every process's cursor (``gather`` concatenates a tensor over processes,
        e.g. ``accelerator.gather``); every process calls this before a checkpoint, so the
        main process's :meth:`state_dict` holds them all."""
        mine = torch.tensor([self._row()], dtype=torch.int64)
        self._ranks = gather(mine).reshape(-1, mine.shape[1]).tolist()

    def state_dict(self) -> dict[str, Any]:
        rows = self._ranks if self._ranks is not None else [self._row()]
        if len(rows) != self.world:  # a single process saving for itself
            rows = [self._row() if r == self.rank else [] for r in range(self.world)]
        return {"epoch": self.epoch, "position": self.position, "ranks": rows,
                "workers": {"asked": self.asked, "used": self.workers}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.close()
        self._read = True  # a checkpoint comes after a step: the run has read a batch
        rows = state.get("ranks") or []
        row = [int(v) for v in rows[self.rank]] if self.rank < len(rows) else []
        record = state.get("workers")
        if not isinstance(record, dict):  # saved before workers were fitted to the data
            self._use_workers(self.asked)
        elif record.get("asked") == self.asked and 0 <= int(record["used"]) <= self.asked:
            self._use_workers(int(record["used"]))  # the count the run started with
        self._kept_workers = len(row) >= 4 and self.slots > 1
        if len(row) < 4:  # no cursor for this process: start its saved epoch over
            self._start_epoch(int(state["epoch"]))
        elif row[3] != self.slots:
            raise GlidectlError(
                f"The checkpoint's data cursor is for {row[3]} DataLoader worker(s) per "
                f"process, this run has {self.slots}; resume with the data.workers the run "
                "was saved with" + (f" ({record['asked']})" if isinstance(record, dict) else "")
                + ", so the epoch continues exactly."
            )
        else:
            epoch, position, next_worker, slots = row[:4]
            self._start_epoch(epoch)
            self.position, self.next_worker = position, next_worker
            self.cursors = row[4:4 + slots]
            self.ended = [bool(e) for e in row[4 + slots:4 + 2 * slots]]
