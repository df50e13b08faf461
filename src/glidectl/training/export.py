"""``glidectl export``: one run's weights (EMA or raw) as a single .safetensors file."""

from __future__ import annotations

import shlex
from pathlib import Path

from .. import runs
from ..atomic import remove_stale_temps
from ..errors import GlidectlError, from_here


def find_step_dir(run: Path) -> Path:
    """A run dir, its checkpoints/ dir or one step dir → the step dir to export."""
    run = Path(run)
    if not run.exists():
        raise GlidectlError(runs.missing_step(run) or f"Run {str(run)!r}{from_here(run)} does "
                            "not exist; pass a runs/<name> folder.")
    if runs.step_weights(run) is not None:
        return run
    found = runs.latest_under(run)
    if found is not None:
        return found
    raise GlidectlError(runs.no_checkpoint_yet(run) or
        f"{str(run)!r} has no checkpoints (checkpoints/step-NNNNNN); train it first or pass "
        "a checkpoint folder."
    )


def _file_given(path: Path, output: Path) -> str:
    """The sentence for a file given where export takes a run: a checkpoint's weights file
    names its checkpoint folder; another weights file is full weights already."""
    step_dir = path.parent
    if runs.is_step_dir(step_dir) and path.name in (runs.EMA_FILE, runs.MODEL_FILE):
        flag = ["--no-ema"] if path.name == runs.MODEL_FILE else []
        line = shlex.join(["glidectl", "export", str(step_dir), *flag, "-o", str(output)])
        return (f"{str(path)!r} is a checkpoint's weights file; export takes its checkpoint "
                f"or run folder: {line}")
    if path.suffix in (".safetensors", ".pt"):
        return (f"{str(path)!r} is a weights file already (export writes one from a run); "
                f"use it as it is, e.g. glidectl sample --base {shlex.quote(str(path))}, or "
                "pass a runs/<name> or checkpoint folder.")
    return f"{str(path)!r} is a file; pass a runs/<name> or checkpoint folder."


def _source(run: Path, ema: bool | None, output: Path) -> Path:
    """The weights file of ``run``'s step folder to export (EMA by default when there is
    one; ``RUN/checkpoints/best`` or ``latest``: the step it names); one-sentence errors
    when it has none of the kind asked for."""
    run = runs.followed_pointer(run)
    if run.is_file() and (run.parent / runs.ADAPTER_CONFIG).is_file():
        run = run.parent  # an adapter's weights file: its folder
    if (run / runs.ADAPTER_CONFIG).is_file():
        raise GlidectlError(f"{str(run)!r} is a LoRA adapter, not full weights; write a full "
                            f"checkpoint with: {_merge_line(run, output)}")
    if run.is_file():
        raise GlidectlError(_file_given(run, output))
    step_dir = find_step_dir(run)
    if runs.step_weights(step_dir) is None and runs.step_adapter(step_dir) is not None:
        raise GlidectlError(_lora_step(run, step_dir, ema, output))
    ema_file, raw_file = step_dir / runs.EMA_FILE, step_dir / runs.MODEL_FILE
    if ema is True and not ema_file.is_file():
        decay = runs.run_setting(runs.run_of_step_dir(step_dir), "train", "ema_decay")
        if not decay:  # 0, or a run folder without its config.toml
            raise GlidectlError(f"{str(step_dir)!r} has no ema.safetensors (the run trained "
                                "with train.ema_decay = 0); export with --no-ema.")
        raise GlidectlError(f"{str(step_dir)!r} has no ema.safetensors, though the run keeps "
                            f"an EMA (train.ema_decay = {decay}): the file was deleted; pick "
                            "another checkpoint, or export its training weights with --no-ema.")
    source = ema_file if (ema is not False and ema_file.is_file()) else raw_file
    if not source.is_file():
        raise GlidectlError(f"{str(step_dir)!r} has no {source.name}; pick another checkpoint.")
    return source


def _lora_step(run: Path, step_dir: Path, ema: bool | None, output: Path) -> str:
    """The sentence for a LoRA run's checkpoint given to export: the ``lora merge`` line
    that writes its full weights (with --no-ema, of its raw adapter, not the EMA one)."""
    raw = runs.step_adapter(step_dir, ema=False)
    if ema is False and raw is not None:
        return (f"{str(step_dir)!r} holds LoRA adapters, not full weights; write a full "
                f"checkpoint of its raw (non-EMA) adapter with: {_merge_line(raw, output)}")
    return (f"{str(step_dir)!r} holds LoRA adapters, not full weights; write a full "
            f"checkpoint with: {_merge_line(run, output)}")


def _merge_line(adapter: Path, output: Path) -> str:
    return shlex.join(["glidectl", "lora", "merge", str(adapter), "-o", str(output)])


def _provenance(source: Path, recorded: dict[str, str]) -> dict[str, str]:
    """Where exported weights came from, the same however the run was named on the command
    line (so one checkpoint exports to the same bytes, the same sha256, from any folder):
    the run's name and step as the checkpoint records them (else from its folders), and the
    file within the run."""
    step_dir = source.resolve().parent
    step = recorded.get("step") or str(runs.step_of(step_dir) or "")
    run = recorded.get("run") or (runs.run_of_step_dir(step_dir).name if step else "")
    folder = f"{step_dir.parent.name}/{step_dir.name}" if runs.set_aside(step_dir) \
        else step_dir.name
    within = f"{runs.CHECKPOINTS_DIR}/{folder}/{source.name}" if step else source.name
    return {"run": run, "source": within, "step": step,
            "ema": str(source.name == runs.EMA_FILE).lower()}


def export_weights(run: Path, output: Path, ema: bool | None = None,
                   force: bool = False) -> tuple[Path, Path]:
    """Copy a checkpoint's weights (EMA by default when there are any) to ``output``.

    Returns (source file, written file). The options, the run's name, the step and the file
    within the run travel in the metadata (:func:`_provenance`).
    """
    output = Path(output)
    _source(Path(run), ema, output)  # what is wrong with the run: said first
    if output.suffix != ".safetensors":
        raise GlidectlError(f"Output {str(output)!r} must end in .safetensors.")
    from ..lora.apply import check_output, save_new
    from ..out_dir import check_out_dir

    # a folder, a path in (or a link into) a checkpoint folder, whose files the run's
    # pruning deletes, or an existing file without --force: refused as `lora merge` does
    check_output(output, force, what="export", example="model.safetensors")

    check_out_dir(output.parent, "--output folder")
    remove_stale_temps(output.parent, output.name)  # what a killed export of it left
    from ..glide import read_weights, save_weights
    from ..glide.checkpoints import read_metadata
    from ..glide.loading import read_resolved
    from ..pipeline import RECOMMENDED_KEY

    # weights and metadata of one file, however the run's training prunes meanwhile
    source, (state, options, recorded) = read_resolved(
        run, lambda path: (*read_weights(path), read_metadata(path)),
        resolve=lambda path: _source(path, ema, output))
    meta = _provenance(source, recorded)
    if RECOMMENDED_KEY in recorded:  # sampling defaults travel along
        meta[RECOMMENDED_KEY] = recorded[RECOMMENDED_KEY]
    if options.super_res:  # how its inputs were made, which eval --low-res makes them by
        from ..eval_upsampler_inputs import RESAMPLE_KEY, training_resample

        meta[RESAMPLE_KEY] = training_resample(source)
    save_new(save_weights, output, force, state, output, options, meta)
    return source, output
