"""The training stream: source → preset filter → decode → transforms → tokens, per worker.

Each DataLoader worker reads its part of the source through webdataset's stages
(:mod:`glidectl.data.stages`): units shuffled per epoch with the seed and split by rank and
worker, so no sample is seen twice in an epoch, then a seeded shuffle buffer.
"""

from __future__ import annotations

import copy
import json
import random
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torch.utils.data import IterableDataset

from ..config import DataConfig, override, pair_problem
from ..errors import GlidectlError
from .captions import decode_caption, pick_line
from .color_aug import color_aug
from .images import Rejected, open_image
from .preset_api import DatasetPreset, Reject, clean_caption
from .records import IMAGE_EXTENSIONS, RawSample
from .sample_rules import SampleRules
from .source_api import reads_per_epoch, samples_per_epoch, source_notes
from .sources import Source, open_source
from .stages import Slot, raw_stream
from .stats import RejectionCounter, SharedStats, no_valid_data_error
from .tables import json_caption
from .token_warmup import WarmupCaption
from .transforms import ImageTransform, LowResTransform, TextEncoder, to_tensor

PUBLISH_EVERY_S = 0.2  # how stale a worker's counts may be while it is producing samples


@dataclass
class Prepared:
    """A sample that passed every check: its caption and decoded RGB image."""

    key: str
    caption: str
    image: Image.Image
    original_size: tuple[int, int]
    converted: str | None
    meta: dict[str, Any]
    rules: SampleRules | None = None
    is_reg: bool = False
    loss_weight: float = 1.0
    prior_prediction: bool = False
    warmup: WarmupCaption | None = None  # how kohya's token warm-up cuts the caption


