"""What needs real processes: Ctrl-C, two-process DDP (gloo), and W&B offline runs."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image
from safetensors.torch import load_file

from glidectl.atomic import host_name
from glidectl.errors import GlidectlError
from glidectl.training.engine import Trainer
from glidectl.training.metrics import read_metrics
from glidectl.training.resume_state import read_state_file


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", GLIDECTL_LOAD_PLUGINS="", WANDB_SILENT="true",
               PYTHONUNBUFFERED="1")
    return env


def _glidectl(*args: str) -> list[str]:
    return [sys.executable, "-m", "glidectl", *args]


def _wait_for_logged_steps(run: Path, proc: subprocess.Popen, n: int) -> None:
    """Until ``run`` has logged ``n`` steps (the process must still be running)."""
    deadline = time.time() + 120
    while time.time() < deadline:
        metrics = run / "metrics.jsonl"
        if metrics.is_file() and len(read_metrics(metrics)) >= n:
            return
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else proc.returncode
        time.sleep(0.1)


def test_sigint_saves_a_checkpoint_and_resume_goes_on(tiny, config_file, tmp_path):
    cfg = tiny(train=dict(steps=10_000), checkpoint=dict(every=0))
    path = config_file(cfg)
    run = tmp_path / "runs" / "t"
    proc = subprocess.Popen(_glidectl("train", "-c", str(path), "--no-live"), env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for_logged_steps(run, proc, 2)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert "Interrupted at step" in out
    latest = (run / "checkpoints" / "latest").read_text().strip()
    step = int(latest.removeprefix("step-"))
    assert step >= 2 and (run / "checkpoints" / latest / "state").is_dir()

    cfg.train.steps = step + 1
    result = Trainer(cfg, resume="latest", quiet=True).run()
    assert result.step == step + 1
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")][-2:] == [step, step + 1]


def test_kill_9_never_leaves_a_broken_latest_checkpoint(tiny, config_file, tmp_path):
    cfg = tiny(train=dict(steps=10_000), checkpoint=dict(every=1, keep_last=2))
    run = tmp_path / "runs" / "t"
    proc = subprocess.Popen(_glidectl("train", "-c", str(config_file(cfg)), "--no-live"),
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            metrics = run / "metrics.jsonl"
            if metrics.is_file() and len(read_metrics(metrics)) >= 3:
                break
            time.sleep(0.05)
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    latest = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
    assert {p.name for p in latest.iterdir()} == {"model.safetensors", "ema.safetensors",
                                                   "state"}
    step = int(latest.name.removeprefix("step-"))
    cfg.train.steps = step + 1
    result = Trainer(cfg, resume="latest", quiet=True).run()
    assert result.step == step + 1


def test_a_full_disk_mid_run_is_one_line_and_keeps_the_last_checkpoint(
        tiny, config_file, tmp_path):
    """A file size limit (as a full disk) makes the next checkpoint fail: exit 1, one line
    naming the file and the checkpoint to resume from; the earlier checkpoint is whole and
    the failed one's temp folder is gone."""
    import resource

    cfg = tiny(train=dict(steps=2), checkpoint=dict(every=2))
    Trainer(cfg, quiet=True).run()
    run = tmp_path / "runs" / "t"
    before = {p.name: p.read_bytes() for p in (run / "checkpoints" / "step-000002").rglob("*")
              if p.is_file()}

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (4_000_000, resource.RLIM_INFINITY))

    done = subprocess.run(
        _glidectl("train", "-c", str(config_file(cfg)), "--resume", "latest", "--steps", "4",
                  "--no-live"),
        env=_env(), capture_output=True, text=True, timeout=300, preexec_fn=small_files)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("Error: Cannot write ") and "(File too large)" in error
    assert f"--resume {run}" in error and "step-000002" in error
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step-000002"]
    assert before == {p.name: p.read_bytes()
                      for p in (run / "checkpoints" / "step-000002").rglob("*") if p.is_file()}


def test_a_full_disk_before_the_first_checkpoint_does_not_point_at_resume(tiny, tmp_path):
    """With no checkpoint written, --resume RUN is refused; the error says to start over,
    and the same command does."""
    import resource

    from glidectl.errors import WriteError

    cfg = tiny(train=dict(steps=2), checkpoint=dict(every=2))
    trainer = Trainer(cfg, quiet=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4_000_000, hard))
    try:
        with pytest.raises(WriteError) as failed:
            trainer.run()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    message = str(failed.value)
    assert "(File too large)" in message and "--resume" not in message
    assert message.endswith("it has no checkpoint yet: run the same command again to start "
                            "it over.")
    assert Trainer(cfg, quiet=True).run().step == 2


def test_an_unnamed_run_without_a_checkpoint_is_started_over_by_its_name(tiny, tmp_path):
    """"Run the same command again to start it over" began run-002 beside the failed
    run-001, which stayed with its config.toml and metrics; the line names --name run-001."""
    import resource

    from glidectl.errors import WriteError

    cfg = tiny(train=dict(steps=2, name=""), checkpoint=dict(every=2))
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4_000_000, hard))
    try:
        with pytest.raises(WriteError) as failed:
            Trainer(cfg, quiet=True).run()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert str(failed.value).endswith(  # --name, as the library says it
        "it has no checkpoint yet: run the same command again with cfg.train.name run-001 to "
        "start it over in its folder.")
    cfg.train.name = "run-001"
    assert Trainer(cfg, quiet=True).run().step == 2
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["run-001"]


