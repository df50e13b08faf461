"""A run folder is data: resuming from one never unpickles, so no file in it can run code."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

from glidectl import runs
from glidectl.cli.app import main
from glidectl.config import save_config
from glidectl.errors import GlidectlError
from glidectl.training.checkpointing import CheckpointManager
from glidectl.training.engine import Trainer
from glidectl.training.heartbeats import Heartbeats
from glidectl.training.metrics import read_metrics
from glidectl.ui.models import list_models


class _Payload:
    """Unpickling this creates ``marker`` (what an attacker's os.system call would do)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run with EMA, checkpointed at step 2 (trained once for the module)."""
    from tiny_configs import tiny_config

    base = tmp_path_factory.mktemp("trained")
    cfg = tiny_config(base, train=dict(steps=2))
    Trainer(cfg, quiet=True).run()
    save_config(cfg, base / "glide.toml")
    return base


def _files(step_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(step_dir)) for p in step_dir.rglob("*") if p.is_file())


def test_resume_state_is_safetensors_and_json_only(trained):
    step_dir = trained / "runs" / "t" / "checkpoints" / "step-000002"
    files = _files(step_dir)
    assert files == ["ema.safetensors", "model.safetensors", "state/ema.safetensors",
                     "state/optimizer.safetensors", "state/rng-0.safetensors",
                     "state/scheduler.json", "state/train.json"]
    for name in files:
        path = step_dir / name
        if path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        else:
            with safe_open(str(path), "pt") as f:
                assert list(f.keys())


