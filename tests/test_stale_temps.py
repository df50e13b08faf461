"""Temp files a ``kill -9`` left (``.NAME.PID@HOST.tmp``, ``.NAME.PID.tmp`` before the host):
the next writer into the folder removes those whose process is gone, never a live process's
(another host's only when a day old), never a file that is not ours."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_sample_cmd import in_process


@pytest.fixture(scope="module")
def gone_pid() -> int:
    """The process id of a process that has ended."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def leftovers(folder: Path, stem: str, gone_pid: int) -> dict[str, Path]:
    """A killed writer's temp file, a running process's, and three hidden files not ours."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"killed": folder / f".{stem}.png.{gone_pid}.tmp",
             "running": folder / f".{stem}.png.{os.getppid()}.tmp",
             "user's": folder / ".notes.tmp", "other": folder / f".{stem}.png.{gone_pid}.bak",
             "no pid": folder / f".{stem}.png.{10**30}.tmp"}
    for path in files.values():
        path.write_bytes(b"\x89PNG half")
    return files


def test_temp_names_hold_the_writer_s_process_id_and_host(tmp_path):
    from glidectl.atomic import TEMP_NAME, atomic_path, new_path

    host = socket.gethostname()
    for writer in (atomic_path, new_path):
        with writer(tmp_path / f"{writer.__name__}.png") as tmp:
            assert tmp.name == f".{writer.__name__}.png.{os.getpid()}@{host}.tmp"
            match = TEMP_NAME.fullmatch(tmp.name)
            assert match and match.groups() == (f"{writer.__name__}.png", str(os.getpid()),
                                                host, None)
            tmp.write_bytes(b"x")


def test_another_host_s_temp_files_are_kept_until_a_day_old(tmp_path, gone_pid):
    """A folder shared between machines (NFS, the nodes of a multi-node run): a temp file
    named for another host is a writer's there, whose process id means nothing here."""
    from glidectl.atomic import remove_stale_temps

    here = socket.gethostname()
    files = {"killed here": tmp_path / f".a.json.{gone_pid}@{here}.tmp",
             "running here": tmp_path / f".a.json.{os.getppid()}@{here}.tmp",
             "old name, killed": tmp_path / f".a.json.{gone_pid}.tmp",
             "another host's": tmp_path / f".a.json.{gone_pid}@{here}-b.tmp",
             "another host's, 2 h old": tmp_path / f".a.json.{gone_pid}@node-7.cluster.tmp",
             "another host's, 2 days old": tmp_path / f".a.json.{gone_pid + 1}@node-7.tmp"}
    for path in files.values():
        path.write_bytes(b"half")
    for key, age in (("another host's, 2 h old", 2 * 3600),
                     ("another host's, 2 days old", 2 * 86400)):
        os.utime(files[key], (time.time() - age, time.time() - age))
    removed = remove_stale_temps(tmp_path)
    assert sorted(removed) == sorted(files[k] for k in (
        "killed here", "old name, killed", "another host's, 2 days old"))
    assert all(files[k].exists() for k in (
        "running here", "another host's", "another host's, 2 h old"))


