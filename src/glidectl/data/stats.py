"""Counting accepted, rejected and converted samples, across DataLoader worker processes.

Every worker keeps a :class:`RejectionCounter` and publishes it (as JSON) into its own slot of
a small shared-memory array created by the parent, so ``dataset.stats()`` in the training
process sees the sum over all workers, whether they were forked or spawned.
"""

from __future__ import annotations

import ctypes
import json
import multiprocessing
import shlex
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from multiprocessing import context as mp_context
from typing import Any

from ..errors import GlidectlError

MAX_EXAMPLES = 3


class DataError(GlidectlError):
    """A data source that yields nothing usable."""


class RejectionCounter:
    """Accepted samples, rejections and conversions by reason, with a few example keys each.
    ``rejected`` counts an image that one epoch reads several times (kohya's repeats) once;
    ``repeated`` counts the rejections of its further reads."""

    def __init__(self) -> None:
        self.accepted = 0
        self.rejected: Counter[str] = Counter()
        self.repeated: Counter[str] = Counter()
        self.converted: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}
        self.iterations = 0
        self.too_small_side: int | None = None  # the shortest side of a too_small image

    def accept(self) -> None:
        self.accepted += 1

    def reject(self, reason: str, key: str = "", again: bool = False,
               short_side: int | None = None) -> None:
        """Count a rejection; ``again``: of a further read of an image this epoch already
        read (counted in ``repeated``, its key already an example); ``short_side``: that of
        an image rejected as too small (the smallest is kept for the hint)."""
        self.too_small_side = _smaller(self.too_small_side, short_side)
        if again:
            self.repeated[reason] += 1
            return
        self.rejected[reason] += 1
        keys = self.examples.setdefault(reason, [])
        if key and len(keys) < MAX_EXAMPLES and str(key)[:200] not in keys:  # repeats: once
            keys.append(str(key)[:200])

    def recount(self, key: str, was: str, now: str) -> None:
        """Count the rejection of ``key`` counted as ``was`` as ``now`` instead."""
        self.rejected[was] -= 1
        if self.rejected[was] <= 0:
            del self.rejected[was]
        if str(key)[:200] in self.examples.get(was, ()):
            self.examples[was].remove(str(key)[:200])
        self.reject(now, key)

    def convert(self, what: str) -> None:
        self.converted[what] += 1

    @property
    def total_rejected(self) -> int:
        return sum(self.rejected.values())

    def top_reasons(self, n: int = 3) -> list[tuple[str, int]]:
        return sorted(self.rejected.items(), key=lambda kv: (-kv[1], kv[0]))[:n]

    def to_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "rejected": dict(sorted(self.rejected.items())),
            "repeated": dict(sorted(self.repeated.items())),
            "converted": dict(sorted(self.converted.items())),
            "examples": {k: list(v) for k, v in sorted(self.examples.items())},
            "iterations": self.iterations,
            "too_small_side": self.too_small_side,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RejectionCounter:
        counter = cls()
        counter.accepted = int(data.get("accepted", 0))
        counter.rejected.update({k: int(v) for k, v in data.get("rejected", {}).items()})
        counter.repeated.update({k: int(v) for k, v in data.get("repeated", {}).items()})
        counter.converted.update({k: int(v) for k, v in data.get("converted", {}).items()})
        counter.examples = {k: list(v) for k, v in data.get("examples", {}).items()}
        counter.iterations = int(data.get("iterations", 0))
        side = data.get("too_small_side")
        counter.too_small_side = side if isinstance(side, int) else None
        return counter

    @classmethod
    def merged(cls, counters: Iterable[RejectionCounter]) -> RejectionCounter:
        out = cls()
        for c in counters:
            out.accepted += c.accepted
            out.rejected.update(c.rejected)
            out.repeated.update(c.repeated)
            out.converted.update(c.converted)
            out.iterations = max(out.iterations, c.iterations)
            out.too_small_side = _smaller(out.too_small_side, c.too_small_side)
            for reason, keys in c.examples.items():
                mine = out.examples.setdefault(reason, [])
                mine.extend([k for k in dict.fromkeys(keys) if k not in mine]
                            [: MAX_EXAMPLES - len(mine)])
        return out

    def summary(self, n: int = 3) -> str:
        """``'12 rejected (truncated_image: 8, empty_file: 4)'``: the ``n`` commonest
        reasons, then how many more for the others (``'; 2 more for 1 other reason'``), so
        the counts shown add up to the total."""
        top = self.top_reasons(n)
        reasons = ", ".join(f"{r}: {c}" for r, c in top)
        others, rest = len(self.rejected) - len(top), self.total_rejected - sum(c for _, c in top)
        if others > 0:
            reasons += f"; {rest} more for {others} other reason{'s' * (others != 1)}"
        return f"{self.total_rejected} rejected" + (f" ({reasons})" if reasons else "")


