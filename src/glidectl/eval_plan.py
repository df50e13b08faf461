"""The work of an eval run: its prompts, each image's seed, the fixed batches and what is done.

The work is a fixed list of (prompt i, candidate j) items cut into fixed batches, so a batch
always holds the same items; image j of prompt i is drawn from its own seed
``image_seed(seed, i, j)``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import GlidectlError
from .eval_outputs import image_stems, index_width, is_whole_png, padded_widths
from .eval_settings import EvalSettings
from .prompt_files import read_prompt_file


def read_prompts(path: str | Path) -> list[str]:
    """Non-blank lines of a prompts file; lines starting with ``#`` are comments."""
    return read_prompt_file(path, "Prompts file")


def image_seed(seed: int, prompt_index: int, image_index: int) -> int:
    """The seed of image j of prompt i: a hash of (seed, i, j), below 2**63."""
    digest = hashlib.sha256(f"glidectl-eval:{seed}:{prompt_index}:{image_index}".encode())
    return int.from_bytes(digest.digest()[:8], "big") & (2**63 - 1)


@dataclass
class Plan:
    """Prompts, their items and the fixed batches, plus the work a run still has to do."""

    prompts: list[str]
    settings: EvalSettings
    batches: list[list[tuple[int, int]]]
    done: set[int] = field(default_factory=set)
    used: list[str] = field(default_factory=list)  # what the model reads of each prompt
    cut: dict[int, str] = field(default_factory=dict)  # what it reads of prompts it cuts
    width: int = 0  # digits of the index in file names (0: as a new run numbers them)
    vocab: dict[str, Any] = field(default_factory=dict)  # tokenizer.vocab_record's

    def __post_init__(self) -> None:
        self.used = self.used or list(self.prompts)
        self.width = self.width or index_width(len(self.prompts))

    @classmethod
    def make(cls, prompts: list[str], settings: EvalSettings) -> Plan:
        items = [(i, j) for i in range(len(prompts)) for j in range(settings.candidates)]
        bs = settings.batch_size
        return cls(prompts, settings, [items[k:k + bs] for k in range(0, len(items), bs)])

    def stems(self, i: int) -> list[str]:
        return image_stems(self.prompts, i, self.settings.n, self.width)

    def mark_done(self, out: Path) -> None:
        """Prompts whose every image (a PNG that decodes, and its caption) is in ``out``; a
        damaged PNG is made again. Names keep the index width the folder's images have, so
        a prompts file grown past 1,000 prompts (or shrunk below) keeps its images."""
        found: dict[int, set[int]] = {}
        for width in sorted({index_width(len(self.prompts))} | padded_widths(out)):
            self.width = width
            found[width] = {
                i for i in range(len(self.prompts))
                if all(is_whole_png(out / f"{s}.png") and _made_for(out, s, self.prompts[i])
                       for s in self.stems(i))
            }
        self.width = max(found, key=lambda w: (len(found[w]), w == index_width(
            len(self.prompts))))
        self.done = found[self.width]

    def check_strays(self, out: Path, prior: dict[str, Any] | None) -> None:
        """Raise when images the folder's run made (``prior``, its metadata.json) are there
        under names this plan does not make: --skip-existing with prompts that moved or went
        would leave them beside the new ones, listed nowhere. Prompts keep their numbers:
        new ones go at the end."""
        if prior is None:  # no metadata.json: the images' own records say what made them
            self._check_kept(out)
        widths = {index_width(len(self.prompts))} | padded_widths(out)  # as mark_done reads
        for w in sorted(widths):  # an edited prompt of a name alike ("红色圆形" → "蓝色方形")
            for i in range(len(self.prompts)):
                for stem in image_stems(self.prompts, i, self.settings.n, w):
                    was = _caption(out, stem)
                    if was is not None and not _made_for(out, stem, self.prompts[i]):
                        raise GlidectlError(
                            f"--skip-existing: {str(out)!r} holds {stem + '.png'!r} of the "
                            f"earlier prompt {was!r:.80}, but prompt {i + 1} is now "
                            f"{self.prompts[i]!r:.80} (its file would have that name), so "
                            "it would be kept as that prompt's image; keep the earlier "
                            "prompt in its place with new ones at the end, or use another "
                            "--out.")
        made = {s for w in widths for i in range(len(self.prompts))
                for s in image_stems(self.prompts, i, self.settings.n, w)}
        stray = [e for e in (prior or {}).get("images") or [] if isinstance(e, dict)
                 and isinstance(e.get("file"), str) and (out / e["file"]).is_file()
                 and Path(e["file"]).stem not in made]
        if stray:
            first = stray[0]
            index = first.get("prompt_index")
            now = (f"prompt {index + 1} of these is {self.prompts[index]!r}"
                   if isinstance(index, int) and 0 <= index < len(self.prompts)
                   else f"these {len(self.prompts)} prompts have no prompt {index + 1}"
                   if isinstance(index, int) else "these prompts do not make it")
            raise GlidectlError(
                f"--skip-existing: {str(out)!r} holds {first['file']!r}"
                f"{f' (and {len(stray) - 1} more images)' if len(stray) > 1 else ''} of its "
                f"earlier prompts, but {now}, so it would "
                "stay beside the new images, listed nowhere; keep the earlier prompts in their "
                "places with new ones at the end, or use another --out.")

    def batch_length(self, i: int, j: int) -> int:
        """How many images the batch of prompt i's candidate j holds: :meth:`make` cuts the
        items in order, so its batch is found by its index (a search of the batches for each
        image made a long eval quadratic)."""
        s = self.settings
        return len(self.batches[(i * s.candidates + j) // s.batch_size])

    def _check_kept(self, out: Path) -> None:
        """Raise unless each image kept (:meth:`mark_done`) was made with these settings and
        its seed, as its PNG records them: without a metadata.json nothing else says so."""
        now = json.loads(json.dumps(self.settings.fingerprint()))  # as the PNG holds it
        for i in sorted(self.done):
            for stem in self.stems(i):
                text = _png_record(out / f"{stem}.png")
                if "glidectl" not in text:  # no record of what made it: nothing to hold it to
                    continue
                try:
                    made = json.loads(text.get("glidectl", "{}"))
                    candidate = int(text.get("candidate", 0))
                    seed = int(text.get("seed", -1))
                except ValueError:
                    made, candidate, seed = {}, 0, -1
                differ = [k for k in now if made.get(k) != now[k]]
                if seed != image_seed(self.settings.seed, i, candidate):
                    differ.insert(0, "seed")
                if differ:
                    key = differ[0]
                    how = (f"another seed than {self.settings.seed}" if key == "seed" else
                           f"{key} {made.get(key)!r:.60}, not {now[key]!r:.60}")
                    raise GlidectlError(
                        f"--skip-existing: {str(out)!r} has no metadata.json, and "
                        f"{stem + '.png'!r} was made with {how}, so it would be kept under "
                        "settings that did not make it; pass the settings it was made with, "
                        "or use another --out.")

    @property
    def pending_batches(self) -> list[list[tuple[int, int]]]:
        return [b for b in self.batches if any(i not in self.done for i, _ in b)]

    def model_calls(self, calls_per_batch: Callable[[str], int]) -> dict[str, int]:
        """Network evaluations per stage for the pending work (``calls_per_batch(stage)``)."""
        pending = len(self.pending_batches)
        stages = ["base"] + (["upsample"] if self.settings.upsampler else [])
        return {s: pending * calls_per_batch(s) for s in stages}


def _png_record(path: Path) -> dict[str, Any]:
    """An eval PNG's text chunks (``seed``, ``candidate``, the ``glidectl`` settings)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return dict(getattr(image, "text", {}))
    except OSError:
        return {}


def _made_for(out: Path, stem: str, prompt: str) -> bool:
    """Whether the image ``stem`` in ``out`` was made for ``prompt``: its caption file names
    it, else (a long prompt, whose caption is what the model read of it) its PNG records it
    (the prompt, or a long one's sha256)."""
    if _caption(out, stem) == prompt:
        return True
    text = _png_record(out / f"{stem}.png")
    return text.get("prompt") == prompt or ("prompt_sha256" in text and text[
        "prompt_sha256"] == hashlib.sha256(prompt.encode()).hexdigest())


def _caption(out: Path, stem: str) -> str | None:
    """The prompt an earlier image's caption file names (None: no such file, or unreadable)."""
    try:
        return (out / f"{stem}.txt").read_text(encoding="utf-8").removesuffix("\n")
    except (OSError, UnicodeDecodeError):
        return None
