"""``glidectl dataset inspect``: what a source holds, what gets rejected and why, how fast.

Reads the first ``limit`` samples in order with the evaluation transforms (centre crop, no
caption dropout), so the figures describe the data rather than one random draw.
"""

from __future__ import annotations

import math
import random
import statistics
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from ..config import DataConfig
from .batching import batch_notes, spans_epochs, workers_for
from .dataset import SamplePipeline, build_dataset
from .images import Rejected, read_bytes
from .records import RawSample
from .source_api import epoch_without, reads_per_epoch, samples_per_epoch, source_notes
from .stats import RejectionCounter, no_valid_data_error
from .transforms import to_tensor

MAX_SPLIT_LINES = 3  # samples split across shards named one a line; then how many more
SIZE_BUCKETS = (0, 64, 128, 256, 512, 1024, 2048)
ASPECT_BUCKETS = ((0.0, 0.5), (0.5, 0.8), (0.8, 0.95), (0.95, 1.05), (1.05, 1.25), (1.25, 2.0),
                  (2.0, math.inf))


@dataclass
class InspectReport:
    """Everything ``dataset inspect`` prints (``--json`` prints ``asdict`` of it).

    ``valid`` + ``rejected`` counts = ``scanned`` samples (each image once, however often
    training repeats it); ``damaged`` counts, by reason, the shards, files or row groups that
    could not be read (their samples are not scanned).
    """

    source: str
    kind: str
    preset: str
    tokenizer: str
    text_ctx: int
    limit: int
    scanned: int = 0
    complete: bool = False
    total_samples: int | None = None
    samples_per_epoch: int | None = None  # when training reads some samples more than once
    # kohya's N_words folders, or a kohya dataset config's subsets: repeats, images, …
    kohya_folders: list[dict[str, Any]] = field(default_factory=list)
    # a OneTrainer concepts file's concepts: type, balancing, images, per epoch, loss weight
    concepts: list[dict[str, Any]] = field(default_factory=list)
    valid: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    damaged: dict[str, int] = field(default_factory=dict)
    rejected_examples: dict[str, list[str]] = field(default_factory=dict)
    converted: dict[str, int] = field(default_factory=dict)
    caption_tokens: dict[str, float] = field(default_factory=dict)
    truncated_share: float = 0.0
    empty_share: float = 0.0
    # valid images grey as training judges them (all grey: a run on them samples grey)
    grey: int = 0
    grey_share: float = 0.0
    size_histogram: dict[str, int] = field(default_factory=dict)
    aspect_histogram: dict[str, int] = field(default_factory=dict)
    preview: str | None = None
    benchmark: dict[str, float] | None = None
    notes: list[str] = field(default_factory=list)  # what the source left out, in sentences
    # how training cuts an epoch into train.batch_size batches with data.workers workers
    batch_size: int | None = None
    batching: list[str] = field(default_factory=list)
    # the sentence training would refuse the source with (no valid sample), else None
    refusal: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _size_label(short_side: int) -> str:
    for lo, hi in zip(SIZE_BUCKETS, SIZE_BUCKETS[1:], strict=False):
        if short_side < hi:
            return f"{lo}-{hi - 1}"
    return f">={SIZE_BUCKETS[-1]}"


def _aspect_label(aspect: float) -> str:
    for lo, hi in ASPECT_BUCKETS:
        if aspect < hi:
            return f">={lo:g}" if hi == math.inf else f"{lo:g}-{hi:g}"
    return f">={ASPECT_BUCKETS[-1][0]:g}"


def _ordered(counts: Counter[str], labels: list[str]) -> dict[str, int]:
    return {label: counts[label] for label in labels if counts[label]}


