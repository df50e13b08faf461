"""kohya's caption token warm-up (``token_warmup_min``, ``token_warmup_step``): early in
training a caption keeps only the first of its shuffleable tags, more as the steps go on,
all from step ``token_warmup_step`` (a value below 1: that fraction of the run's steps).

The step is the optimizer step, which the DataLoader workers, running ahead of the
optimizer, do not know. So a worker draws a sample's caption whole (its tags shuffled and
dropped as usual) and sends with it a :class:`WarmupCaption`, how to cut it; the training
loop, which knows the step, cuts it (``StreamDataset.warm_up``). The cut depends on nothing
but the step and what the worker drew from the sample's seed, so a resume stays exact.
"""

from __future__ import annotations

import json
import math
from dataclasses import astuple, dataclass


def warmup_tags(n: int, step: int, warmup_min: int, warmup_step: float,
                total_steps: int) -> int:
    """How many of ``n`` tags (those after ``keep_tokens``) a caption keeps at optimizer step
    ``step`` (0: the first), as kohya-ss sd-scripts' ``BaseDataset.process_caption``
    (``library/train_util.py``) computes it: ``floor(step · (n − min) / steps) + min``
    before step ``steps`` (``token_warmup_step``, or ``floor(token_warmup_step ·
    total_steps)`` when it is below 1), ``n`` from it on or when ``steps`` is 0."""
    steps = math.floor(warmup_step * total_steps) if warmup_step < 1 else warmup_step
    if not steps or step >= steps:
        return n
    return min(n, math.floor(step * ((n - warmup_min) / steps)) + warmup_min)


@dataclass(frozen=True)
class WarmupCaption:
    """A drawn caption as parts, to cut at a step: ``head`` and ``tail`` (the tags kept in
    place), ``tags`` (the others in their drawn order, each with its place in the caption
    as written, dropped ones left out) and ``n``, how many there were before dropping."""

    head: tuple[str, ...]
    tags: tuple[tuple[int, str], ...]
    tail: tuple[str, ...]
    n: int
    joiner: str
    secondary_separator: str
    separator: str
    warmup_min: int
    warmup_step: float

    def to_json(self) -> str:
        """As a sample carries it: a string, which any collate function keeps."""
        return json.dumps(astuple(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> WarmupCaption:
        head, tags, tail, *rest = json.loads(text)
        return cls(tuple(head), tuple((int(i), str(t)) for i, t in tags), tuple(tail), *rest)

    def at(self, step: int, total_steps: int) -> str | None:
        """The caption at optimizer ``step`` of ``total_steps``: kohya keeps the first tags
        as written, then shuffles and drops; None when it keeps all (the caption drawn)."""
        keep = warmup_tags(self.n, step, self.warmup_min, self.warmup_step, total_steps)
        if keep >= self.n:
            return None
        kept = [tag for place, tag in self.tags if place < keep]
        text = self.joiner.join([*self.head, *kept, *self.tail])
        if self.secondary_separator:
            text = text.replace(self.secondary_separator, self.separator)
        return text
