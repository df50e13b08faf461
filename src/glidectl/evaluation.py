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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .errors import GlidectlError
from .eval_outputs import (
    clean_temp_files,
    collect,
    grid,
    image_stems,
    latest_eval_dir,
    log_wandb,
    next_eval_dir,
    read_metadata,
    slugify,
    write_json,
    write_pair,
)

__all__ = ["EvalSettings", "Plan", "RunOptions", "Stage", "image_seed", "image_stems",
           "next_eval_dir", "read_prompts", "run_eval", "slugify"]

PRECISIONS = ("fp32", "fp16", "bf16")
META_FILE = "metadata.json"
GRID_FILE = "grid.png"


@dataclass(frozen=True)
class Stage:
    """Sampling settings of one stage: sampler, steps (or a respacing like "fast27"),
    classifier-free guidance (None = off)."""

    sampler: str = "dpm++2m"
    steps: int | str = 25
    guidance: float | None = 3.0


@dataclass
class EvalSettings:
    """Everything that decides the pictures (and so must match on ``--resume``)."""

    base: str = "openai:base"
    upsampler: str | None = None
    base_stage: Stage = field(default_factory=Stage)
    upsample_stage: Stage = field(default_factory=lambda: Stage("ddpm", "fast27", None))
    n: int = 1
    batch_size: int = 4
    seed: int = 0
    rerank: int = 0
    precision: str = "fp32"
    loras: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.n < 1:
            raise GlidectlError(f"--n must be at least 1 (got {self.n}).")
        if self.batch_size < 1:
            raise GlidectlError(f"--batch-size must be at least 1 (got {self.batch_size}).")
        if self.rerank and self.rerank < self.n:
            raise GlidectlError(
                f"--rerank {self.rerank} must be at least --n {self.n} (it draws K candidates "
                "per prompt and keeps the best n)."
            )
        if self.precision == "no":
            self.precision = "fp32"
        if self.precision not in PRECISIONS:
            raise GlidectlError(
                f"Unknown --precision {self.precision!r}; use one of {', '.join(PRECISIONS)}."
            )
        for stage in (self.base_stage, self.upsample_stage):
            if isinstance(stage.steps, int) and stage.steps < 1:
                raise GlidectlError(f"Sampling steps must be at least 1 (got {stage.steps}).")

    @property
    def candidates(self) -> int:
        """Images drawn per prompt: K with --rerank K, else n."""
        return max(self.rerank, self.n)

    def fingerprint(self) -> dict[str, Any]:
        """The settings as saved in metadata.json and compared on --resume."""
        d = asdict(self)
        d["loras"] = list(self.loras)
        return d


# --------------------------------------------------------------------------- prompts and names
def read_prompts(path: str | Path) -> list[str]:
    """Non-blank lines of a prompts file; lines starting with ``#`` are comments."""
    path = Path(path)
    if not path.is_file():
        raise GlidectlError(f"Prompts file {str(path)!r} does not exist; pass a text file.")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise GlidectlError(f"Prompts file {str(path)!r} is not UTF-8 text.") from None
    prompts = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
    if not prompts:
        raise GlidectlError(
            f"Prompts file {str(path)!r} has no prompts (blank lines and # comments are skipped)."
        )
    return prompts


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

    @classmethod
    def make(cls, prompts: list[str], settings: EvalSettings) -> Plan:
        items = [(i, j) for i in range(len(prompts)) for j in range(settings.candidates)]
        bs = settings.batch_size
        return cls(prompts, settings, [items[k:k + bs] for k in range(0, len(items), bs)])

    def stems(self, i: int) -> list[str]:
        return image_stems(self.prompts, i, self.settings.n)

    def mark_done(self, out: Path) -> None:
        """Prompts whose every image (PNG and caption) already exists in ``out``."""
        self.done = {
            i for i in range(len(self.prompts))
            if all((out / f"{s}.png").is_file() and (out / f"{s}.txt").is_file()
                   for s in self.stems(i))
        }

    @property
    def pending_batches(self) -> list[list[tuple[int, int]]]:
        return [b for b in self.batches if any(i not in self.done for i, _ in b)]

    def model_calls(self, calls_per_batch: Callable[[str], int]) -> dict[str, int]:
        """Network evaluations per stage for the pending work (``calls_per_batch(stage)``)."""
        pending = len(self.pending_batches)
        stages = ["base"] + (["upsample"] if self.settings.upsampler else [])
        return {s: pending * calls_per_batch(s) for s in stages}