def inspect_source(
    data_cfg: DataConfig, *, tokenizer: Any, limit: int = 1000, text_ctx: int = 128,
    image_size: int = 64, preview: str | Path | None = None, preview_count: int = 16,
    benchmark: bool = False, benchmark_samples: int = 200, batch_size: int | None = None,
    holdout: int = 0, on_scan: Callable[[int, int | None], None] | None = None,
) -> InspectReport:
    """Scan up to ``limit`` samples of ``data_cfg.source`` and describe them; ``batch_size``
    (``train.batch_size``): also say how training batches an epoch with ``data.workers``,
    less the first ``holdout`` valid samples (``validation.holdout``), as training does.
    ``on_scan(scanned, expected)`` is called after each sample scanned (``expected``: how
    many the scan reads, None where the source's count is not known)."""
    dataset = build_dataset(
        data_cfg, tokenizer=tokenizer, image_size=image_size, text_ctx=text_ctx, train=False
    )
    source, pipeline = dataset.source, dataset.pipeline
    report = InspectReport(
        source=source.describe(), kind=source.kind, preset=pipeline.preset.name,
        tokenizer=str(getattr(tokenizer, "name", tokenizer)), text_ctx=text_ctx,
        limit=limit, total_samples=source.num_samples, notes=source_notes(source),
    )
    per_epoch = samples_per_epoch(source)
    if callable(table := getattr(source, "kohya_table", None)):
        report.kohya_folders = table()
    if callable(table := getattr(source, "concept_table", None)):
        report.concepts = table()
    counter = RejectionCounter()  # samples: valid + rejected = scanned
    damaged = RejectionCounter()  # whole shards, files or row groups that could not be read
    rng = random.Random(0)
    lengths: list[int] = []
    blank = 0
    grey = 0
    trained = 0  # reads an epoch of the valid samples training batches (less the held out)
    sizes: Counter[str] = Counter()
    aspects: Counter[str] = Counter()
    tiles: list[tuple[Image.Image, str]] = []
    kept: list[RawSample] = []
    held: list[str] = []  # the keys validation.holdout leaves out of training
    ends: dict[str, list[tuple[str, str | None]]] = {}  # a unit's first and last: key, reason
    stream = ((unit, raw) for unit in source.units() for raw in source.read(unit, damaged))
    report.complete = True
    expected = None if source.num_samples is None else min(limit, source.num_samples)
    for unit, raw in stream:
        if report.scanned >= limit:
            report.complete = False
            break
        report.scanned += 1
        if on_scan is not None:
            on_scan(report.scanned, expected)
        reason, short_side = None, None
        try:
            prepared = pipeline.prepare(raw, rng)
        except Rejected as rejected:
            reason, short_side = rejected.reason, rejected.short_side
        except Exception as exc:
            reason = f"error:{type(exc).__name__}"
        ends.setdefault(unit, [(raw.key, reason)] * 2)[1] = (raw.key, reason)
        if reason is not None:
            counter.reject(reason, raw.key, short_side=short_side)
            continue
        counter.accept()
        if len(held) < holdout and not prepared.prior_prediction:
            held.append(raw.key)
        else:
            trained += reads_per_epoch(source, raw.key)
        blank += not prepared.caption  # kohya's uncaptioned images train on ""
        if prepared.converted:
            counter.convert(prepared.converted)
        lengths.append(pipeline.text.count(prepared.caption))
        w, h = prepared.original_size
        sizes[_size_label(min(w, h))] += 1
        aspects[_aspect_label(w / h)] += 1
        tile = pipeline.transform(prepared.image, rng)
        grey += is_grey(tile)
        if preview and len(tiles) < preview_count:
            tiles.append((tile, prepared.caption))
        if benchmark and len(kept) < benchmark_samples:
            kept.append(_in_memory(raw))
    if report.complete and source.num_samples is None:
        report.total_samples = report.scanned
    if held:
        if per_epoch:
            per_epoch = epoch_without(per_epoch, held, lambda k: reads_per_epoch(source, k))
        report.notes.append(
            f"validation.holdout = {holdout}: training leaves out the first {len(held)} valid "
            f"samples ({_keys(held)}) to validate on; the samples per epoch and the batching "
            "are counted without them.")
    if per_epoch != source.num_samples:
        report.samples_per_epoch = per_epoch
    if batch_size and not data_cfg.resampled:  # as training decides, from the epoch's length
        report.batch_size = batch_size
        report.batching = batch_notes(per_epoch, batch_size, data_cfg.workers)
    if callable(splits := getattr(source, "split_samples", None)):
        report.notes += _recount_splits(counter, ends, splits())
    report.valid = counter.accepted
    report.rejected = dict(counter.top_reasons(len(counter.rejected)))
    report.damaged = dict(damaged.top_reasons(len(damaged.rejected)))
    report.rejected_examples = {k: v for k, v in (counter.examples | damaged.examples).items()
                                if v}
    report.converted = dict(counter.converted)
    if callable(hint := getattr(source, "hint", None)):  # what the rejected carry instead
        report.notes += [h for h in map(hint, report.rejected) if h]
    if counter.accepted == 0 and (report.complete or report.scanned >= data_cfg.max_rejects):
        # as training decides: an epoch without one sample, or max_rejects in a row
        report.refusal = str(no_valid_data_error(report.source, counter, hint, inspected=True))
    elif batch_size and report.complete and not data_cfg.resampled and (
            short := short_of_a_batch(trained, counter, per_epoch, batch_size,
                                      data_cfg.workers)):
        report.batching.append(short)
    if lengths:
        ordered = sorted(lengths)
        report.caption_tokens = {
            "min": ordered[0], "mean": round(statistics.fmean(ordered), 2),
            "median": statistics.median(ordered),
            "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
            "max": ordered[-1],
        }
        report.truncated_share = sum(n > text_ctx for n in lengths) / len(lengths)
    if counter.accepted:
        report.grey, report.grey_share = grey, grey / counter.accepted
    if report.scanned:
        report.empty_share = (counter.rejected.get("empty_caption", 0) + blank) / report.scanned
    report.size_histogram = _ordered(sizes, [_size_label(s) for s in SIZE_BUCKETS])
    report.aspect_histogram = _ordered(aspects, [_aspect_label(lo) for lo, _ in ASPECT_BUCKETS])
    if preview:
        report.preview = str(write_preview_grid(tiles, preview))
    if benchmark:
        report.benchmark = benchmark_pipeline(pipeline, kept)
    return report


