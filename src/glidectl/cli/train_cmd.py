"""``glidectl train`` (base models), ``glidectl upsample`` (upsamplers) and ``glidectl export``.

Thin: parse flags, resolve the config (defaults < file < --set < flags), call the engine.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import typer

from ..errors import GlidectlError

BASE_KINDS = ("base", "base-inpaint")
UPSAMPLE_KINDS = ("upsample", "upsample-inpaint")


# The run flags shared by `glidectl train`, `glidectl upsample` and `glidectl lora`.
CONFIG = typer.Option(
    None, "--config", "-c", help="A glide.toml file (optional with --resume RUN)."
)
SET = typer.Option(None, "--set", "-s", help="Override a key: section.key=value (repeatable).")
STEPS = typer.Option(None, "--steps", help="Optimizer steps (global).")
OUTPUT_DIR = typer.Option(None, "--output-dir", "-o", help="Folder holding run directories.")
NAME = typer.Option(None, "--name", help="Run name (runs/<name>).")
RESUME = typer.Option(None, "--resume", help="'latest' or a run / checkpoint folder to resume.")
PRECISION = typer.Option(
    None, "--precision", help="auto (accelerate launch's --mixed_precision bf16/fp16 if given, "
    "else bf16 where the device computes it natively, else fp32), fp32, bf16 or fp16; "
    "trainable weights stay fp32."
)
LIVE = typer.Option(
    None, "--live/--no-live", help="Rich live display (default: when stdout is a terminal)."
)


def resolve_config(
    config: Path | None, sets: list[str] | None, *, steps: int | None = None,
    output_dir: Path | None = None, name: str | None = None, precision: str | None = None,
    resume: str | None = None, default_kind: str | None = None,
):
    """The run's config: ``--config`` (or, when resuming a run, its saved config.toml),
    then ``--set``, then the dedicated flags; a ``train.epochs`` that ``--steps`` overrides
    is named in a warning, as ``train.steps`` beside ``train.epochs`` is."""
    from ..config import load_config, merge, override
    from ..unused_keys import warn

    own: list[str] = []  # the run's own config: its relative paths lead from where it began
    if config is None and resume and resume != "latest":
        from ..training.checkpointing import resolve_checkpoint
        from ..training.run_dir import run_of_resume, run_paths

        saved = run_of_resume(resume).config  # the run's lock is not held here: moves nothing
        if not saved.is_file():
            resolve_checkpoint(resume)  # says so when it is no checkpoint at all
            raise GlidectlError(f"The run's {str(saved)!r} is missing, so --resume cannot know "
                                "its settings; pass --config FILE with the run's config.")
        config, own = saved, run_paths(saved.parent)
    if config is None and resume == "latest":
        raise GlidectlError(_latest_without_config())
    if config is None:
        raise GlidectlError("No config: pass --config FILE (see examples/glide.toml).")
    flags = own + list(sets or [])
    if output_dir is not None:
        flags.append(override("train.output_dir", str(output_dir)))
    if name is not None:
        flags.append(override("train.name", name))
    if precision is not None:
        from ..devices import check_precision

        check_precision(precision)  # named as the flag, not as a --set
        flags.append(override("train.precision", precision))
    cfg = load_config(config, flags)
    from ..training.run_dir import check_beside_config

    check_beside_config(cfg, config)  # a relative data.source meant from the config's folder
    if steps is not None:
        if cfg.train.epochs > 0:
            warn(f"train.epochs is ignored: --steps {steps} decides how long the run trains "
                 f"(leave out --steps to train by epochs, train.epochs = {cfg.train.epochs}).")
        merge(cfg, {"train": {"steps": steps, "epochs": 0}}, "--steps")
    return cfg


def _latest_without_config() -> str:
    """The sentence for ``--resume latest`` without ``--config``: the config's train.name
    and train.output_dir pick that run; a run folder resumes with its own config.toml
    (the newest checkpointed run under the default output folder, when there is one)."""
    from ..config import TrainConfig
    from ..training.run_dir import newest_checkpointed_run

    found = newest_checkpointed_run(Path(TrainConfig().output_dir))
    folder = shlex.quote(str(found)) if found is not None else "runs/NAME"
    return ("--resume latest needs --config FILE (its train.name and train.output_dir pick "
            "the run); or resume a run by its folder, which reads the run's own config.toml: "
            f"--resume {folder}.")


def _run(kinds: tuple[str, ...], config, set_, steps, output_dir, name, resume, precision,
         live) -> None:
    cfg = resolve_config(config, set_, steps=steps, output_dir=output_dir, name=name,
                         precision=precision, resume=resume)
    from ..training import train  # names the keys the run ignores first

    result = train(cfg, resume=resume, kinds=kinds, live=live)
    if result.interrupted:
        command = "train" if kinds == BASE_KINDS else "upsample"
        exit_interrupted(result, f"glidectl {command} --resume")


def exit_interrupted(result, resume: str) -> None:
    """Exit with 130 after Ctrl-C, naming the checkpoint; under torchrun or accelerate only
    rank 0 says so (every process returns the same result)."""
    if os.environ.get("RANK", "0") == "0":
        from ..training.run_dir import launched, machines, relaunch

        # a run of N processes resumes under N (one is refused), on as many machines
        command = relaunch(f"{resume} {shlex.quote(str(result.run_dir))}", launched(),
                           machines(), os.environ.get("MASTER_ADDR"),
                           os.environ.get("MASTER_PORT"))
        typer.echo(
            f"Interrupted at step {result.step}; checkpoint {result.checkpoint}. "
            f"Resume with: {command}", err=True
        )
    raise typer.Exit(130)


def register(app: typer.Typer) -> None:
    def options_for(kinds: tuple[str, ...]):
        def command(
            config: Path | None = CONFIG,
            set_: list[str] | None = SET,
            steps: int | None = STEPS,
            output_dir: Path | None = OUTPUT_DIR,
            name: str | None = NAME,
            resume: str | None = RESUME,
            precision: str | None = PRECISION,
            live: bool | None = LIVE,
        ) -> None:
            _run(kinds, config, set_, steps, output_dir, name, resume, precision, live)

        return command

    train_cmd = options_for(BASE_KINDS)
    train_cmd.__doc__ = (
        "Train or finetune a 64 px base (or base-inpaint) GLIDE model.\n\n"
        "Precedence: defaults < --config < --set < flags. Ctrl-C saves a checkpoint; "
        "--resume latest continues exactly where it stopped. A base-inpaint model's "
        "preview rows show the masked input, the output and the reference."
    )
    app.command("train")(train_cmd)

    upsample_cmd = options_for(UPSAMPLE_KINDS)
    upsample_cmd.__doc__ = (
        "Train or finetune a GLIDE upsampler (64 → 256 px, or its inpainting twin).\n\n"
        "Same flags and run directory as `glidectl train`; each preview row shows the "
        "low-res input, the output and the reference (upsample-inpaint: the masked input "
        "after the low-res one)."
    )
    app.command("upsample")(upsample_cmd)

    @app.command("export")
    def export(
        run: Path = typer.Argument(..., help="A run folder (runs/<name>) or a checkpoint folder."),
        output: Path = typer.Option(..., "--output", "--out", "-o",
                                    help="The .safetensors file to write."),
        ema: bool | None = typer.Option(
            None, "--ema/--no-ema", help="EMA weights (default when the run has them) or raw."
        ),
        force: bool = typer.Option(False, "--force", help="Overwrite --output if it exists."),
    ) -> None:
        """Write one run's latest weights (EMA by default) as a single .safetensors file."""
        from ..training.export import export_weights

        source, written = export_weights(run, output, ema, force=force)
        typer.echo(f"{written} (from {source})")
