"""The run layout (glidectl.runs) and the atomic-write helper (glidectl.atomic)."""

from __future__ import annotations

import os

import pytest

from glidectl import atomic, runs


def _step(checkpoints, step, *files):
    d = checkpoints / runs.step_dir_name(step)
    d.mkdir(parents=True)
    for name in files:
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_text("x")
    return d


def test_latest_pointer_wins_over_the_highest_step_and_every_spelling_resolves(tmp_path):
    run = runs.RunDir(tmp_path / "run")
    s5 = _step(run.checkpoints, 5, runs.MODEL_FILE)
    s9 = _step(run.checkpoints, 9, runs.MODEL_FILE, runs.EMA_FILE)
    assert runs.latest_under(run.root) == s9  # no pointer: the highest step
    (run.checkpoints / runs.LATEST).write_text("step-000005\n")
    for spelling in (run.root, run.checkpoints, s5):
        assert runs.latest_under(spelling) == s5
    assert runs.latest_under(s9) == s9
    (run.checkpoints / runs.LATEST).write_text("../../etc\n")  # not a step name: ignored
    assert runs.latest_under(run.root) == s9
    assert runs.step_weights(s9) == s9 / runs.EMA_FILE
    assert runs.step_weights(s9, ema=False) == s9 / runs.MODEL_FILE
    assert runs.step_weights(s5, ema=True) is None
    assert runs.step_of(s9) == 9 and runs.step_of(tmp_path) is None
    assert runs.run_of_step_dir(s9) == run.root.resolve()


def test_a_latest_pointer_of_bytes_that_are_not_utf8_is_skipped_not_a_traceback(tmp_path):
    from glidectl.errors import GlidectlError

    run = runs.RunDir(tmp_path / "run")
    s9 = _step(run.checkpoints, 9, runs.MODEL_FILE)
    (run.checkpoints / runs.LATEST).write_bytes(b"\xff\xfe step")  # damaged on disk
    assert runs.latest_under(run.root) == s9  # the highest step, as for any other garbage
    with pytest.raises(GlidectlError, match="names the checkpoint"):
        runs.followed_pointer(run.checkpoints / runs.LATEST)


def test_adapters_prefer_ema_unless_told(tmp_path):
    s = _step(tmp_path, 1, f"{runs.ADAPTER_DIR}/{runs.ADAPTER_CONFIG}",
              f"{runs.EMA_ADAPTER_DIR}/{runs.ADAPTER_CONFIG}")
    assert runs.step_adapter(s) == s / runs.EMA_ADAPTER_DIR
    assert runs.step_adapter(s, ema=False) == s / runs.ADAPTER_DIR


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "a" / "f.json"
    atomic.write_json(path, {"v": 1}, durable=True)
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert path.read_text() == '{\n  "v": 1\n}\n'
    assert [p.name for p in path.parent.iterdir()] == ["f.json"]


def test_a_write_the_disk_refuses_is_one_line_and_keeps_the_old_file(tmp_path):
    """A file size limit stands in for a full disk: a WriteError naming the file, exit 1."""
    import resource

    from glidectl.errors import WriteError

    path = tmp_path / "f.json"
    atomic.write_json(path, {"v": 1})
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, hard))
    try:
        with pytest.raises(WriteError, match=r"Cannot write .*f\.json' \(File too large\)"):
            atomic.write_json(path, {"v": "x" * 5000})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert WriteError.exit_code == 1
    assert path.read_text() == '{\n  "v": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


@pytest.mark.parametrize("part", ["checkpoints", "previews"])
@pytest.mark.parametrize("kind", ["file", "dangling link"])
def test_a_run_whose_subfolder_is_a_file_or_a_dangling_link_is_one_line(tmp_path, part, kind):
    """RunDir.create raised FileExistsError (a traceback out of `glidectl train`)."""
    from glidectl.errors import GlidectlError

    run = runs.RunDir(tmp_path / "run")
    run.root.mkdir()
    if kind == "file":
        (run.root / part).write_text("mine")
    else:
        (run.root / part).symlink_to(tmp_path / "gone")
    what = "file" if kind == "file" else "broken symbolic link"
    with pytest.raises(GlidectlError, match=rf"{part}' is a {what}, where the run keeps a "
                                            r"folder; remove or rename it\.$"):
        run.create()


def test_a_lock_file_that_cannot_be_opened_refuses_the_folder(tmp_path):
    """A `.lock` that was a folder (or another user's file) was skipped: two trainers then
    wrote one run."""
    from glidectl.errors import GlidectlError

    (tmp_path / ".lock").mkdir()
    with pytest.raises(GlidectlError, match=r"\.lock' cannot be opened \(Is a directory\), so "
                                            "another process could write the same files"):
        atomic.lock_file(tmp_path / ".lock", "busy")
    held = atomic.lock_file(tmp_path / "new.lock", "busy")  # created if missing
    assert held is not None
    held.close()


