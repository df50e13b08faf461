"""One worker's raw sample stream, built from webdataset's pipeline stages.

Work units (shards, files, demo indices, Parquet row groups) go through webdataset's
``SimpleShardList`` (shuffled per epoch with the seed) or ``ResampledShards`` (endless,
seeded per worker), are split by rank and by DataLoader worker (``split_by_worker``), read
into raw samples, and shuffled through webdataset's ``shuffle`` buffer. Nothing here decodes
an image, so a resumed run skips what it already trained on before any decoding: whole
units for one-sample units, raw samples after the shuffle otherwise. Training repeats a unit
as often per epoch as its source says (kohya's folder repeats) before the shuffle and split,
so repeats spread over the epoch, the ranks and the workers like any other units (a source
whose counts change per epoch, as OneTrainer's fractional repeats, is asked per epoch).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from itertools import accumulate, islice
from typing import Any

from .records import RawSample
from .source_api import epoch_units
from .stats import RejectionCounter


@dataclass(frozen=True)
class Slot:
    """Who reads: this process (``rank`` of ``world``) and DataLoader worker."""

    rank: int = 0
    world: int = 1
    worker: int = 0
    workers: int = 1

    @property
    def index(self) -> int:
        return self.rank * self.workers + self.worker

    @property
    def total(self) -> int:
        return self.world * self.workers


def split_by_rank(src: Iterator[Any], rank: int, world: int) -> Iterator[Any]:
    """webdataset's ``split_by_node`` for the rank we were given (it would read the rank
    from the environment, which a single-process test or notebook does not set)."""
    return islice(src, rank, None, world) if world > 1 else src


def unit_stream(
    units: list[str], *, seed: int, epoch: int, shuffle: bool, resampled: bool, slot: Slot,
    split: bool,
) -> Iterator[str]:
    """The units this slot reads, in order: shuffled per epoch, or resampled forever."""
    import webdataset as wds

    if resampled:  # every slot draws its own endless, seeded sequence: nothing to split
        shards: Any = wds.ResampledShards(
            units, seed=seed, worker_seed=lambda: slot.index, deterministic=True,
            max_urls=len(units),
        )
        shards.epoch = epoch - 1  # ResampledShards counts one up per pass
        return (item["url"] for item in shards)
    listed = wds.SimpleShardList(units, seed=f"order:{seed}:{epoch}" if shuffle else None)
    urls: Iterator[str] = (item["url"] for item in listed)
    return split_for(urls, slot) if split else urls


def weighted_resample(units: list[str], weight: Callable[[str], float], *, seed: int,
                      epoch: int, slot: Slot) -> Iterator[str]:
    """An endless, seeded draw of ``units`` with replacement, each as likely as
    ``weight(unit)`` (units of weight 0 never), per slot as ``ResampledShards`` draws."""
    weights = [weight(u) for u in units]
    cum = list(accumulate(weights))
    if not cum or cum[-1] <= 0:
        return
    rng = random.Random(f"resample:{seed}:{epoch}:{slot.index}")
    while True:
        yield from rng.choices(units, cum_weights=cum, k=256)


def split_for(items: Iterator[Any], slot: Slot) -> Iterator[Any]:
    """The share of ``items`` that ``slot`` reads: split by rank, then by DataLoader worker."""
    import webdataset as wds

    items = split_by_rank(items, slot.rank, slot.world)
    return wds.split_by_worker(items) if slot.workers > 1 else items


def raw_stream(
    source: Any, counter: RejectionCounter, *, seed: int, epoch: int, slot: Slot,
    train: bool = True, resampled: bool = False, shuffle_buffer: int = 0, skip: int = 0,
) -> Iterator[RawSample]:
    """Raw samples for ``slot`` in this epoch, without the first ``skip`` of them.

    One-sample units (folders, demo data) are split and skipped unit by unit, before they
    are read. Multi-sample units (shards) are split unit by unit when there are at least as
    many as slots, else every slot reads them all and keeps every n-th sample; then they pass
    webdataset's shuffle buffer, and skipped samples are dropped after it, undecoded.
    """
    import webdataset as wds

    units = list(source.units())
    if train and resampled and getattr(source, "reads_vary", False):
        # an endless stream has no epochs to walk OneTrainer's ring over: draw each unit by
        # its mean reads per epoch, not by the first epoch's (which leave images out)
        names = weighted_resample(units, source.mean_reads, seed=seed, epoch=epoch, slot=slot)
        return (raw for unit in islice(names, skip, None) for raw in source.read(unit, counter))
    if train:  # each unit as many times as training reads it per epoch
        units = epoch_units(source, units, epoch)
    if not units:
        return iter(())
    by_unit = source.splits_samples or resampled or len(units) >= slot.total
    if train and source.splits_samples and not resampled and len(units) > len(set(units)):
        return _repeated_reads(source, units, counter, seed=seed, epoch=epoch, slot=slot,
                               skip=skip)
    names = unit_stream(units, seed=seed, epoch=epoch, shuffle=train, resampled=resampled,
                        slot=slot, split=by_unit)
    if source.splits_samples:
        return (raw for unit in islice(names, skip, None) for raw in source.read(unit, counter))
    samples: Iterator[RawSample] = (raw for unit in names for raw in source.read(unit, counter))
    if not by_unit:
        samples = islice(samples, slot.index, None, slot.total)
    if train and shuffle_buffer > 1:
        rng = random.Random(f"shuffle:{seed}:{epoch}:{slot.index}")
        samples = wds.shuffle(shuffle_buffer, shuffle_buffer, rng=rng)(samples)
    return islice(samples, skip, None)


def _repeated_reads(source: Any, units: list[str], counter: RejectionCounter, *, seed: int,
                    epoch: int, slot: Slot, skip: int) -> Iterator[RawSample]:
    """A shuffled training epoch of one-sample units that repeat (kohya's repeats): every
    copy of a unit after its first in the epoch's order (the order all slots share, before
    the split) reads samples marked ``again``, so a rejected image counts once an epoch."""
    order = unit_stream(units, seed=seed, epoch=epoch, shuffle=True, resampled=False,
                        slot=slot, split=False)  # holds its own copy: ``units`` may go
    return _marked_reads(source, order, counter, slot, skip)


def _marked_reads(source: Any, order: Iterator[str], counter: RejectionCounter, slot: Slot,
                  skip: int) -> Iterator[RawSample]:
    seen: set[str] = set()

    def marked() -> Iterator[tuple[str, bool]]:
        for unit in order:
            yield unit, unit in seen
            seen.add(unit)

    for unit, again in islice(split_for(marked(), slot), skip, None):
        for raw in source.read(unit, counter):
            yield replace(raw, again=True) if again else raw