def short_of_a_batch(trained: int, counter: RejectionCounter, per_epoch: int | None,
                     batch_size: int, workers: int) -> str | None:
    """Why training would stop before its first step: an epoch's ``trained`` valid reads
    make not one batch of ``batch_size``, and its batches do not run on into the next epoch
    (training knows no epoch length, or reads with workers, or the rejected fill its
    count); else None."""
    used = workers_for(workers, per_epoch, batch_size)
    if trained >= batch_size or used <= 1 and spans_epochs(per_epoch, batch_size):
        return None
    valid = f"{trained} valid sample{'s' * (trained != 1)}"
    skipped = f" ({counter.summary()})" if counter.total_rejected else ""
    return (f"{valid} an epoch{skipped} make not one batch of {batch_size}, and here batches "
            "do not run on into the next epoch, so training would stop before its first "
            "step; lower train.batch_size, or fix or add samples.")


def is_grey(image: Image.Image) -> bool:
    """Whether ``image`` (8-bit RGB, as transformed for the model) is grey by the test
    training applies to its batches to decide that a run samples grey."""
    from ..greyscale import all_grey

    return all_grey(to_tensor(image)[None])


def _keys(keys: list[str], shown: int = 3) -> str:
    """A few keys, then how many more."""
    more = len(keys) - shown
    return ", ".join(keys[:shown]) + (f" and {more} more" if more > 0 else "")