def check_resume(meta: dict[str, Any] | None, out: Path, prompts: list[str],
                 fingerprint: dict[str, Any], models: dict[str, Any]) -> None:
    """Raise unless ``out`` holds an interrupted run with these prompts, settings and models."""
    if meta is None:
        raise GlidectlError(
            f"--resume: {str(out)!r} has no {META_FILE}, so there is no run to continue; "
            "drop --resume (or use --skip-existing)."
        )
    if meta.get("prompts") != prompts:
        raise GlidectlError(
            f"--resume: the prompts differ from the run in {str(out)!r}; use the same prompts "
            "file, or --skip-existing to reuse finished prompts."
        )
    saved = meta.get("settings", {})
    for key, value in fingerprint.items():
        if json.loads(json.dumps(saved.get(key))) != json.loads(json.dumps(value)):
            raise GlidectlError(
                f"--resume: setting {key!r} was {saved.get(key)!r} in {str(out)!r} but is now "
                f"{value!r}; pass the same options or drop --resume."
            )
    for stage, info in models.items():
        old = meta.get("models", {}).get(stage, {}).get("sha256")
        if old != info.get("sha256"):
            raise GlidectlError(
                f"--resume: the {stage} model's weights changed since the run in {str(out)!r} "
                f"(sha256 {str(old)[:12]} → {str(info.get('sha256'))[:12]}); drop --resume."
            )


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
    wandb_project: str = ""
    wandb_entity: str = ""
    wandb_mode: str = ""  # "" = WANDB_MODE or online


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
    if out.exists() and not out.is_dir():
        raise GlidectlError(f"--out {str(out)!r} is a file; pass a folder.")
    busy = out.is_dir() and any(out.iterdir())
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


