"""Captions longer than the model reads: the text encoder keeps the first ``text_ctx`` tokens
and training drops the rest without a word, so the first batches are counted and the run says
so once (``glidectl dataset inspect --config`` counts the whole source)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class CaptionLengthCheck:
    """Looks at the first ``want`` non-empty captions a process trains on; :meth:`see` (one
    batch's captions) returns one warning, at the first batch holding a caption longer than
    ``ctx`` tokens, and nothing after it or after ``want`` captions."""

    def __init__(self, tokenizer: Any, ctx: int, want: int = 64):
        self.tokenizer, self.ctx, self.want = tokenizer, int(ctx), int(want)
        self.seen = self.cut = 0

    def see(self, captions: Sequence[str]) -> str | None:
        if self.seen >= self.want:
            return None
        for caption in captions:
            if caption:
                self.seen += 1
                self.cut += self.tokenizer.count(caption) > self.ctx
        if not self.cut:
            return None
        note = (f"Warning: captions longer than the model reads ({self.ctx} tokens) are cut "
                f"in training ({self.cut} of the first {self.seen}); shorten them, or count "
                "them all with glidectl dataset inspect --config.")
        self.seen = self.want  # said once
        return note