def test_a_second_ctrl_c_while_saving_names_the_last_checkpoint(tiny, tmp_path):
    """The first Ctrl-C asks for a checkpoint; a second one during that save stops the run
    (exit 130) in one line naming the checkpoint before, whose --resume goes on; the
    half-written checkpoint is removed."""
    cfg = tiny(train=dict(steps=4), checkpoint=dict(every=2))
    trainer = Trainer(cfg, quiet=True)
    begin = trainer.checkpoints.begin

    def begin_and_ctrl_c_twice(step: int) -> Path:
        folder = begin(step)
        if step == 4:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the second one interrupts here
        return folder

    trainer.checkpoints.begin = begin_and_ctrl_c_twice
    with pytest.raises(GlidectlError) as stopped:
        trainer.run()
    run = tmp_path / "runs" / "t"
    assert stopped.value.exit_code == 130
    assert str(stopped.value) == (
        f"Interrupted at step 4, which was not saved; its last checkpoint is "
        f"{str(run / 'checkpoints' / 'step-000002')!r}: resume with resume={str(run)!r}.")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step-000002"]
    assert Trainer(cfg, resume="latest", quiet=True).run().step == 4


def test_a_data_worker_killed_mid_run_is_one_line_naming_the_checkpoint(tiny, tmp_path):
    """The out-of-memory killer's usual victim is a data loader worker: once a checkpoint is
    written one is killed, and the run stops in one line (exit 1) naming the checkpoint to
    resume from, instead of torch's traceback; the resume goes on."""
    import threading

    from glidectl.training.guards import WorkerLost

    cfg = tiny(train=dict(steps=2_000), checkpoint=dict(every=2), data=dict(workers=1))
    trainer = Trainer(cfg, quiet=True)
    run = tmp_path / "runs" / "t"

    def children() -> set[int]:
        """Live child processes of this one (earlier tests may have left workers of their
        own: only one started by this run is killed)."""
        found = set()
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                fields = dict(line.split(":\t", 1) for line in
                              status.read_text().splitlines() if ":\t" in line)
            except OSError:
                continue
            if (fields.get("PPid", "").strip() == str(os.getpid())
                    and not fields.get("State", "").startswith("Z")):
                found.add(int(status.parent.name))
        return found

    before = children()

    def kill_a_worker() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (run / "checkpoints" / "latest").exists():
            time.sleep(0.05)
        while time.monotonic() < deadline:
            for pid in children() - before:
                os.kill(pid, signal.SIGKILL)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_a_worker, daemon=True)
    killer.start()
    with pytest.raises(WorkerLost) as stopped:
        trainer.run()
    killer.join()
    message = str(stopped.value)
    assert stopped.value.exit_code == 1 and "is killed by signal: Killed" in message
    assert "out-of-memory killer" in message and f"resume with resume='{run}'" in message
    assert not list((run / "checkpoints").glob(".tmp-*"))
    step = int((run / "checkpoints" / "latest").read_text().strip().removeprefix("step-"))
    cfg.train.steps = step + 1
    assert Trainer(cfg, resume="latest", quiet=True).run().step == step + 1