def _resume_cli(run: Path, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--resume", str(run), "--steps", "3", "--no-live"])
    return exit_info.value.code, capsys.readouterr().err


def _refused(run: Path, capsys) -> str:
    """What a resume of ``run`` said, once it exited 2 and left every file of the run as it
    was."""
    before = _snapshot(run)
    code, err = _resume_cli(run, capsys)
    assert code == 2 and _snapshot(run) == before, err
    return err


@pytest.mark.parametrize("name", [
    "model.safetensors", "state/train.json", "state/optimizer.safetensors",
    "state/scheduler.json", "state/ema.safetensors", "state/rng-0.safetensors",
])
def test_a_code_running_pickle_in_place_of_any_file_is_refused(trained, tmp_path, capsys, name):
    run = tmp_path / "runs" / "t"
    shutil.copytree(trained / "runs" / "t", run)
    step_dir = run / "checkpoints" / "step-000002"
    assert name in _files(step_dir)
    marker = tmp_path / "pwned"
    (step_dir / name).write_bytes(pickle.dumps(_Payload(marker)))
    code, err = _resume_cli(run, capsys)
    assert code == 2, err
    assert err.startswith("Error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and str(step_dir) in err
    assert not marker.exists()


def _tamper_scheduler(path: Path, **changes) -> None:
    """Change (or drop) top-level entries of a JSON state file."""
    tree = json.loads(path.read_text(encoding="utf-8"))
    pairs = dict(tree["$dict"])
    for key, value in changes.items():
        if value is _DROP:
            pairs.pop(key)
        else:
            pairs[key] = value
    tree["$dict"] = [[k, v] for k, v in pairs.items()]
    path.write_text(json.dumps(tree), encoding="utf-8")


_DROP = object()


@pytest.mark.parametrize("changes, why", [
    ({"base_lrs": "zz"}, "base_lrs is not a list of learning rates"),
    ({"base_lrs": ["zz"]}, "base_lrs is not a list of learning rates"),
    ({"base_lrs": [float("nan")]}, "base_lrs is not a list of learning rates"),
    ({"_last_lr": _DROP}, "_last_lr is not a list of learning rates"),
    ({"_last_lr": [0.1, 0.1, 0.1, 0.1, 0.1]}, "_last_lr and base_lrs differ in length"),
    ({"last_epoch": "2"}, "last_epoch is not a step count"),
    ({"_step_count": True}, "_step_count is not a step count"),
    ({"lr_lambdas": "x"}, "lr_lambdas does not match base_lrs"),
])
def test_a_tampered_scheduler_state_is_one_line_before_training(
        trained, tmp_path, capsys, changes, why):
    run = tmp_path / "runs" / "t"
    shutil.copytree(trained / "runs" / "t", run)
    step_dir = run / "checkpoints" / "step-000002"
    _tamper_scheduler(step_dir / "state" / "scheduler.json", **changes)
    checkpoints = run / "checkpoints"
    before = {p: p.read_bytes() for p in checkpoints.rglob("*") if p.is_file()}
    config = (run / "config.toml").read_bytes()
    code, err = _resume_cli(run, capsys)
    assert code == 2, err
    assert (run / "config.toml").read_bytes() == config  # a refused resume changes nothing
    assert err == (f"Error: Cannot resume from {str(step_dir)!r}: state/scheduler.json is not a "
                   f"glidectl resume file ({why}); resume from another checkpoint or start a "
                   "new run.\n"), err
    assert {p: p.read_bytes() for p in checkpoints.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("step", [-5, 1, "2", True])
def test_a_train_json_at_another_step_is_refused_before_anything_changes(
        trained, tmp_path, capsys, step):
    """A step that is not the folder's would have resumed there, rewriting (at -5: deleting)
    the run's metrics, previews and checkpoints."""
    run = tmp_path / "runs" / "t"
    shutil.copytree(trained / "runs" / "t", run)
    step_dir = run / "checkpoints" / "step-000002"
    _tamper_scheduler(step_dir / "state" / "train.json", step=step)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    code, err = _resume_cli(run, capsys)
    assert code == 2, err
    assert err == (f"Error: Cannot resume from {str(step_dir)!r}: state/train.json records "
                   f"step {step!r}, not 2; the checkpoint is damaged: resume from another "
                   "checkpoint or start a new run.\n"), err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_scheduler_rates_for_other_parameter_groups_do_not_fit(trained, tmp_path, capsys):
    run = tmp_path / "runs" / "t"
    shutil.copytree(trained / "runs" / "t", run)
    path = run / "checkpoints" / "step-000002" / "state" / "scheduler.json"
    pairs = dict(json.loads(path.read_text(encoding="utf-8"))["$dict"])
    extra = len(pairs["base_lrs"]) + 1
    _tamper_scheduler(path, base_lrs=[1e-4] * extra, _last_lr=[1e-4] * extra,
                      lr_lambdas=[None] * extra)
    code, err = _resume_cli(run, capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "state/scheduler.json does not fit this run" in err
    assert f"{extra} learning rates for {extra - 1} parameter groups" in err


def test_text_lr_scale_changed_to_or_from_1_is_one_line_naming_the_key(
        trained, tmp_path, capsys):
    """At 1 the optimizer has one parameter group, otherwise two: the refusal named
    state/optimizer.safetensors and a ValueError instead of the setting."""
    run = tmp_path / "runs" / "t"
    shutil.copytree(trained / "runs" / "t", run)
    step_dir = str(run / "checkpoints" / "step-000002")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--resume", str(run), "--steps", "3", "--no-live",
              "--set", "train.text_lr_scale=0.25"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err == (f"Error: Cannot resume from {step_dir!r}: it was trained with "
                   "train.text_lr_scale = 1 and this config says 0.25, and a change to or "
                   "from 1 does not fit the saved optimizer state; resume with "
                   f"train.text_lr_scale = 1, or start a new run with model.init = "
                   f"{step_dir!r} to train at 0.25.\n"), err


def test_the_exported_ema_file_is_not_read_by_resume(trained, tmp_path, capsys):
    run = tmp_path / "runs" / "t"
    shutil.copytree(trained / "runs" / "t", run)
    marker = tmp_path / "pwned"
    (run / "checkpoints" / "step-000002" / "ema.safetensors").write_bytes(
        pickle.dumps(_Payload(marker)))
    code, err = _resume_cli(run, capsys)  # EMA resumes from state/ema.safetensors
    assert code == 0, err
    assert not marker.exists()


def test_a_pickle_era_checkpoint_is_refused_without_loading_it(trained, tmp_path, capsys):
    run = tmp_path / "runs" / "t"
    shutil.copytree(trained / "runs" / "t", run)
    state = run / "checkpoints" / "step-000002" / "state"
    shutil.rmtree(state)
    state.mkdir()
    marker = tmp_path / "pwned"
    for legacy in ("custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin",
                   "scheduler.bin"):
        (state / legacy).write_bytes(pickle.dumps(_Payload(marker)))
    code, err = _resume_cli(run, capsys)
    assert code == 2 and "old pickle format" in err and err.count("\n") == 1, err
    assert not marker.exists()


def test_a_pickle_era_lora_checkpoint_points_at_its_adapter_not_model_init(tmp_path):
    """A LoRA checkpoint holds adapters, which model.init refuses: the way forward is the
    adapter itself (--lora, or lora merge and a new LoRA run on the merged model)."""
    from glidectl.errors import GlidectlError
    from glidectl.training.resume_state import read_resume_state

    step = tmp_path / "runs" / "my-lora" / "checkpoints" / "step-000004"
    (step / "lora").mkdir(parents=True)
    (step / "lora" / "adapter_config.json").write_text("{}")  # what glidectl 0.1.0 wrote
    (step / "state").mkdir()
    marker = tmp_path / "pwned"
    for legacy in ("custom_checkpoint_0.pkl", "optimizer.bin", "random_states_0.pkl"):
        (step / "state" / legacy).write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(GlidectlError) as err:
        read_resume_state(step / "state", 0, ema=True, scaler=False)
    message = str(err.value)
    assert "old pickle format" in message and "model.init = " in message
    assert f"--lora '{step}'" in message and f"glidectl lora merge {step} -o" in message
    assert f"model.init = '{step}'" not in message
    assert not marker.exists()


def test_resume_unpickles_nothing(trained, tmp_path, monkeypatch):
    run = tmp_path / "runs" / "t"
    shutil.copytree(trained / "runs" / "t", run)
    import torch

    def refuse(*args, **kwargs):
        raise AssertionError("resume unpickled something")

    for module, attr in ((pickle, "load"), (pickle, "loads"), (torch, "load")):
        monkeypatch.setattr(module, attr, refuse)
    from tiny_configs import tiny_config

    cfg = tiny_config(tmp_path, train=dict(steps=3))
    result = Trainer(cfg, resume=str(run), quiet=True).run()
    assert result.step == 3


def test_a_run_from_before_time_embed_max_freq_is_resumed_as_it_was_trained(
        trained, tmp_path, capsys):
    from glidectl.glide import read_weights, save_weights

    run = tmp_path / "runs" / "t"
    shutil.copytree(trained / "runs" / "t", run)
    path = run / "checkpoints" / "step-000002" / "model.safetensors"
    state, options = read_weights(path)
    assert options.time_embed_max_freq == 0.01  # the default
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    save_weights(state, path, options.replace(time_embed_max_freq=0.0), meta)  # an older run
    code, err = _resume_cli(run, capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "set model.time_embed_max_freq = 0.0 to resume it" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--resume", str(run), "--steps", "3", "--no-live",
              "--set", "model.time_embed_max_freq=0"])
    assert exit_info.value.code == 0, capsys.readouterr().err


def test_resume_with_a_config_for_another_network_is_one_line(trained, tmp_path, capsys):
    run = tmp_path / "runs" / "t"
    shutil.copytree(trained / "runs" / "t", run)
    config = (run / "config.toml").read_text(encoding="utf-8")
    assert 'size = "tiny"' in config
    (run / "config.toml").write_text(config.replace('size = "tiny"', 'size = "quickstart"'),
                                     encoding="utf-8")
    code, err = _resume_cli(run, capsys)
    assert code == 2 and err.startswith("Error: Cannot resume from") and err.count("\n") == 1
    assert "do not fit the model this config builds (num_res_blocks 1 (config: 0)" in err, err


def test_a_set_that_changes_the_network_is_named_with_the_value_that_resumes(
        trained, tmp_path, capsys):
    """A --set that builds another network (data.resolution of a scratch model) was told to
    resume without --config, which it did; the key, both values and a --set that resumes
    are named, and that --set resumes."""
    run = tmp_path / "runs" / "t"
    shutil.copytree(trained / "runs" / "t", run)
    before = _snapshot(run)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--resume", str(run), "--steps", "3", "--no-live",
              "--set", "data.resolution=48"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and _snapshot(run) == before
    assert err.rstrip().endswith(
        "(image_size 32 (config: 48)); data.resolution = 48 here, but the run trained with "
        "32; resume without the --set (or --config) that changes it, or with --set "
        "data.resolution=32."), err
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--resume", str(run), "--steps", "3", "--no-live",
              "--set", "data.resolution=32"])
    assert exit_info.value.code == 0, capsys.readouterr().err


def test_another_model_size_is_named_before_the_network_is_built(trained, tmp_path, capsys,
                                                                 monkeypatch):
    """--set model.size=small on a tiny run's resume built the network first, whose GPT-2
    tokenizer, offline without a vocabulary, stopped it with "The GPT-2 vocabulary is not
    available": the size the run trained with is named before anything is built."""
    from glidectl.training import engine

    def never(*args, **kwargs):
        raise AssertionError("the network was built")

    monkeypatch.setattr(engine, "build_model", never)
    run = tmp_path / "runs" / "t"
    shutil.copytree(trained / "runs" / "t", run)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--resume", str(run), "--steps", "3", "--no-live",
              "--set", "model.size=small"])
    err = " ".join(capsys.readouterr().err.split())
    assert exit_info.value.code == 2 and err.endswith(
        "it trained on a scratch network its run's config builds, and this config builds "
        "another; model.size = 'small' here, but the run trained with 'tiny'; resume without "
        "the --set (or --config) that changes it, or with --set model.size=\"tiny\"."), err


