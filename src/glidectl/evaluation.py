"""Batch evaluation: a prompts file → a numbered, reproducible folder of images and a grid.

The work (fixed batches, a seed per image) is :mod:`glidectl.eval_plan`'s; a run's options,
settings and the checks before it start are :mod:`glidectl.eval_inputs`'. Resuming (or
skipping done prompts) re-runs only the batches that still hold an unfinished prompt and
writes only that prompt's files, so an interrupted and resumed run gives the same bytes as an
uninterrupted one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .errors import GlidectlError
from .eval_inputs import (
    SAID_AS_KEYWORDS,
    RunOptions,
    check_continues,
    check_inputs,
    check_run_call,
    continues,
    held_files_error,
    pinned_models,
    resolve_out,
    settings_for,
)
from .eval_outputs import (
    GRID_FILE,
    GRID_MAX,
    RunRecord,
    claim_folder,
    clean_temp_files,
    grid,
    grid_prompts,
    holds_files,
    image_stems,
    log_wandb,
    next_eval_dir,
    read_back,
    read_metadata,
    slugify,
    write_json,
    write_pair,
)
from .eval_plan import Plan, image_seed, read_prompts
from .eval_settings import (
    FLAG_NAMES,
    META_FILE,
    EvalSettings,
    Stage,
    check_plugins_loaded,
    check_resume,
    prompts_digest,
    resolve_settings,
    schedule_digests,
)
from .out_dir import PROMPT_EXCERPT_CHARS, prompt_record
from .samplers.schedule_files import read_once

if TYPE_CHECKING:
    from .fid import FidStream

__all__ = ["FLAG_NAMES", "EvalSettings", "Plan", "RunOptions", "Stage", "check_resume",
           "image_seed", "image_stems", "next_eval_dir", "read_prompts", "resolve_settings",
           "run_eval", "settings_for", "slugify"]

METRICS_CHUNK = 64  # images read back at a time to score: FID's batches, 4 of CLIP's 16


# --------------------------------------------------------------------------- the run
EventFn = Callable[..., None]


@dataclass
class EvalReport:
    """What a run did: its folder, metadata and (for --dry-run) the plan only."""

    out: Path
    metadata: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    dry_run: bool = False


def _noop(kind: str, **info: Any) -> None:
    return None


def _load_clip(options: RunOptions, settings: EvalSettings, device: str | None
               ) -> tuple[Any, str | None]:
    """CLIP, or None and why it is absent; ``--rerank`` without it is refused. ``device``
    None (a dry run) checks what loading would refuse without loading anything."""
    from .eval_metrics import ClipScorer, ClipUnavailable

    try:
        if device is None:
            ClipScorer.check(options.clip_weights)
            return None, None
        return ClipScorer.load(options.clip_model, options.clip_weights, device), None
    except ClipUnavailable as exc:
        if settings.rerank:
            raise GlidectlError(f"--rerank needs CLIP, but {exc}") from None
        return None, str(exc)


def png_text(settings: EvalSettings, prompt: str, seed: int, candidate: int,
             used: str | None = None, cut: bool = False,
             vocab: dict[str, Any] | None = None, batch: int | None = None) -> dict[str, str]:
    """The generation parameters written into each PNG (deterministic: no times); ``used``/
    ``cut`` as :func:`glidectl.out_dir.prompt_record` takes them; ``vocab``: the GPT-2
    vocabulary's record (:func:`glidectl.tokenizer.vocab_record`), as sample's PNGs keep it;
    ``batch``: how many images its batch held (a folder grown since cuts its batches anew)."""
    return {
        **prompt_record(prompt, used, cut), "seed": str(seed), "candidate": str(candidate),
        **({} if batch is None else {"batch_images": str(batch)}),
        "glidectl": json.dumps({"version": __version__, **settings.fingerprint(),
                                **(vocab or {})}, sort_keys=True),
    }


def _write_prompt(out: Path, plan: Plan, i: int, candidates: dict[int, Any],
                  scorer: Any) -> None:
    """Choose prompt i's images (best n by CLIP with --rerank) and write PNG + caption pairs."""
    from .eval_metrics import rerank

    s, prompt = plan.settings, plan.prompts[i]
    order = sorted(candidates)
    if s.rerank:
        scores = scorer.score([candidates[j] for j in order], [prompt] * len(order))
        keep = [order[k] for k in rerank(scores, s.n)]
    else:
        keep = order[: s.n]
    caption = plan.used[i]
    for stem, j in zip(plan.stems(i), keep, strict=True):
        write_pair(out, stem, candidates[j], caption,
                   png_text(s, prompt, image_seed(s.seed, i, j), j,
                            plan.cut.get(i, caption), i in plan.cut, plan.vocab,
                            plan.batch_length(i, j)))