@pytest.mark.parametrize("code", ["ENOLCK", "ENOSYS", "EOPNOTSUPP"])
def test_a_filesystem_without_locks_is_one_warning_not_a_busy_run(tmp_path, monkeypatch, code):
    """On NFS without lockd or Lustre without ``-o flock`` every lockf() fails: every train,
    eval and fit-steps there was refused as "being trained by another glidectl process"."""
    import errno
    import fcntl

    from glidectl.errors import GlidectlError

    def fails(number):
        def lockf(*args):
            raise OSError(number, os.strerror(number))
        return lockf

    monkeypatch.setattr(fcntl, "lockf", fails(getattr(errno, code)))
    with pytest.warns(atomic.LockWarning, match=r"\.lock' cannot be locked on its filesystem "
                                                 r"\(.+\), so nothing stops a second"):
        assert atomic.lock_file(tmp_path / ".lock", "busy") is None
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a probe says nothing: who takes the lock says it
        assert not atomic.is_locked(tmp_path / ".lock")
    for held in (errno.EAGAIN, errno.EACCES):  # what lockf says when another process has it
        monkeypatch.setattr(fcntl, "lockf", fails(held))
        with pytest.raises(GlidectlError, match="^busy$"):
            atomic.lock_file(tmp_path / ".lock", "busy")
        assert atomic.is_locked(tmp_path / ".lock")


def test_temp_names_of_long_names_fit_and_their_stale_temps_are_found(tmp_path, monkeypatch):
    """A name within 15 bytes of the filesystem's limit got a temp name over it."""
    for name in ("p" * 245 + ".png", "日" * 80 + ".png", "short.png"):
        target = tmp_path / name
        with atomic.atomic_path(target) as tmp:
            assert len(os.fsencode(tmp.name)) <= atomic.NAME_MAX
            tmp.write_text("x")
        assert target.read_text() == "x"
    import subprocess

    gone = subprocess.Popen(["true"])
    gone.wait()
    monkeypatch.setattr(os, "getpid", lambda: gone.pid)  # a writer killed since
    stale = atomic.temp_path(tmp_path / ("q" * 250)).name
    monkeypatch.undo()
    (tmp_path / stale).write_text("left by a kill -9")
    assert atomic.remove_stale_temps(tmp_path, "q" * 250) == [tmp_path / stale]
    # two long names alike to their last bytes get two temp names; a name of bytes that are
    # not UTF-8 keeps them, so its stale temp is found
    assert atomic.temp_path(tmp_path / ("q" * 250 + "a")) != atomic.temp_path(
        tmp_path / ("q" * 250 + "b"))
    latin = os.fsdecode(b"caf\xe9.txt")
    monkeypatch.setattr(os, "getpid", lambda: gone.pid)
    (tmp_path / atomic.temp_path(tmp_path / latin).name).write_text("left")
    monkeypatch.undo()
    assert len(atomic.remove_stale_temps(tmp_path, latin)) == 1


def test_a_failed_write_gives_advice_that_fits_its_cause(tmp_path):
    import errno

    from glidectl.errors import write_error

    def advice(code):
        return str(write_error("f", OSError(code, os.strerror(code))))

    assert advice(errno.EISDIR).endswith("remove or rename the folder in its place and try "
                                         "again.")
    assert advice(errno.ENAMETOOLONG).endswith("pick a shorter name and try again.")
    assert advice(errno.ENOSPC).endswith("(No space left on device); free disk space and try "
                                         "again.")
    assert advice(errno.EROFS).endswith("fix the folder's permissions and try again.")


def test_a_failed_safetensors_write_gives_the_advice_of_its_os_error():
    """safetensors keeps only the number of the OSError ("... (os error 28)", as it says on
    a full tmpfs): a full disk was told "free disk space or fix the folder's permissions"."""
    from glidectl.errors import write_error

    class SafetensorError(Exception):
        pass

    said = "Error while serializing: I/O error: {} (os error {})"
    full = write_error("f", SafetensorError(said.format("No space left on device", 28)))
    assert str(full) == ("Cannot write 'f' (No space left on device); free disk space and try "
                         "again.")
    denied = write_error("f", SafetensorError(said.format("Permission denied", 13)))
    assert str(denied).endswith("(Permission denied); fix the folder's permissions and try "
                                "again.")


def test_a_claim_taken_over_after_its_lock_file_was_deleted_locks_the_new_file(tmp_path):
    """The take-over kept the handle of the deleted lock file (a run folder removed and made
    again), so the run on disk was locked for nobody."""
    import shutil
    import subprocess
    import sys

    folder = tmp_path / "run"
    folder.mkdir()
    first = atomic.lock_file(folder / ".lock", "busy", in_use=False)
    shutil.rmtree(folder)
    folder.mkdir()
    second = atomic.lock_file(folder / ".lock", "busy", in_use=False)
    assert first.superseded and not second.closed and (folder / ".lock").is_file()
    seen = subprocess.run([sys.executable, "-c", "import sys; from glidectl import atomic; "
                           "print(atomic.is_locked(sys.argv[1]))", str(folder / ".lock")],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert seen == "True"
    second.close()
