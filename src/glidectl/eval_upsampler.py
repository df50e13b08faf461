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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .errors import GlidectlError
from .eval_inputs import RunOptions, resolve_out
from .eval_outputs import (
    GRID_FILE,
    GRID_MAX,
    claim_folder,
    grid,
    grid_prompts,
    holds_files,
    image_stems,
    index_width,
    write_json,
    write_pair,
)
from .eval_plan import image_seed
from .eval_settings import META_FILE, EvalSettings, resolve_settings
from .evaluation import EvalReport, EventFn, _counts, _noop, _vocab_dir, sampling_events
from .out_dir import prompt_record

# flags of glidectl eval that only a base model's sampling uses
BASE_ONLY_FLAGS = ("--sampler", "--steps", "--schedule", "--guidance", "--rerank")
# flags this mode does not carry out (yet)
UNSUPPORTED_FLAGS = ("--resume", "--skip-existing", "--dry-run", "--wandb-project",
                     "--clip-model", "--clip-weights")  # no CLIP score: the reference is known
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


def refuse_flags(given: Sequence[str], prompts: Path | None, upsampler: str | None) -> None:
    """One sentence when ``--low-res DIR`` comes with what this mode cannot use: no
    upsampler, a PROMPTS file, a base model's flags, or ones it does not carry out."""
    if upsampler in (None, "none", "auto"):
        raise GlidectlError("--low-res DIR scores an upsampler on its own; name it with "
                            "--upsampler RUN_OR_FILE (not none or auto).")
    if prompts is not None:
        raise GlidectlError(f"--low-res DIR takes its captions from DIR, so the PROMPTS file "
                            f"{str(prompts)!r} is not used; drop it (or drop --low-res to "
                            "sample a base model).")
    if "--base" in given:
        raise GlidectlError("--low-res DIR upsamples DIR's images, so no base model runs; "
                            "drop --base (or drop --low-res to sample a base model).")
    base_only = [f for f in BASE_ONLY_FLAGS if f in given]
    if base_only:
        raise GlidectlError(f"{', '.join(base_only)} set{'s' * (len(base_only) == 1)} the "
                            "base model's sampling, and with --low-res DIR no base model "
                            "runs; drop it, or use --upsample-sampler, --upsample-steps, "
                            "--upsample-schedule, --upsample-guidance.")
    unsupported = [f for f in UNSUPPORTED_FLAGS if f in given]
    if unsupported:
        raise GlidectlError(f"{', '.join(unsupported)} cannot be used with --low-res DIR (an "
                            "upsampler eval runs whole, into a new --out); drop it.")


def check_loras(loras: Sequence[str]) -> None:
    """One sentence, before any model loads, for a ``--lora`` trained for a model that is no
    upsampler: with ``--low-res DIR`` only the upsampler runs."""
    from .errors import a_or_an
    from .lora import parse_lora_spec
    from .lora.files import read_adapter

    for spec in map(parse_lora_spec, loras):
        kind = read_adapter(spec.path).meta.get("model_kind")
        if kind and not str(kind).startswith("upsample"):
            raise GlidectlError(
                f"LoRA {spec.path!r} was trained for {a_or_an(repr(kind))} model, and with "
                "--low-res DIR only the upsampler runs; drop this --lora (a base model's "
                "adapter is evaluated with glidectl eval PROMPTS.txt --lora PATH).")


def upsampler_settings(flags: dict[str, Any], options: RunOptions,
                       precision: str | None = None) -> tuple[EvalSettings, list[str]]:
    """The run's settings (``flags`` keyed as :data:`glidectl.eval_settings.FLAG_NAMES`,
    None = not given; ``upsampler`` required): the upsample stage's as eval's defaults, grey
    when the upsampler recommends it; ``base`` is ``none``. Also notes."""
    from .devices import pick_device, pick_precision
    from .model_cost import local_weights
    from .sampling_defaults import recommended_settings

    chosen = pick_precision(precision or "auto", pick_device(options.device))
    notes = [chosen.line()] if precision in (None, "auto") else []
    up = recommended_settings(local_weights(flags["upsampler"]))
    settings, more = resolve_settings({**flags, "base": "none"}, chosen.name,
                                      upsampler_recommended=up)
    return settings, notes + more