class SamplePipeline:
    """Checks and converts one raw sample; every failure raises :class:`Rejected`.
    ``train``: a sample's own rules (kohya's subsets) shuffle and drop its tags, drop its
    caption and set its flip and crop; else its caption is read as written."""

    def __init__(
        self, preset: DatasetPreset, options: DataConfig, transform: ImageTransform,
        text: TextEncoder, low_res: LowResTransform | None = None, train: bool = True,
    ) -> None:
        self.preset = preset
        self.options = options
        self.transform = transform
        self.text = text
        self.low_res = low_res
        self.train = train
        self.min_image_size = int(options.min_image_size)
        self.max_pixels = int(options.max_pixels)

    def prepare(self, raw: RawSample, rng: random.Random) -> Prepared:
        if raw.reject:
            raise Rejected(raw.reject)
        if raw.image is None:
            raise Rejected("missing_image")
        meta = raw.meta
        if raw.meta_bytes is not None:
            try:
                meta = json.loads(raw.meta_bytes.decode("utf-8-sig"))
            except (UnicodeDecodeError, ValueError):
                raise Rejected("bad_metadata") from None
            if not isinstance(meta, dict):
                raise Rejected("bad_metadata")
        rules, warmup = raw.rules, None
        if rules is None:
            caption = pick_line(decode_caption(raw.caption), rng)
        else:
            caption = rules.line(decode_caption(raw.caption), rng)
            if caption:
                caption, warmup = rules.draw(caption, rng, self.train)
        column = self.options.caption_column
        if caption is None and column and raw.meta_bytes is not None \
                and (named := json_caption(meta, column)):
            caption = pick_line(named, rng)  # the field data.caption_column names: the caption
        chosen = self.preset.select(meta, caption, self.options)
        if (chosen == Reject("missing_caption") and caption is None and raw.meta_bytes is not None
                and (listed := json_caption(meta, self.options.caption_column))):
            caption = pick_line(listed, rng)  # a shard's JSON list of captions, or its field
            chosen = self.preset.select(meta, caption, self.options)
        if isinstance(chosen, Reject) and raw.empty_ok and not caption:
            chosen = ""  # kohya trains an image without caption or class words on ""
        if isinstance(chosen, Reject):
            raise Rejected(chosen.reason)
        if not isinstance(chosen, str):
            raise Rejected("preset_error")
        image, original, converted = open_image(
            raw.image, min_size=self.min_image_size, max_pixels=self.max_pixels,
            draft_size=self.transform.draft_size(),
        )
        return Prepared(raw.key, chosen, image, original, converted, meta, rules, raw.is_reg,
                        raw.loss_weight, raw.prior_prediction,
                        warmup if chosen in (caption, clean_caption(caption)) else None)

    def finish(self, prepared: Prepared, rng: random.Random, epoch: int = 0) -> dict[str, Any]:
        """The training dict of ``prepared``; ``epoch``: the data epoch (0-based), for
        kohya's ``caption_dropout_every_n_epochs``. In training, ``warmup`` says (as JSON)
        how kohya's token warm-up cuts the caption ("": it does not), for ``warm_up``."""
        rules = prepared.rules if self.train else None
        transform = self.transform if rules is None else rules.image_transform(self.transform)
        high = transform(prepared.image, rng)
        if rules is not None and rules.color_aug:
            high = color_aug(high, rng)  # on the crop, before the low-res copy, as kohya
        out: dict[str, Any] = {"image": to_tensor(high)}
        if self.low_res is not None:
            out["low_res"] = to_tensor(self.low_res(high, rng))
        # kohya's caption_dropout_rate (and every n-th epoch), then data.uncond_p: two draws
        dropped = rules is not None and rules.drops(rng, epoch)
        tokens, mask, caption = self.text("" if dropped else prepared.caption, rng)
        out.update(tokens=tokens, mask=mask, caption=caption, key=prepared.key,
                   is_reg=prepared.is_reg, loss_weight=prepared.loss_weight,
                   prior_prediction=prepared.prior_prediction)
        if self.train:  # every training sample has the key, so batches collate
            plan = prepared.warmup if caption == prepared.caption else None
            out["warmup"] = plan.to_json() if plan is not None else ""
        return out

    def __call__(self, raw: RawSample, rng: random.Random,
                 epoch: int = 0) -> tuple[Prepared, dict[str, Any]]:
        try:
            prepared = self.prepare(raw, rng)
            return prepared, self.finish(prepared, rng, epoch)
        except Rejected:
            raise
        except Exception as exc:  # a decoder or plugin bug must not end the run
            raise Rejected(f"error:{type(exc).__name__}") from exc