def _smaller(a: int | None, b: int | None) -> int | None:
    """The smaller of two sizes, either of which may be unknown (None)."""
    return b if a is None else a if b is None else min(a, b)


def _too_small_hint(counter: RejectionCounter) -> str:
    """What to lower data.min_image_size to so the pictures rejected as too small are kept:
    the shortest side among them, where known."""
    side = counter.too_small_side
    if side is None:
        return ("; images below data.min_image_size are rejected: lower it to the short side "
                "of the pictures to keep them")
    return (f"; images below data.min_image_size are rejected: the smallest found is {side} "
            f"px on its short side, so --set data.min_image_size={side} keeps them")


def no_valid_data_error(source: str, counter: RejectionCounter,
                        hint: Any = None, inspect: bool = True,
                        inspected: bool = False, flags: Sequence[str] = ()) -> DataError:
    """The one-line error for a source from which nothing valid could be read; ``hint``:
    the source's optional ``hint(reason)``, a sentence on what the samples rejected for its
    most common reason carry instead (webdataset's captions under another extension);
    ``inspect=False``: a source ``glidectl dataset inspect`` cannot open (Python pairs);
    ``inspected``: the line ``dataset inspect`` ends its report with, saying that training
    refuses the source where training's own line points at ``dataset inspect``; ``flags``:
    the ``--set`` items that command needs to read the source as the run does."""
    if not counter.rejected and counter.repeated:  # a worker given only later repeats
        counter = RejectionCounter.from_dict({**counter.to_dict(), "rejected": counter.repeated})
    refused = ", so training would refuse it" if inspected else ""
    if counter.total_rejected == 0:
        return DataError(
            f"Data source {source!r} yielded no samples{refused}; check that it holds images "
            "(and captions)" + ("." if inspected else " or run 'glidectl dataset inspect' on it.")
        )
    top = counter.top_reasons(1)[0][0]
    found = hint(top) if callable(hint) else None
    hint = _too_small_hint(counter) if top == "too_small" else ""
    command = " ".join([shlex.quote(source), *(f"--set {shlex.quote(f)}" for f in flags)])
    examples = (f"; run `glidectl dataset inspect {command}` to see examples"
                if inspect and not inspected else "")
    return DataError(f"No valid samples in data source {source!r}: {counter.summary()}{refused}"
                     f"{hint}{examples}." + (f" {found}" if found else ""))


FOLDED = ("rejected", "repeated", "converted")  # counts by reason (or mode)
OTHER_REASONS = "other reasons"


def fold(counts: dict[str, int], keep: int) -> dict[str, int]:
    """``counts`` with all but the ``keep`` largest summed as :data:`OTHER_REASONS`."""
    counts = dict(counts)
    other = counts.pop(OTHER_REASONS, 0)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    rest = other + sum(n for _, n in ranked[keep:])
    return {**dict(ranked[:keep]), **({OTHER_REASONS: rest} if rest else {})}


