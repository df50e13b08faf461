"""The run layout (glidectl.runs) and the atomic-write helper (glidectl.atomic)."""

from __future__ import annotations

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