def test_a_second_process_on_a_run_being_trained_is_one_line(tiny, config_file, tmp_path):
    """Two processes writing one run folder lose data (the second truncates metrics.jsonl
    under the first): the second stops in one line and changes nothing."""
    cfg = tiny(train=dict(steps=10_000), checkpoint=dict(every=1))
    path = config_file(cfg)
    run = tmp_path / "runs" / "t"
    first = subprocess.Popen(_glidectl("train", "-c", str(path), "--no-live"), env=_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_logged_steps(run, first, 2)
        second = subprocess.run(
            _glidectl("train", "-c", str(path), "--no-live", "--resume", "latest"),
            env=_env(), capture_output=True, text=True, timeout=300)
        assert second.returncode == 2, second.stderr
        assert second.stderr.endswith(
            f"Error: Run {str(run)!r} is being trained by another glidectl process (or "
            "another Trainer of this one); wait for it to finish (or stop it), or pick another "
            "--name.\n"), second.stderr
        assert first.poll() is None
        logged = len(read_metrics(run / "metrics.jsonl"))
        _wait_for_logged_steps(run, first, logged + 1)  # its records still reach the file
    finally:
        first.kill()
        first.wait(timeout=30)
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")][:logged + 1] == \
        list(range(1, logged + 2))


def test_two_processes_train_and_resume_the_same_model_as_one(tiny, config_file, tmp_path):
    # Adam turns float noise in near-zero gradients into ±lr steps: a small lr and a larger
    # eps keep the comparison about the gradients, not about rounding.
    sections = dict(train=dict(steps=4, grad_accum=2, ema_decay=0.0, lr=1e-4, adam_eps=1e-6),
                    data=dict(uncond_p=0.0, flip=False, random_crop=False, demo_size=12),
                    checkpoint=dict(every=3))
    one = tiny(**sections)
    one.train.name, one.train.batch_size = "one", 2
    Trainer(one, quiet=True).run()

    two = tiny(**sections)
    two.train.name, two.train.batch_size = "two", 1
    path = config_file(two)
    cmd = _torchrun(path)
    proc = subprocess.run(cmd + ["--steps", "3"], env=_env(), capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = tmp_path / "runs" / "two"
    state = run / "checkpoints" / "step-000003" / "state"
    assert {p.name for p in state.glob("rng-*")} == {"rng-0.safetensors", "rng-1.safetensors"}
    # both processes resume (each from its own RNG file) and go on in step with one process
    proc = subprocess.run(cmd + ["--resume", str(run), "--steps", "4"], env=_env(),
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    for step in (3, 4):
        name = f"step-{step:06d}"
        a = load_file(tmp_path / "runs" / "one" / "checkpoints" / name / "model.safetensors")
        b = load_file(run / "checkpoints" / name / "model.safetensors")
        worst = max((a[k] - b[k]).abs().max().item() for k in a)
        assert worst < 1e-5, (step, worst)
    records_one = read_metrics(tmp_path / "runs" / "one" / "metrics.jsonl")
    records_two = read_metrics(run / "metrics.jsonl")
    losses_one, losses_two = [r["loss"] for r in records_one], [r["loss"] for r in records_two]
    assert len(losses_two) == 4
    assert losses_one == pytest.approx(losses_two, abs=1e-5)
    # the samples of both processes are counted, and the counts go on after the resume
    assert [r["data_accepted"] for r in records_two] == [r["data_accepted"] for r in records_one]


def test_two_processes_log_and_checkpoint_the_epoch_both_have_reached(
        tiny, config_file, image_folder, tmp_path):
    """Two unreadable images make the processes' shares hold different numbers of batches,
    so they end epochs at different steps and drift apart: the epoch in metrics.jsonl and in
    the checkpoint's train.json is the one both have reached, not the main process's."""
    for name in ("broken-a", "broken-b"):
        (image_folder / f"{name}.png").write_bytes(b"")
        (image_folder / f"{name}.txt").write_text("a broken square\n")
    cfg = tiny(train=dict(steps=8, batch_size=2), log=dict(every=1),
               checkpoint=dict(every=8), preview=dict(every=0),
               data=dict(source=str(image_folder), uncond_p=0.0))
    proc = subprocess.run(_torchrun(config_file(cfg)), env=_env(), capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = tmp_path / "runs" / "t"
    data = read_state_file(run / "checkpoints" / "step-000008" / "state" / "train.json")["data"]
    epochs = [row[0] for row in data["ranks"]]
    assert epochs[0] > epochs[1], epochs  # the main process is ahead
    assert data["epoch"] == epochs[1] and data["position"] == data["ranks"][1][1]
    assert read_metrics(run / "metrics.jsonl")[-1]["epoch"] == epochs[1]


def _wandb_records(run_file: Path) -> list:
    """The protobuf records of a .wandb transaction log (LevelDB log format: a 7-byte
    header, then 32 KiB blocks of [crc32c:4][length:2][type:1][payload] chunks)."""
    from wandb.proto import wandb_internal_pb2

    data, pos, pending, out = run_file.read_bytes(), 7, b"", []
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:
            pos += 32768 - pos % 32768
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        payload, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending + payload)
            out.append(record)
            pending = b""
        elif kind in (2, 3):
            pending += payload
    return out


def test_wandb_offline_run_has_the_history_and_previews(tiny, config_file, tmp_path):
    # log.wandb_project (the older key) still turns the wandb tracker on
    cfg = tiny(train=dict(steps=2), preview=dict(every=2, steps=2, prompts=["a red circle"]),
               log=dict(wandb_project="glidectl-test", wandb_mode="offline"))
    path = config_file(cfg)
    env = _env()
    env["WANDB_MODE"] = "offline"
    proc = subprocess.run(_glidectl("train", "-c", str(path), "--no-live"), env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = list((tmp_path / "runs" / "t" / "trackers" / "wandb").glob(
        "offline-run-*/run-*.wandb"))
    assert len(runs) == 1
    records = _wandb_records(runs[0])
    history = [{item.key or item.nested_key[0]: item.value_json for item in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    steps = [r for r in history if "loss" in r]
    assert [int(r["_step"]) for r in steps] == [1, 2]
    previews = [r for r in history if "preview" in r]
    assert [int(r["_step"]) for r in previews] == [0, 2]
    paths = [json.loads(item.value_json) for r in records
             if r.WhichOneof("record_type") == "history" for item in r.history.item
             if list(item.nested_key) == ["preview", "path"]]
    assert len(paths) == 2  # the grids, stored beside the run
    assert all((runs[0].parent / "files" / path).is_file() for path in paths)
    config = {item.key: json.loads(item.value_json) for r in records
              if r.WhichOneof("record_type") == "config" for item in r.config.update}
    assert config["data.source"] == "demo:shapes" and config["train.steps"] == 2


def test_wandb_follows_WANDB_MODE_when_the_config_does_not_say(tiny, config_file, tmp_path):
    """log.wandb_mode defaults to auto: W&B's own WANDB_MODE decides (it was "online", passed
    to wandb.init, so WANDB_MODE=offline was overruled and a run without a login stopped)."""
    cfg = tiny(train=dict(steps=1), log=dict(trackers=["wandb"]))
    assert cfg.log.wandb_mode == "auto"
    env = {k: v for k, v in _env().items() if not k.startswith("WANDB_")}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true")
    proc = subprocess.run(_glidectl("train", "-c", str(config_file(cfg)), "--no-live"), env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = list((tmp_path / "runs" / "t" / "trackers" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1


def _torchrun(path: Path, *args: str) -> list[str]:
    """torchrun with 2 processes; its logs in the test's folder, not a new /tmp/torchelastic_*
    folder per launch that nothing removes."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
            "2", "--log-dir", str(path.parent / "torchelastic"), "-m", "glidectl", "train",
            "-c", str(path), "--no-live", *args]


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_two_processes_refuse_a_one_process_checkpoint_in_one_line(tiny, config_file):
    cfg = tiny(train=dict(steps=1), checkpoint=dict(every=1))
    Trainer(cfg, quiet=True).run()
    proc = subprocess.run(_torchrun(config_file(cfg), "--resume", "latest", "--steps", "2"),
                          env=_env(), capture_output=True, text=True, timeout=240)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    # every process stops with the same line; none is left to fail in a collective
    assert out.count("written by 1 process and this run has 2") == 2, out
    assert "]: Traceback" not in out and "Connection closed by peer" not in out, out


def test_a_missing_preview_file_stops_every_process_with_its_line(tiny, config_file, tmp_path):
    """The main process alone reads the preview inputs: the others said "Another process of
    this run stopped near step 0 …; run the same command again to start it over" (exit 1),
    which fails the same way."""
    cfg = tiny(train=dict(steps=2), preview=dict(every=2, prompt_file="nope.txt"))
    proc = subprocess.run(_torchrun(config_file(cfg)), env=_env(), capture_output=True,
                          text=True, timeout=240, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert out.count("Error: preview.prompt_file 'nope.txt' (relative to the current "
                     "folder") == 2, out
    assert "Another process" not in out, out
    assert not (tmp_path / "runs").exists()


def test_trackers_that_cannot_start_stop_every_process_with_their_line(
        tiny, config_file, tmp_path):
    """W&B online without a login failed on the main process, which alone starts the
    trackers; the others said "run the same command again to start it over", which fails
    the same way."""
    pytest.importorskip("wandb")
    cfg = tiny(train=dict(steps=2), log=dict(trackers=["wandb"], wandb_mode="online"))
    env = {k: v for k, v in _env().items() if not k.startswith("WANDB_")}
    env.update(HOME=str(tmp_path), WANDB_SILENT="true")  # no login: no key, no ~/.netrc
    proc = subprocess.run(_torchrun(config_file(cfg)), env=env, capture_output=True,
                          text=True, timeout=240)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert out.count("Error: Could not start the trackers wandb: ") == 2, out
    assert "Another process" not in out, out
    assert not (tmp_path / "runs").exists()


def test_processes_whose_launcher_is_killed_checkpoint_and_stop(tiny, config_file, tmp_path):
    cfg = tiny(train=dict(steps=10_000), checkpoint=dict(every=0))
    run = tmp_path / "runs" / "t"
    launcher = subprocess.Popen(_torchrun(config_file(cfg)), env=_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        _wait_for_logged_steps(run, launcher, 2)
        workers = _children(launcher.pid)
        assert len(workers) == 2
        launcher.kill()
        launcher.wait(timeout=30)
        deadline = time.time() + 60
        while any(map(_running, workers)) and time.time() < deadline:
            time.sleep(0.2)
        assert not any(map(_running, workers)), "the processes trained on without a launcher"
    finally:
        for pid in filter(_running, workers):
            os.kill(pid, signal.SIGKILL)
        if launcher.poll() is None:
            launcher.kill()
    latest = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
    assert int(latest.name.removeprefix("step-")) >= 2
    assert {p.name for p in (latest / "state").glob("rng-*")} == {"rng-0.safetensors",
                                                                   "rng-1.safetensors"}


@contextmanager
def _launched(path: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """torchrun training ``path``'s config, its output in ``.communicate()``; killed at the
    block's end if it still runs."""
    launcher = subprocess.Popen(_torchrun(path), env=env or _env(), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        yield launcher
    finally:
        if launcher.poll() is None:
            launcher.kill()


def _rank(pid: int) -> int:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return int(next(v for v in environ if v.startswith(b"RANK=")).split(b"=", 1)[1])


def _kill_with_the_launcher_held(launcher: subprocess.Popen, victim: int) -> None:
    """SIGKILL ``victim`` with the launcher stopped until its other processes have ended:
    torchrun's monitor SIGTERMs them within 0.1 s of a death, which on a loaded machine came
    before they noticed it themselves (then they say they were stopped, not why)."""
    others = [pid for pid in _children(launcher.pid) if pid != victim]
    os.kill(launcher.pid, signal.SIGSTOP)
    try:
        os.kill(victim, signal.SIGKILL)
        deadline = time.time() + 120
        while any(map(_running, others)) and time.time() < deadline:
            time.sleep(0.01)
    finally:
        os.kill(launcher.pid, signal.SIGCONT)


def test_the_survivor_of_a_killed_process_stops_in_one_line(tiny, config_file, tmp_path):
    cfg = tiny(train=dict(steps=10_000), checkpoint=dict(every=1))
    run = tmp_path / "runs" / "t"
    with _launched(config_file(cfg)) as launcher:
        _wait_for_logged_steps(run, launcher, 2)
        rank1 = next(pid for pid in _children(launcher.pid) if _rank(pid) == 1)
        _kill_with_the_launcher_held(launcher, rank1)
        out, _ = launcher.communicate(timeout=120)
    assert launcher.returncode != 0
    assert "Error: Another process of this run stopped near step" in out, out
    assert f"resume with --resume {run}" in out, out
    assert "Connection closed by peer" not in out, out


def test_ctrl_c_under_a_launcher_checkpoints_once_and_says_so_once(tiny, config_file, tmp_path):
    """Ctrl-C in a terminal reaches the launcher and every process; all of them stop at one
    step and one checkpoint, and the resume hint is printed once, not once per process."""
    cfg = tiny(train=dict(steps=10_000), checkpoint=dict(every=0))
    run = tmp_path / "runs" / "t"
    launcher = subprocess.Popen(_torchrun(config_file(cfg)), env=_env(), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        _wait_for_logged_steps(run, launcher, 2)
        os.killpg(launcher.pid, signal.SIGINT)
        out, _ = launcher.communicate(timeout=120)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    latest = (run / "checkpoints" / "latest").read_text().strip()
    assert out.count("Interrupted at step") == 1, out
    assert f"Interrupted at step {int(latest.removeprefix('step-'))};" in out, out
    # the command that resumes it: under 2 processes (one process is refused)
    assert (f"Resume with: accelerate launch --multi_gpu --num_processes 2 -m glidectl train "
            f"--resume {run} (or your launcher, with 2 processes in all, as this run)") in out, out


def test_a_tracked_two_process_run_with_a_long_preview_finishes_cleanly(
        tiny, config_file, tmp_path):
    """One two-process run for three past failures:
    - the other processes waited for the main one's preview (and validation FID) in a
      collective of the process group, which times out (NCCL 10 min, gloo 30 min): a longer
      preview killed the run with a traceback. Here train.collective_timeout_minutes cuts
      the group's timeout to 5 s;
    - accelerate's end_training() destroys the process group on the main process only; the
      run's last barrier then failed there and every tracked multi-process run ended in a
      traceback with exit code 1, after its last checkpoint;
    - its checkpoint, written by two processes, is refused by a one-process resume."""
    cfg = tiny(train=dict(steps=2, collective_timeout_minutes=5 / 60), checkpoint=dict(every=2),
               log=dict(trackers=["tensorboard"]),
               preview=dict(every=100, steps=60))  # one preview, at step 0: over 5 s here
    (tmp_path / "tmp").mkdir()
    proc = subprocess.run(_torchrun(config_file(cfg)), env={
        **_env(), "TMPDIR": str(tmp_path / "tmp")},
        capture_output=True, text=True, timeout=240)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert not list((tmp_path / "tmp").glob("torchelastic_*"))  # the suite leaves none in /tmp
    assert "Traceback" not in out and "done at step 2" in out, out
    run = tmp_path / "runs" / "t"
    assert (run / "previews" / "step-000000.png").is_file()
    assert list((run / "trackers").rglob("events.out.tfevents.*"))
    cfg.train.steps = 3
    with pytest.raises(GlidectlError, match="written by 2 processes and this run has 1"):
        Trainer(cfg, resume="latest", quiet=True)


def test_accelerate_launch_mixed_precision_is_followed_at_auto(tiny, config_file):
    """`accelerate launch --mixed_precision bf16` was overridden by train.precision = auto
    (fp32 on a CPU without native bf16) without a word."""
    cfg = tiny(train=dict(steps=1), checkpoint=dict(every=1))
    env = {k: v for k, v in _env().items() if k != "ACCELERATE_MIXED_PRECISION"}
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1",
         "--num_machines", "1", "--dynamo_backend", "no", "--mixed_precision", "bf16",
         "-m", "glidectl", "train", "-c", str(config_file(cfg)), "--no-live"],
        env=env, capture_output=True, text=True, timeout=240)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Precision: bf16 (ACCELERATE_MIXED_PRECISION=bf16, from accelerate launch).\n" \
        in proc.stdout, out


def _stop_rank(launcher: subprocess.Popen, rank: int, ready: Callable[[], bool]) -> int:
    """Stop (SIGSTOP) the launcher's process of ``rank`` once ``ready()`` holds; its pid
    (found first, so the stop follows ``ready()`` within milliseconds)."""
    pid = _pid_of_rank(launcher, rank)
    deadline = time.time() + 120
    while not ready():
        assert launcher.poll() is None and time.time() < deadline, launcher.returncode
        time.sleep(0.002)
    os.kill(pid, signal.SIGSTOP)
    return pid


def _pid_of_rank(launcher: subprocess.Popen, rank: int) -> int:
    """The pid of the launcher's process of ``rank``, once it has started."""
    deadline = time.time() + 120
    while (pid := next((pid for pid in _children(launcher.pid) if _has_rank(pid, rank)),
                       None)) is None:
        assert launcher.poll() is None and time.time() < deadline, launcher.returncode
        time.sleep(0.05)
    return pid


def _has_rank(pid: int, rank: int) -> bool:
    """Whether ``pid`` is the worker of ``rank`` (False while it is not yet one)."""
    try:
        return _rank(pid) == rank
    except (OSError, StopIteration):
        return False


def test_a_process_lost_while_setting_up_stops_the_others_in_one_line(
        tiny, config_file, tmp_path):
    """A process that dies while the run is set up (its model load killed for memory, a
    one-node error) left the other in a gloo traceback ("Connection closed by peer"),
    and the new run's folder behind: now one line, and no folder."""
    cfg = tiny(train=dict(steps=2))
    with _launched(config_file(cfg)) as launcher:
        # the run folder is made once both processes are in the process group
        rank1 = _stop_rank(launcher, 1, (tmp_path / "runs" / "t" / ".lock").exists)
        time.sleep(2)  # the main process waits for it in the setup's next collective
        _kill_with_the_launcher_held(launcher, rank1)
        out, _ = launcher.communicate(timeout=120)
    assert launcher.returncode != 0
    assert "Error: Another process of this run stopped while the run was being set up (the " \
           "launcher's report names it), so this one stops too.\n" in out, out
    assert "]: Traceback" not in out and "Connection closed by peer" not in out, out
    assert not (tmp_path / "runs").exists()


def test_a_process_lost_during_a_checkpoint_leaves_no_half_written_one(
        tiny, config_file, tmp_path):
    """The main process waiting for another's RNG file when that one is killed removes the
    half-written checkpoint (for a full model, gigabytes that stayed until a later save);
    the last whole one stays ``latest`` and the run resumes from it."""
    cfg = tiny(train=dict(steps=10_000), checkpoint=dict(every=2))
    path = config_file(cfg)
    checkpoints = tmp_path / "runs" / "t" / "checkpoints"
    with _launched(path) as launcher:
        while True:  # caught while the main process writes the checkpoint, before rank 1 does
            rank1 = _stop_rank(launcher, 1, lambda: (checkpoints / "latest").exists()
                               and any(checkpoints.glob(".tmp-step-*")))
            half = list(checkpoints.glob(".tmp-step-*"))
            if half and not (half[0] / "state" / "rng-1.safetensors").exists():
                break
            os.kill(rank1, signal.SIGCONT)
            while list(checkpoints.glob(".tmp-step-*")) == half and half:
                time.sleep(0.002)
        time.sleep(1)  # the main process has written its files and waits for rank 1
        _kill_with_the_launcher_held(launcher, rank1)
        out, _ = launcher.communicate(timeout=120)
    assert "Error: Another process of this run stopped near step" in out, out
    assert not list(checkpoints.glob(".tmp-*")), out
    latest = checkpoints / (checkpoints / "latest").read_text().strip()
    assert f"its last checkpoint is '{latest}'" in out, out
    assert {p.name for p in (latest / "state").glob("rng-*")} == {"rng-0.safetensors",
                                                                   "rng-1.safetensors"}
    step = int(latest.name.removeprefix("step-"))
    proc = subprocess.run(_torchrun(path, "--resume", "latest", "--steps", str(step + 1)),
                          env=_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"done at step {step + 1}" in proc.stdout, proc.stdout


def test_a_new_run_whose_other_process_has_no_data_leaves_no_folder(
        tiny, config_file, image_folder, tmp_path):
    """Every process stops when one's share of a folder gives no batch; the new run's
    folder went only when that one was the main process (it alone drops an untrained run),
    so the survivor's "run the same command again" met a folder of a run that never
    trained."""
    for old in image_folder.iterdir():
        old.unlink()
    Image.new("RGB", (40, 36), (220, 30, 30)).save(image_folder / "good.png")
    (image_folder / "good.txt").write_text("a red square\n")
    (image_folder / "broken.png").write_bytes(b"")
    (image_folder / "broken.txt").write_text("a broken square\n")
    cfg = tiny(train=dict(steps=2, batch_size=1, seed=1),  # seed 1: process 1 gets the broken
               data=dict(source=str(image_folder), uncond_p=0.0))
    proc = subprocess.run(_torchrun(config_file(cfg)), env=_env(), capture_output=True,
                          text=True, timeout=240)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Error: The training data gave not one batch of 1 to process 1 of 2" in out, out
    assert "Error: Another process of this run stopped near step 0 (the launcher's report " \
           "names it), so this one stops too; it has no checkpoint yet: run the same " \
           "command again to start it over.\n" in out, out
    assert not (tmp_path / "runs").exists()


def test_a_process_that_stops_answering_is_said_and_ends_the_run_at_the_set_timeout(
        tiny, config_file, tmp_path):
    """A process that hangs (SIGSTOP: as one stuck in I/O, or its machine cut off) keeps its
    connections open: the other waited out the process group's timeout (gloo: 30 min) in
    silence, then stopped with gloo's traceback. train.collective_timeout_minutes sets that
    wait (6 s here); the main process says it is waiting once it has waited half of it, then
    stops in one line naming the option and the checkpoint."""
    cfg = tiny(train=dict(steps=10_000, collective_timeout_minutes=0.1),
               checkpoint=dict(every=2))
    path = config_file(cfg)
    run = tmp_path / "runs" / "t"
    rank1 = None
    with _launched(path) as launcher:
        try:
            _wait_for_logged_steps(run, launcher, 3)
            rank0, rank1 = sorted(_children(launcher.pid), key=_rank)
            os.kill(rank1, signal.SIGSTOP)
            stopped = time.monotonic()
            while _running(rank0) and time.monotonic() - stopped < 60:
                time.sleep(0.05)
            waited = time.monotonic() - stopped
            assert not _running(rank0), "the main process waited on past the timeout"
            os.kill(rank1, signal.SIGKILL)  # the launcher would wait 30 s for the stopped one
            out, _ = launcher.communicate(timeout=120)
        finally:
            if rank1 is not None and _running(rank1):
                os.kill(rank1, signal.SIGKILL)
    print(f"the main process ended {waited:.1f} s after the other one was stopped")
    assert 5 < waited < 30, (waited, out)
    said = re.findall(r"Still (?:at step \d+|waiting for the other processes after step \d+'s "
                      r"\w+) after [\d.]+ s[^\n]*", out)
    assert len(said) == 1, out
    # named from its heartbeat, which stopped with it
    assert re.search(rf": process 1 \(host {re.escape(host_name())}, pid {rank1}\) was last "
                     r"heard from [\d.]+ s ago, (at step \d+|waiting for the main process to "
                     r"finish step \d+'s \w+): it may be stuck \(stopped, waiting on a disk, its "
                     r"machine cut off\); if so, the run stops when it has not answered for 6 s "
                     r"\(train.collective_timeout_minutes\).$", said[0]), said
    assert not (run / ".heartbeats").exists()
    latest = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
    assert "Error: Another process of this run did not answer for 6 s near step " in out, out
    assert "(stuck, or its machine cut off; train.collective_timeout_minutes sets how long to " \
           f"wait), so this one stops; its last checkpoint is '{latest}': resume with " \
           f"--resume {run} under 2 processes, as this run.\n" in out, out
    assert "]: Traceback" not in out and "Timed out waiting" not in out, out
    assert not list((run / "checkpoints").glob(".tmp-*"))
    assert (latest / "state").is_dir()  # whole: resuming one is tested after a lost process


def test_a_main_process_slow_to_write_a_checkpoint_is_waited_for_past_the_timeout(
        tiny, config_file, tmp_path):
    """The other processes waited for the main one's checkpoint files (gigabytes, on a slow
    disk) in the process group, so a write longer than its timeout ended the run; they now
    wait as for a preview. The main process is stopped (SIGSTOP) mid-checkpoint for longer
    than train.collective_timeout_minutes (6 s), and the run still finishes. It is stopped
    while it sets the run up too (its run folder locked), where the others waited in
    silence."""
    cfg = tiny(train=dict(steps=8, collective_timeout_minutes=0.1), checkpoint=dict(every=2))
    checkpoints = tmp_path / "runs" / "t" / "checkpoints"
    with _launched(config_file(cfg)) as launcher:
        rank0 = _stop_rank(launcher, 0, (checkpoints.parent / ".lock").exists)
        time.sleep(5)
        os.kill(rank0, signal.SIGCONT)
        while True:  # caught between the checkpoint's first file and its commit
            rank0 = _stop_rank(launcher, 0, lambda: any(checkpoints.glob(".tmp-step-*")))
            if any(checkpoints.glob(".tmp-step-*")):
                break
            os.kill(rank0, signal.SIGCONT)
        step = int(next(checkpoints.glob(".tmp-step-*")).name.removeprefix(".tmp-step-"))
        time.sleep(8)
        os.kill(rank0, signal.SIGCONT)
        out, _ = launcher.communicate(timeout=120)
    assert launcher.returncode == 0, out
    assert "done at step 8" in out and "Traceback" not in out, out
    assert (checkpoints / "latest").read_text().strip() == "step-000008"
    # the other process said once per wait, after 3 s, what the main process's heartbeat
    # last said (none before the run folder is made)
    said = re.findall(r"Still waiting for the main process[^\n]*", out)
    assert len(said) == 2, out
    assert re.fullmatch(
        r"Still waiting for the main process to finish (the choice of the run folder|the run "
        r"folder's creation|the check for free disk space|the setup) after [\d.]+ s: the main "
        r"process [^;]+ \(stopped, waiting on a disk, its machine cut off\); this process "
        r"waits for it for up to 24 h.", said[0]), said
    assert re.fullmatch(_waiting_for_main(
        f"step {step}'s checkpoint", rank0, rf"was last heard from [\d.]+ s ago, busy with "
        rf"step {step}'s checkpoint: it may be stuck \(stopped, waiting on a disk, its machine "
        r"cut off\)"), said[1]), said
    assert not (checkpoints.parent / ".heartbeats").exists()


def test_a_main_process_slow_to_close_its_trackers_is_said_by_the_others(
        tiny, config_file, tmp_path):
    """The run's last wait, for the main process to close its trackers (a W&B upload that
    hangs), was out of the watchdog's reach: the others waited in silence for up to 24 h.
    The main process's closing takes 8 s here (the hang a tracker's server would cause,
    which cannot exist offline), and the other process says what it waits for after 3 s."""
    slow = tmp_path / "slow-close"
    slow.mkdir()
    (slow / "sitecustomize.py").write_text(
        "import os\n"
        "if os.environ.get('RANK') == '0':\n"
        "    import time\n"
        "    from glidectl.training import metrics\n"
        "    close = metrics.RunOutputs.close\n"
        "    metrics.RunOutputs.close = lambda self: (time.sleep(8), close(self))[1]\n")
    env = _env()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(slow), env.get("PYTHONPATH")]))
    cfg = tiny(train=dict(steps=2, collective_timeout_minutes=0.1))
    with _launched(config_file(cfg), env) as launcher:
        rank0 = _pid_of_rank(launcher, 0)
        out, _ = launcher.communicate(timeout=120)
    assert launcher.returncode == 0, out
    assert "done at step 2" in out and "Traceback" not in out, out
    said = re.findall(r"Still waiting for the main process[^\n]*", out)
    assert len(said) == 1, out
    assert re.fullmatch(_waiting_for_main(
        "the run's end (closing its trackers)", rank0,
        r"has been busy with the run's end for [\d.]+ s"), said[0]), said
    assert not (tmp_path / "runs" / "t" / ".heartbeats").exists()


def _waiting_for_main(waited_for: str, pid: int, state: str) -> str:
    """The pattern of another process's line on a wait for ``waited_for`` that lasts, with
    the main process (``pid``) in ``state`` (a pattern) by its heartbeat."""
    return (rf"Still waiting for the main process to finish {re.escape(waited_for)} after "
            r"[\d.]+ s(?: \(steps took [\d.]+ s at most\))?: the main process \(host "
            rf"{re.escape(host_name())}, pid {pid}\) {state}; this process waits for it for "
            r"up to 24 h.")


@pytest.mark.parametrize("env, said", [
    ({"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"},
     "accelerate launch --multi_gpu --num_processes 2 -m glidectl train --resume runs/t (or your "
     "launcher, with 2 processes in all, as this run)"),
    ({"WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8", "MASTER_ADDR": "10.0.0.1",
      "MASTER_PORT": "29500"},
     "accelerate launch --multi_gpu --num_machines 2 --num_processes 16 --machine_rank RANK "
     "--main_process_ip 10.0.0.1 --main_process_port 29500 -m glidectl train --resume runs/t "
     "on each of the 2 machines (RANK 0 to 1; --num_processes counts all 16 processes, 8 a "
     "machine), or your launcher with 2 machines of 8 processes, as this run"),
    ({"WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4"},
     "accelerate launch --multi_gpu --num_machines 2 --num_processes 8 --machine_rank RANK "
     "--main_process_ip HOST -m glidectl train --resume runs/t on each of the 2 machines "
     "(RANK 0 to 1, HOST the address of rank 0; --num_processes counts all 8 processes, 4 a "
     "machine), or your launcher with 2 machines of 4 processes, as this run"),
    ({"WORLD_SIZE": "1"}, "glidectl train --resume runs/t"),
    ({"WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "junk"},  # a launcher's odd value: one machine
     "accelerate launch --multi_gpu --num_processes 4 -m glidectl train --resume runs/t (or your "
     "launcher, with 4 processes in all, as this run)"),
])
def test_the_resume_hint_of_a_launched_run_names_its_machines(monkeypatch, env, said):
    """A stopped run of 2 machines of 8 processes was told `accelerate launch
    --num_processes 16 -m ...`, which starts 16 processes on the one machine it runs on:
    accelerate's --num_processes counts all machines' processes, and each machine needs
    --num_machines and its --machine_rank."""
    from glidectl.training.run_dir import launched, machines, relaunch

    for name in ("WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    nodes = machines()
    assert relaunch("glidectl train --resume runs/t", launched(), nodes,
                    env.get("MASTER_ADDR"), env.get("MASTER_PORT")) == said


@pytest.mark.parametrize("nodes", [1, 2])
def test_the_resume_hint_starts_its_processes_on_a_machine_without_gpus(monkeypatch, nodes):
    """`accelerate launch --num_processes 2 -m ...`, the hint a stopped 2-process run gave,
    starts one process where there are fewer than two GPUs (a CPU machine's gloo run), which
    the checkpoint refuses; accelerate reads the hint as a multi-process launch."""
    from accelerate.commands import launch as acc

    from glidectl.training.run_dir import relaunch

    monkeypatch.setattr("torch.cuda.device_count", lambda: 0)
    hint = relaunch("glidectl train --resume runs/t", 2 * nodes, nodes, "10.0.0.1", "29500")
    words = shlex.split(hint.split(" (or your")[0].split(" on each of")[0])
    assert words[:2] == ["accelerate", "launch"], hint
    words = [w.replace("RANK", "0") for w in words[2:]]
    args = acc._validate_launch_command(acc.launch_command_parser().parse_args(words))[0]
    assert args.multi_gpu and args.num_processes == 2 * nodes, hint
