"""Batch evaluation: a prompts file → a numbered, reproducible folder of images and a grid.

The work is a fixed list of (prompt i, candidate j) items cut into fixed batches, so a batch
always holds the same items; image j of prompt i is drawn from its own seed
``image_seed(seed, i, j)``. Resuming (or skipping done prompts) re-runs only the batches that
still hold an unfinished prompt and writes only that prompt's files, so an interrupted and
resumed run gives the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .errors import GlidectlError, keyword_errors
from .eval_outputs import (
    GRID_MAX,
    check_wandb,
    claim_folder,
    clean_temp_files,
    grid,
    grid_prompts,
    holds_files,
    image_stems,
    index_width,
    is_whole_png,
    latest_eval_dir,
    log_wandb,
    next_eval_dir,
    padded_widths,
    read_back,
    read_metadata,
    refuse_if_busy,
    slugify,
    write_json,
    write_pair,
)
from .eval_settings import (
    FLAG_NAMES,
    META_FILE,
    SCHEDULE_KEYS,
    EvalSettings,
    Stage,
    check_resume,
    check_same_run,
    prompts_digest,
    recorded_paths,
    resolve_settings,
    schedule_digests,
)
from .out_dir import PROMPT_EXCERPT_CHARS, check_out_dir, prompt_record
from .prompt_files import read_prompt_file
from .samplers.schedule_files import read_once

if TYPE_CHECKING:
    from .fid import FidStream

__all__ = ["EvalSettings", "Plan", "RunOptions", "Stage", "check_resume", "image_seed",
           "image_stems", "next_eval_dir", "read_prompts", "resolve_settings", "run_eval",
           "settings_for", "slugify"]

# settings_for()'s ``flags`` keys and RunOptions' fields for the flags of glidectl eval
KEYWORDS = {flag: key for key, flag in FLAG_NAMES.items()} | {
    "--out": "out", "--resume": "resume=True", "--skip-existing": "skip_existing=True",
    "--dry-run": "dry_run=True", "--device": "device", "--grid-max": "grid_max",
    "--fid": "fid_reference", "--fid-weights": "fid_weights", "--clip-model": "clip_model",
    "--clip-weights": "clip_weights", "--wandb-mode": "wandb_mode",
    "--wandb-project": "wandb_project", "--wandb-entity": "wandb_entity"}
SAID_AS_KEYWORDS = keyword_errors(KEYWORDS, {  # a setting's value, quoted as Python's
    r"(?<![\w-])(--[a-z][a-z-]*) ([a-z][\w+.:-]*)(?= (?:would change|differs from))": r"\1 '\2'"})

GRID_FILE = "grid.png"
METRICS_CHUNK = 64  # images read back at a time to score: FID's batches, 4 of CLIP's 16


# --------------------------------------------------------------------------- prompts and names
def read_prompts(path: str | Path) -> list[str]:
    """Non-blank lines of a prompts file; lines starting with ``#`` are comments."""
    return read_prompt_file(path, "Prompts file")


def image_seed(seed: int, prompt_index: int, image_index: int) -> int:
    """The seed of image j of prompt i: a hash of (seed, i, j), below 2**63."""
    digest = hashlib.sha256(f"glidectl-eval:{seed}:{prompt_index}:{image_index}".encode())
    return int.from_bytes(digest.digest()[:8], "big") & (2**63 - 1)


# --------------------------------------------------------------------------- the plan
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
                if all((out / f"{s}.txt").is_file() and is_whole_png(out / f"{s}.png")
                       for s in self.stems(i))
            }
        self.width = max(found, key=lambda w: (len(found[w]), w == index_width(
            len(self.prompts))))
        self.done = found[self.width]

    @property
    def pending_batches(self) -> list[list[tuple[int, int]]]:
        return [b for b in self.batches if any(i not in self.done for i, _ in b)]

    def model_calls(self, calls_per_batch: Callable[[str], int]) -> dict[str, int]:
        """Network evaluations per stage for the pending work (``calls_per_batch(stage)``)."""
        pending = len(self.pending_batches)
        stages = ["base"] + (["upsample"] if self.settings.upsampler else [])
        return {s: pending * calls_per_batch(s) for s in stages}