def _header(prompts_file: str | Path, prompts: list[str], out: Path, settings: EvalSettings,
            models: dict[str, Any], device: str, options: RunOptions) -> dict[str, Any]:
    """metadata.json's fixed part: versions, prompts (long ones bounded), settings, models."""
    short = [prompt_record(p)["prompt"] for p in prompts]
    header = {
        "glidectl_version": __version__, "out": str(out), "prompts_file": str(prompts_file),
        "prompts": short, "settings": settings.fingerprint(), "models": models,
        "device": device, "compile": options.compile,
    }
    if short != prompts:
        header["prompts_sha256"] = prompts_digest(prompts)
    if paths := settings.located():  # so --resume finds them from any working directory
        header["paths"] = paths
    header.update(schedule_digests(settings))
    from .plugins import plugins_used

    b, u = settings.base_stage, settings.upsample_stage
    up = settings.upsampler not in (None, "none")
    header["plugins"] = plugins_used([b.sampler, u.sampler if up else None],
                                     [b.schedule, u.schedule if up else None])
    return header


def _schedule_file_notes(settings: EvalSettings) -> list[str]:
    """The warnings the run would give of each stage's schedule file (another sampler, grey
    or guidance than fitted, a count a stopped fit left out), for a dry run, which loads no
    weights (so it does not compare them with the file's)."""
    from .pipeline import schedule_file_warnings
    from .samplers.tuned import is_schedule_file

    notes: list[str] = []
    for stage, opts in settings.stage_options().items():
        if (stage == "base" or settings.upsampler) and opts.schedule and \
                is_schedule_file(opts.schedule):
            spec = settings.where("base" if stage == "base" else "upsampler")
            notes += [f"Warning: {m}" for m in schedule_file_warnings(stage, opts, spec)]
    return list(dict.fromkeys(notes))


def sampling_events(emit: EventFn, said: set[str]
                    ) -> tuple[Callable[[str], None], Callable[[str, int, int], None]]:
    """The pipeline's ``warn`` (each warning said once as a note, unless in ``said``) and
    ``on_step`` (a stage's start and each step) as eval's events."""
    def warn(message: str) -> None:
        if message not in said:
            said.add(message)
            emit("note", text=f"Warning: {message}")

    def on_step(stage: str, done: int, stage_total: int) -> None:
        if done == 1:
            emit("stage", stage=stage, total=stage_total)
        emit("step", stage=stage)

    return warn, on_step


def _generate_all(plan: Plan, pipeline: Any, out: Path, scorer: Any, emit: EventFn,
                  timings: dict[str, float], said: set[str]) -> set[int]:
    """Sample every pending batch and write each prompt once all its candidates exist;
    returns the prompts written in this session. The pipeline's warnings (a schedule file
    fitted to another sampler, model or ODE) are said once, unless in ``said`` already."""
    settings, stage_opts = plan.settings, plan.settings.stage_options()
    candidates: dict[int, dict[int, Any]] = {}
    fresh: set[int] = set()
    t_gen = time.perf_counter()
    warn, on_step = sampling_events(emit, said)
    b, u = stage_opts["base"], stage_opts["upsample"]
    for batch in plan.pending_batches:
        seeds = [image_seed(settings.seed, i, j) for i, j in batch]
        images = pipeline.generate(
            [plan.prompts[i] for i, _ in batch], seeds=seeds, batch_size=len(batch),
            on_step=on_step, timings=timings, warn=warn, grey=b.grey, upsample_grey=u.grey,
            sampler=b.sampler, steps=b.steps, guidance=b.guidance, schedule=b.schedule,
            upsample_sampler=u.sampler, upsample_steps=u.steps, upsample_guidance=u.guidance,
            upsample_schedule=u.schedule)
        for (i, j), image in zip(batch, images, strict=True):
            if i in plan.done:
                continue
            candidates.setdefault(i, {})[j] = image
            if len(candidates[i]) == settings.candidates:
                _write_prompt(out, plan, i, candidates.pop(i), scorer)
                plan.done.add(i)
                fresh.add(i)
                rate = len(fresh) * settings.n / max(time.perf_counter() - t_gen, 1e-9)
                emit("images", count=settings.n, rate=rate)
    return fresh