def test_a_writer_on_another_host_keeps_its_temp_file(tmp_path):
    """A real writer with another host name (its own UTS namespace), stopped mid-write: its
    process id is not one here, so before the names held the host its temp file went."""
    script = ("import sys, os; from glidectl.atomic import atomic_path\n"
              "with atomic_path(sys.argv[1]) as tmp:\n"
              "    tmp.write_bytes(b'half'); print(tmp.name, flush=True); sys.stdin.read()\n")
    try:
        proc = subprocess.Popen(
            ["unshare", "--user", "--map-root-user", "--uts", "sh", "-c",
             'hostname node-b && exec "$0" -c "$1" "$2"', sys.executable, script,
             str(tmp_path / "latest")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
    except FileNotFoundError:
        pytest.skip("no unshare here")
    name = proc.stdout.readline().strip()
    if not name:
        proc.wait()
        pytest.skip(f"no UTS namespace here: {proc.stderr.read().strip()}")
    from glidectl.atomic import remove_stale_temps

    proc.kill()  # gone here, as another host's process always is
    proc.wait()
    assert remove_stale_temps(tmp_path) == [] and (tmp_path / name).read_bytes() == b"half"
    assert name.endswith("@node-b.tmp")


def test_the_next_sample_into_the_folder_removes_a_killed_one_s_temp_files(
        capsys, tmp_path, gone_pid):
    from test_pipeline import tiny_glide

    from glidectl.glide import save_weights

    base = save_weights(tiny_glide("base", 0), tmp_path / "base.safetensors")
    out = tmp_path / "samples"
    files = leftovers(out, "00000", gone_pid)
    res = in_process(capsys, "sample", "a cat", "--base", base, "--steps", "1", "-q",
                     "--out", out)
    assert res.returncode == 0, res.stderr
    assert not files["killed"].exists()
    assert all(files[k].exists() for k in ("running", "user's", "other", "no pid"))
    assert (out / "00000.png").is_file()


def test_an_eval_keeps_a_running_sample_s_temp_files(tmp_path, gone_pid):
    from glidectl.eval_outputs import clean_temp_files

    files = leftovers(tmp_path, "000_a-cat", gone_pid)
    older = tmp_path / ".000_a-cat.txt.tmp"  # an eval of before the names held a pid
    older.write_text("a c")
    clean_temp_files(tmp_path)
    assert not files["killed"].exists() and not older.exists()
    assert all(files[k].exists() for k in ("running", "user's", "other", "no pid"))


def test_the_web_ui_s_first_save_removes_what_a_killed_ui_was_writing(tmp_path, gone_pid):
    from glidectl.ui.backend import UiBackend

    files = leftovers(tmp_path / "out" / "0003", "00_seed7", gone_pid)
    backend = UiBackend(None, device="cpu", output_dir=tmp_path / "out")
    assert backend._new_folder() == tmp_path / "out" / "0004"
    assert not files["killed"].exists()
    assert all(files[k].exists() for k in ("running", "user's", "other", "no pid"))


def test_the_next_fit_steps_removes_a_killed_fit_s_temp_file(capsys, tmp_path, gone_pid):
    """Its FILE's and FILE.partial.json's only: a dead writer's temp file of another file in
    the user's --out folder (here schedule.json.png's) is not fit-steps' to remove."""
    others = leftovers(tmp_path, "schedule.json", gone_pid)
    own = {"killed": tmp_path / f".schedule.json.{gone_pid}.tmp",
           "killed partial": tmp_path / f".schedule.partial.json.{gone_pid}.tmp",
           "running": tmp_path / f".schedule.json.{os.getppid()}.tmp"}
    for path in own.values():
        path.write_bytes(b"half")
    res = in_process(capsys, "fit-steps", tmp_path / "no-model.safetensors", "--prompt", "a",
                     "--out", tmp_path / "schedule.json")
    assert res.returncode == 2 and "not found" in res.stderr  # it got as far as the model
    assert not own["killed"].exists() and not own["killed partial"].exists()
    assert own["running"].exists() and all(path.exists() for path in others.values())


@pytest.mark.parametrize("command", ["export", "lora merge", "dataset inspect --preview"])
def test_a_command_writing_one_file_removes_what_a_killed_one_left_beside_it(
        capsys, tmp_path, gone_pid, command):
    """A kill -9 of ``export``, ``lora merge`` or ``dataset inspect --preview`` while it wrote
    its file left ``.FILE.PID.tmp`` beside it; the next run writing FILE removes it (a running
    process's stays, and so does any other file's: the folder is the user's)."""
    from tiny_configs import random_attention_adapter, tiny_base_weights

    models, out = tmp_path / "models", tmp_path / "out"
    weights = tiny_base_weights(models / "base.safetensors")
    target, args = {
        "export": ("model.safetensors", ["export", models]),
        "lora merge": ("merged.safetensors", [
            "lora", "merge", random_attention_adapter(models, "base.safetensors", 0.01),
            "--base", weights]),
        "dataset inspect --preview": ("preview.png", [
            "dataset", "inspect", "demo:shapes", "-n", "4", "--preview", out / "preview.png"]),
    }[command]
    if command != "dataset inspect --preview":
        (models / "checkpoints" / "step-000001").mkdir(parents=True)
        os.link(weights, models / "checkpoints" / "step-000001" / "ema.safetensors")
        args += ["-o", out / target]
    files = {"killed": out / f".{target}.{gone_pid}.tmp",
             "running": out / f".{target}.{os.getppid()}.tmp",
             "another file's": out / f".notes.txt.{gone_pid}.tmp"}
    out.mkdir()
    for path in files.values():
        path.write_bytes(b"half")
    res = in_process(capsys, *args)
    assert res.returncode == 0, res.stderr
    assert (out / target).is_file() and not files["killed"].exists()
    assert files["running"].exists() and files["another file's"].exists()


def test_safetensors_own_temp_file_goes_with_a_killed_write_s_folder(tmp_path, gone_pid):
    """safetensors (0.6 on) writes through a .tmpXXXXXX file of its own in the folder it
    writes to; glidectl has it write in a folder of the write's own, so what a kill -9
    leaves (the whole model's size) is removed by the next write of that file, and a
    finished write leaves nothing beside the file."""
    import torch

    from glidectl.atomic import host_name, remove_stale_temps, save_safetensors

    here = host_name()
    killed = tmp_path / f".m.safetensors.{gone_pid}@{here}.tmp.parts"
    killed.mkdir()
    (killed / ".tmpQWz2Y9").write_bytes(b"\0" * 1000)
    running = tmp_path / f".m.safetensors.{os.getppid()}@{here}.tmp.parts"
    running.mkdir()
    other = tmp_path / f".n.safetensors.{gone_pid}@{here}.tmp.parts"  # another file's
    other.mkdir()
    assert remove_stale_temps(tmp_path, "m.safetensors") == [killed]
    assert running.is_dir() and other.is_dir()
    running.rmdir()
    other.rmdir()
    save_safetensors(tmp_path / "m.safetensors", {"w": torch.ones(3)}, {"a": "1"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_a_leftover_parts_folder_of_this_process_s_pid_does_not_block_a_write(tmp_path):
    """In a container every start is PID 1: a killed write's folder has this pid and is
    not stale, yet it is this write's own to clear (the write failed "File exists")."""
    import torch

    from glidectl.atomic import save_safetensors, temp_path

    target = tmp_path / "m.safetensors"
    leftover = temp_path(target).with_name(temp_path(target).name + ".parts")
    leftover.mkdir()
    (leftover / ".tmpABC123").write_bytes(b"half")
    save_safetensors(target, {"w": torch.ones(2)}, {"a": "1"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


KILL_AT_PROBE_REMOVAL = """
import os, signal, sys
from pathlib import Path

def kill_at_removal(event, args):  # kill -9 between the probe's creation and its removal
    if event == "os.remove" and os.fspath(args[0]).startswith(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)

sys.addaudithook(kill_at_removal)
folder = Path(sys.argv[2])
if sys.argv[1] == "out_dir":
    from glidectl.out_dir import check_out_dir
    check_out_dir(folder)
elif sys.argv[1] == "run_dir":
    from glidectl.training.run_dir import check_writable
    check_writable(folder)
else:
    from glidectl.cli.fit_cmd import check_out
    check_out(folder / "schedule.json", False, [])
"""


@pytest.mark.parametrize("probe", ["out_dir", "run_dir", "fit-steps"])
def test_a_write_probe_left_by_a_kill_goes_with_the_next_probe(tmp_path, probe):
    """sample, eval, export and lora merge (their output folder), train (its run folder and
    checkpoints/, before each checkpoint) and fit-steps (the folder of --out) check that the
    folder takes new files with a probe file; a kill -9 between its creation and its removal
    left it for good, under a new random name each time (``.glidectl-write-test-<hex>``,
    ``.write-test-<hex>``, ``.fit-steps-XXXX``). The next probe of the folder removes it."""
    folder = tmp_path / "out"
    folder.mkdir()
    for _ in range(2):
        res = subprocess.run([sys.executable, "-c", KILL_AT_PROBE_REMOVAL, probe, str(folder)],
                             capture_output=True, text=True)
        assert res.returncode == -9, res.stderr
        assert len(list(folder.iterdir())) == 1  # the killed probe's file; not one per kill
    res = subprocess.run([sys.executable, "-c", KILL_AT_PROBE_REMOVAL.replace(
        "sys.addaudithook(kill_at_removal)", ""), probe, str(folder)],
        capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert list(folder.iterdir()) == []
