"""``glidectl eval PROMPTS.txt``: a numbered, reproducible folder of images, a grid and metrics."""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from .. import sampling_defaults as D
from ..config import WANDB_MODES
from ..eval_outputs import GRID_MAX
from .sample_cmd import (
    DEVICE_HELP,
    GREY_HELP,
    GUIDANCE_HELP,
    PRECISION_HELP,
    SCHEDULE_HELP,
    steps_value,
)

SAMPLER_HELP = f"Base sampler (default: the model's recommended, else {D.BASE_SAMPLER})."
STEPS_HELP = ("Base steps, or a respacing string such as fast27 with --schedule respaced "
              f"(default: the model's recommended, else {D.BASE_STEPS}).")


class _RichEvents:
    """Renders evaluation events: an overall bar (images) and one bar per sampling stage
    (``quiet``: no bars, the notes only)."""

    def __init__(self, console: Any, quiet: bool = False):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = console
        self.progress = Progress(
            TextColumn("[bold]{task.description:<9}"), BarColumn(), MofNCompleteColumn(),
            TaskProgressColumn(), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
            TimeRemainingColumn(), console=console, transient=False,
        )
        self.tasks: dict[str, Any] = {}
        self.started = False
        self.out: str | None = None
        self.quiet = quiet

    def __call__(self, kind: str, **info: Any) -> None:
        p = self.progress
        if self.quiet and kind != "note":  # where the images go, for a stop's line; no bars
            self.out = info.get("out", self.out) if kind == "start" else self.out
            return
        if kind == "start":
            self.started = True
            self.out = info.get("out")
            p.start()
            self.tasks["overall"] = p.add_task(
                "images", total=info["total"], completed=info["done"], rate="")
        elif kind == "total":  # fewer images than announced (an upsampler eval's left out)
            p.update(self.tasks["overall"], total=info["total"])
        elif kind == "stage":
            name = info["stage"]
            if name not in self.tasks:
                self.tasks[name] = p.add_task(name, total=info["total"], rate="")
            p.reset(self.tasks[name], total=info["total"])
        elif kind == "step":
            p.advance(self.tasks[info["stage"]])
        elif kind == "images":
            p.advance(self.tasks["overall"], info["count"])
            rate = info.get("rate")
            if rate:
                p.update(self.tasks["overall"], rate=f"{rate:.2f} img/s")
        elif kind == "note":
            p.console.print(info["text"], markup=False, highlight=False, soft_wrap=True)
        elif kind == "end" and self.started:
            self.started = False
            p.stop()


