"""benchmarks/tune_schedule.py --model on a tiny model: a schedule file for one sampler
(the bespoke fit through ``glidectl fit-steps`` is in test_fit_steps.py)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_descent_on_a_models_ode_writes_a_usable_schedule_file(tmp_path) -> None:
    import torch
    from tiny_configs import tiny_base_weights

    from glidectl.pipeline import RECOMMENDED_KEY
    from glidectl.samplers import get_sigmas
    from glidectl.samplers.tuned import read_schedule_file

    weights = tiny_base_weights(tmp_path / "m.safetensors",
                                {RECOMMENDED_KEY: json.dumps({"guidance": 2.0})})
    out = tmp_path / "schedule.json"
    done = subprocess.run(
        [sys.executable, "tune_schedule.py", "--model", str(weights), "--steps", "3",
         "--images", "1", "--reference-steps", "12", "--rounds", "3",
         "--out", str(out)],
        cwd=ROOT / "benchmarks", capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    before, after = map(float, re.search(r"tuning RMS ([\d.e-]+) \(exponential\) -> "
                                         r"([\d.e-]+)", done.stdout).groups())
    assert after <= before
    data = json.loads(out.read_text())
    assert data["sampler"] == "unipc" and "guidance 2.0" in data["about"]
    assert list(read_schedule_file(out)) == [3]
    sigmas = get_sigmas(str(out), 3, 0.01, 80.0)
    assert len(sigmas) == 4 and sigmas[-1] == 0 and torch.all(sigmas[:-1].diff() < 0)


def test_gits_from_a_start_file_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    """``--method gits --start FILE`` ran GITS without the file's σ's and wrote "σ's of
    FILE" in the new file's ``about``; as ``glidectl fit-steps`` it is now refused first."""
    import runpy

    import pytest
    import torch
    from tiny_configs import tiny_base_weights

    from glidectl.samplers.tuned import write_schedule_file

    weights = tiny_base_weights(tmp_path / "m.safetensors")
    start = tmp_path / "start.json"
    write_schedule_file(start, {3: torch.tensor([80.0, 1.0, 0.01, 0.0])}, 0.01, 80.0, "test")
    out = tmp_path / "gits.json"
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    monkeypatch.setattr(sys, "argv", ["tune_schedule.py", "--model", str(weights), "--method",
                                      "gits", "--start", str(start), "--steps", "3",
                                      "--images", "1", "--reference-steps", "12",
                                      "--out", str(out)])
    with pytest.raises(SystemExit) as ended:
        runpy.run_path(str(ROOT / "benchmarks" / "tune_schedule.py"), run_name="__main__")
    err = capsys.readouterr().err.strip().splitlines()
    assert ended.value.code == 2 and len(err) == 1 and "takes no --start" in err[0], err
    assert not out.exists()


def test_an_existing_schedule_file_is_kept_unless_overwrite(tmp_path, monkeypatch, capsys
                                                            ) -> None:
    """RUN/schedule.json (glidectl fit-steps' file) was replaced without a word after the
    fit; now, as fit-steps, the run stops first unless --overwrite (a checkpoint folder, which
    training prunes, takes no schedule file)."""
    import runpy

    import pytest
    from tiny_configs import tiny_base_weights

    run_dir = tmp_path / "run"
    tiny_base_weights(run_dir / "checkpoints" / "step-000001" / "model.safetensors")
    (run_dir / "checkpoints" / "latest").write_text("step-000001\n")
    (run_dir / "config.toml").write_text("")  # a run folder: config.toml beside checkpoints/
    kept = run_dir / "schedule.json"
    kept.write_text('{"fitted": "by glidectl fit-steps"}')
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    for model, said in ((run_dir, "exists; pass --overwrite"),
                        (run_dir / "checkpoints" / "step-000001", "a checkpoint folder")):
        monkeypatch.setattr(sys, "argv", ["tune_schedule.py", "--model", str(model),
                                          "--steps", "3", "--images", "1",
                                          "--reference-steps", "12", "--rounds", "1"])
        with pytest.raises(SystemExit) as ended:
            runpy.run_path(str(ROOT / "benchmarks" / "tune_schedule.py"), run_name="__main__")
        err = capsys.readouterr().err
        assert ended.value.code == 2 and said in err and len(err.splitlines()) == 1, err
    assert kept.read_text() == '{"fitted": "by glidectl fit-steps"}'
    assert not (run_dir / "checkpoints" / "step-000001" / "schedule.json").exists()


def test_a_stopped_overwrite_keeps_the_old_file(tmp_path, monkeypatch) -> None:
    """``--overwrite`` wrote each count fitted straight over FILE, so a stop after the first
    count lost the old file's other counts; as fit-steps, the counts go to
    FILE.partial.json until every count is fitted."""
    import runpy

    import pytest
    from tiny_configs import tiny_base_weights

    import glidectl.step_fitting as step_fitting

    weights = tiny_base_weights(tmp_path / "m.safetensors")
    out = tmp_path / "s.json"
    out.write_text('{"old": "every count"}')

    def first_count_then_stop(target, calls, method, sampler, path, *args, **kwargs):
        Path(path).write_text('{"new": "one count"}')
        raise KeyboardInterrupt

    monkeypatch.setattr(step_fitting, "fit_steps", first_count_then_stop)
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    monkeypatch.setattr(sys, "argv", ["tune_schedule.py", "--model", str(weights), "--steps",
                                      "3", "4", "--images", "1", "--reference-steps", "12",
                                      "--out", str(out), "--overwrite"])
    with pytest.raises(KeyboardInterrupt):
        runpy.run_path(str(ROOT / "benchmarks" / "tune_schedule.py"), run_name="__main__")
    assert out.read_text() == '{"old": "every count"}'
    assert (tmp_path / "s.partial.json").read_text() == '{"new": "one count"}'


def test_a_reference_too_short_is_refused_before_the_model_loads(tmp_path, monkeypatch,
                                                                  capsys) -> None:
    """``--reference-steps 2`` fitted σ's to a 2-step "reference" (fit-steps takes 10 or
    more), and gits' reference was checked only after it was computed, in fit-steps' flag
    (--calls); both are now said first, in this script's words."""
    import runpy

    import pytest

    from glidectl.glide import loading

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(loading, "load_model", never)
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    out = tmp_path / "s.json"
    for args, said in ((["--steps", "3", "--reference-steps", "2"],
                        "argument --reference-steps: 2 is below 10"),
                       (["--method", "gits", "--steps", "20", "--reference-steps", "12"],
                        "Error: --method gits picks its 20 steps among 7 σ's of the 12-step "
                        "reference, too few; pass --reference-steps 40 or more, or fewer "
                        "--steps.")):
        monkeypatch.setattr(sys, "argv", ["tune_schedule.py", "--model", str(tmp_path / "m"),
                                          *args, "--out", str(out)])
        with pytest.raises(SystemExit) as ended:
            runpy.run_path(str(ROOT / "benchmarks" / "tune_schedule.py"), run_name="__main__")
        err = capsys.readouterr().err.strip()
        assert ended.value.code == 2 and err.endswith(said), err
    assert not out.exists()