class StreamDataset(IterableDataset):
    """Training samples as dicts (``image``, ``tokens``, ``mask``, ``caption``, ``key``,
    ``is_reg`` (a regularisation image), ``loss_weight`` (the sample's own),
    ``prior_prediction`` (trained towards the base model's prediction), ``low_res`` for
    upsamplers, and ``_cursor``: raw samples this worker has taken so far in the epoch);
    ``stats()`` counts rejections over all workers.

    ``set_resume([c0, c1, ...])`` makes worker ``i`` skip its first ``ci`` raw samples of the
    epoch without decoding them (see :mod:`glidectl.data.stages`). Every sample's
    augmentation is seeded from (seed, epoch, slot, position), so a resumed epoch continues
    exactly as the uninterrupted one would.
    """

    def __init__(
        self, source: Source, pipeline: SamplePipeline, *, train: bool = True, rank: int = 0,
        world_size: int = 1, seed: int = 0, shuffle_buffer: int = 0, resampled: bool = False,
        max_rejects: int = 1000,
    ) -> None:
        super().__init__()
        self.source = source
        self.pipeline = pipeline
        self.train = train
        self.rank, self.world_size = int(rank), max(int(world_size), 1)
        self.seed = int(seed)
        self.shuffle_buffer = int(shuffle_buffer)
        self.resampled = bool(resampled)
        self.max_rejects = max(int(max_rejects), 1)
        self.epoch: int | None = None
        self.skip: list[int] = []
        self.exclude: frozenset[str] = frozenset()  # keys left out undecoded and uncounted
        self.shared = SharedStats()
        # this process's (or worker's) pass under way: its counter and that counter's
        # counts as the pass began (see passed_counts)
        self._pass: tuple[RejectionCounter, dict[str, Any]] | None = None

    @property
    def name(self) -> str:
        return self.source.describe()

    @property
    def num_samples(self) -> int | None:
        """Samples per epoch over all processes before filtering (None: unknown); training
        counts a sample as often as an epoch reads it (kohya's folder repeats)."""
        return samples_per_epoch(self.source) if self.train else self.source.num_samples

    def reads_per_epoch(self, key: str) -> int:
        """Times one epoch of this dataset reads the sample ``key``."""
        return reads_per_epoch(self.source, key) if self.train else 1

    def without(self, keys: Iterable[str]) -> StreamDataset:
        """This dataset (a copy sharing its source, pipeline and counts) less the samples of
        ``keys`` (validation.holdout's), left out before decoding: uncounted, every repeat."""
        other = copy.copy(self)
        other.exclude = frozenset(keys)
        return other

    def set_epoch(self, epoch: int) -> None:
        """Fix the epoch used for shuffling (else each pass over the data counts one up)."""
        self.epoch = int(epoch)

    def set_resume(self, skip: list[int]) -> None:
        """Raw samples each DataLoader worker skips, undecoded, at the start of the epoch."""
        self.skip = [int(n) for n in skip]

    def warm_up(self, batch: dict[str, Any], step: int, total_steps: int) -> None:
        """Cut ``batch``'s captions (and their tokens) as kohya's token warm-up does at
        optimizer step ``step`` (0: the first) of ``total_steps``; the workers, which run
        ahead of the optimizer, sent them whole with how to cut them (``warmup``)."""
        for row, plan in enumerate(batch.pop("warmup", None) or ()):
            text = WarmupCaption.from_json(plan).at(step, total_steps) if plan else None
            if text is not None:
                text = clean_caption(text) or ""  # spaces collapsed, as the presets give it
                batch["tokens"][row], batch["mask"][row] = self.pipeline.text.encode(text)
                batch["caption"][row] = text

    def counter(self) -> RejectionCounter:
        """Accepted, rejected and converted counts summed over the main process and workers."""
        return self.shared.total()

    def stats(self) -> dict[str, Any]:
        """``{"accepted": n, "rejected": {reason: n}, "repeated": {reason: n},
        "converted": {mode: n}, "examples": {reason: [keys]}}`` over all workers of this
        process: a rejected image counts once an epoch in ``rejected``, the further reads
        of its repeats (kohya's) in ``repeated``."""
        data = self.counter().to_dict()
        data.pop("iterations", None)
        data.pop("too_small_side", None)
        return data

    def passed_counts(self) -> dict[str, Any]:
        """``{"accepted": n, "rejected": {...}, "repeated": {...}}`` of this process's (or
        worker's) latest pass over the data, up to the sample it handed on last ({} before
        one began): unlike :meth:`stats`, none of what DataLoader workers read ahead of
        the consumer, and of a resumed pass, none that it skipped."""
        if self._pass is None:
            return {}
        counter, began = self._pass
        now = counter.to_dict()
        return {"accepted": now["accepted"] - began["accepted"],
                **{kind: {reason: n - began[kind].get(reason, 0)
                          for reason, n in now[kind].items()
                          if n != began[kind].get(reason, 0)}
                   for kind in ("rejected", "repeated")}}

    def no_valid_data(self, counter: RejectionCounter) -> Exception:
        """The one-line error for an epoch of ``counter`` that kept no sample."""
        return no_valid_data_error(self.name, counter, getattr(self.source, "hint", None),
                                   inspect=getattr(self.source, "inspectable", True),
                                   flags=inspect_flags(self.pipeline.options))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        slot_id = 0 if info is None else 1 + worker
        counter = self.shared.load(slot_id)
        counter.iterations += 1
        self._pass = counter, counter.to_dict()
        epoch = self.epoch if self.epoch is not None else counter.iterations - 1
        self.shared.publish(slot_id, counter)
        slot = Slot(self.rank, self.world_size, worker, workers)
        skip = self.skip[worker] if worker < len(self.skip) else 0
        stream = raw_stream(
            self.source, counter, seed=self.seed, epoch=epoch, slot=slot, train=self.train,
            resampled=self.resampled, shuffle_buffer=self.shuffle_buffer, skip=skip,
        )
        accepted_now, consecutive = 0, 0
        last_publish = time.monotonic()
        try:
            for position, raw in enumerate(stream, start=skip):
                if raw.key in self.exclude:  # held out to validate on (every repeat)
                    continue
                rng = random.Random(f"augment:{self.seed}:{epoch}:{slot.index}:{position}")
                try:
                    prepared, sample = self.pipeline(raw, rng, epoch)
                except Rejected as rejected:
                    counter.reject(rejected.reason, raw.key, raw.again, rejected.short_side)
                    consecutive += 1
                    if counter.accepted == 0 and consecutive >= self.max_rejects:
                        # one worker's share may begin with (or be) a bad shard: a finite
                        # pass ends and the main process says if no worker read a valid
                        # sample; an endless one stops once none has
                        if slot.total == 1 or (self.resampled and
                                               self.shared.total().accepted == 0):
                            raise self.no_valid_data(counter) from None
                        consecutive = 0
                    if time.monotonic() - last_publish > PUBLISH_EVERY_S:
                        self.shared.publish(slot_id, counter)
                        last_publish = time.monotonic()
                    continue
                if prepared.converted:
                    counter.convert(prepared.converted)
                counter.accept()
                accepted_now, consecutive = accepted_now + 1, 0
                if slot_id == 0 or accepted_now == 1 or \
                        time.monotonic() - last_publish > PUBLISH_EVERY_S:
                    # the main process: always fresh; a worker's first: the others see it
                    self.shared.publish(slot_id, counter)
                    last_publish = time.monotonic()
                sample["_cursor"] = position + 1
                yield sample
        finally:  # also when the consumer stops early or an error leaves the loop
            self.shared.publish(slot_id, counter)
        if accepted_now == 0 and slot.total == 1 and counter.accepted == 0 and not skip:
            raise self.no_valid_data(counter)


