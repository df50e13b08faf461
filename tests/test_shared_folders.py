"""Several glidectl processes on one folder: a run read while it trains and prunes, two
evals into one --out, ... The second process works on whole files or refuses in one line;
the first is never harmed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_configs import tiny_base_weights

from glidectl import runs
from glidectl.pipeline import file_sha256
from glidectl.training.checkpointing import CheckpointManager


def commit_step(run: Path, step: int, keep_last: int = 0) -> Path:
    """Step ``step`` of a run, committed (and older steps pruned) as training does; each
    step's weights file has its own bytes."""

    def write(tmp: Path) -> None:
        tiny_base_weights(tmp / runs.EMA_FILE, metadata={"step": str(step)})
        runs.state_dir(tmp).mkdir()

    return CheckpointManager(run / runs.CHECKPOINTS_DIR, keep_last).save(step, write)


def test_a_run_pruned_after_its_model_loaded_records_the_loaded_file(tmp_path):
    """The checkpoint a pipeline loaded from a run folder is pruned by the training before
    anything asks for its sha256 (sample asks before its first image): the record holds
    the loaded file's hash, not a FileNotFoundError."""
    from glidectl.pipeline import GlidePipeline

    run = tmp_path / "run"
    loaded = commit_step(run, 1) / runs.EMA_FILE
    sha = file_sha256(loaded)
    pipe = GlidePipeline.from_specs(str(run), None, device="cpu", precision="fp32")
    commit_step(run, 2, keep_last=1)
    assert not loaded.exists()
    info = pipe.models_info()["base"]
    assert (info["path"], info["sha256"]) == (str(loaded), sha)


def test_a_checkpoint_pruned_while_it_is_read_is_read_again_from_the_newest(tmp_path):
    """Training commits step 2 and prunes step 1 while step 1 is being read: what was read
    is dropped and the run resolved again, so every read is of one whole file."""
    from glidectl.glide.loading import read_resolved

    run = tmp_path / "run"
    commit_step(run, 1)
    seen = []

    def read(path: Path) -> str:
        seen.append(path)
        if len(seen) == 1:
            commit_step(run, 2, keep_last=1)  # the training, mid-read
        return file_sha256(path)

    path, sha = read_resolved(run, read)
    step2 = run / "checkpoints" / "step-000002" / runs.EMA_FILE
    assert seen == [run / "checkpoints" / "step-000001" / runs.EMA_FILE, step2]
    assert (path, sha) == (step2, file_sha256(step2))


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "GLIDECTL_LOAD_PLUGINS": ""}


@contextmanager
def paused(proc: subprocess.Popen) -> Iterator[None]:
    """``proc`` stopped (SIGSTOP) for the block: what it is doing stays half-done."""
    proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGCONT)


@contextmanager
def glidectl_process(args: list, **popen: object) -> Iterator[subprocess.Popen]:
    """``python -m glidectl ARGS`` started for the block and killed if it is still running
    when the block ends (a failed assertion leaves no process behind)."""
    proc = subprocess.Popen([sys.executable, "-m", "glidectl", *map(str, args)], env=_env(),
                            text=True, **popen)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def while_training(args: list, commit: Callable[[int], object]
                   ) -> tuple[subprocess.CompletedProcess, int]:
    """``glidectl ARGS`` run while ``commit(step)`` checkpoints a run every half second, as
    its training would (step 2 on); the result and the last step committed."""
    with glidectl_process(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        step, deadline = 1, time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)  # the training's pace, not a wait for the other process
            step += 1
            commit(step)
        out, err = proc.communicate(timeout=30)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), step


def test_export_of_a_run_that_trains_and_prunes(tmp_path):
    """`glidectl export RUN` while the run checkpoints each half second, keeping one: the
    weights and their metadata come from one checkpoint, not "does not exist" (exit 2) for
    the one pruned while torch was imported."""
    from glidectl.glide.checkpoints import read_metadata

    run = tmp_path / "run"
    commit_step(run, 1)
    export, steps = while_training(["export", run, "-o", tmp_path / "out.safetensors"],
                                   lambda step: commit_step(run, step, keep_last=1))
    assert export.returncode == 0, export.stderr
    source = Path(export.stdout.split("(from ")[1].rstrip(")\n"))
    assert source.parent.parent == run / "checkpoints" and steps > 2
    assert read_metadata(tmp_path / "out.safetensors")["step"] == str(runs.step_of(
        source.parent))