def _recount_splits(counter: RejectionCounter, ends: dict[str, list[tuple[str, str | None]]],
                    splits: list[Any]) -> list[str]:
    """Count the rejected parts of the samples split across two scanned shards (each part
    lacks the other's files: a missing caption and a missing image) as split samples, and
    a line naming each (a few, then how many more)."""
    from .shards import SPLIT_REASON

    seen = [s for s in splits if s.first in ends and s.second in ends]
    for split in seen:
        for key, reason in (ends[split.first][1], ends[split.second][0]):
            if reason in ("missing_caption", "missing_image"):  # not, say, a broken image
                counter.recount(key, reason, SPLIT_REASON)
    lines = [split.note() for split in seen[:MAX_SPLIT_LINES]]
    if len(seen) > MAX_SPLIT_LINES:
        more = len(seen) - MAX_SPLIT_LINES
        lines.append(f"{more} more sample{'s are' if more != 1 else ' is'} split across "
                     f"shards the same way ({SPLIT_REASON} in the rejections).")
    return lines


def _in_memory(raw: RawSample) -> RawSample:
    if isinstance(raw.image, (str, Path)):
        try:
            image: Any = read_bytes(raw.image)  # a regular file only, as decoding reads it
        except Rejected:
            image = raw.image
        return RawSample(raw.key, image, raw.caption, raw.meta, raw.meta_bytes,
                         rules=raw.rules, empty_ok=raw.empty_ok)
    return raw


def benchmark_pipeline(
    pipeline: SamplePipeline, samples: list[RawSample], min_seconds: float = 1.0
) -> dict[str, float]:
    """Decode + transform + tokenize throughput of one process (= one worker), images/s."""
    if not samples:
        return {"images_per_s_per_worker": 0.0, "images": 0, "seconds": 0.0}
    rng = random.Random(0)
    done, start = 0, time.perf_counter()
    while True:
        for raw in samples:
            try:
                pipeline(raw, rng)
            except Rejected:
                pass
            done += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds or done >= 20 * len(samples):
            break
    return {"images_per_s_per_worker": round(done / elapsed, 1), "images": done,
            "seconds": round(elapsed, 3)}


#: The text chunk of a ``dataset inspect --preview`` grid: the one PNG --preview replaces.
PREVIEW_MARK = "glidectl_preview"


def is_preview_grid(path: Path) -> bool:
    """Whether the PNG at ``path`` is a grid ``dataset inspect --preview`` wrote."""
    try:
        with Image.open(path) as image:
            return PREVIEW_MARK in getattr(image, "text", {})
    except (OSError, ValueError, SyntaxError):  # PIL's errors for a damaged PNG
        return False


def write_preview_grid(
    tiles: list[tuple[Image.Image, str]], path: str | Path, tile: int = 160
) -> Path:
    """A PNG grid of images with their (wrapped) captions underneath."""
    path = Path(path)
    n = max(len(tiles), 1)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    try:
        font: Any = ImageFont.load_default(size=11)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    text_h = 48
    grid = Image.new("RGB", (cols * tile, rows * (tile + text_h)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for i, (img, caption) in enumerate(tiles):
        x, y = (i % cols) * tile, (i // cols) * (tile + text_h)
        grid.paste(img.resize((tile, tile), Image.Resampling.BICUBIC), (x, y))
        lines = textwrap.wrap(caption, width=max(tile // 7, 8))[:3]
        for j, line in enumerate(lines):
            draw.text((x + 3, y + tile + 2 + 14 * j), line, fill=(0, 0, 0), font=font)
    if not tiles:
        draw.text((4, 4), "no valid samples", fill=(200, 0, 0), font=font)
    from ..atomic import remove_stale_temps
    from ..images import save_png

    remove_stale_temps(path.parent, path.name)  # what a killed inspect left
    # atomic: a full disk or a kill leaves no half PNG; the mark lets a later inspect replace it
    return save_png(grid, path, {PREVIEW_MARK: "dataset inspect"})