def _print_plan(console: Any, meta: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    plan = meta["plan"]
    table = Table("plan", "value", title=escape(f"glidectl eval --dry-run → {meta['out']}"))
    for stage, info in meta["models"].items():
        where = "on disk" if info["local"] else "not downloaded"
        text = (f"{info['spec']}  ({info['kind']}, {info['image_size']} px, "
                f"{info['parameters'] / 1e6:.1f} M parameters, "
                f"{info['weight_bytes'] / 2**20:.0f} MiB, {where})")
        table.add_row(f"{stage} model", escape(text))
    s = meta["settings"]
    if s["loras"]:
        table.add_row("LoRA", escape(", ".join(s["loras"])))
    table.add_row("base sampling", escape(_stage_text(s["base_stage"])))
    if s["upsampler"]:
        table.add_row("upsampler sampling", escape(_stage_text(s["upsample_stage"])))
    table.add_row("precision", s["precision"])
    table.add_row("prompts", f"{plan['prompts']} ({plan['prompts_done']} already done)")
    table.add_row("images", f"{plan['images']} ({plan['n']} per prompt"
                  + (f", best of {s['rerank']} by CLIP" if s["rerank"] else "") + ")")
    table.add_row("batches", f"{plan['batches_pending']} of {plan['batches']} to run "
                  f"(batch size {s['batch_size']})")
    for stage, calls in plan["model_calls"].items():
        table.add_row(f"{stage} model calls", f"{calls} ({plan['flops'][stage] / 1e12:.3g} "
                      "TFLOP)")
    est = plan.get("estimated_s")
    table.add_row("estimated time", f"{est:.1f} s ({plan['estimate_basis']})" if est is not None
                  else plan["estimate_basis"])
    console.print(table)


def _stage_text(stage: dict[str, Any]) -> str:
    schedule = f" on {stage['schedule']} σ's" if stage.get("schedule") else ""
    steps = stage["steps"] if isinstance(stage["steps"], str) else f"{stage['steps']} steps"
    guidance = "no guidance" if stage["guidance"] is None else f"guidance {stage['guidance']}"
    return f"{stage['sampler']}, {steps}{schedule}, {guidance}"


def _print_summary(console: Any, meta: dict[str, Any], out: Path) -> None:
    from rich.markup import escape
    from rich.table import Table

    t = meta["timings"]
    table = Table("result", "value", title=escape(f"glidectl eval → {out}"))
    table.add_row("images", f"{meta['counts']['images']} ({meta['counts']['generated']} generated "
                  f"now, {meta['counts']['kept']} kept from before)")
    table.add_row("load time", f"{t['load_s']:.1f} s")
    for stage in ("base", "upsample"):
        if f"{stage}_s" in t:
            table.add_row(f"{stage} sampling", f"{t[stage + '_s']:.1f} s")
    for stage, calls in meta["model_calls"]["this_session"].items():
        table.add_row(f"{stage} model calls", f"{calls} ({meta['model_calls']['per_batch'][stage]}"
                      f" a batch of {meta['settings']['batch_size']})")
    table.add_row("total time", f"{t['total_s']:.1f} s")
    if t.get("images_per_s"):
        table.add_row("throughput", f"{t['images_per_s']:.2f} images/s")
    for name, summary in meta["metrics"].items():
        if "fid" in summary and "kid_missing" in summary:
            against = (f"{summary['fid_real']} references" if "fid_real" in summary
                       else f"the statistics in {summary['reference']}")
            value = escape(f"FID {summary['fid']:.2f} ({summary['fid_fake']} images vs "
                           f"{against}; no KID: {summary['kid_missing']})")
        elif "fid" in summary:
            value = (f"FID {summary['fid']:.2f}, KID {summary['kid']:.4f} ± "
                     f"{summary['kid_std']:.4f} ({summary['fid_fake']} images vs "
                     f"{summary['fid_real']} references"
                     + (f"; {summary['reference_unreadable']} unreadable reference files left "
                        f"out, named in metadata.json" if summary.get("reference_unreadable")
                        else "") + ")")
        elif "mean" in summary:
            value = f"{summary['mean']:.4g} (mean of {summary['count']})"
        else:
            value = escape(f"absent: {summary['absent']}")
        table.add_row(name, value)
    table.add_row("grid", escape(grid_line(meta, out)))
    console.print(table)


def grid_line(meta: dict[str, Any], out: Path) -> str:
    """Where grid.png is and, when it shows only the first prompts, which images it holds."""
    path, held = str(out / meta["grid"]), meta["grid_holds"]
    if held["images"] == held["of_images"]:
        return path
    return (f"{path} (the first {held['first_prompts']:,} prompts: {held['images']:,} of "
            f"{held['of_images']:,} images; --grid-max changes it)")


@contextmanager
def _stops_said(events: _RichEvents, out: Path | None, nothing: str,
                interrupted: Callable[[str], str], kept: Callable[[str], str]
                ) -> Iterator[None]:
    """An eval stopped in the block: Ctrl-C is exit 130 with the line ``interrupted(folder)``
    (or that no ``nothing`` was written, when its folder holds no metadata.json yet) on
    stderr, unwrapped (its resume command stays one line in a log), and a failure to write
    (a full disk) is its sentence and ``kept(folder)``: what is kept and what to do with it."""
    from ..errors import WriteError
    from ..eval_settings import META_FILE

    def written(where: str | None) -> str | None:
        return where if where is not None and (Path(where) / META_FILE).is_file() else None

    try:
        yield
    except KeyboardInterrupt:
        events("end")
        where = written(events.out or (str(out) if out is not None else None))
        typer.echo(f"Interrupted before any {nothing} was written." if where is None
                   else interrupted(where), err=True)
        raise typer.Exit(130) from None
    except WriteError as exc:  # a full disk: the images already written are kept
        where = written(events.out)
        if where is None:
            raise
        raise WriteError(f"{str(exc).rstrip('.')}; {kept(where)}.") from None
    finally:
        events("end")


def _resume_line(prompts: Path, out: Any) -> str:
    """The command that continues an interrupted eval in ``out``, quoted for a shell."""
    return shlex.join(["glidectl", "eval", str(prompts), "--resume", "--out", str(out)])


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_(
        prompts: Path | None = typer.Argument(
            None, help="Text file: one prompt a line; # comments (not with --low-res)."),
        out: Path | None = typer.Option(
            None, "--out", "-o", help="Output folder (default: the next eval/NNNN)."),
        base: str | None = typer.Option(
            None, "--base", help="Base model: openai:base (default), a weights file or a run; with "
            "--lora, the base the first base-model adapter records."),
        upsampler: str | None = typer.Option(
            None, "--upsampler", help="Upsampler model spec, 'none', or 'auto' (default: "
            "OpenAI's for OpenAI's base, else none)."),
        low_res: Path | None = typer.Option(
            None, "--low-res", help="Score the --upsampler on its own: upsample this folder's "
            "captioned images, downscaled as training does, and score them against the "
            "originals (PSNR, SSIM, and bicubic's); no PROMPTS."),
        n: int | None = typer.Option(None, "--n", "-n", help="Images per prompt (default 1)."),
        batch_size: int | None = typer.Option(
            None, "--batch-size", "-b", help="Images per model batch (default 4)."),
        seed: int | None = typer.Option(
            None, "--seed", help="Seed (default 0); image j of prompt i uses (seed, i, j)."),
        sampler: str | None = typer.Option(None, "--sampler", help=SAMPLER_HELP),
        steps: str | None = typer.Option(None, "--steps", help=STEPS_HELP),
        schedule: str | None = typer.Option(None, "--schedule", help=SCHEDULE_HELP),
        guidance: float | None = typer.Option(None, "--guidance", help=GUIDANCE_HELP),
        grey: bool | None = typer.Option(None, "--grey/--no-grey", help=GREY_HELP),
        up_sampler: str | None = typer.Option(
            None, "--upsample-sampler", "--up-sampler", help="Upsampler sampler (default ddpm)."),
        up_steps: str | None = typer.Option(
            None, "--upsample-steps", "--up-steps", help="Upsampler steps, or a respacing "
            "string on respaced steps (default: fast27 on GLIDE's respaced steps, else 27)."),
        up_schedule: str | None = typer.Option(
            None, "--upsample-schedule", "--up-schedule", help="Upsampler σ schedule "
            "(default, or auto: the upsample sampler's own; 'respaced' runs fast27-style "
            "steps)."),
        up_guidance: float | None = typer.Option(
            None, "--upsample-guidance", "--up-guidance",
            help="Upsampler guidance (default: none, as OpenAI)."),
        resume: bool = typer.Option(
            False, "--resume", help="Continue an interrupted run in --out (or the latest) with "
            "its recorded settings."),
        skip_existing: bool = typer.Option(
            False, "--skip-existing", help="Skip prompts whose images already exist in --out."),
        dry_run: bool = typer.Option(
            False, "--dry-run", help="Print the plan (models, counts, calls, FLOPs, time) and "
            "exit; loads no weights that are not on disk."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
        device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
        precision: str | None = typer.Option(
            None, "--precision", help=PRECISION_HELP + " Default auto."),
        compile_: bool = typer.Option(False, "--compile", help="torch.compile the networks."),
        vocab_dir: str | None = typer.Option(
            None, "--vocab-dir", help="GPT-2 vocabulary folder (encoder.json, vocab.bpe; "
            "--resume: the run's)."),
        lora: list[str] | None = typer.Option(
            None, "--lora", help="LoRA adapter PATH[:SCALE] (repeatable)."),
        rerank: int | None = typer.Option(
            None, "--rerank", help="Draw K candidates per prompt, keep the n best by CLIP."),
        clip_model: str = typer.Option("ViT-B-32", "--clip-model", help="open_clip model name."),
        clip_weights: str | None = typer.Option(
            None, "--clip-weights", help="Local CLIP weights file (never downloaded)."),
        fid: str | None = typer.Option(
            None, "--fid", help="FID/KID against this reference folder or data source, or FID "
            "against reference statistics (.npz with mu and sigma)."),
        fid_weights: str | None = typer.Option(
            None, "--fid-weights", help="Local Inception weights for --fid (see the README)."),
        grid_max: int | None = typer.Option(
            None, "--grid-max", help="grid.png shows the first prompts' images, at most "
            f"this many (default {GRID_MAX}; --resume: the run's; whole prompts; "
            "metadata.json's grid_holds says which).", show_default=False),
        wandb_project: str = typer.Option("", "--wandb-project", help="Log a W&B table here."),
        wandb_entity: str = typer.Option("", "--wandb-entity", help="W&B entity."),
        wandb_mode: str = typer.Option(
            "auto", "--wandb-mode", help=f"{'/'.join(WANDB_MODES)}; auto: WANDB_MODE (or "
            "`wandb offline`) when set, else online."),
    ) -> None:
        """Generate images for every prompt in PROMPTS; write PNGs, grid.png and metadata.json."""
        from rich.console import Console

        from ..devices import check_precision
        from ..errors import GlidectlError
        from ..evaluation import RunOptions, run_eval, settings_for
        from ..lora import parse_lora_spec

        if precision is not None:
            check_precision(precision)
        if low_res is None and prompts is None:
            raise GlidectlError("eval needs a PROMPTS file (one prompt a line), or --upsampler "
                                "RUN_OR_FILE --low-res DIR to score an upsampler on its own.")
        options = RunOptions(
            out=out, resume=resume, skip_existing=skip_existing, dry_run=dry_run,
            device=device, compile=compile_, clip_model=clip_model, clip_weights=clip_weights,
            vocab_dir=vocab_dir,
            fid_reference=fid, fid_weights=fid_weights,
            wandb_project=wandb_project, wandb_entity=wandb_entity, wandb_mode=wandb_mode,
            grid_max=grid_max,
        )
        flags = {
            "base": base, "upsampler": upsampler, "n": n, "batch_size": batch_size,
            "seed": seed, "rerank": rerank,
            "loras": [f"{s.path}:{s.scale}" for s in map(parse_lora_spec, lora)] if lora
            else None,
            "base_stage.sampler": sampler, "base_stage.steps": steps_value(steps),
            "base_stage.guidance": guidance,
            "base_stage.schedule": None if schedule in (None, "auto") else schedule,
            "upsample_stage.sampler": up_sampler,
            "upsample_stage.steps": steps_value(up_steps, "--upsample-steps"),
            "upsample_stage.guidance": up_guidance,
            "upsample_stage.schedule": up_schedule, "grey": grey,
        }
        if low_res is not None:
            given = [flag for flag, value in (
                ("--base", base), ("--sampler", sampler), ("--steps", steps),
                ("--schedule", schedule), ("--guidance", guidance), ("--rerank", rerank),
                ("--resume", resume or None),
                ("--skip-existing", skip_existing or None), ("--dry-run", dry_run or None),
                ("--wandb-project", wandb_project or None),
                ("--wandb-entity", wandb_entity or None),
                ("--wandb-mode", None if wandb_mode == "auto" else wandb_mode),
                ("--clip-weights", clip_weights),
                ("--clip-model", None if clip_model == "ViT-B-32" else clip_model))
                if value is not None]
            _eval_upsampler(low_res, prompts, given, flags, options, precision, quiet)
            return
        assert prompts is not None
        settings, notes = settings_for(prompts, flags, options, precision)
        console = Console()
        events = _RichEvents(console, quiet)
        # the folder is named: without --out, --resume would pick the newest one
        with _stops_said(events, out, nothing="new image",
                         interrupted=lambda where: "Interrupted; finished prompts are kept. "
                         f"Continue with `{_resume_line(prompts, where)}`.",
                         kept=lambda where: "the finished prompts are kept: continue with "
                         f"`{_resume_line(prompts, where)}`"):
            # the notes come once the run's inputs are checked and its models loaded
            report = run_eval(prompts, settings, options, on_event=events, notes=notes)
        if report.dry_run:
            _print_plan(console, report.metadata)
            return
        for note in report.notes:
            console.print(note, markup=False, highlight=False)
        _print_summary(console, report.metadata, report.out)


def _eval_upsampler(low_res: Path, prompts: Path | None, given: list[str],
                    flags: dict[str, Any], options: Any, precision: str | None,
                    quiet: bool = False) -> None:
    """``glidectl eval --upsampler SPEC --low-res DIR``: :mod:`glidectl.eval_upsampler`."""
    from rich.console import Console

    from ..eval_upsampler import run_upsampler_eval
    from ..eval_upsampler_inputs import refuse_flags, upsampler_settings

    refuse_flags(given, prompts, flags["upsampler"])
    keep = ("upsampler", "n", "batch_size", "seed", "grey", "loras")
    settings, notes = upsampler_settings(
        {k: v for k, v in flags.items() if k in keep or k.startswith("upsample_stage.")},
        options, precision)
    console = Console()
    events = _RichEvents(console, quiet)

    def kept(where: str) -> str:
        return (f"the finished images are kept in {where!r}, but an upsampler eval does not "
                "resume: run it again into a new or empty --out")

    with _stops_said(events, options.out, nothing="image", kept=kept,
                     interrupted=lambda where: f"Interrupted; {kept(where)}."):
        report = run_upsampler_eval(low_res, settings, options, on_event=events, notes=notes)
    _print_summary(console, report.metadata, report.out)