def test_fit_steps_records_the_weights_it_fitted_not_the_run_s_newer_ones(tmp_path):
    """The run fit-steps fits checkpoints again (and prunes the step it loaded) during the
    fit: the schedule file records the sha256 of the weights it was fitted to."""
    run = tmp_path / "run"
    fitted = file_sha256(commit_step(run, 1) / runs.EMA_FILE)
    out = tmp_path / "fit.json"
    args = ["fit-steps", run, "--prompt", "a red circle", "--calls", "3", "--images", "1",
            "--check-images", "0", "--reference-steps", "12", "--rounds", "1", "--out", out]
    with glidectl_process(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        for line in proc.stderr:  # printed once the model is loaded
            if line.startswith("reference:"):
                break
        with paused(proc):
            newer = file_sha256(commit_step(run, 2, keep_last=1) / runs.EMA_FILE)
        _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert newer != fitted
    assert json.loads(out.read_text())["model_sha256"] == fitted


# --------------------------------------------------------------------------- eval
def _wait_for(found: Callable[[], bool], proc: subprocess.Popen, what: str) -> None:
    """Poll until ``found()``; the process must still be running."""
    deadline = time.monotonic() + 120
    while not found():
        assert proc.poll() is None, f"it ended before {what}"
        assert time.monotonic() < deadline, f"no {what} in 120 s"
        time.sleep(0.01)


def test_an_eval_into_a_folder_another_eval_writes_is_one_line(tmp_path, capsys):
    """A second eval (--resume, --skip-existing or a fresh one) into the --out a first eval
    is writing stops in one line naming the folder, before any model loads; the first goes
    on to a complete run whose metadata keeps its session."""
    from test_sample_cmd import in_process

    base = tiny_base_weights(tmp_path / "base.safetensors")
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"a red circle number {i}\n" for i in range(6)))
    out = tmp_path / "o"
    args = ["eval", prompts, "--base", base, "--upsampler", "none", "--steps", "2", "-b", "1",
            "--device", "cpu", "--out", out]
    with glidectl_process(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as first:
        _wait_for(lambda: any(out.glob("*.png")), first, "its first image")
        with paused(first):
            for extra in (["--resume"], ["--skip-existing"], []):
                second = in_process(capsys, *args, *extra)
                assert second.returncode == 2, second
                assert second.stderr == (
                    f"Error: --out {str(out)!r} is being written by another glidectl eval; "
                    "wait for it to finish (or stop it and continue it with --resume), or "
                    "pass another --out.\n")
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["status"] == "complete" and meta["counts"]["generated"] == 6
    assert [s["generated"] for s in meta["sessions"]] == [6]
    # once it is done, the folder is free again
    again = in_process(capsys, *args, "--resume")
    assert again.returncode == 0, again.stderr


def test_an_eval_whose_numbered_folder_another_took_meanwhile_takes_the_next(tmp_path):
    """Two evals without --out both pick eval/0001 before either writes: the one that
    creates it second goes to eval/0002, instead of mixing its images into the other's."""
    from glidectl.eval_outputs import LOCK_FILE, claim_folder, next_eval_dir

    root = tmp_path / "eval"
    picked = next_eval_dir(root)  # what both saw
    with claim_folder(picked, numbered=True) as first:
        with claim_folder(picked, numbered=True) as second:
            assert (first, second) == (root / "0001", root / "0002")
            (second / "metadata.json").write_text("{}")
    assert sorted(p.name for p in root.iterdir()) == ["0001", "0002"]
    # a folder the run made and left empty (it failed before writing) is not left behind
    with pytest.raises(RuntimeError), claim_folder(root / "0003", numbered=True):
        raise RuntimeError("a model that does not load")
    assert not (root / "0003").exists()
    assert (root / "0001" / LOCK_FILE).is_file()  # a run that ended as it should keeps it


# --------------------------------------------------------------------------- web UI
def test_the_ui_samples_from_the_checkpoint_a_run_names_now(tmp_path):
    """A UI started on a runs folder while a run trains: each click samples from the
    run's newest checkpoint (not the one of the first click, for as long as the UI runs),
    says which file it was, and keeps one copy of the run's model in memory."""
    from glidectl.ui.backend import UiBackend

    runs_dir = tmp_path / "runs"
    commit_step(runs_dir / "t", 1)
    backend = UiBackend(runs_dir, device="cpu", output_dir=tmp_path / "out")
    click = dict(n=1, sampler="euler", base_steps=1, base="t/", seed=1)
    first = backend.generate("a red circle", **click)
    again = backend.generate("a red circle", **click)
    step1 = runs_dir / "t" / "checkpoints" / "step-000001" / runs.EMA_FILE

    def shown(path: Path) -> str:
        return path.relative_to(runs_dir).as_posix()

    # named relative to the models folder (no server paths in PNGs)
    assert first.settings["base_file"] == again.settings["base_file"] == shown(step1)
    assert backend.cache.loads == 1
    step2 = commit_step(runs_dir / "t", 2, keep_last=1) / runs.EMA_FILE  # the training
    later = backend.generate("a red circle", **click)
    assert later.settings["base_file"] == shown(step2)
    assert backend.cache.loads == 2 and len(backend.cache) == 1
    params = json.loads(Image.open(later.files[0]).text["parameters"])
    assert params["base_file"] == shown(step2)


# --------------------------------------------------------------------------- LoRA
def test_sample_with_the_adapter_of_a_lora_run_that_trains_and_prunes(tmp_path):
    """`sample --lora RUN` while that LoRA run checkpoints (here every half second, keeping
    one): the adapter, its config, weights and metadata, is read from one checkpoint, not
    half from one pruned meanwhile ("is not a readable LoRA config", exit 2)."""
    import torch

    from glidectl.config import LoraConfig
    from glidectl.glide import load_model
    from glidectl.lora import inject_lora, save_adapter

    base = tiny_base_weights(tmp_path / "base.safetensors")
    model = load_model(base)
    cfg = LoraConfig(targets=["attention"], rank=2, alpha=2.0)
    names = inject_lora(model, cfg)
    checkpoints = CheckpointManager(tmp_path / "lora" / runs.CHECKPOINTS_DIR, keep_last=1)

    def commit(step: int) -> None:  # what the LoRA training does at each checkpoint
        def write(tmp: Path) -> None:
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if ".lora_B." in name:
                        p.normal_(0.0, 0.05)
            save_adapter(model, tmp / runs.EMA_ADAPTER_DIR, cfg=cfg, target_names=names,
                         base_spec=str(base), step=step)
            runs.state_dir(tmp).mkdir()

        checkpoints.save(step, write)

    commit(1)
    sample, steps = while_training(
        ["sample", "a red circle", "--base", base, "--lora", tmp_path / "lora", "--upsampler",
         "none", "--steps", "1", "-q", "--out", tmp_path / "out"], commit)
    assert sample.returncode == 0, sample.stderr
    assert sample.stdout.strip() == str(tmp_path / "out" / "00000.png") and steps > 2


# --------------------------------------------------------------------------- schedule files
def _schedule_file(path: Path, second: float) -> Path:
    """A schedule file as fit-steps writes it (3 steps), written whole and renamed in."""
    from glidectl.atomic import write_json

    return write_json(path, {"format": "glidectl.schedule/1", "sampler": "unipc",
                             "positions": {"3": [0.0, second, 0.95]}})


def test_a_schedule_file_refitted_during_a_sample_run_changes_none_of_its_images(tmp_path):
    """fit-steps replaces the file a `sample` run is sampling on after its first batch: every
    image of the run comes from the file as it was when the run began."""
    from glidectl.pipeline import GlidePipeline

    base = tiny_base_weights(tmp_path / "base.safetensors")
    pipe = GlidePipeline.from_specs(str(base), None, device="cpu", precision="fp32")
    schedule = _schedule_file(tmp_path / "schedule.json", 0.3)
    refitted = _schedule_file(tmp_path / "refit.json", 0.6)

    def images(**kw) -> list:
        return [np.asarray(im) for im in pipe.generate(
            "a red circle", n=2, batch_size=1, seed=3, sampler="unipc", steps=3,
            schedule=str(schedule), **kw)]

    def refit(batch: list) -> None:  # what fit-steps does when it finishes
        if refitted.exists():
            os.replace(refitted, schedule)

    before = images()
    during = images(on_images=refit)
    after = images()
    assert all(np.array_equal(a, b) for a, b in zip(during, before, strict=True))
    assert not np.array_equal(after[1], before[1])  # the refit makes other pictures


def test_a_schedule_file_refitted_during_an_eval_changes_none_of_its_images(tmp_path):
    """The same for `eval`, whose metadata.json records the file's sha256: the images and
    the hash are of the file as the run began."""
    from glidectl.eval_settings import EvalSettings, Stage
    from glidectl.evaluation import RunOptions, run_eval
    from glidectl.pipeline import GlidePipeline

    base = tiny_base_weights(tmp_path / "base.safetensors")
    pipe = GlidePipeline.from_specs(str(base), None, device="cpu", precision="fp32")
    schedule = _schedule_file(tmp_path / "schedule.json", 0.3)
    sha = file_sha256(schedule)
    refitted = _schedule_file(tmp_path / "refit.json", 0.6)
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle\na blue square\n")
    settings = EvalSettings(base=str(base), upsampler=None, batch_size=1,
                            base_stage=Stage("unipc", 3, 3.0, str(schedule)))

    def refit(kind: str, **info) -> None:  # fit-steps finishes after the first image
        if kind == "images" and refitted.exists():
            os.replace(refitted, schedule)

    before = run_eval(prompts, settings, RunOptions(out=tmp_path / "a", device="cpu"),
                      pipeline=pipe)
    during = run_eval(prompts, settings, RunOptions(out=tmp_path / "b", device="cpu"),
                      on_event=refit, pipeline=pipe)
    assert during.metadata["schedule_sha256"] == before.metadata["schedule_sha256"] == sha
    for name in ("000_a-red-circle.png", "001_a-blue-square.png"):
        assert np.array_equal(np.asarray(Image.open(tmp_path / "a" / name)),
                              np.asarray(Image.open(tmp_path / "b" / name))), name
