"""Deterministic, resumable batches: an explicit (epoch, index) cursor over a seeded
per-epoch permutation, sharded so N processes together see the one-process global batch.

Iterable datasets (glidectl's own, which shard sample by sample and shuffle per epoch with
the seed) resume by setting the epoch and skipping the batches already taken in it.
Map-style datasets get exact resume too: each sample is fetched with python/numpy/torch RNGs
seeded from (seed, epoch, index), so augmentations do not depend on which process or worker
loads it, nor on what was loaded before.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

_EPOCH_END = object()


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed for one (epoch, index) sample."""
    return (seed * 1_000_003 + epoch * 7_919 + index * 104_729 + 12_345) % (2**32)


def epoch_permutation(n: int, seed: int, epoch: int) -> list[int]:
    gen = torch.Generator().manual_seed(seed * 10_007 + epoch)
    return torch.randperm(n, generator=gen).tolist()


class SeededSamples(Dataset):
    """Wraps a map-style dataset; item ``(epoch, index)`` is fetched under seeded RNGs."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        s = sample_seed(self.seed, epoch, index)
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            random.seed(s)
            np.random.seed(s)
            torch.manual_seed(s)
            try:
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)


class CursorBatches:
    """Batch sampler of ``(epoch, index)`` keys from a cursor; one rank's slice per batch."""

    def __init__(self, n: int, global_batch: int, rank: int, world: int, seed: int,
                 epoch: int, position: int):
        self.n, self.global_batch, self.rank, self.world = n, global_batch, rank, world
        self.seed, self.epoch, self.position = seed, epoch, position

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, pos = self.epoch, self.position
        per_rank = self.global_batch // self.world
        while True:
            if pos + self.global_batch > self.n:
                epoch, pos = epoch + 1, 0
            perm = epoch_permutation(self.n, self.seed, epoch)
            while pos + self.global_batch <= self.n:
                chunk = perm[pos + self.rank * per_rank: pos + (self.rank + 1) * per_rank]
                yield [(epoch, i) for i in chunk]
                pos += self.global_batch


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


class DataStream:
    """Endless micro-batches for this process with a resumable cursor.

    ``epoch``/``position`` advance on the consumer side (what the loop actually took),
    so prefetching workers never make a checkpoint skip data.
    """

    def __init__(self, dataset: Dataset | IterableDataset, *, batch_size: int, rank: int = 0,
                 world: int = 1, seed: int = 0, workers: int = 0):
        self.dataset = dataset
        self.batch_size = batch_size
        self.rank, self.world, self.seed, self.workers = rank, world, seed, workers
        self.global_batch = batch_size * world
        self.iterable = isinstance(dataset, IterableDataset)
        self.epoch = 0
        # map-style: index into the epoch's permutation; iterable: batches taken this epoch
        self.position = 0
        self._loader_epoch = 0
        self.last_wait = 0.0
        if not self.iterable:
            n = len(dataset)  # type: ignore[arg-type]
            if n < self.global_batch:
                from ..errors import GlidectlError

                raise GlidectlError(
                    f"The dataset has {n} samples, fewer than one global batch "
                    f"({self.global_batch} = batch_size × processes); add data or lower "
                    "train.batch_size."
                )
        self._iter: Iterator[dict[str, Any]] | None = None

    def __len__(self) -> int:
        """Micro-batches per epoch (map-style only)."""
        return len(self.dataset) // self.global_batch  # type: ignore[arg-type]

    def steps_per_epoch(self, grad_accum: int) -> int | None:
        """Optimizer steps per epoch, when the data's length is known."""
        if self.iterable:
            n = getattr(self.dataset, "num_samples", None)
            return None if not n else max(1, n // self.global_batch // grad_accum)
        return max(1, len(self) // grad_accum)

    def _loader(self) -> Iterator[dict[str, Any]]:
        if self.iterable:
            skip = self.position
            while True:
                if hasattr(self.dataset, "set_epoch"):
                    self.dataset.set_epoch(self._loader_epoch)
                loader = DataLoader(
                    self.dataset, batch_size=self.batch_size, num_workers=self.workers,
                    collate_fn=collate, drop_last=True,
                )
                got = False
                for batch in loader:
                    got = True
                    if skip > 0:
                        skip -= 1
                        continue
                    yield batch
                if not got:
                    from ..errors import GlidectlError

                    raise GlidectlError(
                        f"The training data gave not one batch of {self.batch_size}; check "
                        "data.source (see `glidectl dataset inspect`) or lower train.batch_size."
                    )
                self._loader_epoch += 1
                yield _EPOCH_END  # type: ignore[misc]
        else:
            sampler = CursorBatches(
                len(self.dataset), self.global_batch, self.rank, self.world,  # type: ignore[arg-type]
                self.seed, self.epoch, self.position,
            )
            loader = DataLoader(
                SeededSamples(self.dataset, self.seed), batch_sampler=sampler,
                num_workers=self.workers, collate_fn=collate,
                persistent_workers=self.workers > 0,
            )
            yield from loader

    def next(self) -> dict[str, Any]:
        """The next micro-batch; measures the wait in ``last_wait``."""
        if self._iter is None:
            self._loader_epoch = self.epoch
            self._iter = self._loader()
        t0 = time.perf_counter()
        batch = next(self._iter)
        if batch is _EPOCH_END:
            self.epoch, self.position = self.epoch + 1, 0
            batch = next(self._iter)
        self.last_wait = time.perf_counter() - t0
        self._advance()
        return batch

    def _advance(self) -> None:
        if self.iterable:
            self.position += 1  # batches taken in this epoch
            return
        if self.position + self.global_batch > len(self.dataset):  # type: ignore[arg-type]
            self.epoch, self.position = self.epoch + 1, 0
        self.position += self.global_batch

    def global_positions(self, b: int) -> list[int]:
        """Where this process's ``b`` samples sit in the global batch: contiguous blocks for
        map-style data, interleaved (j·world + rank) for streams sharded sample by sample."""
        if self.iterable:
            return [j * self.world + self.rank for j in range(b)]
        return [self.rank * b + j for j in range(b)]

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self._iter = None