class SharedStats:
    """Per-process counters in shared memory: slot 0 is the main process, 1+i worker i.

    Each slot has one writer (its process); a sequence number around every write lets
    readers retry a torn read, so no lock is shared (locks from a fork context cannot
    travel to spawned workers).
    """

    SLOTS = 129
    SLOT_BYTES = 8192
    HEADER = 8  # sequence number, payload length (uint32 each)

    def __init__(self) -> None:
        try:
            self._array: Any = multiprocessing.RawArray(ctypes.c_char,
                                                        self.SLOTS * self.SLOT_BYTES)
        except OSError as exc:  # a file size limit (ulimit -f) or a full /dev/shm
            raise GlidectlError(
                f"Cannot make the {self.SLOTS * self.SLOT_BYTES // 1024} KiB of shared memory "
                f"the data counters use ({exc.strerror or exc}); raise the file size limit "
                "(ulimit -f) or free space in the temp folder."
            ) from None
        self._snapshot: dict[int, dict[str, Any]] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Shared memory can only travel to a process being started (DataLoader workers under
        # spawn/forkserver); an ordinary pickle or deepcopy gets a detached snapshot instead.
        if self._array is not None and mp_context.get_spawning_popen() is not None:
            return {"_array": self._array, "_snapshot": {}}
        return {"_array": None, "_snapshot": self._read_all()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def load(self, slot: int) -> RejectionCounter:
        data = self._read(slot)
        return RejectionCounter.from_dict(data) if data else RejectionCounter()

    def _base(self, slot: int) -> int:
        return ctypes.addressof(self._array) + (slot % self.SLOTS) * self.SLOT_BYTES

    def publish(self, slot: int, counter: RejectionCounter) -> None:
        data = counter.to_dict()
        payload = json.dumps(data, separators=(",", ":")).encode()
        if len(payload) + self.HEADER > self.SLOT_BYTES:
            data["examples"] = {}
            payload = json.dumps(data, separators=(",", ":")).encode()
        keep = max(len(data[k]) for k in FOLDED)
        # hundreds of reasons (a plugin preset's): the rarest are summed as one, so every
        # count still adds up (a longer payload was written over the next process's slot)
        while len(payload) + self.HEADER > self.SLOT_BYTES and keep:
            keep //= 2
            data = {**data, **{k: fold(data[k], keep) for k in FOLDED}}
            payload = json.dumps(data, separators=(",", ":")).encode()
        if self._array is None:
            self._snapshot[slot] = data
            return
        base = self._base(slot)
        seq = int.from_bytes(ctypes.string_at(base, 4), "little")
        ctypes.memmove(base, (seq + 1).to_bytes(4, "little"), 4)  # odd: write in progress
        ctypes.memmove(base + self.HEADER, payload, len(payload))
        ctypes.memmove(base + 4, len(payload).to_bytes(4, "little"), 4)
        ctypes.memmove(base, (seq + 2).to_bytes(4, "little"), 4)

    def _read(self, slot: int) -> dict[str, Any] | None:
        if self._array is None:
            return self._snapshot.get(slot)
        base = self._base(slot)
        for _ in range(1000):
            seq = int.from_bytes(ctypes.string_at(base, 4), "little")
            if seq % 2:
                continue
            size = int.from_bytes(ctypes.string_at(base + 4, 4), "little")
            payload = ctypes.string_at(base + self.HEADER, min(size, self.SLOT_BYTES))
            if int.from_bytes(ctypes.string_at(base, 4), "little") != seq:
                continue
            if not size:
                return None
            try:
                return json.loads(payload)
            except ValueError:
                continue
        return self._snapshot.get(slot)

    def _read_all(self) -> dict[int, dict[str, Any]]:
        if self._array is None:
            return dict(self._snapshot)
        out = {}
        for slot in range(self.SLOTS):
            data = self._read(slot)
            if data:
                out[slot] = data
        return out

    def total(self) -> RejectionCounter:
        """All slots summed."""
        return RejectionCounter.merged(
            RejectionCounter.from_dict(d) for d in self._read_all().values()
        )
