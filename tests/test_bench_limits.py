"""benchmarks/ode_limits.py: the switched-sample count on a mixture and a model's roughness."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_limits_on_a_mixture_and_a_tiny_model(tmp_path, monkeypatch, capsys) -> None:
    """Run as ``python ode_limits.py`` from benchmarks/, in this process (the script's start-up
    is not what it checks), on an 8 px tiny base (its figures' logic needs no larger one)."""
    import runpy

    import torch
    from tiny_configs import fill_zero_layers

    from glidectl.glide import create_model, preset_options, save_weights

    torch.manual_seed(0)
    weights = save_weights(fill_zero_layers(create_model(preset_options("base", "tiny").replace(
        image_size=8, attention_resolutions="4"))), tmp_path / "m.safetensors")
    schedule = bespoke_file(weights, tmp_path / "schedule.json", 6)
    out = tmp_path / "limits.json"
    monkeypatch.chdir(ROOT / "benchmarks")
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    monkeypatch.setattr(sys, "argv", [
        "ode_limits.py", "--samples", "48", "--model", str(weights),
        "--images", "1", "--sigmas", "1", "--model-calls", "4", "8",
        "--reference-steps", "16", "--per-image", "1", "--rounds", "1", "--calls", "6",
        "--follow-schedule", str(schedule), "--per-image-bespoke", str(schedule),
        "--evals", "3", "--ode-steps", "150", "--json", str(out)])
    threads = torch.get_num_threads()
    try:
        with torch.random.fork_rng(), pytest.raises(SystemExit) as ended:
            runpy.run_path("ode_limits.py", run_name="__main__")
    finally:
        torch.set_num_threads(threads)  # the script sets its --threads
    done = capsys.readouterr()
    assert ended.value.code == 0, done.err
    found = json.loads(out.read_text())
    runs = {(r["sampler"], r["calls"]): r for r in found["gmm"]["runs"]}
    for r in runs.values():
        assert 0 <= r["switched"] <= 48 and r["rms"] >= r["rms_others"] - 1e-12
    assert runs["ddim", 1000]["rms_others"] < runs["ddim", 50]["rms_others"] / 10
    follow = found["gmm"]["follow"]["steps"]
    assert len(follow) == 5 and all(0 <= s["switched"] <= 48 for s in follow)  # 6 calls
    assert follow[0]["sigma"] > follow[-1]["sigma"] and follow[0]["state_error"] > 0
    (rough,) = found["model"]["roughness"]
    assert rough["sigma"] == 1 and all(math.isfinite(v) and v >= 0 for v in rough.values())
    assert set(found["model"]["unipc"]) == {"4", "8"}
    path = found["model"]["follow"]
    assert [r["call"] for r in path] == list(range(1, len(path) + 1)) and len(path) >= 4
    assert all(math.isfinite(r["rms"]) and 0 <= r["mean"] <= r["rms"] + 1e-9 for r in path)
    assert path[0]["sigma"] > path[-1]["sigma"] and f"unipc on {schedule} σ's" in done.out
    (own,) = found["model"]["per_image"]["rows"]
    assert own["own"] <= own["shared"] + 1e-9  # its own σ's start from the shared ones
    fits = found["model"]["per_image_bespoke"]
    (one,) = fits["rows"]  # refitted from the shared rows: L-BFGS keeps the best it saw
    assert one["own"] <= one["shared"] + 1e-7 and fits["ddim50_mean"] > 0
    assert "switched" in done.out and "cubic residual" in done.out
    assert "refitted on each image alone" in done.out


def test_the_followed_mixture_sampler_makes_calls_not_steps(tmp_path, monkeypatch) -> None:
    """``--calls`` is model calls: heun's 5 are 3 steps (it ran 5 steps, 9 calls, said as 5),
    and a bespoke file without that count is one sentence before the sweep, not after."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from ode_limits import followed_sigmas

    from glidectl import plugins
    from glidectl.errors import GlidectlError
    from glidectl.samplers.bespoke import linear_coefficients
    from glidectl.samplers.tuned import write_schedule_file

    sigmas, options = followed_sigmas("heun", "karras", 5)
    assert len(sigmas) == 4 and options == {}
    assert len(followed_sigmas("ipndm", "optimised", 15)[0]) == 16
    with pytest.raises(GlidectlError, match="cannot make exactly 4 model calls"):
        followed_sigmas("heun", "karras", 4)
    six = followed_sigmas("ipndm", "optimised", 6)[0]
    path = tmp_path / "b.json"
    write_schedule_file(path, {6: six}, 0.002, 80.0, "test", sampler="bespoke", coefficients={
        6: linear_coefficients(plugins.samplers().get("ipndm"), six)})
    assert len(followed_sigmas("bespoke", str(path), 6)[1]["coefficients"]) == 6
    with pytest.raises(GlidectlError, match="holds none"):
        followed_sigmas("bespoke", str(path), 15)


def bespoke_file(weights: Path, path: Path, n: int) -> Path:
    """A bespoke schedule file for a model: dpm++2m's own rows on exponential σ's."""
    from glidectl import plugins
    from glidectl.glide.loading import load_model
    from glidectl.samplers.bespoke import linear_coefficients
    from glidectl.samplers.schedules import build_sigmas, sigmas_from_alphas_cumprod
    from glidectl.samplers.tuned import write_schedule_file
    from glidectl.sampling import sigma_table

    table = sigmas_from_alphas_cumprod(sigma_table(load_model(weights)))
    sigmas = build_sigmas("exponential", n, table)
    rows = linear_coefficients(plugins.samplers().get("dpm++2m"), sigmas)
    write_schedule_file(path, {n: sigmas}, float(table[0]), float(sigmas[0]), "test",
                        sampler="bespoke", coefficients={n: rows})
    return path


def test_a_model_that_is_not_there_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    """The benchmarks that read a model say a bad --model as glidectl does, no traceback."""
    import runpy

    import pytest

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # tune_schedule imports a sibling
    for script, extra in (("bench_samplers.py", ["--skip-gmm"]), ("tune_schedule.py", []),
                          ("ode_limits.py", ["--skip-gmm"])):
        monkeypatch.setattr(sys, "argv", [script, *extra, "--model", str(tmp_path / "none")])
        with pytest.raises(SystemExit) as ended:
            runpy.run_path(str(ROOT / "benchmarks" / script), run_name="__main__")
        said = capsys.readouterr().err.strip().splitlines()
        assert ended.value.code == 2 and len(said) == 1, (script, ended.value.code, said)
        assert said[0].startswith("Error: Model ") and "not found" in said[0], (script, said)
    # a weights file has no folder for the default schedule file: said before the fit
    weights = tmp_path / "m.safetensors"
    from glidectl.glide import create_model, preset_options, save_weights

    save_weights(create_model(preset_options("base", "tiny")), weights)
    monkeypatch.setattr(sys, "argv", ["tune_schedule.py", "--model", str(weights)])
    with pytest.raises(SystemExit) as ended:
        runpy.run_path(str(ROOT / "benchmarks" / "tune_schedule.py"), run_name="__main__")
    assert ended.value.code == 2
    assert "Pass --out FILE.json" in capsys.readouterr().err  # as glidectl fit-steps says
    # --json names a file in a folder that is there, or the run does not begin
    monkeypatch.setattr(sys, "argv", ["bench_samplers.py", "--skip-gmm", "--json",
                                      str(tmp_path / "no" / "out.json")])
    with pytest.raises(SystemExit) as ended:
        runpy.run_path(str(ROOT / "benchmarks" / "bench_samplers.py"), run_name="__main__")
    assert ended.value.code == 2 and "does not exist" in capsys.readouterr().err


def test_a_model_of_the_wrong_kind_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    """An upsampler as --model (a base model as bench_samplers' --upsampler) was a
    ValueError/TypeError traceback from the network; an inpainting base, a silent sweep
    without its inpaint inputs."""
    import runpy

    from test_pipeline import tiny_glide

    from glidectl.glide import save_weights

    up = save_weights(tiny_glide("upsample", 1), tmp_path / "up.safetensors")
    inpaint = save_weights(tiny_glide("base-inpaint", 2), tmp_path / "inpaint.safetensors")
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    cases = [("bench_samplers.py", ["--skip-gmm", "--model", up], "not upsample models"),
             ("bench_samplers.py", ["--skip-gmm", "--upsampler", inpaint], "not base-inpaint"),
             ("ode_limits.py", ["--skip-gmm", "--model", inpaint], "not base-inpaint"),
             ("tune_schedule.py", ["--model", up, "--out", tmp_path / "s.json"],
              "not upsample models")]
    for script, extra, said in cases:
        monkeypatch.setattr(sys, "argv", [script, *map(str, extra)])
        with pytest.raises(SystemExit) as ended:
            runpy.run_path(str(ROOT / "benchmarks" / script), run_name="__main__")
        err = capsys.readouterr().err.strip().splitlines()
        assert ended.value.code == 2 and len(err) == 1 and said in err[0], (script, err)
    assert not (tmp_path / "s.json").exists()


def test_bench_samplers_checks_its_sampler_and_schedule_names_first(tmp_path, monkeypatch,
                                                                   capsys) -> None:
    """A typo in --model-samplers / --upsampler-samplers / --model-schedules (or a schedule
    file that is not there) was said after the mixture sweep and the model's 500-step
    reference: minutes of work, then the line. Now it is said first."""
    import runpy

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    none = str(tmp_path / "none")  # said after the names: the names come first
    for bad, said in ((["--model-samplers", "eulr"], "Unknown sampler 'eulr'"),
                      (["--upsampler-samplers", "eulr"], "Unknown sampler 'eulr'"),
                      (["--model-schedules", "karas"], "Unknown schedule 'karas'"),
                      (["--model-schedules", str(tmp_path / "s.json")], "does not exist")):
        monkeypatch.setattr(sys, "argv", ["bench_samplers.py", "--samples", "2", "--model",
                                          none, *bad])
        with pytest.raises(SystemExit) as ended:
            runpy.run_path(str(ROOT / "benchmarks" / "bench_samplers.py"), run_name="__main__")
        out, err = capsys.readouterr()
        assert ended.value.code == 2 and said in err and not out, (bad, out, err)


def test_benchmark_counts_below_one_are_argparse_errors(monkeypatch) -> None:
    """A count of 0 or a word is argparse's one line (exit 2), not a traceback at the end."""
    import argparse

    import pytest

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from bench_args import positive_int, positive_ints

    assert positive_int("3") == 3 and positive_ints("16, 32") == [16, 32]
    for bad in ("0", "-1", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            positive_int(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        positive_ints("16,0")


@pytest.mark.parametrize("argv", [
    ["bench_data.py", "--size", "64"],  # was a numpy ValueError from the drawn shapes
    ["bench_eval_memory.py", "--sizes", "abc"],  # was int()'s ValueError
    ["bench_train.py", "--case", "huge", "no", "0"],  # was a KeyError
    ["bench_train.py", "--steps", "1"],  # was silently ignored by the full run
    ["bench_train_step.py", "--threads", "0"],  # was torch's RuntimeError
    ["bench_quickstart.py", "--seeds", "x"],  # was int()'s ValueError
    ["bench_samplers.py", "--samples", "0"],  # was a reshape RuntimeError
    ["bench_samplers.py", "--skip-gmm", "--gmm-bespoke", "x.json"],  # fitted nothing, silently
    ["bench_samplers.py", "--gmm-bespoke", "/nonexistent/x.json"],  # made /nonexistent/
    ["kill_sweep.py", "--commands", "bogus"],  # was exit 1 (a failed trial's) after set-up
    ["ode_limits.py", "--sampler", "heun", "--calls", "4"],  # ran 4 steps (7 calls)
    ["kill_sweep.py", "--earliest", "2"],  # every kill came after the command ended
    ["baseline_train.py", "--config", "/nonexistent"],  # was a ConfigError traceback
], ids=lambda argv: " ".join(argv))
def test_bad_benchmark_flags_are_one_line_and_exit_2(argv, monkeypatch, capsys) -> None:
    """A bad value is said in one line with exit code 2 before any work, not a traceback."""
    import runpy

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as ended:
        runpy.run_path(str(ROOT / "benchmarks" / argv[0]), run_name="__main__")
    err = capsys.readouterr().err
    assert ended.value.code == 2, (ended.value.code, err)
    assert "Traceback" not in err and "error" in err.strip().splitlines()[-1].lower(), err


def test_seed_and_fraction_types(monkeypatch) -> None:
    """Seeds and torch's default thread count may be 0; a kill moment is a fraction."""
    import argparse

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from bench_args import fraction, nonnegative_int, nonnegative_ints

    assert nonnegative_ints("0, 1") == [0, 1] and nonnegative_int("0") == 0
    assert fraction("0") == 0 and fraction("0.3") == 0.3
    for bad, parse in (("-1", nonnegative_int), ("1", fraction), ("x", fraction)):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(bad)
