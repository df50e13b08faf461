"""What a source asks of each draw of its samples, beyond the ``[data]`` options: kohya's
per-subset caption handling (prefix and suffix, first line or any line, ``{a|b}``
wildcards, tags kept, shuffled and dropped, whole-caption dropout, every n-th epoch too) and
its ``flip_aug``, ``random_crop`` and ``color_aug``, and the token warm-up's parts
(:mod:`glidectl.data.token_warmup`). OneTrainer's concept text and image options map onto the
same rules.

Every random choice is taken from the sample's own ``rng`` (seeded from seed, epoch, slot
and position), so a resumed epoch draws the same captions as the uninterrupted one.
Shuffling, dropping and the image knobs apply to training only; evaluation, previews and
``dataset inspect`` read the caption as written.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, replace
from typing import Any

from .token_warmup import WarmupCaption

# "{red|blue} car": one of the choices per draw; as kohya's pattern, a choice runs from a
# "{" to the next "}" ("{a|{b|c}" offers "a", "{b" and "c")
WILDCARD = re.compile(r"\{([^}]+)\}")


@dataclass(frozen=True)
class SampleRules:
    """kohya's subset options as glidectl applies them (see kohya-ss sd-scripts'
    ``docs/config_README-en.md``); ``flip``/``random_crop`` None: ``data.flip`` and
    ``data.random_crop`` decide."""

    any_line: bool = False  # enable_wildcard: a random line of a multi-line caption, {a|b}
    wildcards: bool | None = None  # {a|b} choices (None: as any_line; OneTrainer: none)
    prefix: str = ""
    suffix: str = ""
    separator: str = ","
    joiner: str = ", "  # what shuffled or dropped tags are joined back with
    keep_tokens: int = 0
    keep_separator: str = ""  # "a, b ||| c, d ||| e": a, b and e stay in place
    secondary_separator: str = ""  # "sky;;;cloud": one tag, written "sky,cloud"
    shuffle: bool = False
    tag_dropout: float = 0.0
    dropout: float = 0.0
    dropout_every: int = 0  # caption_dropout_every_n_epochs: every n-th epoch drops them all
    flip: bool | None = None
    random_crop: bool | None = None
    color_aug: bool = False  # kohya's hue shift or gamma (glidectl.data.color_aug)
    warmup_min: int = 1  # token_warmup_min: tags kept (after keep_tokens) at step 0
    warmup_step: float = 0  # token_warmup_step: all tags from this step (< 1: a fraction)

    def line(self, text: str | None, rng: random.Random) -> str | None:
        """The caption line a draw reads, in the order of kohya-ss sd-scripts'
        ``BaseDataset.process_caption`` (``library/train_util.py``): ``prefix + " "`` and
        ``" " + suffix`` join the caption as read (the empty one too), then its first line
        is read (``split("\\n")[0]``, stripped; blank or not), or with ``any_line`` a random
        non-blank one, so a multi-line caption has the prefix on its first line and the
        suffix on its last, as in kohya (a caption file is cut to its first line before:
        :func:`~glidectl.data.captions.caption_file_text`). None (no caption) stays
        None."""
        from .captions import pick_line

        if text is None:
            return None
        if self.prefix:
            text = f"{self.prefix} {text}"
        if self.suffix:
            text = f"{text} {self.suffix}"
        if self.any_line:
            return pick_line(text, rng)
        return text.split("\n")[0].strip()

    def caption(self, text: str, rng: random.Random, train: bool) -> str:
        """``text`` (one line, prefix and suffix added) with its wildcards applied and, in
        training, its tags shuffled and dropped as kohya does: the first ``keep_tokens``
        tags (or those outside ``keep_separator``) stay in place, the rest are shuffled,
        then each dropped with ``tag_dropout``; tags are joined with ``joiner`` (kohya's
        ", "). Without shuffling, dropping or warm-up the caption keeps its
        ``keep_separator`` (:attr:`splits_tags`)."""
        return self.draw(text, rng, train)[0]

    def draw(self, text: str, rng: random.Random,
             train: bool) -> tuple[str, WarmupCaption | None]:
        """:meth:`caption`, and in training with a token warm-up (``warmup_step`` > 0) the
        parts to cut it at a step; the draws from ``rng`` are the same either way."""
        if not text:
            return text, None
        if self.any_line if self.wildcards is None else self.wildcards:
            text = _wildcards(text, rng)
        fixed, flex, tail = self._split(text)
        order = list(range(len(flex)))  # the tags' places, in the order they are trained
        if train and flex and self.shuffle:
            rng.shuffle(order)
        if train and flex and self.tag_dropout > 0:
            order = [i for i in order if rng.random() >= self.tag_dropout]
        warm = train and self.warmup_step > 0
        kept_apart = bool(self.keep_separator) and self.keep_separator in text
        if train and (self.shuffle or self.tag_dropout > 0) or warm \
                or kept_apart and self.splits_tags:
            text = self.joiner.join(fixed + [flex[i] for i in order] + tail)
        if self.secondary_separator:
            text = text.replace(self.secondary_separator, self.separator)
        if not warm:
            return text, None
        return text, WarmupCaption(
            tuple(fixed), tuple((i, flex[i]) for i in order), tuple(tail), len(flex),
            self.joiner, self.secondary_separator, self.separator, self.warmup_min,
            self.warmup_step)

    @property
    def splits_tags(self) -> bool:
        """Whether training splits the caption into tags, as kohya's ``process_caption``
        does only to shuffle, drop or warm them up: otherwise ``keep_separator`` stays in
        the caption as written, as in kohya."""
        return self.shuffle or self.tag_dropout > 0 or self.warmup_step > 0

    def _split(self, text: str) -> tuple[list[str], list[str], list[str]]:
        """(tags kept in front, tags to shuffle and drop, tags kept at the end). Empty tags
        ("a, , b", "a, b,") are kept and counted, as kohya's ``process_caption`` and mgds'
        ``ShuffleTags``/``DropTags`` split them, except around ``keep_separator``, where
        kohya drops them."""
        def tags(part: str) -> list[str]:
            return [t.strip() for t in part.split(self.separator) if t.strip()]

        if self.keep_separator and self.keep_separator in text:
            head, _, rest = text.partition(self.keep_separator)
            middle, _, tail = rest.partition(self.keep_separator)
            return tags(head), tags(middle), tags(tail)
        flex = [t.strip() for t in text.strip().split(self.separator)]
        return flex[: self.keep_tokens], flex[self.keep_tokens :], []

    def drops(self, rng: random.Random, epoch: int = 0) -> bool:
        """Whether this draw trains on the empty caption: ``caption_dropout_rate``, or
        ``caption_dropout_every_n_epochs`` in data epoch ``epoch`` (0-based; kohya counts
        epochs from 1, so n = 3 drops every caption of epochs 2, 5, 8, … here, kohya's 3, 6,
        9, …)."""
        drawn = self.dropout > 0 and rng.random() < self.dropout
        return drawn or self.dropout_every > 0 and (epoch + 1) % self.dropout_every == 0

    def image_transform(self, transform: Any) -> Any:
        """The training ``ImageTransform`` with this subset's flip and random crop."""
        changes = {k: v for k, v in (("flip", self.flip), ("random_crop", self.random_crop))
                   if v is not None}
        return replace(transform, **changes) if changes else transform


def _wildcards(text: str, rng: random.Random) -> str:
    """kohya's wildcards (``process_caption``): each ``{a|b|c}`` becomes one of its
    choices (:data:`WILDCARD`); ``{{``/``}}`` are literal braces."""
    opened, closed = "\x00", "\x01"  # stand-ins no caption file holds
    text = text.replace("{{", opened).replace("}}", closed)
    text = WILDCARD.sub(lambda m: rng.choice(m.group(1).split("|")), text)
    return text.replace(opened, "{").replace(closed, "}")