def test_resume_with_a_config_for_another_kind_names_the_command_that_resumes_it(
        trained, tmp_path, capsys):
    """A base run resumed by a config that builds an upsampler listed shapes (image_size,
    num_res_blocks, ...); it says the kinds and the command that resumes the run."""
    run = tmp_path / "runs" / "t"
    shutil.copytree(trained / "runs" / "t", run)
    config = (run / "config.toml").read_text(encoding="utf-8")
    (run / "config.toml").write_text(config.replace('kind = "base"', 'kind = "upsample"', 1),
                                     encoding="utf-8")
    before = _snapshot(run)
    with pytest.raises(SystemExit) as exit_info:
        main(["upsample", "--resume", str(run), "--steps", "3", "--no-live"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1, err
    assert err == (f"Error: Cannot resume from {str(run / 'checkpoints' / 'step-000002')!r}: "
                   "it holds a 'base' model, but the config builds an 'upsample' one; resume "
                   f"it with its own config: glidectl train --resume {run.resolve()}.\n")
    assert _snapshot(run) == before

def test_a_torn_last_metrics_line_does_not_stop_a_resume(trained, tmp_path, capsys):
    """A crash or a full disk can leave half a line; resuming drops it and goes on."""
    run = tmp_path / "runs" / "t"
    shutil.copytree(trained / "runs" / "t", run)
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"step": 3, "loss": 0.1')
    code, err = _resume_cli(run, capsys)
    assert code == 0, err
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [1, 2, 3]


def test_a_step_folder_a_kill_left_aside_is_put_back(trained, tmp_path, capsys):
    """Writing a step again moves the old folder to .old-step-N for a moment; a kill right
    then left no step-N, and the run's only checkpoint was lost to the next start."""
    run = tmp_path / "runs" / "t"
    shutil.copytree(trained / "runs" / "t", run)
    checkpoints = run / "checkpoints"
    (checkpoints / "step-000002").rename(checkpoints / ".old-step-000002")
    code, err = _resume_cli(run, capsys)
    assert code == 0, err
    assert sorted(p.name for p in checkpoints.iterdir() if p.name.startswith(("step", ".")))\
        == ["step-000002", "step-000003"]
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [1, 2, 3]


def test_a_truncated_model_file_points_to_another_checkpoint(trained, tmp_path, capsys):
    run = tmp_path / "runs" / "t"
    shutil.copytree(trained / "runs" / "t", run)
    model = run / "checkpoints" / "step-000002" / "model.safetensors"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    code, err = _resume_cli(run, capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert err.rstrip().endswith("; resume from another checkpoint or start a new run."), err


def test_every_checkpoint_file_gets_the_umask_permissions(trained):
    import os

    from glidectl.atomic import umask_mode

    step_dir = trained / "runs" / "t" / "checkpoints" / "step-000002"
    modes = {name: os.stat(step_dir / name).st_mode & 0o777 for name in _files(step_dir)}
    assert modes == dict.fromkeys(modes, umask_mode()), modes


def test_a_checkpoint_not_trained_in_fp16_resumes_in_fp16_with_a_fresh_scaler(trained):
    """fp16 adds a GradScaler; a checkpoint trained in fp32 or bf16 has no state/scaler.json.
    Resuming it in fp16 (on a GPU) was refused as "state/scaler.json is not a glidectl resume
    file (it is missing)", as if the checkpoint were damaged."""
    from types import SimpleNamespace

    import torch

    from glidectl.training import resume_state as rs

    state_dir = trained / "runs" / "t" / "checkpoints" / "step-000002" / "state"
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    loaded: list[dict] = []
    acc = SimpleNamespace(process_index=0, num_processes=1, step=0)
    with torch.random.fork_rng():
        rs.load_state(state_dir, acc, SimpleNamespace(load_state_dict=loaded.append),
                      {rs.SCALER: scaler}, torch.Generator(), lambda: None)
    assert loaded[0]["step"] == 2 and scaler.get_scale() == 1024.0
    note = rs.fresh_scaler_note(state_dir, scaler)
    assert note == (f"{str(state_dir.parent)!r} was not trained in fp16: the GradScaler starts "
                    "afresh (its first steps may be skipped while it finds its scale).")
    assert rs.fresh_scaler_note(state_dir, None) is None


def test_an_fp16_checkpoint_gives_its_scaler_back(trained, tmp_path):
    from types import SimpleNamespace

    import torch

    from glidectl.training import resume_state as rs

    step_dir = tmp_path / "step-000002"
    shutil.copytree(trained / "runs" / "t" / "checkpoints" / "step-000002", step_dir)
    saved = torch.amp.GradScaler("cpu", init_scale=256.0)
    rs.write_state_file(step_dir / "state" / rs.SCALER, saved.state_dict())
    scaler = torch.amp.GradScaler("cpu")
    acc = SimpleNamespace(process_index=0, num_processes=1, step=0)
    with torch.random.fork_rng():
        rs.load_state(step_dir / "state", acc, SimpleNamespace(load_state_dict=lambda s: None),
                      {rs.SCALER: scaler}, torch.Generator(), lambda: None)
    assert scaler.get_scale() == 256.0
    assert rs.fresh_scaler_note(step_dir / "state", scaler) is None


@contextlib.contextmanager
def _locked_by_another_process(lock: Path):
    """Hold the run lock (``glidectl.atomic.lock_file``'s fcntl record lock) from a second
    Python process, as a training process would, until the block ends."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys; f = open(sys.argv[1], 'a+'); "
         "fcntl.lockf(f, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()",
         str(lock)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def test_a_second_resume_leaves_the_trainers_set_aside_step_folder_alone(trained, tmp_path,
                                                                         capsys):
    """The running trainer moves step-N aside for a moment while it writes step N again; a
    second `--resume` on the run put it back before finding the run taken, under the
    trainer's feet. The checkpoint is now resolved once the run lock is held."""
    run = tmp_path / "runs" / "t"
    shutil.copytree(trained / "runs" / "t", run)
    checkpoints = run / "checkpoints"
    (checkpoints / "step-000002").rename(checkpoints / ".old-step-000002")
    with _locked_by_another_process(run / ".lock"):
        code, err = _resume_cli(run, capsys)
    assert code == 2 and "is being trained by another glidectl process" in err
    assert (checkpoints / ".old-step-000002").is_dir()
    assert not (checkpoints / "step-000002").exists()


def test_an_unnamed_run_started_with_another_takes_the_next_name(tmp_path, monkeypatch):
    """Two unnamed runs started at one instant both read run-001 as free; the second to lock
    it was refused ("pick another --name") instead of taking run-002."""
    from tiny_configs import tiny_config

    import glidectl.training.run_dir as run_dir
    from glidectl.runs import RunDir

    cfg = tiny_config(tmp_path, train=dict(steps=1, name=""))
    taken = tmp_path / "runs" / "run-001"
    taken.mkdir(parents=True)
    monkeypatch.setattr(run_dir, "pick_run", lambda cfg, resume: RunDir(taken))  # read as free
    with _locked_by_another_process(taken / ".lock"):
        trainer = Trainer(cfg, quiet=True)
    assert trainer.run_dir.root == tmp_path / "runs" / "run-002"
    assert [p.name for p in taken.iterdir()] == [".lock"]  # the other run's, left as it was


def test_an_unnamed_run_that_finds_no_free_name_is_refused(tmp_path, monkeypatch):
    """Every name it tries is locked by another process: it stops in one sentence instead
    of training the last one without its lock."""
    from tiny_configs import tiny_config

    import glidectl.training.run_dir as run_dir

    def busy(run):
        raise GlidectlError(f"{run.root} is being trained by another process.")

    cfg = tiny_config(tmp_path, train=dict(steps=1, name=""))
    monkeypatch.setattr(run_dir, "lock_run", busy)
    with pytest.raises(GlidectlError, match="No free run folder .* set train.name"):
        Trainer(cfg, quiet=True)


class _Killed(BaseException):
    """A ``kill -9`` at this point: nothing after it runs."""


def test_a_resume_removes_the_temp_files_a_killed_run_left(trained, tmp_path, capsys):
    """A kill -9 while writing the config, a preview, ``latest`` or a file in a step folder
    leaves its ``.NAME.PID.tmp`` behind; the next start of the run removes those whose
    writer is gone (a running process's stays). A killed multi-process run's heartbeats
    neither hide the run nor pass for a checkpoint, and go too."""
    run = tmp_path / "runs" / "t"
    shutil.copytree(trained / "runs" / "t", run)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    folders = ["", "previews", "checkpoints", "checkpoints/step-000002",
               "checkpoints/step-000002/state"]
    stale = [run / folder / f".step-000002.png.{gone.pid}.tmp" for folder in folders]
    running = run / "previews" / f".step-000003.png.{os.getppid()}.tmp"
    for path in (*stale, running):
        path.write_bytes(b"\x89PNG half")
    (run / runs.HEARTBEATS_DIR).mkdir()
    for rank in (0, 1):
        Heartbeats(run / runs.HEARTBEATS_DIR, rank).write("at step 3", 3, 0.0)
    assert len(list((run / runs.HEARTBEATS_DIR).glob("*.json"))) == 2
    assert runs.latest_under(run) == run / "checkpoints" / "step-000002"
    assert "t/" in [c.label for c in list_models(run.parent)]
    code, err = _resume_cli(run, capsys)
    assert code == 0, err
    assert [p for p in stale if p.exists()] == [] and running.exists()
    assert not (run / runs.HEARTBEATS_DIR).exists()


def test_a_kill_after_the_final_checkpoint_leaves_no_extra_step_folder(
        tmp_path, monkeypatch):
    """The last checkpoint is renamed into place, then older ones are pruned: a kill between
    the two left a step folder past ``checkpoint.keep_last``, which the finished run's
    resume (it writes no checkpoint, so it never pruned) kept for good."""
    from tiny_configs import tiny_config

    cfg = tiny_config(tmp_path, train=dict(steps=2), checkpoint=dict(every=1, keep_last=1))
    prune = CheckpointManager.prune

    def killed_before_pruning_the_final(self: CheckpointManager) -> None:
        latest = self.latest()
        if latest is not None and latest.name == "step-000002":
            raise _Killed
        prune(self)

    monkeypatch.setattr(CheckpointManager, "prune", killed_before_pruning_the_final)
    with pytest.raises(_Killed):
        Trainer(cfg, quiet=True).run()
    monkeypatch.undo()
    checkpoints = tmp_path / "runs" / "t" / "checkpoints"
    assert runs.steps_in(checkpoints) == [1, 2]
    assert Trainer(cfg, resume="latest", quiet=True).run().step == 2
    assert runs.steps_in(checkpoints) == [2]
    assert [p.name for p in checkpoints.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("kind, earlier", [
    ("upsample", dict(channel_mult="1,1,2,2,4")),  # the quickstart upsampler's first preset
    ("base", dict(channel_mult="1,2,2", num_res_blocks=1)),  # the base's, before 12 px
])
def test_a_run_begun_with_an_earlier_preset_resumes_with_its_own_network(tiny, monkeypatch,
                                                                        kind, earlier):
    """A quickstart preset changed: a run begun before goes on with the network it began
    with (the base's could not be resumed at all: its error's advice went in a circle); a
    new run, or a resume naming another preset, gets today's."""
    import glidectl.glide as glide

    current = glide.preset_options

    def then(kind, size, *args, **kwargs):
        return current(kind, size, *args, **kwargs).replace(**earlier)

    sections = dict(model=dict(kind=kind, size="quickstart"),
                    data=dict(resolution=32 if kind == "upsample" else 12, min_image_size=8),
                    train=dict(steps=1), checkpoint=dict(every=1))
    monkeypatch.setattr(glide, "preset_options", then)
    Trainer(tiny(**sections), quiet=True).run()
    monkeypatch.undo()
    cfg = tiny(**sections)
    cfg.train.steps = 2
    resumed = Trainer(cfg, resume="latest", quiet=True)
    assert resumed.bundle.options.channel_mult == earlier["channel_mult"]
    assert resumed.run().step == 2
    cfg.train.name = "new"
    assert Trainer(cfg, quiet=True).bundle.options.channel_mult == current(
        kind, "quickstart").channel_mult


def test_a_run_written_before_time_embed_max_freq_resumes_with_its_checkpoints(tiny):
    """Its config.toml lacks the key, so the default 0.01 met the checkpoint's 0 and the
    run's own `--resume RUN` stopped the first time."""
    import tomli_w

    from glidectl.config import (
        load_config,
        tomllib,  # tomli before Python 3.11
    )

    cfg = tiny(train=dict(steps=1), model=dict(time_embed_max_freq=0.0))
    run = Trainer(cfg, quiet=True).run().run_dir
    data = tomllib.loads((run / "config.toml").read_text())
    del data["model"]["time_embed_max_freq"]
    (run / "config.toml").write_text(tomli_w.dumps(data))
    again = load_config(run / "config.toml")
    again.train.steps = 2
    resumed = Trainer(again, resume=str(run), quiet=True)
    assert resumed.bundle.options.time_embed_max_freq == 0.0
    assert resumed.run().step == 2
    assert load_config(run / "config.toml").model.time_embed_max_freq == 0.0


def _copy_run(trained: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the trained run and its step-2 checkpoint."""
    run = tmp_path / "runs" / "t"
    shutil.copytree(trained / "runs" / "t", run)
    return run, run / "checkpoints" / "step-000002"


def _snapshot(run: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}


def _set_cursor(train_json: Path, row: list) -> None:
    """Put ``row`` in place of process 0's data cursor in train.json."""
    data = dict(dict(json.loads(train_json.read_text(encoding="utf-8"))["$dict"])["data"]
                ["$dict"])
    data["ranks"] = [row]
    _tamper_scheduler(train_json, data={"$dict": [[k, v] for k, v in data.items()]})


def test_a_checkpoint_missing_one_processs_rng_file_names_it(trained, tmp_path, capsys):
    """A two-process checkpoint without rng-1.safetensors (copied in part) was taken for a
    one-process one: a one-process resume went on without a word, at half the global batch
    and without process 1's data cursor (and two processes were told to resume under one)."""
    run, step_dir = _copy_run(trained, tmp_path)
    train_json = step_dir / "state" / "train.json"
    data = dict(dict(json.loads(train_json.read_text(encoding="utf-8"))["$dict"])["data"]
                ["$dict"])
    data["ranks"] = data["ranks"] * 2  # what two processes record, one cursor each
    _tamper_scheduler(train_json, data={"$dict": [[k, v] for k, v in data.items()]})
    err = _refused(run, capsys)
    assert err == (f"Error: Cannot resume from {str(step_dir)!r}: state/rng-1.safetensors is "
                   "missing (the checkpoint was written by 2 processes, one RNG file each); "
                   "resume from another checkpoint or start a new run.\n")


@pytest.mark.parametrize("changes, why", [
    ({"data": []}, "AttributeError: 'list' object has no attribute 'get'"),
    ({"guard": "x"}, "AttributeError: 'str' object has no attribute 'get'"),
])
def test_a_train_json_entry_that_is_not_a_table_is_one_line(trained, tmp_path, capsys,
                                                             changes, why):
    """A list or a string where train.json holds a table gave an AttributeError traceback."""
    run, step_dir = _copy_run(trained, tmp_path)
    _tamper_scheduler(step_dir / "state" / "train.json", **changes)
    err = _refused(run, capsys)
    assert err == (f"Error: Cannot resume from {str(step_dir)!r}: state/train.json does not "
                   f"fit this run ({why}); resume with the run's own config.\n")


@pytest.mark.parametrize("row, why", [  # saved: [0, 2, 0, 1, 4, 0]
    ([0, -5, 0, 1, 4, 0], "position -5"),
    ([-3, 2, 0, 1, 4, 0], "epoch -3"),
    ([0, 1000000, 0, 1, 4, 0], "position 1000000: more batches than the 4 samples read this "
                               "epoch"),
    ([0, 2, 0, 1, -4, 0], "samples read by worker 0 -4"),
    ([0, 2, 1, 1, 4, 0], "next worker 1 of 1"),
    ([0, 2, 0, 1, 4, 2], "end flags other than 0 and 1"),
    ([0, 2, 0, 1, 4], "its length does not fit its number of workers"),
    ([0, 2.5, 0, 1, 4, 0], "not all whole numbers"),
])
def test_a_data_cursor_glidectl_cannot_have_written_is_refused(trained, tmp_path, capsys,
                                                               row, why):
    """Such cursors resumed without a word, reading other data than the run would have."""
    run, step_dir = _copy_run(trained, tmp_path)
    train_json = step_dir / "state" / "train.json"
    saved = dict(dict(json.loads(train_json.read_text(encoding="utf-8"))["$dict"])
                 ["data"]["$dict"])["ranks"]
    assert saved == [[0, 2, 0, 1, 4, 0]]
    _set_cursor(train_json, row)
    err = _refused(run, capsys)
    assert err == (f"Error: Cannot resume from {str(step_dir)!r}: state/train.json records "
                   f"the data cursor {row} of process 0 ({why}); the checkpoint is damaged: "
                   "resume from another checkpoint or start a new run.\n")


@pytest.mark.parametrize("changes, what", [
    ({"micro_step": -7}, "micro_step -7"),
    ({"micro_step": "x"}, "micro_step 'x'"),
    ({"guard": {"$dict": [["in_a_row", -1], ["total", 0]]}},
     "the non-finite loss count in_a_row = -1"),
])
def test_counts_glidectl_cannot_have_written_are_refused(trained, tmp_path, capsys, changes,
                                                          what):
    run, step_dir = _copy_run(trained, tmp_path)
    _tamper_scheduler(step_dir / "state" / "train.json", **changes)
    err = _refused(run, capsys)
    assert err == (f"Error: Cannot resume from {str(step_dir)!r}: state/train.json records "
                   f"{what}; the checkpoint is damaged: resume from another checkpoint or "
                   "start a new run.\n")


def _tamper_header(path: Path, old: str, new: str) -> None:
    """Replace ``old`` by ``new`` in a safetensors file's glidectl state header."""
    import struct

    raw = path.read_bytes()
    size = struct.unpack("<Q", raw[:8])[0]
    header, body = json.loads(raw[8:8 + size]), raw[8 + size:]
    tree = header["__metadata__"]["glidectl.state"]
    assert old in tree
    header["__metadata__"]["glidectl.state"] = tree.replace(old, new)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + body)


@pytest.mark.parametrize("dtype, shown", [
    ('"bogus"', "bogus"), ("[1]", "[1]"), ('"object"', "object"), ('"(2,)i4"', "(2,)i4"),
])
def test_an_rng_file_with_an_unknown_dtype_is_not_a_resume_file(trained, tmp_path, capsys,
                                                                 dtype, shown):
    """numpy's TypeError ("data type 'bogus' not understood") escaped as a traceback."""
    run, step_dir = _copy_run(trained, tmp_path)
    _tamper_header(step_dir / "state" / "rng-0.safetensors", '"dtype": "uint32"',
                   f'"dtype": {dtype}')
    err = _refused(run, capsys)
    assert err == (f"Error: Cannot resume from {str(step_dir)!r}: state/rng-0.safetensors is "
                   f"not a glidectl resume file (an array of unknown dtype {shown!r}); resume "
                   "from another checkpoint or start a new run.\n")


def test_an_array_numpy_cannot_hold_is_a_state_format_error():
    import torch

    from glidectl.training.resume_state import StateFormatError, decode

    tensors = {"t0": torch.zeros(2, dtype=torch.bfloat16)}
    with pytest.raises(StateFormatError, match=r"^an array numpy cannot read \(TypeError\)$"):
        decode({"$ndarray": "t0", "dtype": "float32"}, tensors)


def test_a_train_json_nested_too_deeply_is_one_line(trained, tmp_path, capsys):
    """json's RecursionError escaped as a traceback."""
    run, step_dir = _copy_run(trained, tmp_path)
    (step_dir / "state" / "train.json").write_text("[" * 100_000 + "]" * 100_000)
    err = _refused(run, capsys)
    assert err == (f"Error: Cannot resume from {str(step_dir)!r}: state/train.json is not a "
                   "glidectl resume file (its entries are nested too deeply); resume from "
                   "another checkpoint or start a new run.\n")


def test_a_resume_under_another_grad_accum_steps_after_each_whole_window(trained, tmp_path):
    """The accelerator's micro-step count (2, after two steps of one micro-batch) came back
    as it was: under grad_accum = 3 the optimizer then stepped after the first micro-batch of
    each window of 3, and its other two went into the next step's gradient."""
    import torch
    from safetensors.torch import load_file
    from tiny_configs import tiny_config

    from glidectl.training.resume_state import read_state_file

    cfg = tiny_config(tmp_path, train=dict(steps=3, grad_accum=3))
    runs_at = {}
    for name, micro_step in (("as-saved", 2), ("at-0", 0)):
        run = tmp_path / "runs" / name
        shutil.copytree(trained / "runs" / "t", run)
        train_json = run / "checkpoints" / "step-000002" / "state" / "train.json"
        assert read_state_file(train_json)["micro_step"] == 2
        _tamper_scheduler(train_json, micro_step=micro_step)
        assert Trainer(cfg, resume=str(run), quiet=True).run().step == 3
        runs_at[name] = run / "checkpoints" / "step-000003"
    saved = {name: read_state_file(step / "state" / "train.json")["micro_step"]
             for name, step in runs_at.items()}
    assert saved == {"as-saved": 3, "at-0": 3}  # one window of 3 from its start
    a, b = (load_file(step / "model.safetensors") for step in runs_at.values())
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("where", ["checkpoints/abandoned-after-step-99/step-000123",
                                   "checkpoints/step-000123"])
def test_a_resume_path_that_is_not_there_is_not_called_a_set_aside_checkpoint(
        trained, tmp_path, capsys, where):
    """Under a folder named like a set-aside one, a missing path was called a checkpoint that
    had been set aside, and given as a model.init that names nothing. A step the run does
    not keep (pruned, or past its newest) was "not a checkpoint … nor a run folder with
    checkpoints", about a run that has them: the steps kept are named, as export says."""
    run, _ = _copy_run(trained, tmp_path)
    missing = run / where
    before = _snapshot(run)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--resume", str(missing), "--no-live"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert err == (f"Error: --resume {str(missing)!r}: not a checkpoint (a "
                   "checkpoints/step-NNNNNN folder with a state/ folder) nor a run folder "
                   "with checkpoints; pass 'latest' or an existing checkpoint.\n"
                   if "abandoned" in where else
                   f"Error: --resume {str(missing)!r} is not there: its run's newest checkpoint "
                   "is step-000002 (it keeps step-000002); pass one of those, or the run folder "
                   "for its latest.\n"), err
    assert _snapshot(run) == before
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step-000002"]


def test_a_latest_checkpoint_without_its_state_folder_says_so_and_what_resumes(
        trained, tmp_path, capsys):
    """A run whose newest checkpoint's state/ was deleted (to save space) was called 'not a
    checkpoint … nor a run folder with checkpoints'; it names the checkpoint, the newest one
    that resumes and the model.init that starts a new run from its weights."""
    run, step = _copy_run(trained, tmp_path)
    older = shutil.copytree(step, run / "checkpoints" / "step-000001")
    shutil.rmtree(step / "state")
    for given in (run, step):
        err = " ".join(_refused(given, capsys).split())
        assert err == (f"Error: --resume {str(given)!r}: checkpoint {str(step)!r} has no state/ "
                       "folder (the optimizer, EMA and data position a resume needs); resume "
                       f"from the newest that has one ({str(older)!r}) or start a new run from "
                       f"its weights with --set model.init={str(step)!r}."), err


def test_a_step_folder_outside_a_runs_checkpoints_is_not_resumed_into_its_grandparent(
        trained, tmp_path, capsys):
    """A checkpoint copied out of its run (``backup/step-000002``) was resumed into the folder
    two above it as a run: a project folder got checkpoints/, previews/, metrics.jsonl and
    .lock, and its own config.toml was replaced by the run's resolved config."""
    project = tmp_path / "project"
    shutil.copytree(trained / "runs" / "t" / "checkpoints" / "step-000002",
                    project / "backup" / "step-000002")
    shutil.copy(trained / "glide.toml", project / "config.toml")
    (project / "config.toml").write_text((project / "config.toml").read_text() + "# mine\n")
    before = _snapshot(project)
    step = project / "backup" / "step-000002"
    for given, says in ((step, f"is a step folder outside a run's checkpoints/ folder, so it "
                               f"has no run to go on in (training would make {str(project)!r} "
                               "one); put it in RUN/checkpoints/ and resume that"),
                        (step.with_name("step-000009"), "does not exist; pass 'latest'")):
        with pytest.raises(SystemExit) as exit_info:
            main(["train", "--config", str(project / "config.toml"), "--resume", str(given),
                  "--no-live"])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2, err
        assert err.startswith(f"Error: --resume {str(given)!r} {says}"), err
        assert _snapshot(project) == before
        assert sorted(p.name for p in project.iterdir()) == ["backup", "config.toml"]


def test_a_second_trainer_of_one_run_in_this_process_takes_over_or_is_refused(tiny):
    """A notebook's second Trainer on a run was granted while the first trained (a POSIX
    lock is the process's): both wrote its checkpoints, and the second's end dropped the
    first's lock too. One set up again (a cell run twice) takes the run over; one made while
    another trains is refused."""
    import threading

    from glidectl import atomic

    cfg = tiny(train=dict(steps=2))
    first = Trainer(cfg, quiet=True)
    broken = copy.deepcopy(cfg)
    broken.data.source = str(cfg.train.output_dir) + "/no-such-folder"
    with pytest.raises(GlidectlError, match="no-such-folder"):
        Trainer(broken, quiet=True)  # a set-up that fails gives the folder back
    assert first.run(until=1).step == 1  # stopped early: it keeps the folder
    second = Trainer(cfg, resume="latest", quiet=True)  # the cell run again: it takes over
    with pytest.raises(GlidectlError, match="A later Trainer of this process claimed run "):
        first.run()
    assert second.run_dir.root.is_dir() and atomic.is_locked(second.run_dir.lock)
    started, go_on = threading.Event(), threading.Event()

    def slow(step: int) -> None:
        started.set()
        go_on.wait(60)

    second.procs.step = slow  # called before each optimizer step
    running = threading.Thread(target=second.run)
    running.start()
    try:
        assert started.wait(60)
        with pytest.raises(GlidectlError, match="is being trained by another glidectl process "
                                                r"\(or another Trainer of this one\)"):
            Trainer(cfg, resume="latest", quiet=True)
    finally:
        go_on.set()
        running.join(120)
    assert not atomic.is_locked(second.run_dir.lock)
    cfg.train.steps = 3
    assert Trainer(cfg, resume="latest", quiet=True).run().step == 3

