"""Trackers through accelerate: TensorBoard read back from its event files; bad names refused."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from glidectl.errors import GlidectlError
from glidectl.training.engine import Trainer


def _events(run_root):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folders = {p.parent for p in (run_root / "trackers").rglob("events.out.tfevents.*")}
    folders = [f for f in folders if f.name == "glidectl"]  # not accelerate's hparams subfolder
    assert len(folders) == 1, folders
    acc = EventAccumulator(str(folders[0]), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


def test_tensorboard_gets_scalars_and_preview_grids_inside_the_run(tiny):
    cfg = tiny(train=dict(steps=2), log=dict(trackers=["tensorboard"]),
               preview=dict(every=2, steps=2, prompts=["a red circle", "a blue square"]))
    result = Trainer(cfg, quiet=True).run()
    events = _events(result.run_dir)
    loss = events.Scalars("loss")
    assert [e.step for e in loss] == [1, 2]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in result.history])
    assert [e.step for e in events.Scalars("lr")] == [1, 2]
    images = events.Images("preview")
    assert [e.step for e in images] == [0, 2]
    logged = Image.open(io.BytesIO(images[-1].encoded_image_string))
    grid = Image.open(result.run_dir / "previews" / "step-000002.png")
    assert logged.size == grid.size
    assert logged.convert("RGB").tobytes() == grid.convert("RGB").tobytes()


def test_unknown_or_missing_trackers_are_one_line_errors(tiny, monkeypatch):
    with pytest.raises(GlidectlError, match="unknown tracker 'tensorbored'"):
        Trainer(tiny(log=dict(trackers=["tensorbored"])), quiet=True)
    import accelerate.tracking

    monkeypatch.setattr(accelerate.tracking, "get_available_trackers", lambda: [])
    with pytest.raises(GlidectlError, match="pip install mlflow"):
        Trainer(tiny(log=dict(trackers=["mlflow"])), quiet=True)


def test_wandb_missing_under_log_wandb_project_names_that_key(tiny, monkeypatch):
    """`log.wandb_project` alone turns W&B on; without wandb installed the line told the user
    to remove wandb from log.trackers, which did not name it."""
    import accelerate.tracking

    monkeypatch.setattr(accelerate.tracking, "get_available_trackers", lambda: ["tensorboard"])
    with pytest.raises(GlidectlError, match=r"^log.wandb_project 'proj' turns on the wandb "
                       r"tracker, which is not installed; pip install wandb or clear "
                       r"log.wandb_project\.$"):
        Trainer(tiny(log=dict(trackers=["tensorboard"], wandb_project="proj")), quiet=True)


def test_a_tracker_that_fails_mid_run_is_said_once_and_the_run_goes_on(tiny, monkeypatch):
    """A tracker is a side output: its service gone (W&B's wandb-core killed) must not cost
    the run its steps; it is left out with one warning, and checkpoints, metrics.jsonl and the
    end of the run come as without it."""
    from accelerate.tracking import TensorBoardTracker

    from glidectl.training import display, metrics

    real = TensorBoardTracker.log
    calls = []

    def failing(self, values, step=None, **kwargs):
        calls.append(step)
        if step >= 2:
            raise ConnectionResetError("Connection lost")
        return real(self, values, step=step, **kwargs)

    said = []
    monkeypatch.setattr(TensorBoardTracker, "log", failing)
    monkeypatch.setattr(display.Display, "message",
                        lambda self, text: said.append(text))
    cfg = tiny(train=dict(steps=4), log=dict(trackers=["tensorboard"]),
               checkpoint=dict(every=2), preview=dict(every=2, steps=2,
                                                      prompts=["a red circle"]))
    result = Trainer(cfg, quiet=True).run()
    assert result.step == 4 and not result.interrupted
    assert sorted(p.name for p in (result.run_dir / "checkpoints").glob("step-*")) == [
        "step-000002", "step-000004"]
    assert [r["step"] for r in metrics.read_metrics(result.run_dir / "metrics.jsonl")
            if "loss" in r] == [1, 2, 3, 4]
    assert calls == [1, 2]  # left out after its failure
    warned = [t for t in said if "tracker failed" in t]
    assert warned == ["Warning: the tensorboard tracker failed at step 2 (Connection lost); "
                      "the run goes on without it (metrics.jsonl keeps every number)."]


def next_second() -> None:
    """Wait for the next second, as a resume in a new process comes later: TensorBoard reads
    a folder's event files in name order, named by the second and then a counter of the
    process ('….10' sorts before '….9'), so two tries in one second could be read the wrong
    way round in a test worker past nine writers."""
    import time

    time.sleep(1.05 - time.time() % 1)


def test_a_resume_from_an_earlier_checkpoint_leaves_one_branch_in_tensorboard(tiny):
    """metrics.jsonl drops what the run logged past the checkpoint a resume starts from;
    TensorBoard is told to drop it too (purge_step), so its charts are the same numbers."""
    cfg = tiny(train=dict(steps=4), log=dict(trackers=["tensorboard"]), checkpoint=dict(every=2))
    first = Trainer(cfg, quiet=True).run()
    step2 = first.run_dir / "checkpoints" / "step-000002"
    next_second()
    again = Trainer(tiny(train=dict(steps=4, lr=1e-5), log=dict(trackers=["tensorboard"]),
                         checkpoint=dict(every=2)), resume=str(step2), quiet=True).run()
    events = _events(again.run_dir)
    loss = [(e.step, e.value) for e in events.Scalars("loss")]
    assert [s for s, _ in loss] == [1, 2, 3, 4]  # one value a step: the branch kept
    assert [v for _, v in loss][2:] == pytest.approx([r["loss"] for r in again.history])


def test_a_run_started_over_after_a_kill_before_its_first_checkpoint_leaves_one_try(tiny):
    """A run killed before its first checkpoint starts over in the same folder ("run the
    same command again"): metrics.jsonl keeps the new try only, and TensorBoard held both
    (loss at steps 1, 2, 3, 1, 2; the step-0 preview twice)."""
    import shutil

    cfg = tiny(train=dict(steps=3), log=dict(trackers=["tensorboard"]), checkpoint=dict(every=0),
               preview=dict(every=2, steps=2, prompts=["a red circle"]))
    run = Trainer(cfg, quiet=True).run().run_dir
    shutil.rmtree(run / "checkpoints")  # as if killed at step 3, before any checkpoint
    next_second()
    again = Trainer(tiny(train=dict(steps=2, lr=1e-5), log=dict(trackers=["tensorboard"]),
                         checkpoint=dict(every=0),
                         preview=dict(every=2, steps=2, prompts=["a red circle"])),
                    quiet=True).run()
    assert again.run_dir == run
    events = _events(run)
    loss = events.Scalars("loss")
    assert [e.step for e in loss] == [1, 2]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in again.history])
    assert [e.step for e in events.Images("preview")] == [0, 2]


def test_a_resume_with_nothing_to_train_starts_no_tracker_run(tiny):
    """`--resume RUN --steps N` at the run's step trained nothing, yet started the trackers:
    an empty TensorBoard run (event and hparams files; an empty W&B run) beside the real
    one. The trackers folder is left as it was, and the tracker ids stay."""
    cfg = tiny(train=dict(steps=2), log=dict(trackers=["tensorboard"]))
    run = Trainer(cfg, quiet=True).run().run_dir
    before = sorted((run / "trackers").rglob("*"))
    result = Trainer(cfg, resume="latest", quiet=True).run()
    assert result.step == 2 and result.history == []
    assert sorted((run / "trackers").rglob("*")) == before


def test_a_wandb_project_name_wandb_refuses_is_said_before_the_run_is_built(tiny, tmp_path):
    """W&B refuses / \\ # ? % : in a project name at its start, after the model, data and run
    folder were built, with advice to log in; said first, naming the key."""
    cfg = tiny(log=dict(trackers=["wandb"], wandb_mode="offline", project="a/b#c"))
    with pytest.raises(GlidectlError, match=r"log.project 'a/b#c' holds '#', '/', which W&B "
                       r"refuses in a project name"):
        Trainer(cfg, quiet=True)
    out = Path(cfg.train.output_dir)
    assert not out.exists() or not any(out.iterdir())  # no run folder was made


def test_a_wandb_project_name_over_128_characters_is_said_before_the_run_is_built(tiny):
    """W&B refuses a project name over 128 characters at its start, after the model and data
    were built; its message, cut at 200 characters, lost the reason ("Invalid project name
    'ppp…")."""
    cfg = tiny(log=dict(trackers=["wandb"], wandb_mode="offline", project="p" * 129))
    with pytest.raises(GlidectlError, match=r"^log.project is 129 characters long, and W&B "
                       r"refuses a project name over 128; pick a shorter one\.$"):
        Trainer(cfg, quiet=True)
    out = Path(cfg.train.output_dir)
    assert not out.exists() or not any(out.iterdir())
    Trainer(tiny(log=dict(trackers=["tensorboard"], project="p" * 129)), quiet=True)


def test_a_file_where_the_trackers_folder_goes_is_one_line_and_kept(tiny):
    """A file named ``trackers`` in the run folder was a FileExistsError traceback at the
    trackers' start; it is one line, as a file in place of ``previews`` is, and it stays."""
    cfg = tiny(train=dict(steps=1), log=dict(trackers=["tensorboard"]))
    run = Path(cfg.train.output_dir) / cfg.train.name
    run.mkdir(parents=True)
    (run / "trackers").write_text("mine")
    with pytest.raises(GlidectlError, match=r"^'.*trackers' is a file, where the run keeps a "
                       r"folder; remove or rename it\.$"):
        Trainer(cfg, quiet=True).run()
    assert (run / "trackers").read_text() == "mine"


def test_a_trackers_folder_that_cannot_be_made_is_a_failed_write(tiny, monkeypatch):
    """The trackers start on the main process for all (``Processes.on_main``), which made
    every error there one of bad input (exit code 2); a failed write keeps exit code 1."""
    from glidectl import runs
    from glidectl.errors import WriteError

    make = runs.make_folder

    def read_only(path: Path) -> None:
        if path.name == "trackers":
            raise PermissionError(13, "Permission denied")
        make(path)

    monkeypatch.setattr(runs, "make_folder", read_only)
    cfg = tiny(train=dict(steps=1), log=dict(trackers=["tensorboard"]))
    with pytest.raises(WriteError, match=r"^Cannot write '.*trackers' \(Permission denied\); "
                       r"fix the folder's permissions and try again; it has no checkpoint yet"
                       ) as caught:
        Trainer(cfg, quiet=True).run()
    assert caught.value.exit_code == 1