# --------------------------------------------------------------------------- the run
EventFn = Callable[..., None]


@dataclass
class RunOptions:
    """How a run is carried out; none of these change the pictures."""

    out: Path | None = None
    eval_root: Path = Path("eval")
    resume: bool = False
    skip_existing: bool = False
    dry_run: bool = False
    device: str = "auto"
    compile: bool = False
    clip_model: str = "ViT-B-32"
    clip_weights: str | None = None
    fid_reference: str | None = None  # images (folder, data source) or an .npz of stats
    fid_weights: str | None = None  # local Inception weights (glidectl.fid)
    vocab_dir: str | None = None  # GPT-2 vocabulary folder (None: the default one)
    wandb_project: str = ""
    wandb_entity: str = ""
    wandb_mode: str = "auto"  # glidectl.config.WANDB_MODES; auto: WANDB_MODE, else online
    # grid.png: the first prompts' images, at most this many (None: with --resume the
    # run's recorded value, else GRID_MAX)
    grid_max: int | None = None

    @SAID_AS_KEYWORDS
    def __post_init__(self) -> None:
        from .ranges import FLAGS, check

        if self.grid_max is not None:
            check("--grid-max", self.grid_max, FLAGS["--grid-max"])


@dataclass
class EvalReport:
    """What a run did: its folder, metadata and (for --dry-run) the plan only."""

    out: Path
    metadata: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    dry_run: bool = False


def _noop(kind: str, **info: Any) -> None:
    return None


def resolve_out(prompts: list[str], options: RunOptions) -> Path:
    """The output folder, checking it is free (or that --resume / --skip-existing apply)."""
    out = options.out
    if out is None:
        if options.resume:
            out = latest_eval_dir(options.eval_root)
            if out is None:
                raise GlidectlError(
                    f"--resume: no numbered run under {str(options.eval_root)!r}; pass --out DIR."
                )
        else:
            out = next_eval_dir(options.eval_root)
    out = Path(out)
    check_out_dir(out)
    if not options.dry_run:  # a plan only reads
        refuse_if_busy(out)
    busy = holds_files(out)
    if busy and not (options.resume or options.skip_existing):
        raise GlidectlError(
            f"--out {str(out)!r} already holds files; pass --resume to continue that run, "
            "--skip-existing to keep finished prompts, or another --out."
        )
    if options.resume and not busy:
        raise GlidectlError(f"--resume: {str(out)!r} holds no run to continue; drop --resume.")
    return out


def _load_clip(options: RunOptions, settings: EvalSettings, device: str) -> tuple[Any, str | None]:
    from .eval_metrics import ClipScorer, ClipUnavailable

    try:
        return ClipScorer.load(options.clip_model, options.clip_weights, device), None
    except ClipUnavailable as exc:
        if settings.rerank:
            raise GlidectlError(f"--rerank needs CLIP, but {exc}") from None
        return None, str(exc)


def png_text(settings: EvalSettings, prompt: str, seed: int, candidate: int,
             used: str | None = None, cut: bool = False,
             vocab: dict[str, Any] | None = None) -> dict[str, str]:
    """The generation parameters written into each PNG (deterministic: no times); ``used``/
    ``cut`` as :func:`glidectl.out_dir.prompt_record` takes them; ``vocab``: the GPT-2
    vocabulary's record (:func:`glidectl.tokenizer.vocab_record`), as sample's PNGs keep it."""
    return {
        **prompt_record(prompt, used, cut), "seed": str(seed), "candidate": str(candidate),
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
                            plan.cut.get(i, caption), i in plan.cut, plan.vocab))