def _finish(out: Path, plan: Plan, fresh: set[int], scorer: Any, clip_reason: str | None,
            header: dict[str, Any], grid_max: int, fid: FidStream | None) -> dict[str, Any]:
    """Read the images back a chunk at a time and score them (their FID features into
    ``fid``, a :class:`glidectl.fid.FidStream`, when given); write grid.png of the first
    prompts' images, at most ``grid_max`` of them; the metadata fields."""
    from .eval_metrics import clip_metric, joined, prompt_following
    from .images import save_png

    prompts, n = plan.prompts, plan.settings.n
    shown = grid_prompts(len(prompts), n, grid_max)
    records: list[dict[str, Any]] = []
    parts, cells, labels = [], [], []
    for chunk, images in read_back(out, prompts, [plan.stems(i) for i in range(len(prompts))],
                                   fresh, METRICS_CHUNK):
        captions = [plan.used[r["prompt_index"]] for r in chunk]
        parts.append((prompt_following(images, captions),
                      clip_metric(scorer, clip_reason, images, captions)))
        if fid is not None:
            fid.add(images)
        for rec, image, caption in zip(chunk, images, captions, strict=True):
            rec["prompt"] = prompt_record(rec["prompt"])["prompt"]
            if rec["prompt_index"] < shown:  # several images are numbered as their files are
                cells.append(image)
                labels.append(f"{rec['prompt_index']:0{plan.width}d}"
                              + (f"_{rec['image_index'] + 1}" if n > 1 else "") + f" {caption}")
        records += chunk
    results = [joined(metric) for metric in zip(*parts, strict=True)]
    for k, rec in enumerate(records):
        rec["metrics"] = {m.name: m.values[k] for m in results
                          if m.absent is None and m.values[k] is not None}
    save_png(grid(cells, labels, n), out / GRID_FILE, {"glidectl": json.dumps(
        {"version": __version__, "prompts": header["prompts"][:shown],
         **plan.settings.fingerprint(), **plan.vocab}, sort_keys=True)})
    return {"metrics": {m.name: m.summary() for m in results}, "images": records,
            "grid": GRID_FILE, "grid_holds": {"first_prompts": shown, "images": len(cells),
                                              "of_images": len(records)}}


def _vocab_dir(options: RunOptions) -> str | None:
    """``--vocab-dir`` as an absolute path (what metadata.json and the PNGs record, so
    --resume and --from-png find it from any working directory), or None."""
    return str(Path(options.vocab_dir).expanduser().resolve()) if options.vocab_dir else None


def _load(settings: EvalSettings, options: RunOptions, device: str,
          pins: dict[str, Any]) -> tuple[Any, float]:
    """The pipeline, and seconds to load it; ``pins`` (:func:`pinned_models`) load the files
    that made a resumed run's images, recorded under the specs the run recorded."""
    from .lora import parse_lora_spec
    from .pipeline import GlidePipeline

    t0 = time.perf_counter()
    adapters = pins.get("loras") or {}
    loras = []
    for text in settings.where("loras"):
        spec = parse_lora_spec(text)
        loras.append(f"{adapters[spec.path]}:{spec.scale!r}" if spec.path in adapters else text)
    pipeline = GlidePipeline.from_specs(
        pins.get("base", settings.where("base")), pins.get("upsampler", settings.where(
            "upsampler")), loras=loras, device=device,
        precision=settings.precision, compile=options.compile, vocab_dir=_vocab_dir(options))
    for key, stage in (("base", "base"), ("upsampler", "upsample")):
        if key in pins:
            pipeline.records[stage].spec = settings.where(key)
    given = {where: path for path, where in adapters.items()}
    for record in pipeline.records.values():  # metadata.json keeps the adapters as given
        for lora in record.loras:
            lora["path"] = given.get(lora["path"], lora["path"])
    return pipeline, time.perf_counter() - t0


def _load_metrics(options: RunOptions, settings: EvalSettings, device: str
                  ) -> tuple[Any, str | None, Any, list[str]]:
    """CLIP (with the reason it is absent) and FID features, loaded before any sampling,
    and the notes saying which metrics are absent (shown once the models load)."""
    scorer, clip_reason = _load_clip(options, settings, device)
    notes = [clip_reason] if clip_reason else []
    fid_features = None
    if options.fid_reference:
        from .fid import inception_features

        fid_features = inception_features(options.fid_weights)  # bad files fail before work
        if not fid_features.available:
            notes.append(f"FID/KID absent: {fid_features.reason}.")
    return scorer, clip_reason, fid_features, notes