# the data keys that decide which samples are read, how they are captioned and which are
# rejected: what `dataset inspect` must be given to judge a source as a run does
INSPECT_KEYS = ("preset", "image_key", "caption_key", "metadata_key", "image_column",
                "caption_column", "split", "kohya_folders", "reg_source", "demo_size",
                "min_size", "aspect_range", "similarity_range", "nsfw_allowed", "max_punsafe",
                "max_pwatermark", "skip_words", "min_image_size", "max_pixels")


def inspect_flags(options: DataConfig) -> list[str]:
    """The ``--set`` items with which ``dataset inspect`` reads a source as ``options`` do:
    the :data:`INSPECT_KEYS` whose values differ from the defaults."""
    default = DataConfig()
    return [override(f"data.{key}", getattr(options, key)) for key in INSPECT_KEYS
            if getattr(options, key, None) != getattr(default, key)]


def _pair(value: Sequence[Any], key: str, lo: float | None = None) -> tuple[float, float]:
    """``[min, max]`` as floats (the check ``config`` runs when a file is read, again here for
    configs built in Python); ``lo``: the smallest min allowed."""
    problem = pair_problem(list(value) if isinstance(value, tuple) else value)
    if not problem and lo is not None and value[0] < lo:
        problem = f"must be [min, max] with min >= {lo:g}; got {value!r}"
    if problem:
        raise GlidectlError(f"data.{key} {problem}.")
    return float(value[0]), float(value[1])