def record(settings: EvalSettings) -> dict[str, Any]:
    """The settings as metadata.json and each PNG record them: no base stage."""
    data = settings.fingerprint()
    for key in ("base_stage", "rerank"):
        data.pop(key)
    return {**data, "base": None}


def check_folder(folder: Path) -> Any:
    """DIR's images as a data folder (:class:`glidectl.data.folder.FolderSource`); one
    sentence when it is no folder, holds no images, or holds images without a caption."""
    from .data.captions import decode_caption
    from .data.folder import FolderSource
    from .data.images import Rejected
    from .data.records import IMAGE_EXTENSIONS
    from .data.stats import RejectionCounter

    if not folder.is_dir():
        raise GlidectlError(f"--low-res {str(folder)!r} is not a folder; pass a folder of "
                            "reference images with a caption file (.txt) beside each.")
    source = FolderSource.scan(folder)
    if not source.files:
        raise GlidectlError(f"--low-res {str(folder)!r} holds no images "
                            f"({' '.join(IMAGE_EXTENSIONS)}); put the reference images there, "
                            "each with its caption in a .txt file of the same name.")
    counter, missing, not_utf8 = RejectionCounter(), [], []
    for unit in source.units():
        for raw in source.read(unit, counter):
            try:
                text = decode_caption(raw.caption)
            except Rejected:
                not_utf8.append(unit)
                continue
            if not (text or "").strip():
                missing.append(unit)
    if not_utf8:
        first = folder / str(not_utf8[0])
        raise GlidectlError(
            f"--low-res {str(folder)!r}: {len(not_utf8)} of {len(source.files)} images have a "
            f"caption file that is not UTF-8 text (first: {str(first)!r}); save each caption "
            "as UTF-8.")
    if missing:
        first = folder / str(missing[0])
        raise GlidectlError(
            f"--low-res {str(folder)!r}: {len(missing)} of {len(source.files)} images have no "
            f"caption (first: {str(first)!r}); write each one's caption into a UTF-8 .txt file "
            f"beside it ({str(first.with_suffix('.txt'))!r}), or a metadata.jsonl with "
            "file_name and text.")
    return source


def refuse_files(out: Path) -> None:
    """One sentence when ``out`` holds files: an upsampler eval writes a new folder only."""
    if out.is_dir() and holds_files(out):
        raise GlidectlError(f"--out {str(out)!r} already holds files, and an upsampler eval "
                            "neither resumes nor adds to a folder; pass a new or empty --out "
                            "(or none, for the next eval/NNNN).")


def training_resample(weights: Path | None) -> str:
    """``data.low_res_resample`` of the run whose step checkpoint holds ``weights``
    (``RUN/checkpoints/step-N/ema.safetensors``: RUN/config.toml), else the default."""
    import tomllib

    from .config import DataConfig
    from .data.transforms import RESAMPLE
    from .runs import CONFIG_FILE, is_step_dir, run_of_step_dir

    default = DataConfig().low_res_resample
    if weights is None or not is_step_dir(Path(weights).parent):
        return default
    try:
        config = run_of_step_dir(Path(weights).parent) / CONFIG_FILE
        data = tomllib.loads(config.read_text(encoding="utf-8")).get("data")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return default
    value = data.get("low_res_resample") if isinstance(data, dict) else None
    return value if value in RESAMPLE else default


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