@SAID_AS_KEYWORDS
def settings_for(prompts_file: str | Path, flags: dict[str, Any], options: RunOptions,
                 precision: str | None = None) -> tuple[EvalSettings, list[str]]:
    """The run's settings from the flags the user gave (None = not given; keys as in
    :data:`glidectl.eval_settings.FLAG_NAMES`) and notes saying where defaults came from:
    with --resume the run's recorded settings, else the base model's recommendations.
    :func:`run_eval` checks what the run needs and says the notes (its ``notes``) once it
    can start, so a run that cannot start says nothing about itself first. With --resume
    it sets ``options.out`` to the run it read and, unless given, ``options.vocab_dir`` to
    the GPT-2 vocabulary folder that run recorded."""
    from .devices import pick_device, pick_precision
    from .model_cost import local_weights
    from .pipeline import recommended_settings, resolve_upsampler

    flags = dict(flags)
    chosen = pick_precision(precision or "auto", pick_device(options.device))
    notes = [chosen.line()] if precision in (None, "auto") else []
    if options.resume:
        prompts = read_prompts(prompts_file)
        out = resolve_out(prompts, options)  # the run to continue: its recorded settings
        prior = read_metadata(out / META_FILE)
        if prior is None or "settings" not in prior:
            check_resume(prior, out, prompts, {}, {})
        if precision is None:
            notes = []
        options.out = out  # the run read here, even if a newer one appears before run_eval
        if options.vocab_dir is None and isinstance(prior.get("vocab_dir"), str):
            options.vocab_dir = prior["vocab_dir"]
        paths = recorded_paths(prior, out)
        settings, more = resolve_settings(flags, chosen.name if precision else None,
                                          recorded=prior["settings"], out=out, paths=paths)
        return settings, notes + more
    base = flags.get("base") or EvalSettings.base
    if base == "none":  # `sample --base none --low-res` has no eval counterpart
        raise GlidectlError("eval needs a base model (--base); --base none works only in "
                            "glidectl sample with --low-res IMAGE.")
    flags["base"] = base
    flags["upsampler"] = resolve_upsampler(base, flags.get("upsampler") or "auto")
    unused = [FLAG_NAMES[k] for k, v in flags.items()
              if k.startswith("upsample_stage.") and v is not None]
    if unused and not flags["upsampler"]:
        notes.append(f"Warning: {', '.join(unused)} not used: this run has no upsampler.")
    recommended = recommended_settings(local_weights(base))
    settings, more = resolve_settings(flags, chosen.name, recommended=recommended)
    return settings, notes + more


def check_inputs(settings: EvalSettings, options: RunOptions, models: bool = True,
                 prompts: int | None = None) -> None:
    """One sentence, before anything about the run is said or a model loads, for what it
    needs and cannot use: its models (found on disk, headers read; ``models=False``: loaded
    already) and LoRA adapters, and but for a dry run W&B and the ``--fid`` reference (and
    enough images to score: ``prompts`` × n)."""
    if models:
        from .lora import parse_lora_spec, read_adapter
        from .model_cost import check_models

        check_models(settings.where("base"), settings.where("upsampler"))
        for spec in settings.where("loras"):
            read_adapter(parse_lora_spec(spec).path)
    if options.dry_run:
        return
    if options.wandb_project:
        check_wandb(options.wandb_mode)  # not after every image is made
    if options.fid_reference:
        from .fid import check_reference

        check_reference(str(options.fid_reference),
                        None if prompts is None else prompts * settings.n)


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