def _read_prompts_as_used(pipeline: Any, plan: Plan, emit: EventFn) -> set[str]:
    """Warn once per prompt longer than a model reads (returns the warnings); keep what the
    base model reads of long prompts (their captions) in ``plan.used``."""
    from .pipeline import prompt_warnings
    from .sampling import prompt_used

    said: set[str] = set()
    for stage, model in pipeline.stage_models().items():
        tok = pipeline.tokenizer if stage == "base" else pipeline.upsampler_tokenizer
        ctx = model.options.text_ctx
        for text in prompt_warnings(tok, plan.prompts, ctx):
            emit("note", text=text)
            said.add(text)
        if stage == "base":
            plan.used = [p if len(p) <= PROMPT_EXCERPT_CHARS else prompt_used(tok, p, ctx)
                         for p in plan.prompts]
            plan.cut = {i: prompt_used(tok, p, ctx) for i, p in enumerate(plan.prompts)
                        if tok.count(p) > ctx}
    return said

def _grid_max(options: RunOptions, prior: dict[str, Any] | None, emit: EventFn) -> int:
    """``--grid-max``, else (``--resume``) the value the run recorded, else GRID_MAX. A
    resume given another one says so: grid.png is made again from every image."""
    recorded = (prior or {}).get("grid_max") if options.resume else None
    if isinstance(recorded, bool) or not isinstance(recorded, int) or recorded < 1:
        recorded = None  # a run from before it was recorded (or an edited one)
    if options.grid_max is None:
        return recorded or GRID_MAX
    if recorded is not None and recorded != options.grid_max:
        emit("note", text=f"--resume: grid.png shows at most {options.grid_max} images "
                          f"(--grid-max), not the {recorded} the run recorded.")
    return options.grid_max


def _counts(prompts: int, total: int, generated: int) -> dict[str, int]:
    return {"prompts": prompts, "images": total, "generated": generated,
            "kept": total - generated}