def png_text(settings: EvalSettings, prompt: str, seed: int, candidate: int) -> dict[str, str]:
    """The generation parameters written into each PNG (deterministic: no times, no paths)."""
    return {
        "prompt": prompt, "seed": str(seed), "candidate": str(candidate),
        "glidectl": json.dumps({"version": __version__, **settings.fingerprint()},
                               sort_keys=True),
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
    for stem, j in zip(plan.stems(i), keep, strict=True):
        write_pair(out, stem, candidates[j], prompt,
                   png_text(s, prompt, image_seed(s.seed, i, j), j))


def run_eval(
    prompts_file: str | Path, settings: EvalSettings, options: RunOptions | None = None,
    on_event: EventFn | None = None, stack: Any = None,
) -> EvalReport:
    """Generate every prompt's images into a numbered folder with a grid and metadata.json.

    ``on_event(kind, **info)`` receives progress: start(total, done), stage(stage, total),
    step(stage), images(count, rate), note(text). ``stack`` reuses loaded models.
    """
    from .eval_metrics import clip_metric, prompt_following
    from .model_stack import load_stack, pick_device, stage_options
    from .pipeline import prompt_warnings

    options = options or RunOptions()
    emit = on_event or _noop
    t_start = time.perf_counter()
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    prompts = read_prompts(prompts_file)
    out = resolve_out(prompts, options)
    plan = Plan.make(prompts, settings)
    prior = read_metadata(out / META_FILE)
    device = pick_device(options.device)
    from . import plugins

    plugins.samplers().get(settings.base_stage.sampler)  # typos fail before any loading
    if settings.upsampler:
        plugins.samplers().get(settings.upsample_stage.sampler)
    scorer, clip_reason = _load_clip(options, settings, device)
    if clip_reason:
        emit("note", text=clip_reason)
    t0 = time.perf_counter()
    if stack is None:
        stack = load_stack(settings.base, settings.upsampler, loras=settings.loras,
                           precision=settings.precision, device=device, compile=options.compile)
    load_s = time.perf_counter() - t0
    models = {m.stage: m.info() for m in stack.models}
    if options.resume:
        check_resume(prior, out, prompts, settings.fingerprint(), models)
    if options.resume or options.skip_existing:
        plan.mark_done(out)
    b, u = settings.base_stage, settings.upsample_stage
    base_opts = stage_options(b.sampler, b.steps, b.guidance)
    up_opts = stage_options(u.sampler, u.steps, u.guidance, upsampler=True)
    stage_opts = {"base": base_opts, "upsample": up_opts}
    calls = plan.model_calls(lambda s: stack.calls_per_batch(s, stage_opts[s]))
    for m in stack.models:
        for text in prompt_warnings(m.tokenizer, prompts, m.model.options.text_ctx):
            emit("note", text=text)
    header = {
        "glidectl_version": __version__, "out": str(out), "prompts_file": str(prompts_file),
        "prompts": prompts, "settings": settings.fingerprint(), "models": models,
        "device": device, "compile": options.compile,
    }
    if options.dry_run:
        per_call = {s: stack.time_call(s, settings.batch_size, stage_opts[s]) for s in calls}
        header["plan"] = {
            "prompts": len(prompts), "prompts_done": len(plan.done), "n": settings.n,
            "images": len(prompts) * settings.n, "batches": len(plan.batches),
            "batches_pending": len(plan.pending_batches), "model_calls": calls,
            "seconds_per_call": per_call,
            "estimated_s": sum(calls[s] * per_call[s] for s in calls),
            "estimate_basis": "model calls × one timed call per stage on this machine",
        }
        return EvalReport(out, header, dry_run=True)

    out.mkdir(parents=True, exist_ok=True)
    clean_temp_files(out)
    sessions = list((prior or {}).get("sessions", [])) if options.resume else []
    write_json(out / META_FILE, {**header, "status": "running", "sessions": sessions})
    total = len(prompts) * settings.n
    emit("start", total=total, done=len(plan.done) * settings.n, out=str(out))
    candidates: dict[int, dict[int, Any]] = {}
    fresh: set[int] = set()
    timings: dict[str, float] = {}
    t_gen = time.perf_counter()

    def on_step(stage: str, done: int, stage_total: int) -> None:
        if done == 1:
            emit("stage", stage=stage, total=stage_total)
        emit("step", stage=stage)

    for batch in plan.pending_batches:
        seeds = [image_seed(settings.seed, i, j) for i, j in batch]
        images = stack.generate([prompts[i] for i, _ in batch], seeds, base_opts,
                                up_opts, on_step=on_step, timings=timings)
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
    gen_s = time.perf_counter() - t_gen

    t_metrics = time.perf_counter()
    records, images = collect(out, prompts, [plan.stems(i) for i in range(len(prompts))],
                              fresh)
    results = [prompt_following(images, [r["prompt"] for r in records]),
               clip_metric(scorer, clip_reason, images, [r["prompt"] for r in records])]
    for k, rec in enumerate(records):
        rec["metrics"] = {m.name: m.values[k] for m in results
                          if m.absent is None and m.values[k] is not None}
    grid_image = grid(images)
    from .images import save_png

    save_png(grid_image, out / GRID_FILE, {"glidectl": json.dumps(
        {"version": __version__, "prompts": prompts, **settings.fingerprint()}, sort_keys=True)})
    metrics_s = time.perf_counter() - t_metrics
    generated = len(fresh) * settings.n
    session_timings = {
        "load_s": load_s, **{f"{k}_s": v for k, v in timings.items()}, "generate_s": gen_s,
        "metrics_s": metrics_s, "total_s": time.perf_counter() - t_start,
        "images_per_s": generated / gen_s if generated and gen_s > 0 else None,
    }
    sessions.append({"started": started, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                     "resumed": options.resume, "generated": generated,
                     "timings": session_timings})
    meta = {
        **header, "status": "complete",
        "counts": {"prompts": len(prompts), "images": total, "generated": generated,
                   "kept": total - generated},
        "metrics": {m.name: m.summary() for m in results},
        "images": records, "grid": GRID_FILE, "timings": session_timings, "sessions": sessions,
    }
    notes = []
    if options.wandb_project:
        meta["wandb_run_id"] = log_wandb(options.wandb_project, options.wandb_entity,
                                         options.wandb_mode, out, meta, images, grid_image)
        notes.append(f"W&B run {meta['wandb_run_id']} logged to project "
                     f"{options.wandb_project!r}.")
    write_json(out / META_FILE, meta)
    return EvalReport(out, meta, notes)