def _generate_all(plan: Plan, pipeline: Any, out: Path, scorer: Any, emit: EventFn,
                  timings: dict[str, float]) -> set[int]:
    """Sample every pending batch and write each prompt once all its candidates exist;
    returns the prompts written in this session."""
    settings, stage_opts = plan.settings, plan.settings.stage_options()
    candidates: dict[int, dict[int, Any]] = {}
    fresh: set[int] = set()
    t_gen = time.perf_counter()

    def on_step(stage: str, done: int, stage_total: int) -> None:
        if done == 1:
            emit("stage", stage=stage, total=stage_total)
        emit("step", stage=stage)

    b, u = stage_opts["base"], stage_opts["upsample"]
    for batch in plan.pending_batches:
        seeds = [image_seed(settings.seed, i, j) for i, j in batch]
        images = pipeline.generate(
            [plan.prompts[i] for i, _ in batch], seeds=seeds, batch_size=len(batch),
            on_step=on_step, timings=timings, warn=lambda m: None,
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


def _load(settings: EvalSettings, options: RunOptions, device: str) -> tuple[Any, float]:
    from .pipeline import GlidePipeline

    t0 = time.perf_counter()
    pipeline = GlidePipeline.from_specs(settings.where("base"), settings.where("upsampler"),
                                        loras=settings.where("loras"), device=device,
                                        precision=settings.precision, compile=options.compile,
                                        vocab_dir=_vocab_dir(options))
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


def _read_prompts_as_used(pipeline: Any, plan: Plan, emit: EventFn) -> None:
    """Warn once per prompt longer than a model reads; keep what the base model reads of
    long prompts (their captions) in ``plan.used``."""
    from .pipeline import prompt_warnings
    from .sampling import prompt_used

    for stage, model in pipeline.stage_models().items():
        tok = pipeline.tokenizer if stage == "base" else pipeline.upsampler_tokenizer
        ctx = model.options.text_ctx
        for text in prompt_warnings(tok, plan.prompts, ctx):
            emit("note", text=text)
        if stage == "base":
            plan.used = [p if len(p) <= PROMPT_EXCERPT_CHARS else prompt_used(tok, p, ctx)
                         for p in plan.prompts]
            plan.cut = {i: prompt_used(tok, p, ctx) for i, p in enumerate(plan.prompts)
                        if tok.count(p) > ctx}


def _continues(options: RunOptions, prior: dict[str, Any] | None, out: Path) -> bool:
    """Whether this run adds to images an earlier run made (--resume, or --skip-existing in
    a folder with a metadata.json and images: those it keeps, and those it would leave
    beside its own under other names, as with another --n, must share its settings)."""
    return options.resume or (options.skip_existing and prior is not None and any(
        p.name != GRID_FILE for p in out.glob("*.png")))


def _check_continues(options: RunOptions, prior: dict[str, Any] | None, out: Path,
                     prompts: list[str], settings: EvalSettings, models: dict[str, Any],
                     header: dict[str, Any]) -> None:
    """Raise unless the earlier run made its images with these prompts (--resume),
    settings, models and schedule files (their sha256 in ``header``)."""
    schedules = {k: header[k] for k in SCHEDULE_KEYS.values() if k in header}
    if prior is not None and "plugins" in prior and prior["plugins"] != header["plugins"]:
        def code(plugins: list[str] | None) -> str:
            return ", ".join(plugins) if plugins else "glidectl's own samplers and schedules"

        flag = "--resume" if options.resume else "--skip-existing"
        raise GlidectlError(
            f"{str(out)!r} was made with {code(prior['plugins'])}, but this run would use "
            f"{code(header['plugins'])}, so {flag} would mix their images; install what it "
            "was made with, or pass a new --out.")
    if options.resume:
        check_resume(prior, out, prompts, settings.fingerprint(), models, schedules,
                     settings.located())
    else:
        check_same_run(prior, out, settings.fingerprint(), models, schedules,
                       "--skip-existing", settings.located())
    _check_vocab(options, prior or {}, out, header)


def _check_vocab(options: RunOptions, prior: dict[str, Any], out: Path,
                 header: dict[str, Any]) -> None:
    """Raise when the GPT-2 vocabulary differs from the one that made the images kept
    (runs from before it was recorded, and dry runs, which load none, are not checked)."""
    was, now = prior.get("vocab_sha256"), header.get("vocab_sha256")
    if not (was and now) or was == now:
        return
    flag, leave = (("--resume", "drop --resume") if options.resume
                   else ("--skip-existing", "use another --out"))
    here = f"in {header['vocab_dir']!r}" if header.get("vocab_dir") else "found by default"
    made = f"the one in {prior['vocab_dir']!r}" if prior.get("vocab_dir") else "the default one"
    raise GlidectlError(
        f"{flag}: the GPT-2 vocabulary {here} (sha256 {now[:12]}…) is not {made} that made "
        f"the images in {str(out)!r} (sha256 {was[:12]}…); pass --vocab-dir DIR with that "
        f"vocabulary, or {leave}.")


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

    options = options or RunOptions()
    emit = on_event or _noop
    t_start = time.perf_counter()
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    prompts = read_prompts(prompts_file)
    out = resolve_out(prompts, options)
    plan = Plan.make(prompts, settings)
    prior = read_metadata(out / META_FILE)
    device = pick_device(options.device)
    plugins.samplers().get(settings.base_stage.sampler)  # typos fail before any loading
    if settings.upsampler:
        plugins.samplers().get(settings.upsample_stage.sampler)
    check_inputs(settings, options, models=pipeline is None,  # before any note or loading
                 prompts=len(prompts))
    if options.dry_run:
        from .model_cost import dry_run_plan
        from .pipeline import file_sha256

        if options.resume or options.skip_existing:
            plan.mark_done(out)
        models, info = dry_run_plan(plan, settings, device, pipeline, _vocab_dir(options))
        header = _header(prompts_file, prompts, out, settings, models, device, options)
        if _continues(options, prior, out):  # the plan of a run the real one would refuse
            hashes = {stage: {"sha256": file_sha256(m["path"])} for stage, m in models.items()
                      if m["local"]}  # weights not on disk: no run of theirs can be here
            _check_continues(options, prior, out, prompts, settings, hashes, header)
        for text in notes:
            emit("note", text=text)
        return EvalReport(out, {**header, "plan": info}, dry_run=True)
    if _continues(options, prior, out):  # other prompts or settings: refused before any note
        _check_continues(options, prior, out, prompts, settings, {},  # weights: once loaded
                         _header(prompts_file, prompts, out, settings, {}, device, options))
    scorer, clip_reason, fid_features, metric_notes = _load_metrics(options, settings, device)
    load_s = 0.0
    if pipeline is None:
        pipeline, load_s = _load(settings, options, device)
    stage_opts = settings.stage_options()  # an unusable schedule: one sentence, nothing written
    per_batch = {s: pipeline.calls_per_batch(s, stage_opts[s]) for s in pipeline.stage_models()}
    plan.vocab = pipeline.vocab_record()
    for text in [*notes, *metric_notes]:  # about a run that starts: said once it can
        emit("note", text=text)
    with claim_folder(out, numbered=options.out is None and not options.resume) as out:
        # read again now that it is this process's: an eval that held it may have written
        if not (options.resume or options.skip_existing) and holds_files(out):
            raise GlidectlError(
                f"--out {str(out)!r} already holds files; pass --resume to continue that "
                "run, --skip-existing to keep finished prompts, or another --out.")
        prior = read_metadata(out / META_FILE)
        if options.resume or options.skip_existing:
            plan.mark_done(out)
        calls = plan.model_calls(lambda stage: per_batch.get(stage, 0))
        models = pipeline.models_info()
        header = _header(prompts_file, prompts, out, settings, models, device, options)
        header.update(plan.vocab)
        header["grid_max"] = grid_max = _grid_max(options, prior, emit)
        if _continues(options, prior, out):
            _check_continues(options, prior, out, prompts, settings, models, header)
        _read_prompts_as_used(pipeline, plan, emit)

        clean_temp_files(out)
        sessions = list((prior or {}).get("sessions", [])) if options.resume else []
        write_json(out / META_FILE, {**header, "status": "running", "sessions": sessions})
        total = len(prompts) * settings.n
        emit("start", total=total, done=len(plan.done) * settings.n, out=str(out))
        timings: dict[str, float] = {}
        t_gen = time.perf_counter()
        fresh = _generate_all(plan, pipeline, out, scorer, emit, timings)
        gen_s = time.perf_counter() - t_gen
        t_metrics = time.perf_counter()
        fid = None
        if fid_features is not None:
            from .fid import FidStream

            fid = FidStream(str(options.fid_reference), fid_features)
        fields = _finish(out, plan, fresh, scorer, clip_reason, header, grid_max, fid)
        if fid is not None:
            try:
                result = fid.result()
            except GlidectlError as exc:  # e.g. references that open but do not decode:
                result = {"fid_missing": str(exc)}  # the run's images and metadata stay
            fields["metrics"]["fid"] = ({"absent": result["fid_missing"]} if "fid_missing" in result
                                        else result)
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
        if options.wandb_project:
            meta["wandb_run_id"], tables = log_wandb(
                options.wandb_project, options.wandb_entity, options.wandb_mode, out, meta)
            pages = ", ".join(f"{key} ({rows:,})" for key, rows in tables.items())
            pages = f"; its images in the tables {pages}" if len(tables) > 1 else ""
            notes.append(f"W&B run {meta['wandb_run_id']} logged to project "
                         f"{options.wandb_project!r}{pages}.")
        write_json(out / META_FILE, meta)
        return EvalReport(out, meta, notes)