def run_upsampler_eval(low_res_dir: str | Path, settings: EvalSettings,
                       options: RunOptions | None = None, on_event: EventFn | None = None,
                       notes: Sequence[str] = ()) -> EvalReport:
    """Upsample every image of ``low_res_dir`` (``settings.n`` times each) into a numbered
    folder with grid.png and metadata.json holding PSNR/SSIM per image, their means and
    those of bicubic upscaling (and FID/KID with ``options.fid_reference``). Events as
    :func:`glidectl.evaluation.run_eval` sends them, and total(total) when images of DIR
    are left out (fewer than start's)."""
    from . import plugins
    from .data.source_api import source_notes
    from .devices import pick_device
    from .eval_metrics import MetricResult
    from .model_cost import check_models
    from .pipeline import GlidePipeline

    options = options or RunOptions()
    emit = on_event or _noop
    t_start = time.perf_counter()
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    folder = Path(low_res_dir)
    source = check_folder(folder)
    check_models(None, settings.where("upsampler"), alone=True)
    check_loras(settings.where("loras"))
    plugins.samplers().get(settings.upsample_stage.sampler)
    if options.fid_reference:
        from .fid import check_reference

        check_reference(str(options.fid_reference), len(source.files) * settings.n)
    if options.out is not None:
        refuse_files(Path(options.out))
    out = resolve_out([], options)
    device = pick_device(options.device)
    fid = fid_notes = None
    if options.fid_reference:
        from .fid import FidStream, inception_features

        features = inception_features(options.fid_weights)
        fid = FidStream(str(options.fid_reference), features)
        fid_notes = None if features.available else f"FID/KID absent: {features.reason}."
    t0 = time.perf_counter()
    pipeline = GlidePipeline.from_specs(None, settings.where("upsampler"),
                                        loras=settings.where("loras"), device=device,
                                        precision=settings.precision, compile=options.compile,
                                        vocab_dir=_vocab_dir(options))
    load_s = time.perf_counter() - t0
    up = settings.stage_options()["upsample"]
    per_batch = pipeline.calls_per_batch("upsample", up)
    size = pipeline.upsampler.options.image_size
    vocab = pipeline.vocab_record(False)
    resample = training_resample(pipeline.records["upsample"].path)
    references = _references(folder, source, pipeline, emit, resample)
    first = next(references, None)  # DIR gives an image (else one sentence, and no folder)
    if first is None:
        raise GlidectlError(f"--low-res {str(folder)!r} gave no images; put captioned "
                            "reference images there.")
    for text in [*notes, *(f"Note: {note}" for note in source_notes(source)),
                 *filter(None, [fid_notes]),
                 *(f"Warning: {w}" for w in pipeline.vocab_dir_warnings(False))]:
        emit("note", text=text)
    grid_max = options.grid_max or GRID_MAX
    n, batch_size = settings.n, settings.batch_size
    width = index_width(len(source.files))
    shown = grid_prompts(len(source.files), n + 2, grid_max)
    warn, on_step = sampling_events(emit, set())

    with claim_folder(out, numbered=options.out is None) as out:
        refuse_files(out)  # again now that it is this process's: another eval may have written
        header = _header(folder, out, settings, pipeline, device, options, grid_max)
        header["low_res_resample"] = resample
        captions: list[str] = []
        records: list[dict[str, Any]] = []
        rows: dict[int, list[tuple[Any, str]]] = {}  # grid.png: bicubic, outputs, reference
        timings: dict[str, float] = {}
        pending: list[tuple[Reference, int]] = []
        batches = 0
        t_gen = time.perf_counter()

        def run(items: list[tuple[Reference, int]]) -> None:
            import torch

            nonlocal batches
            seeds = [image_seed(settings.seed, ref.index, j) for ref, j in items]
            images = pipeline.generate(
                [ref.caption for ref, _ in items], seeds=seeds, batch_size=len(items),
                low_res=torch.stack([ref.low_res for ref, _ in items]), on_step=on_step,
                timings=timings, warn=warn, upsample_sampler=up.sampler,
                upsample_steps=up.steps, upsample_guidance=up.guidance,
                upsample_schedule=up.schedule, upsample_grey=up.grey)
            batches += 1
            scores = _scores(images, _as_unit(torch.stack([ref.image for ref, _ in items])))
            for (ref, j), image, (p, s), seed in zip(items, images, scores, seeds, strict=True):
                stem = image_stems(captions, ref.index, n, width)[j]
                write_pair(out, stem, image, ref.caption,
                           png_text(settings, ref.caption, seed, j, vocab, ref.input_record))
                metrics = {"psnr": p, "ssim": s, **ref.scores}
                records.append({"file": f"{stem}.png", "caption_file": f"{stem}.txt",
                                "input_file": ref.input_record["low_res"], "source": ref.key,
                                "prompt_index": ref.index,
                                "prompt": prompt_record(ref.caption)["prompt"],
                                "image_index": j, "seed": seed, "metrics": metrics})
                if ref.index < shown:
                    rows[ref.index].append((image, f"{stem.split('_')[0]}"
                                            + (f" #{j + 1}" if n > 1 else "") + f": {p:.1f} dB"))
                    if j == n - 1:
                        rows[ref.index].append((_reference_pil(ref), "reference"))
            if fid is not None:
                fid.add(images)
            rate = len(records) / max(time.perf_counter() - t_gen, 1e-9)
            emit("images", count=len(items), rate=rate)

        write_json(out / META_FILE, {**header, "status": "running", "sessions": []})
        emit("start", total=len(source.files) * n, done=0, out=str(out))
        for ref in itertools.chain([first], references):
            captions.append(ref.caption)
            _bicubic(ref, size)
            ref.input_record = _write_input(out, image_stems(captions, ref.index, 1, width)[0],
                                            ref)
            if ref.index < shown:
                rows[ref.index] = [(ref.bicubic, f"{ref.index:0{width}d} bicubic "
                                                 f"{ref.scores['bicubic_psnr']:.1f} dB")]
            pending += [(ref, j) for j in range(n)]
            while len(pending) >= batch_size:
                run(pending[:batch_size])
                pending = pending[batch_size:]
        if len(captions) < len(source.files):  # images left out: the bar ends at its end
            emit("total", total=len(captions) * n)
        if pending:
            run(pending)
        gen_s = time.perf_counter() - t_gen
        from .images import save_png

        cells = [cell for i in sorted(rows) for cell in rows[i]]
        save_png(grid([c for c, _ in cells], [t for _, t in cells], n + 2), out / GRID_FILE,
                 {"glidectl": json.dumps({"version": __version__, "prompts": captions[:shown],
                                          **record(settings), **vocab}, sort_keys=True)})
        results = [MetricResult(name, [r["metrics"][name] for r in records]) for name in METRICS]
        metrics = {m.name: m.summary() for m in results}
        if fid is not None:
            try:
                result = fid.result()
            except GlidectlError as exc:
                result = {"fid_missing": str(exc)}
            metrics["fid"] = ({"absent": result["fid_missing"]} if "fid_missing" in result
                              else result)
        calls = {"upsample": per_batch * batches}
        session_timings = {"load_s": load_s, **{f"{k}_s": v for k, v in timings.items()},
                           "generate_s": gen_s, "total_s": time.perf_counter() - t_start,
                           "images_per_s": len(records) / gen_s if gen_s > 0 else None}
        header["prompts"] = [prompt_record(c)["prompt"] for c in captions]
        meta = {**header, "status": "complete",
                "counts": _counts(len(captions), len(records), len(records)),
                "metrics": metrics, "images": records, "grid": GRID_FILE,
                "grid_holds": {"first_prompts": min(shown, len(captions)),
                               "images": min(shown, len(captions)) * n,
                               "of_images": len(records)},
                "model_calls": {"per_batch": {"upsample": per_batch}, "this_session": calls},
                "timings": session_timings,
                "sessions": [{"started": started,
                              "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                              "resumed": False, "generated": len(records),
                              "model_calls": calls, "timings": session_timings}]}
        write_json(out / META_FILE, meta)
        return EvalReport(out, meta)


def _reference_pil(ref: Reference) -> Any:
    from .images import to_pil

    return to_pil(ref.image[None])[0]
