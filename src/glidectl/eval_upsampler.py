"""``glidectl eval --upsampler SPEC --low-res DIR``: an upsampler scored on its own.

DIR is read as a training data folder is (captions from ``.txt`` sidecars or
``metadata.jsonl``), and each image is prepared as upsampler training prepares it for
evaluation (:func:`glidectl.data.build_dataset` with ``train=False``): the centre crop at the
upsampler's size is the reference, its 8-bit downscale the input. Each input is upsampled
with its caption, written as eval writes its images, and scored against the reference (PSNR,
SSIM) beside plain bicubic upscaling of the same input.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .errors import GlidectlError
from .eval_inputs import RunOptions
from .eval_outputs import (
    GRID_FILE,
    GRID_MAX,
    claim_folder,
    grid,
    grid_prompts,
    image_stems,
    index_width,
    stop_status,
    write_json,
    write_pair,
)
from .eval_plan import image_seed
from .eval_settings import META_FILE, EvalSettings
from .eval_upsampler_inputs import check_inputs, refuse_files, resolve_out, training_resample
from .evaluation import EvalReport, EventFn, _counts, _noop, _vocab_dir, sampling_events
from .out_dir import prompt_record

# metadata.json's metric names, as eval's metrics are named
METRICS = ("psnr", "ssim", "bicubic_psnr", "bicubic_ssim")
INPUTS = "inputs"  # the folder of the upsampler's inputs in the eval folder
PSNR_MAX_DB = 100.0  # an output equal to its reference (PSNR ∞) is recorded as this


@dataclass
class Reference:
    """One image of DIR as training prepares it: reference, 8-bit input, caption, scores of
    bicubic upscaling of the input."""

    index: int
    key: str
    caption: str
    image: Any  # [3,H,W] in [-1, 1]
    low_res: Any  # [3,h,w] in [-1, 1], 8-bit levels
    bicubic: Any = None  # PIL
    input_record: dict[str, str] = field(default_factory=dict)  # png_text's low_res
    scores: dict[str, float] = field(default_factory=dict)


def record(settings: EvalSettings) -> dict[str, Any]:
    """The settings as metadata.json and each PNG record them: no base stage."""
    data = settings.fingerprint()
    for key in ("base_stage", "rerank"):
        data.pop(key)
    return {**data, "base": None}


def _references(folder: Path, source: Any, pipeline: Any, emit: EventFn, resample: str
                ) -> Iterator[Reference]:
    """DIR's images as upsampler training reads them for evaluation (centre crop at the
    upsampler's size, its low-res copy as training makes it with the filter ``resample``),
    numbered in the order read; afterwards a note on the images left out (unreadable,
    smaller than the upsampler's size)."""
    from .config import DataConfig
    from .data import build_dataset

    opts = pipeline.upsampler.options
    data_cfg = DataConfig(source=str(folder), resolution=opts.image_size, uncond_p=0.0,
                          min_image_size=opts.image_size, low_res_resample=resample)
    dataset = build_dataset(data_cfg, tokenizer=pipeline.upsampler_tokenizer,
                            image_size=opts.image_size, text_ctx=opts.text_ctx,
                            low_res_size=opts.low_res_size, train=False, source=source,
                            source_name="--low-res")
    index = 0

    def reasons() -> str:
        rejected = dataset.stats().get("rejected", {})
        return ", ".join(f"{reason} {count}" for reason, count in rejected.items())

    try:
        for sample in dataset:
            yield Reference(index, sample["key"], sample["caption"], sample["image"],
                            sample["low_res"])
            index += 1
    except GlidectlError:
        if index:
            raise
        raise GlidectlError(
            f"--low-res {str(folder)!r}: none of its {source.num_samples} images could be used "
            f"({reasons()}); pass readable images of at least "
            f"{opts.image_size} px on their short side (the upsampler's size).") from None
    stats = dataset.stats()
    left = sum(stats.get("rejected", {}).values())
    if left:
        first = next(iter(stats.get("examples", {}).values()), [""])[0]
        emit("note", text=f"Note: {left} image{'s' * (left != 1)} of {str(folder)!r} left out "
                          f"({reasons()}; first: {first!r}).")


def _as_unit(images: Any) -> Any:
    """[N,3,H,W] in [-1, 1] → [0, 1], rounded to 8-bit levels (as the PNGs hold them)."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round() / 255.0


def _pil_unit(images: Sequence[Any]) -> Any:
    import numpy as np
    import torch

    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float64) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2) / 255.0


def _scores(images: Sequence[Any], references: Any) -> list[tuple[float, float]]:
    """(PSNR dB, SSIM) of each PIL image against its [3,H,W] reference in [0, 1]."""
    from .image_quality import psnr, ssim

    x = _pil_unit(images)
    return [(min(float(p), PSNR_MAX_DB), float(s))
            for p, s in zip(psnr(x, references), ssim(x, references), strict=True)]


def _bicubic(ref: Reference, size: int) -> None:
    """Plain bicubic upscaling of the input to the upsampler's size, and its scores."""
    from PIL import Image

    from .images import to_pil

    ref.bicubic = to_pil(ref.low_res[None])[0].resize((size, size), Image.Resampling.BICUBIC)
    (p, s), = _scores([ref.bicubic], _as_unit(ref.image[None]))
    ref.scores = {"bicubic_psnr": p, "bicubic_ssim": s}


def _header(folder: Path, out: Path, settings: EvalSettings, pipeline: Any, device: str,
            options: RunOptions, grid_max: int) -> dict[str, Any]:
    from .plugins import plugins_used

    u = settings.upsample_stage
    return {"glidectl_version": __version__, "mode": "upsampler", "out": str(out),
            "low_res_dir": str(folder.resolve()), "prompts": [], "settings": record(settings),
            "models": pipeline.models_info(), "device": device, "compile": options.compile,
            **({"paths": {"upsampler": settings.where("upsampler")}}
               if settings.where("upsampler") != settings.upsampler else {}),
            "plugins": plugins_used([u.sampler], [u.schedule]), **pipeline.vocab_record(False),
            "grid_max": grid_max}


def png_text(settings: EvalSettings, caption: str, seed: int, j: int,
             vocab: dict[str, Any], low_res: dict[str, str]) -> dict[str, str]:
    """The PNG text chunks of one upsampled image, as eval writes them, with its input
    (``low_res``: the file relative to the eval folder and its sha256), so that
    ``glidectl sample --from-png`` makes it again."""
    return {**prompt_record(caption), "seed": str(seed), "candidate": str(j),
            "glidectl": json.dumps({"version": __version__, **record(settings), **vocab},
                                   sort_keys=True), **low_res}


def _write_input(out: Path, stem: str, ref: Reference) -> dict[str, str]:
    """``inputs/<stem>.png``: the upsampler's 8-bit input; its PNG text fields."""
    from .file_hashes import file_sha256
    from .images import save_png, to_pil

    (out / INPUTS).mkdir(exist_ok=True)
    name = f"{INPUTS}/{stem}.png"
    save_png(to_pil(ref.low_res[None])[0], out / name, {})
    return {"low_res": name, "low_res_sha256": file_sha256(out / name)}


def _fid_stream(options: RunOptions, out: Path) -> tuple[Any, str | None]:
    """A :class:`glidectl.fid.FidStream` for ``--fid`` (else None; ``out``'s images are no
    references), and a note when its Inception features are absent."""
    if not options.fid_reference:
        return None, None
    from .fid import FidStream, inception_features

    features = inception_features(options.fid_weights)
    fid = FidStream(str(options.fid_reference), features, out=out)
    return fid, None if features.available else f"FID/KID absent: {features.reason}."


@dataclass
class _Work:
    """An upsampler eval's images as they are made in ``out``: each reference's bicubic
    upscaling, batches of ``settings.batch_size`` upsampled, written (a reference's input
    just before its first image) and scored, and what grid.png (rows: bicubic, the outputs,
    the reference) and metadata.json hold."""

    out: Path
    settings: EvalSettings
    up: Any  # the upsample stage's options (settings.stage_options()'s)
    pipeline: Any
    emit: EventFn
    fid: Any  # FidStream, or None
    width: int  # digits of the index in file names
    shown: int  # references grid.png shows, from the first
    captions: list[str] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    rows: dict[int, list[tuple[Any, str]]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    pending: list[tuple[Reference, int]] = field(default_factory=list)
    batches: int = 0
    t_gen: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        self.size = self.pipeline.upsampler.options.image_size
        self.vocab = self.pipeline.vocab_record(False)
        self.warn, self.on_step = sampling_events(self.emit, set())

    def add(self, ref: Reference) -> None:
        """Score ``ref``'s bicubic upscaling, upsample the batches it fills."""
        self.captions.append(ref.caption)
        _bicubic(ref, self.size)
        if ref.index < self.shown:
            self.rows[ref.index] = [(ref.bicubic, f"{ref.index:0{self.width}d} bicubic "
                                                  f"{ref.scores['bicubic_psnr']:.1f} dB")]
        self.pending += [(ref, j) for j in range(self.settings.n)]
        batch_size = self.settings.batch_size
        while len(self.pending) >= batch_size:
            self._upsample(self.pending[:batch_size])
            self.pending = self.pending[batch_size:]

    def flush(self) -> None:
        """Upsample what is left (a last, smaller batch)."""
        if self.pending:
            self._upsample(self.pending)
            self.pending = []

    def _upsample(self, items: list[tuple[Reference, int]]) -> None:
        import torch

        up = self.up
        seeds = [image_seed(self.settings.seed, ref.index, j) for ref, j in items]
        images = self.pipeline.generate(
            [ref.caption for ref, _ in items], seeds=seeds, batch_size=len(items),
            low_res=torch.stack([ref.low_res for ref, _ in items]), on_step=self.on_step,
            timings=self.timings, warn=self.warn, upsample_sampler=up.sampler,
            upsample_steps=up.steps, upsample_guidance=up.guidance,
            upsample_schedule=up.schedule, upsample_grey=up.grey)
        self.batches += 1
        scores = _scores(images, _as_unit(torch.stack([ref.image for ref, _ in items])))
        for (ref, j), image, score, seed in zip(items, images, scores, seeds, strict=True):
            self._write(ref, j, image, score, seed)
        if self.fid is not None:
            self.fid.add(images)
        rate = len(self.records) / max(time.perf_counter() - self.t_gen, 1e-9)
        self.emit("images", count=len(items), rate=rate)

    def _write(self, ref: Reference, j: int, image: Any, score: tuple[float, float],
               seed: int) -> None:
        """Upsampled image j of ``ref``: its files, its record, its grid.png cell."""
        n, (p, s) = self.settings.n, score
        if not ref.input_record:  # written with its first image: no input without images
            stem = image_stems(self.captions, ref.index, 1, self.width)[0]
            ref.input_record = _write_input(self.out, stem, ref)
        stem = image_stems(self.captions, ref.index, n, self.width)[j]
        write_pair(self.out, stem, image, ref.caption,
                   png_text(self.settings, ref.caption, seed, j, self.vocab, ref.input_record))
        self.records.append({"file": f"{stem}.png", "caption_file": f"{stem}.txt",
                             "input_file": ref.input_record["low_res"], "source": ref.key,
                             "prompt_index": ref.index,
                             "prompt": prompt_record(ref.caption)["prompt"],
                             "image_index": j, "seed": seed,
                             "metrics": {"psnr": p, "ssim": s, **ref.scores}})
        if ref.index < self.shown:
            self.rows[ref.index].append((image, f"{stem.split('_')[0]}"
                                         + (f" #{j + 1}" if n > 1 else "") + f": {p:.1f} dB"))
            if j == n - 1:
                self.rows[ref.index].append((_reference_pil(ref), "reference"))

    def drop_unused_inputs(self) -> None:
        """Remove the inputs no finished image names (a run stopped while writing one):
        ``inputs/`` holds only this run's files (the folder was empty when claimed)."""
        used = {r["input_file"] for r in self.records}
        folder = self.out / INPUTS
        for path in folder.glob("*.png") if folder.is_dir() else ():
            if f"{INPUTS}/{path.name}" not in used:
                path.unlink(missing_ok=True)
        with suppress(OSError):
            folder.rmdir()  # only when empty

    def write_grid(self) -> None:
        from .images import save_png

        cells = [cell for i in sorted(self.rows) for cell in self.rows[i]]
        save_png(grid([c for c, _ in cells], [t for _, t in cells], self.settings.n + 2),
                 self.out / GRID_FILE,
                 {"glidectl": json.dumps({"version": __version__,
                                          "prompts": self.captions[:self.shown],
                                          **record(self.settings), **self.vocab},
                                         sort_keys=True)})

    def metrics(self) -> dict[str, Any]:
        """metadata.json's metrics: each of :data:`METRICS`' mean, and FID/KID with --fid."""
        from .eval_metrics import MetricResult

        results = [MetricResult(name, [r["metrics"][name] for r in self.records])
                   for name in METRICS]
        metrics = {m.name: m.summary() for m in results}
        if self.fid is not None:
            try:
                result = self.fid.result()
            except GlidectlError as exc:
                result = {"fid_missing": str(exc)}
            metrics["fid"] = ({"absent": result["fid_missing"]} if "fid_missing" in result
                              else result)
        return metrics


def _session(work: _Work, per_batch: int, load_s: float, gen_s: float, t_start: float,
             started: str) -> dict[str, Any]:
    """This session's record for metadata.json: images made, model calls, times."""
    calls = {"upsample": per_batch * work.batches}
    made = len(work.records)
    timings = {"load_s": load_s, **{f"{k}_s": v for k, v in work.timings.items()},
               "generate_s": gen_s, "total_s": time.perf_counter() - t_start,
               "images_per_s": made / gen_s if gen_s > 0 else None}
    return {"started": started, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "resumed": False, "generated": made, "model_calls": calls, "timings": timings}


def _metadata(header: dict[str, Any], work: _Work, per_batch: int,
              session: dict[str, Any]) -> dict[str, Any]:
    """metadata.json of a finished run: the header, counts, metrics, records, calls, times."""
    records, captions, shown, n = work.records, work.captions, work.shown, work.settings.n
    header["prompts"] = [prompt_record(c)["prompt"] for c in captions]
    return {**header, "status": "complete",
            "counts": _counts(len(captions), len(records), len(records)),
            "metrics": work.metrics(), "images": records, "grid": GRID_FILE,
            "grid_holds": {"first_prompts": min(shown, len(captions)),
                           "images": min(shown, len(captions)) * n,
                           "of_images": len(records)},
            "model_calls": {"per_batch": {"upsample": per_batch},
                            "this_session": session["model_calls"]},
            "timings": session["timings"], "sessions": [session]}


def _stopped_metadata(header: dict[str, Any], work: _Work, per_batch: int,
                      session: dict[str, Any], exc: BaseException) -> dict[str, Any]:
    """metadata.json of a run stopped by ``exc``: ``"status": "interrupted"`` (Ctrl-C) or
    ``"failed"`` (with the ``error``), and the images finished, each whole (``"running"``
    stays only where the writer was killed: :func:`glidectl.eval_outputs.killed_run`)."""
    records = work.records
    done = records[-1]["prompt_index"] + 1 if records else 0  # references with images
    header["prompts"] = [prompt_record(c)["prompt"] for c in work.captions[:done]]
    return {**header, **stop_status(exc),
            "counts": _counts(done, len(records), len(records)), "images": records,
            "model_calls": {"per_batch": {"upsample": per_batch},
                            "this_session": session["model_calls"]},
            "timings": session["timings"], "sessions": [session]}


def run_upsampler_eval(low_res_dir: str | Path, settings: EvalSettings,
                       options: RunOptions | None = None, on_event: EventFn | None = None,
                       notes: Sequence[str] = ()) -> EvalReport:
    """Upsample every image of ``low_res_dir`` (``settings.n`` times each) into a numbered
    folder with grid.png and metadata.json holding PSNR/SSIM per image, their means and
    those of bicubic upscaling (and FID/KID with ``options.fid_reference``). Events as
    :func:`glidectl.evaluation.run_eval` sends them, and total(total) when images of DIR
    are left out (fewer than start's)."""
    from .data.source_api import source_notes
    from .devices import pick_device
    from .pipeline import GlidePipeline

    options = options or RunOptions()
    emit = on_event or _noop
    t_start = time.perf_counter()
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    folder = Path(low_res_dir)
    out = resolve_out(options)
    source, lora_resample = check_inputs(folder, settings, options)
    device = pick_device(options.device)
    fid, fid_note = _fid_stream(options, out)
    t0 = time.perf_counter()
    pipeline = GlidePipeline.from_specs(None, settings.where("upsampler"),
                                        loras=settings.where("loras"), device=device,
                                        precision=settings.precision, compile=options.compile,
                                        vocab_dir=_vocab_dir(options))
    load_s = time.perf_counter() - t0
    up = settings.stage_options()["upsample"]
    per_batch = pipeline.calls_per_batch("upsample", up)
    # an adapter's inputs were made with its own run's filter: it wins over the upsampler's
    resample = lora_resample or training_resample(pipeline.records["upsample"].path)
    references = _references(folder, source, pipeline, emit, resample)
    first = next(references, None)  # DIR gives an image (else one sentence, and no folder)
    if first is None:
        raise GlidectlError(f"--low-res {str(folder)!r} gave no images; put captioned "
                            "reference images there.")
    for text in [*notes, *(f"Note: {note}" for note in source_notes(source)),
                 *filter(None, [fid_note]),
                 *(f"Warning: {w}" for w in pipeline.vocab_dir_warnings(False))]:
        emit("note", text=text)
    grid_max = options.grid_max or GRID_MAX
    n = settings.n

    with claim_folder(out, numbered=options.out is None, resumes=False) as out:
        refuse_files(out, held=True)  # again, now it is ours: another eval may have written
        header = _header(folder, out, settings, pipeline, device, options, grid_max)
        header["low_res_resample"] = resample
        work = _Work(out, settings, up, pipeline, emit, fid, index_width(len(source.files)),
                     grid_prompts(len(source.files), n + 2, grid_max))
        try:
            write_json(out / META_FILE, {**header, "status": "running", "sessions": []})
            emit("start", total=len(source.files) * n, done=0, out=str(out))
            for ref in itertools.chain([first], references):
                work.add(ref)
            if len(work.captions) < len(source.files):  # images left out: the bar ends there
                emit("total", total=len(work.captions) * n)
            work.flush()
            gen_s = time.perf_counter() - work.t_gen
            work.write_grid()
            session = _session(work, per_batch, load_s, gen_s, t_start, started)
            meta = _metadata(header, work, per_batch, session)
            write_json(out / META_FILE, meta)
        except BaseException as exc:  # Ctrl-C or a failure: say so, with the images finished
            session = _session(work, per_batch, load_s, time.perf_counter() - work.t_gen,
                               t_start, started)
            with suppress(Exception):
                work.drop_unused_inputs()
            with suppress(Exception):  # a disk that took no image may take no record either
                write_json(out / META_FILE,
                           _stopped_metadata(header, work, per_batch, session, exc))
            raise
        return EvalReport(out, meta)


def _reference_pil(ref: Reference) -> Any:
    from .images import to_pil

    return to_pil(ref.image[None])[0]