def validate(cfg: DataConfig) -> None:
    """Check data options that the schema cannot (ranges, pairs)."""
    if not 0.0 <= cfg.uncond_p <= 1.0:
        raise GlidectlError(f"data.uncond_p must be within [0, 1], got {cfg.uncond_p}.")
    lo, hi = _pair(cfg.crop_scale, "crop_scale", 0.0)
    if lo <= 0 or hi > 1:
        raise GlidectlError(f"data.crop_scale must lie within (0, 1], got {cfg.crop_scale}.")
    _pair(cfg.aspect_range, "aspect_range", 0.0)
    _pair(cfg.similarity_range, "similarity_range")
    for key in ("max_punsafe", "max_pwatermark"):
        value = getattr(cfg, key)
        if not 0.0 <= value <= 1.0:
            raise GlidectlError(f"data.{key} must be within [0, 1] (1 = off), got {value}.")
    if cfg.degrade_jpeg < 0 or cfg.degrade_jpeg > 95:
        raise GlidectlError(f"data.degrade_jpeg must be 0 (off) or 1..95, got {cfg.degrade_jpeg}.")


def open_data(data_cfg: DataConfig, size: int, name: str = "Data source") -> Source:
    """The source ``data.source`` names, checked to exist and to hold samples (``name``:
    what a message calls it)."""
    source = open_source(data_cfg.source, data_cfg, resolution=size, name=name)
    if source.num_samples == 0:
        if source.kind == "folder":
            raise GlidectlError(
                f"Image folder {source.describe()!r} holds no images "
                f"({' '.join(IMAGE_EXTENSIONS)}); point data.source at a folder with images."
                + "".join(f" {note}" for note in source_notes(source))
            )
        raise GlidectlError(f"Data source {source.describe()!r} holds no samples; point "
                            "data.source at data with images.")
    return source


def build_dataset(
    data_cfg: DataConfig, *, tokenizer: Any, image_size: int, text_ctx: int,
    low_res_size: int | None = None, train: bool = True, rank: int = 0, world_size: int = 1,
    seed: int = 0, source_name: str = "Data source", source: Source | None = None,
) -> StreamDataset:
    """The dataset for ``data_cfg``: an IterableDataset of training dicts.

    ``tokenizer`` is a Tokenizer (or "byte"/"gpt2"); ``image_size`` is the (high-res) size
    unless ``data.resolution`` overrides it; ``low_res_size`` makes upsampler pairs.
    ``train=False`` gives centre crops, no flips, no caption dropout and a fixed order.
    ``source_name``: what a message about ``data.source`` calls it ("data.source" in a run);
    ``source``: samples to read instead of ``data.source`` (a library caller's own pairs,
    :mod:`glidectl.data.pairs`).
    """
    from .. import plugins

    validate(data_cfg)
    size = int(data_cfg.resolution or image_size)
    if low_res_size is not None and not 0 < low_res_size < size:
        raise GlidectlError(
            f"The upsampler's low-res size ({low_res_size}) must be below its image size "
            f"({size}); check data.resolution."
        )
    preset = plugins.dataset_presets().get(data_cfg.preset)
    if source is None:
        source = open_data(data_cfg, size, source_name)
    transform = ImageTransform(
        size, random_crop=train and data_cfg.random_crop,
        crop_scale=_pair(data_cfg.crop_scale, "crop_scale") if train else (1.0, 1.0),
        flip=train and data_cfg.flip,
    )
    low = None
    if low_res_size:
        low = LowResTransform(
            int(low_res_size), data_cfg.low_res_resample,
            blur=data_cfg.degrade_blur if train else 0.0,
            jpeg_quality=data_cfg.degrade_jpeg if train else 0,
            noise=data_cfg.degrade_noise if train else 0.0,
        )
    text = TextEncoder(tokenizer, text_ctx, data_cfg.uncond_p if train else 0.0)
    pipeline = SamplePipeline(preset, data_cfg, transform, text, low, train=train)
    return StreamDataset(
        source, pipeline, train=train, rank=rank, world_size=world_size, seed=seed,
        shuffle_buffer=data_cfg.shuffle_buffer, resampled=data_cfg.resampled and train,
        max_rejects=data_cfg.max_rejects,
    )