@SAID_AS_KEYWORDS
@read_once()  # every image and the sha256 recorded from one version of a schedule file
def run_eval(
    prompts_file: str | Path, settings: EvalSettings, options: RunOptions | None = None,
    on_event: EventFn | None = None, pipeline: Any = None, notes: Sequence[str] = (),
) -> EvalReport:
    """Generate every prompt's images into a numbered folder with a grid and metadata.json.

    ``on_event(kind, **info)`` receives progress: start(total, done), stage(stage, total),
    step(stage), images(count, rate), note(text). ``pipeline`` reuses loaded models.
    ``notes`` (:func:`settings_for`'s) are said as notes once the run's inputs are checked
    and its models loaded (a dry run: once its plan is made).
    """
    from . import plugins
    from .devices import pick_device

    check_run_call(prompts_file, settings, options, on_event, notes, pipeline)
    options = options or RunOptions()
    emit = on_event or _noop
    t_start = time.perf_counter()
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    prompts = read_prompts(prompts_file)
    out = resolve_out(prompts, options)
    plan = Plan.make(prompts, settings)
    prior = read_metadata(out / META_FILE)
    device = pick_device(options.device)
    if options.resume:  # a plugin gone since: said as such, not as a typo
        check_plugins_loaded(prior, out, settings)
    plugins.samplers().get(settings.base_stage.sampler)  # typos fail before any loading
    if settings.upsampler:
        plugins.samplers().get(settings.upsample_stage.sampler)
    check_inputs(settings, options, models=pipeline is None,  # before any note or loading
                 prompts=len(prompts))
    pins, pin_notes = pinned_models(settings, prior) if options.resume and pipeline is None \
        else ({}, [])
    notes = [*notes, *pin_notes]
    if options.dry_run:
        from .model_cost import dry_run_plan
        from .pipeline import file_sha256

        if options.resume or options.skip_existing:
            plan.mark_done(out)
        if options.skip_existing and not options.resume:
            plan.check_strays(out, prior)
        _load_clip(options, settings, None)  # --rerank without CLIP, as the run refuses it
        models, info = dry_run_plan(plan, settings, device, pipeline, _vocab_dir(options))
        header = _header(prompts_file, prompts, out, settings, models, device, options)
        if continues(options, prior, out):  # the plan of a run the real one would refuse
            pinned = {"upsample" if k == "upsampler" else k: p for k, p in pins.items()}
            hashes = {stage: {"sha256": file_sha256(pinned.get(stage, m["path"]))}
                      for stage, m in models.items()
                      if m["local"]}  # weights not on disk: no run of theirs can be here
            check_continues(options, prior, out, prompts, settings, hashes, header)
        for text in [*notes, *_schedule_file_notes(settings)]:
            emit("note", text=text)
        return EvalReport(out, {**header, "plan": info}, dry_run=True)
    if continues(options, prior, out):  # other prompts or settings: refused before any note
        check_continues(options, prior, out, prompts, settings, {},  # weights: once loaded
                        _header(prompts_file, prompts, out, settings, {}, device, options))
        if options.skip_existing and not options.resume:
            plan.check_strays(out, prior)
    scorer, clip_reason, fid_features, metric_notes = _load_metrics(options, settings, device)
    load_s = 0.0
    if pipeline is None:
        pipeline, load_s = _load(settings, options, device, pins)
    stage_opts = settings.stage_options()  # an unusable schedule: one sentence, nothing written
    per_batch = {s: pipeline.calls_per_batch(s, stage_opts[s]) for s in pipeline.stage_models()}
    plan.vocab = pipeline.vocab_record()
    warned = [f"Warning: {w}" for w in pipeline.vocab_dir_warnings()]
    for text in [*notes, *metric_notes, *warned]:  # about a run that starts: said once it can
        emit("note", text=text)
    with claim_folder(out, numbered=options.out is None and not options.resume) as out, \
            RunRecord(out / META_FILE) as record:  # a stop (Ctrl-C, a failure) is recorded
        # read again now that it is this process's: an eval that held it may have written
        if not (options.resume or options.skip_existing) and holds_files(out):
            raise held_files_error(out, held=True)
        prior = read_metadata(out / META_FILE)
        if options.resume or options.skip_existing:
            plan.mark_done(out)
        if options.skip_existing and not options.resume:
            plan.check_strays(out, prior)
        calls = plan.model_calls(lambda stage: per_batch.get(stage, 0))
        models = pipeline.models_info()
        header = _header(prompts_file, prompts, out, settings, models, device, options)
        header.update(plan.vocab)
        header["grid_max"] = grid_max = _grid_max(options, prior, emit)
        if continues(options, prior, out):
            check_continues(options, prior, out, prompts, settings, models, header)
        said = _read_prompts_as_used(pipeline, plan, emit)

        clean_temp_files(out)
        sessions = list((prior or {}).get("sessions", [])) \
            if options.resume or options.skip_existing else []  # the images kept are theirs
        record.running(header, sessions=sessions)
        total = len(prompts) * settings.n
        emit("start", total=total, done=len(plan.done) * settings.n, out=str(out))
        timings: dict[str, float] = {}
        t_gen = time.perf_counter()
        done_before = len(plan.done)
        try:  # generating or scoring (minutes for FID on many images)
            fresh = _generate_all(plan, pipeline, out, scorer, emit, timings, said)
            gen_s = time.perf_counter() - t_gen
            t_metrics = time.perf_counter()
            fid = None
            if fid_features is not None:
                from .fid import FidStream

                fid = FidStream(str(options.fid_reference), fid_features, out=out)
            fields = _finish(out, plan, fresh, scorer, clip_reason, header, grid_max, fid)
            if fid is not None:
                try:
                    result = fid.result()
                except GlidectlError as exc:  # e.g. references that open but do not decode:
                    result = {"fid_missing": str(exc)}  # the run's images and metadata stay
                fields["metrics"]["fid"] = ({"absent": result["fid_missing"]}
                                            if "fid_missing" in result else result)
        except BaseException:  # Ctrl-C, a failure: the images it wrote are its session's
            sessions.append({"started": started, "stopped": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                             "resumed": options.resume,
                             "generated": (len(plan.done) - done_before) * settings.n})
            raise
        generated = len(fresh) * settings.n
        session_timings = {
            "load_s": load_s, **{f"{k}_s": v for k, v in timings.items()}, "generate_s": gen_s,
            "metrics_s": time.perf_counter() - t_metrics, "total_s": time.perf_counter() - t_start,
            "images_per_s": generated / gen_s if generated and gen_s > 0 else None,
        }
        sessions.append({"started": started, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                         "resumed": options.resume, "generated": generated,
                         "model_calls": calls, "timings": session_timings})
        meta = {**header, "status": "complete", "counts": _counts(len(prompts), total, generated),
                **fields, "model_calls": {"per_batch": per_batch, "this_session": calls},
                "timings": session_timings, "sessions": sessions}
        notes = []
        if options.wandb_project and options.wandb_mode == "disabled":
            notes.append(f"Nothing logged to W&B project {options.wandb_project!r}: "
                         "--wandb-mode disabled.")
        elif options.wandb_project:
            meta["wandb_run_id"], tables = log_wandb(
                options.wandb_project, options.wandb_entity, options.wandb_mode, out, meta)
            pages = ", ".join(f"{key} ({rows:,})" for key, rows in tables.items())
            pages = f"; its images in the tables {pages}" if len(tables) > 1 else ""
            notes.append(f"W&B run {meta['wandb_run_id']} logged to project "
                         f"{options.wandb_project!r}{pages}.")
        write_json(out / META_FILE, meta)
        return EvalReport(out, meta, notes)
