"""``glidectl fit-steps`` on a tiny model: a schedule file that ``glidectl sample`` uses."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from PIL import Image
from test_pipeline import tiny_glide
from test_sample_cmd import in_process


@contextmanager
def ctrl_c_at(count: int) -> Iterator[None]:
    """Ctrl-C (KeyboardInterrupt) when fit-steps starts fitting ``count`` calls."""
    from glidectl import step_fitting

    calls = step_fitting.fit_calls

    def stop(target, n, *args, **kwargs):
        if n == count:
            raise KeyboardInterrupt
        return calls(target, n, *args, **kwargs)

    step_fitting.fit_calls = stop
    try:
        yield
    finally:
        step_fitting.fit_calls = calls


@pytest.fixture
def glidectl(capsys):
    """``glidectl ARGS`` in this process: (exit code, stdout, stderr)."""
    def invoke(*args) -> tuple[int, str, str]:
        res = in_process(capsys, *args)
        return res.returncode, res.stdout, res.stderr

    return invoke


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    from glidectl.glide import save_weights

    folder = tmp_path_factory.mktemp("weights")
    return {"base": save_weights(tiny_glide("base", 0), folder / "base.safetensors"),
            "upsample": save_weights(tiny_glide("upsample", 1), folder / "up.safetensors")}


def test_a_bespoke_fit_writes_the_file_sample_uses(glidectl, weights, tmp_path) -> None:
    out = tmp_path / "fit.json"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n\na blue square\n")
    code, stdout, stderr = glidectl(
        "fit-steps", weights["base"], "--calls", "3", "--method", "bespoke", "--prompts",
        prompts, "--images", "3", "--reference-steps", "12", "--rounds", "2", "--evals", "6",
        "--guidance", "2", "--out", out)
    assert code == 0, stderr
    assert stdout.strip() == str(out)
    before, after = map(float, re.search(r"3 calls: tuning RMS ([\d.e-]+) \(exponential\) -> "
                                         r"([\d.e-]+)", stderr).groups())
    assert after <= before  # the descent never makes its own start worse
    assert re.search(r"bespoke tuning RMS [\d.e-]+ -> [\d.e-]+", stderr)
    data = json.loads(out.read_text())
    assert data["sampler"] == "bespoke" and [len(r) for r in data["coefficients"]["3"]] == [2, 3, 4]
    assert "3 tuning images from 2 prompts" in data["about"] and "guidance 2" in data["about"]
    assert data["guidance"] == 2.0  # for the refit line and sample's warning, not only prose
    assert f"--sampler bespoke --steps 3 --schedule {out} --guidance 2" in stderr
    check = data["held_out"]["3"]  # 3 images (the prompts in turn) from noise seed 2
    assert re.search(r"3 calls, bespoke, held out \(3 images, noise seed 2\): mean [\d.]+, RMS",
                     stderr)
    assert check["images"] == 3 and check["noise_seed"] == 2
    assert check["vs_ddim50"] == pytest.approx(check["mean"] / check["ddim50_mean"])
    assert_held_out_figures(weights["base"], out, check)
    code, _, stderr = glidectl("sample", "a cat", "--base", weights["base"], "--sampler",
                               "bespoke", "--steps", "3", "--schedule", out, "--guidance", "2",
                               "-q", "--precision", "fp32", "--out", tmp_path / "images")
    assert code == 0, stderr
    assert Image.open(tmp_path / "images" / "00000.png").text["model_calls"] == "3"
    assert "was fitted at guidance" not in stderr  # sampled at the guidance it was fitted at


def assert_held_out_figures(model: Path, path: Path, check: dict) -> None:
    """The file's held-out figures are the fitted solver's and DDIM-50's, recomputed."""
    from glidectl.glide.loading import load_model
    from glidectl.samplers.schedules import build_sigmas
    from glidectl.samplers.tuned import read_coefficients
    from glidectl.step_fitting import errors, reference

    target = reference(load_model(model), ["a red circle", "a blue square", "a red circle"],
                       2.0, seed=2, steps=12)
    sigmas = build_sigmas(str(path), 3, target.denoiser.sigmas)
    with torch.no_grad():
        fitted = errors(target.sample("bespoke", sigmas, read_coefficients(path, 3, sigmas)),
                        target.ref)
    assert fitted["mean"] == pytest.approx(check["mean"], rel=1e-5)
    assert target.ddim50["mean"] == pytest.approx(check["ddim50_mean"], rel=1e-5)


@pytest.mark.parametrize("native_bf16", [False, True])
def test_gits_fits_every_count_for_any_sampler(glidectl, weights, tmp_path, monkeypatch,
                                               native_bf16) -> None:
    from glidectl import devices
    from glidectl.samplers.tuned import read_schedule_file

    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: native_bf16)

    out = tmp_path / "gits.json"
    code, _, stderr = glidectl("fit-steps", weights["base"], "--calls", "3", "--calls", "5",
                               "--method", "gits", "--prompt", "a cat", "--images", "2",
                               "--reference-steps", "16", "--check-images", "0", "--out", out)
    assert code == 0, stderr
    assert sorted(read_schedule_file(out)) == [3, 5]
    data = json.loads(out.read_text())
    assert data["sampler"] is None and "held_out" not in data  # any sampler; no check
    assert "--sampler unipc --steps 3" in stderr  # was SAMPLER: the line did not run
    # fitted in fp32: where sample's auto precision is bf16, the command asks for fp32
    assert ("--guidance 3 --precision fp32\n(fitted in fp32; without --precision fp32, "
            "sample computes in bf16 here" in stderr) == native_bf16, stderr


def test_gits_for_a_two_call_sampler_is_checked_as_the_sampler_it_names(glidectl, weights,
                                                                       tmp_path) -> None:
    """GITS picks one σ per call, so for heun (2 calls a step) the file is sampled with
    unipc, as the `sample with:` line says; the held-out check scored heun on those σ's
    (5 calls for '3 calls') and labelled it '3 calls, heun'."""
    from glidectl.glide.loading import load_model
    from glidectl.samplers.schedules import build_sigmas
    from glidectl.step_fitting import reference

    out = tmp_path / "gits.json"
    code, _, stderr = glidectl("fit-steps", weights["base"], "--calls", "3", "--method",
                               "gits", "--sampler", "heun", "--prompt", "a cat", "--images",
                               "1", "--reference-steps", "12", "--out", out)
    assert code == 0, stderr
    assert "--sampler unipc --steps 3" in stderr and "3 calls, unipc, held out" in stderr
    target = reference(load_model(weights["base"]), ["a cat"], 3.0, seed=2, steps=12)
    check = target.check("unipc", build_sigmas(str(out), 3, target.denoiser.sigmas))
    stored = json.loads(out.read_text())["held_out"]["3"]
    assert stored["mean"] == pytest.approx(check["mean"], rel=1e-5)


def test_flags_the_fit_does_not_use_are_warned_of(glidectl, weights, tmp_path) -> None:
    # --evals, --fixed-sigmas (bespoke only), --rounds (no descent in gits) and
    # --check-prompts (with --check-images 0) changed nothing without a word
    from glidectl.cli.fit_cmd import unused_flags

    others = tmp_path / "others.txt"
    others.write_text("a dog\n")
    code, _, stderr = glidectl("fit-steps", weights["base"], "--calls", "3", "--method", "gits",
                               "--prompt", "a cat", "--images", "1", "--reference-steps", "12",
                               "--rounds", "2", "--evals", "3", "--fixed-sigmas",
                               "--check-prompts", others, "--check-images", "0",
                               "--out", tmp_path / "g.json")
    assert code == 0, stderr
    assert ("Warning: --evals, --fixed-sigmas not used: only --method bespoke fits a bespoke "
            "solver (this fit is --method gits).\n"
            "Warning: --rounds not used: --method gits runs no descent.\n"
            "Warning: --check-prompts not used: --check-images 0 skips the held-out check.\n"
            ) in stderr
    start = tmp_path / "g.json"
    assert unused_flags({"--rounds"}, "bespoke", start, None) == [
        "Warning: --rounds not used: --method bespoke from --start fits from the file's σ's "
        "without a descent."]
    for used in (({"--rounds"}, "descent", start, None), ({"--rounds"}, "bespoke", None, 2),
                 ({"--evals", "--fixed-sigmas"}, "bespoke", None, None),
                 ({"--check-prompts"}, "descent", None, None)):
        assert unused_flags(*used) == []


def test_the_check_may_use_other_prompts(glidectl, weights, tmp_path) -> None:
    out, others = tmp_path / "s.json", tmp_path / "others.txt"
    others.write_text("a dog\n")
    code, _, stderr = glidectl("fit-steps", weights["base"], "--calls", "3", "--prompt", "a cat",
                               "--images", "2", "--reference-steps", "12", "--rounds", "1",
                               "--check-prompts", others, "--check-images", "2", "--out", out)
    assert code == 0, stderr
    assert "2 images from noise seed 2 and the --check-prompts" in stderr
    assert json.loads(out.read_text())["held_out"]["3"]["images"] == 2
    others.write_text("\n")
    code, _, stderr = glidectl("fit-steps", weights["base"], "--prompt", "a cat",
                               "--check-prompts", others, "--out", tmp_path / "t.json")
    assert code == 2 and "holds no prompt" in stderr, stderr
    # a --prompts file of comments only: said of the file given, not "pass --prompts FILE"
    others.write_text("# colours\n\n")
    code, _, stderr = glidectl("fit-steps", weights["base"], "--prompts", others,
                               "--out", tmp_path / "t.json")
    assert code == 2 and stderr == (
        f"Error: Prompts file {str(others)!r} holds no prompt (only blank lines and # "
        "comments); write one per line.\n"), stderr


def test_a_stopped_fit_keeps_the_counts_it_finished(weights, tmp_path) -> None:
    from glidectl.glide.loading import load_model
    from glidectl.samplers.tuned import read_schedule_file
    from glidectl.step_fitting import fit_steps, reference

    target = reference(load_model(weights["base"]), ["a cat"], 3.0, seed=1, steps=12)
    out = tmp_path / "s.json"

    def log(message: str) -> None:
        if message.startswith("5 calls"):  # the second count's descent has run: stop here
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit_steps(target, [3, 5], "descent", "unipc", out, "test", log=log, rounds=1)
    assert list(read_schedule_file(out)) == [3]
    assert json.loads(out.read_text())["not_fitted"] == [5]  # the file says what it lacks


def test_a_count_given_twice_is_fitted_once(weights, tmp_path) -> None:
    """`--calls 3 --calls 3` ran the same fit twice (a bespoke count: minutes each) and wrote
    the same σ's over the first."""
    from glidectl.glide.loading import load_model
    from glidectl.step_fitting import fit_steps, reference

    target = reference(load_model(weights["base"]), ["a cat"], 3.0, seed=1, steps=12)
    said: list[str] = []
    found = fit_steps(target, [3, 4, 3], "descent", "unipc", tmp_path / "s.json", "test",
                      log=said.append, rounds=1)
    assert list(found) == [3, 4]
    assert [m.split(":")[0] for m in said if "tuning RMS" in m] == ["3 calls", "4 calls"]


def test_a_descent_from_start_descends_from_the_file_s_sigmas(weights, tmp_path) -> None:
    """--start FILE with the default method copied FILE's σ's (interpolated for another
    count) as if fitted: --images and --rounds did nothing. The descent starts there."""
    from glidectl.glide.loading import load_model
    from glidectl.samplers.schedules import build_sigmas
    from glidectl.step_fitting import fit_calls, fit_steps, reference

    target = reference(load_model(weights["base"]), ["a cat"], 3.0, seed=1, steps=12)
    out = tmp_path / "s.json"
    fit_steps(target, [3], "descent", "unipc", out, "test", log=lambda m: None, rounds=1)
    said = []
    steps, sigmas, _ = fit_calls(target, 4, "descent", "unipc", rounds=2, start=str(out),
                                 log=said.append)
    start = build_sigmas(str(out), 4, target.denoiser.sigmas)
    assert said[-1].startswith("4 calls: tuning RMS ")
    # FILE holds no 4-step σ's: the line said "(FILE)" as if it did
    assert f"({out}'s 3-step σ's, interpolated to 4) -> " in said[-1], said
    assert target.rms("unipc", sigmas) <= target.rms("unipc", start)
    fit_calls(target, 3, "descent", "unipc", rounds=1, start=str(out), log=said.append)
    assert f"({out}) -> " in said[-1], said


@pytest.mark.parametrize("args, message", [
    ((), "needs tuning prompts: pass --prompts FILE"),
    (("--prompt", "x", "--method", "newton"), "Unknown fitting method 'newton'"),
    (("--prompt", "x", "--method", "bespoke", "--sampler", "heun", "--calls", "4"),
     "one model call per step, and heun makes more"),
    (("--prompt", "x", "--sampler", "heun", "--calls", "4"), "heun cannot make exactly 4"),
    (("--prompt", "x", "--calls", "0"), "must be from 1 to 10000; got 0"),
    (("--prompt", "x", "--images", "0"), "must be from 1 to 1000000; got 0"),
    (("--prompt", "x", "--reference-steps", "5"), "must be from 10 to 100000; got 5"),
    (("--prompt", "x", "--sampler", "unipcc"), "unipc"),
    (("--prompts", "no-such.txt"), "Prompts file 'no-such.txt' (relative to the current "
     "folder, "),
    (("--prompt", "x", "--start", "no.json"), "'no.json' does not exist"),
    (("--prompt", "x", "--method", "gits", "--start", "no.json"), "gits searches the "
     "reference's own path and takes no --start"),
    (("--prompt", "x", "--check-prompts", "no.txt"), "--check-prompts file 'no.txt' (relative "
     "to the current folder, "),
    (("--prompt", "x", "--check-images", "-1"), "must be from 0 to 1000000; got -1"),
    # was search.py's ValueError traceback (exit 1) once the references were solved
    (("--prompt", "x", "--method", "gits", "--reference-steps", "10", "--calls", "7"),
     "--method gits picks its 7 steps among 6 σ's of the 10-step reference, too few; pass "
     "--reference-steps 14 or more, or fewer --calls."),
    # fitted with unseeded noise against the ODE: another file each run
    (("--prompt", "x", "--sampler", "ddpm"), "ddpm draws fresh noise at each step, so its "
     "steps cannot be fitted to the model's ODE"),
    (("--prompt", "x", "--sampler", "euler_a", "--method", "bespoke"), "euler_a draws fresh "
     "noise at each step"),
])
def test_bad_input_is_one_sentence_and_exit_2(glidectl, weights, tmp_path, args,
                                              message) -> None:
    code, _, stderr = glidectl("fit-steps", weights["base"], "--out", tmp_path / "s.json",
                               *args)
    assert code == 2 and stderr.count("Error:") == 1 and "Traceback" not in stderr, stderr
    assert message in stderr, stderr
    assert not (tmp_path / "s.json").exists()


def test_a_plugin_sampler_taking_noise_sampler_is_refused_only_if_it_draws_noise(
        register_plugin) -> None:
    """A deterministic plugin sampler with the README's signature (``noise_sampler=None``
    among its arguments) was refused: "draws fresh noise at each step"; one that asks its
    noise_sampler for noise still is."""
    from glidectl.errors import GlidectlError
    from glidectl.hookspecs import hookimpl
    from glidectl.samplers.spec import Sampler
    from glidectl.step_fitting import check_method

    def plain(denoiser, x, sigmas, extra=None, callback=None, noise_sampler=None):
        for s, s_next in zip(sigmas[:-1], sigmas[1:], strict=True):
            x = x + (x - denoiser(x, s)) / s * (s_next - s)
        return x

    def noisy(denoiser, x, sigmas, extra=None, callback=None, noise_sampler=None):
        return plain(denoiser, x, sigmas) + 0 * noise_sampler(sigmas[0], sigmas[1])

    class Plain:
        @hookimpl
        def register_samplers(self, register):
            register("plain_euler", Sampler(plain))
            register("noisy_euler", noisy)

    register_plugin(Plain(), "plain-plugin")
    assert check_method("descent", "plain_euler", [3]) == ("descent", "plain_euler")
    with pytest.raises(GlidectlError, match="^noisy_euler draws fresh noise at each step"):
        check_method("descent", "noisy_euler", [3])


def test_an_existing_file_an_upsampler_and_no_out_are_refused(glidectl, weights,
                                                               tmp_path) -> None:
    from glidectl.samplers.tuned import write_schedule_file

    kept = tmp_path / "kept.json"
    kept.write_text("{}")
    for args, message in (
            (("--out", kept), "exists; pass --overwrite"),
            (("--out", tmp_path / "none" / "s.json"), "does not exist; create it"),
            ((), "is not a run folder"),
    ):
        code, _, stderr = glidectl("fit-steps", weights["base"], "--prompt", "x", *args)
        assert code == 2 and message in stderr and "Traceback" not in stderr, stderr
    code, _, stderr = glidectl("fit-steps", tmp_path / "no-such-run", "--prompt", "x")
    assert code == 2 and "not found" in stderr and "--out" not in stderr, stderr
    assert kept.read_text() == "{}"
    start = tmp_path / "start.json"
    write_schedule_file(start, {3: torch.tensor([80.0, 2.0, 0.1, 0.0])}, 0.01, 80.0, "test")
    code, _, stderr = glidectl("fit-steps", weights["base"], "--prompt", "x", "--start", start,
                               "--out", start, "--overwrite")
    assert code == 2 and "--start and --out are the same file" in stderr, stderr
    code, _, stderr = glidectl("fit-steps", weights["upsample"], "--prompt", "x", "--out",
                               tmp_path / "u.json")
    assert code == 2 and "not upsample models like" in stderr, stderr


def test_a_lora_adapter_or_run_as_the_model_names_merge_not_a_lora_flag(glidectl, weights,
                                                                       tmp_path) -> None:
    """fit-steps on a LoRA run or adapter said "pass its base model with --lora", a flag
    fit-steps does not have (and a LoRA run without --out got a lock file first)."""
    import shutil

    from tiny_configs import random_attention_adapter

    shutil.copy(weights["base"], tmp_path / "base.safetensors")
    adapter = random_attention_adapter(tmp_path, "base.safetensors", std=0.1)
    run = tmp_path / "lora-run"
    shutil.copytree(adapter, run / "checkpoints" / "step-000002" / "lora")
    for model in (run, adapter, adapter / "adapter_model.safetensors"):
        code, _, stderr = glidectl("fit-steps", model, "--prompt", "x")
        assert code == 2 and stderr.count("\n") == 1 and "--lora" in stderr, stderr
        assert "fit-steps takes no --lora; fold it into its base first with: glidectl lora " \
               f"merge {model} -o merged.safetensors" in stderr, stderr
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints"]


def test_a_checkpoint_folder_needs_out_and_checkpoints_writes_into_its_run(glidectl, weights,
                                                                          tmp_path) -> None:
    """Without --out, fit-steps on runs/X/checkpoints/step-N wrote its schedule.json inside
    the step folder, which training's pruning deletes with the step; on runs/X/checkpoints
    it wrote checkpoints/schedule.json, not the run's."""
    import shutil

    run = tmp_path / "run"
    step = run / "checkpoints" / "step-000002"
    step.mkdir(parents=True)
    shutil.copy(weights["base"], step / "ema.safetensors")
    (run / "config.toml").write_text("[train]\n")
    code, _, stderr = glidectl("fit-steps", step, "--prompt", "x")
    assert code == 2 and stderr.count("\n") == 1, stderr
    assert (f"Pass --out FILE.json (such as {str(run / 'schedule-step-000002.json')!r}): "
            f"{str(step)!r} is a checkpoint folder, which training deletes") in stderr, stderr
    assert sorted(p.name for p in step.iterdir()) == ["ema.safetensors"]
    (run / "schedule.json").write_text("{}")  # the run's own file is where it would go
    code, _, stderr = glidectl("fit-steps", run / "checkpoints", "--prompt", "x")
    assert code == 2 and f"{str(run / 'schedule.json')!r} exists" in stderr, stderr


@pytest.mark.parametrize("out, message", [
    ("s.txt", "must end in .json"),
    ("folder.json", "is a folder; name a FILE.json in it"),
    ("prompts.json", "is a prompts file of this fit"),
    ("prompts.json/s.json", "is under"),  # said as other commands say it (was "does not exist")
    ("nowhere/s.json", "The folder of --out"),
])
def test_an_unusable_out_is_refused_before_the_model_loads(glidectl, weights, tmp_path, out,
                                                           message) -> None:
    (tmp_path / "folder.json").mkdir()
    prompts = tmp_path / "prompts.json"
    prompts.write_text("a cat\n")
    code, _, stderr = glidectl("fit-steps", tmp_path / "never-read.safetensors", "--prompts",
                               prompts, "--out", tmp_path / out, "--overwrite")
    assert code == 2 and stderr.count("Error:") == 1 and message in stderr, stderr
    assert prompts.read_text() == "a cat\n"
    if message == "is under":
        assert f"is under {str(prompts)!r}, a file; pick a path in a folder" in stderr


def test_bespoke_is_fitted_from_another_sampler(glidectl, weights, tmp_path) -> None:
    code, _, stderr = glidectl("fit-steps", weights["base"], "--prompt", "x", "--sampler",
                               "bespoke", "--out", tmp_path / "s.json")
    assert code == 2 and "--method bespoke --sampler unipc" in stderr, stderr


def test_overwriting_keeps_the_old_file_until_every_count_is_fitted(glidectl, weights,
                                                                   tmp_path) -> None:
    from glidectl.samplers.tuned import read_schedule_file, write_schedule_file

    out = tmp_path / "s.json"
    write_schedule_file(out, {n: torch.linspace(80, 0.1, n).double().tolist() + [0.0]
                              for n in (3, 4)}, 0.05, 80.0, "old")
    old = out.read_text()
    args = ("fit-steps", weights["base"], "--prompt", "a cat", "--images", "1",
            "--reference-steps", "12", "--rounds", "1", "--check-images", "0", "--out", out,
            "--overwrite", "--calls", "3", "--calls", "5")
    with ctrl_c_at(5):
        code, _, stderr = glidectl(*args)
    assert code != 0 and out.read_text() == old, stderr  # interrupted: the old file whole
    partial = tmp_path / "s.partial.json"
    assert list(read_schedule_file(partial)) == [3]
    assert (f"the counts fitted so far are in {str(partial)!r}, not 5 steps; run the same "
            "command again") in stderr
    code, _, stderr = glidectl(*args)
    assert code == 0, stderr
    assert sorted(read_schedule_file(out)) == [3, 5] and not partial.exists()
    data = json.loads(out.read_text())
    assert "not_fitted" not in data  # every count fitted
    from glidectl.glide import read_weights
    from glidectl.glide.checkpoints import state_sha256
    from glidectl.pipeline import file_sha256

    assert data["model_sha256"] == file_sha256(weights["base"])
    assert data["weights_sha256"] == state_sha256(read_weights(weights["base"])[0])


def test_a_stopped_refit_is_named_when_the_next_fit_finds_its_file(glidectl, weights,
                                                                    tmp_path) -> None:
    """A refit (--overwrite) stopped after its first count leaves FILE whole and its counts
    in FILE.partial.json; the next fit-steps without --overwrite said only "FILE exists",
    and now says what the partial file holds and that --overwrite writes over it."""
    from glidectl.samplers.tuned import write_schedule_file

    out, partial = tmp_path / "s.json", tmp_path / "s.partial.json"
    write_schedule_file(out, {n: torch.linspace(80, 0.1, n).double().tolist() + [0.0]
                              for n in (3, 4)}, 0.05, 80.0, "old")
    fit = ("fit-steps", weights["base"], "--prompt", "a cat", "--images", "1",
           "--reference-steps", "12", "--rounds", "1", "--check-images", "0", "--out", out,
           "--calls", "3", "--calls", "5")
    with ctrl_c_at(5):
        code, _, stderr = glidectl(*fit, "--overwrite")
    assert code == 130 and partial.is_file(), stderr
    before = {p.name: p.read_bytes() for p in (out, partial)}
    code, _, stderr = glidectl(*fit)
    assert code == 2 and stderr == (
        f"Error: {str(out)!r} exists, and {str(partial)!r} beside it holds σ's for 3 steps "
        "from a refit into it that stopped before fitting 5 steps (usable with --schedule); "
        "pass --overwrite to fit every count again (it writes over 's.partial.json': move "
        "that away to keep it), or another --out.\n")
    assert {p.name: p.read_bytes() for p in (out, partial)} == before
    write_schedule_file(partial, {n: torch.linspace(80, 0.1, n).double().tolist() + [0.0]
                                  for n in (3, 5)}, 0.05, 80.0, "refit")  # killed at the end
    code, _, stderr = glidectl(*fit)
    assert code == 2 and f"{str(partial)!r} beside it holds σ's for 3, 5 steps, every count " \
        "of a refit into it that stopped before replacing it (usable with --schedule);" \
        in stderr, stderr
    partial.write_text("{")  # not a schedule file: named all the same
    code, _, stderr = glidectl(*fit)
    assert code == 2 and f"{str(partial)!r} beside it is left from a refit into it that " \
        "stopped; pass --overwrite" in stderr and stderr.count("\n") == 1, stderr


def test_a_refit_from_the_partial_file_it_writes_into_is_refused(glidectl, weights,
                                                                tmp_path) -> None:
    """``--out FILE --overwrite --start FILE.partial.json`` (the counts a stopped refit left)
    wrote each count it refit over that file while later counts still read their σ's from
    it: the 5-step σ's came out interpolated from the new 3-step ones and the start's were
    lost. It is refused in one sentence before the model loads, every file kept."""
    from glidectl.samplers.tuned import write_schedule_file

    out, partial = tmp_path / "s.json", tmp_path / "s.partial.json"
    write_schedule_file(out, {n: torch.linspace(80, 0.1, n).double().tolist() + [0.0]
                              for n in (3, 4)}, 0.05, 80.0, "old")
    write_schedule_file(partial, {3: [80.0, 1.0, 0.1, 0.0],
                                  5: [80.0, 40.0, 20.0, 0.5, 0.1, 0.0]}, 0.05, 80.0, "refit")
    before = {p.name: p.read_bytes() for p in (out, partial)}
    fit = ("fit-steps", weights["base"], "--prompt", "a cat", "--images", "1",
           "--reference-steps", "12", "--rounds", "1", "--check-images", "0", "--out", out,
           "--overwrite", "--calls", "3", "--calls", "5")
    code, _, stderr = glidectl(*fit, "--start", partial)
    assert code == 2 and stderr == (
        f"Error: --start {str(partial)!r} is where this refit into {str(out)!r} writes the "
        "counts it fits, over what it holds; copy it to another name and pass that as "
        "--start, so the start is kept.\n"), stderr
    assert {p.name: p.read_bytes() for p in (out, partial)} == before
    code, _, stderr = glidectl(*fit, "--start", out)  # the same file: its own sentence
    assert code == 2 and stderr == (
        f"Error: --start and --out are the same file ({str(out)!r}); write the refit to "
        "another --out, so the start is kept.\n"), stderr
    copy = tmp_path / "start.json"
    copy.write_bytes(partial.read_bytes())  # as the sentence says: the refit runs from it
    code, _, stderr = glidectl(*fit, "--start", copy)
    assert code == 0 and not partial.exists(), stderr
    fitted = json.loads(out.read_text())["positions"]
    assert set(fitted) == {"3", "5"}  # each count descended from the start's σ's


def test_a_second_fit_into_the_same_file_is_refused_while_the_first_runs(glidectl, weights,
                                                                        tmp_path) -> None:
    """Two `fit-steps --out FILE --overwrite` at once shared FILE.partial.json: the second
    is refused in one sentence, before its model loads, and writes nothing; without
    --overwrite it said the running fit had stopped."""
    import subprocess
    import sys

    from glidectl.samplers.tuned import write_schedule_file

    out, partial = tmp_path / "s.json", tmp_path / "s.partial.json"
    write_schedule_file(out, {3: torch.linspace(80, 0.1, 3).double().tolist() + [0.0]},
                        0.05, 80.0, "old")
    partial.write_text("the first fit's counts so far\n")
    before = {p.name: p.read_bytes() for p in (out, partial)}
    holder = subprocess.Popen(  # the first fit, as far as the lock goes: held until stdin ends
        [sys.executable, "-c", "import sys; from glidectl.atomic import lock_file; "
         f"h = lock_file({str(tmp_path / '.s.json.lock')!r}, 'busy'); print('held', "
         "flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        args = ("fit-steps", tmp_path / "no-model.safetensors", "--prompt", "a cat", "--out",
                out, "--overwrite", "--calls", "3")
        code, _, stderr = glidectl(*args)
        assert code == 2 and stderr.count("\n") == 1, stderr
        assert stderr == (f"Error: --out {str(out)!r} is being written by another glidectl "
                          "fit-steps; wait for it to finish (or stop it), or pass another "
                          "--out.\n")
        assert {p.name: p.read_bytes() for p in (out, partial)} == before
        # without --overwrite it was told the running fit had stopped, and to overwrite it
        code, _, again = glidectl(*args[:-3], *args[-2:])
        assert (code, again) == (2, stderr), again
    finally:
        holder.communicate("", timeout=30)
    code, _, stderr = glidectl(*args)  # the first has ended: the fit goes on (to the model)
    assert code == 2 and "no-model.safetensors" in stderr and "not found" in stderr, stderr


def test_a_file_another_fit_wrote_before_the_lock_is_not_written_over(glidectl, tmp_path,
                                                                      monkeypatch) -> None:
    """FILE was checked before its lock was taken: a fit into FILE that began and ended in
    between left a FILE this fit then replaced without --overwrite."""
    from glidectl.atomic import is_locked
    from glidectl.cli import fit_cmd
    from glidectl.samplers.tuned import write_schedule_file

    out = tmp_path / "s.json"
    lock_out = fit_cmd.lock_out

    def the_other_fit_first(path):  # it wrote FILE and let go of the lock just now
        write_schedule_file(path, {3: [80.0, 5.0, 0.1, 0.0]}, 0.05, 80.0, "the other fit")
        return lock_out(path)

    monkeypatch.setattr(fit_cmd, "lock_out", the_other_fit_first)
    code, _, stderr = glidectl("fit-steps", tmp_path / "no-model.safetensors", "--prompt",
                               "a cat", "--out", out, "--calls", "3")
    assert code == 2 and stderr == (f"Error: {str(out)!r} exists; pass --overwrite to replace "
                                    "it or another --out.\n"), stderr
    assert "the other fit" in out.read_text()  # kept, and the lock let go
    assert not is_locked(tmp_path / ".s.json.lock")


def test_a_stopped_fit_to_a_new_file_says_the_counts_fitted_are_in_it(glidectl, weights,
                                                                      tmp_path) -> None:
    """Ctrl-C (or a full disk) after the first count: the new file holds that count, and
    the message says so instead of leaving a file the user cannot place."""
    from glidectl.samplers.tuned import read_schedule_file

    out = tmp_path / "s.json"
    with ctrl_c_at(5):
        code, _, stderr = glidectl(
            "fit-steps", weights["base"], "--prompt", "a cat", "--images", "1",
            "--reference-steps", "12", "--rounds", "1", "--check-images", "0", "--out", out,
            "--calls", "3", "--calls", "5")
    assert code == 130 and list(read_schedule_file(out)) == [3], stderr
    assert (f"stopped: the counts fitted so far are in {str(out)!r} (usable with --schedule, "
            "not 5 steps); run again with --overwrite") in stderr


def test_a_stopped_fit_ends_on_its_line_of_what_to_do(glidectl, weights, tmp_path) -> None:
    """Ctrl-C after a count was fitted: the "stopped: …" line is the last one (exit 130),
    for a new file and for a refit, which also says to run it again. Before, both were
    followed by "Error: Aborted.", and the refit's line said nothing of going on."""
    out = tmp_path / "s.json"
    fit = ("fit-steps", weights["base"], "--prompt", "a cat", "--images", "1",
           "--reference-steps", "10", "--rounds", "1", "--check-images", "0", "--out", out,
           "--calls", "2", "--calls", "3")
    for extra, end in (((), "run again with --overwrite to fit every count."),
                       (("--overwrite",), "; run the same command again to fit every count.")):
        with ctrl_c_at(3):
            code, _, stderr = glidectl(*fit, *extra)
        last = stderr.strip().splitlines()[-1]
        assert code == 130 and last.startswith("stopped: ") and last.endswith(end), stderr
        assert "Aborted" not in stderr


def test_a_full_disk_at_a_count_says_that_fit_is_lost_and_what_the_file_keeps(
        glidectl, weights, tmp_path, monkeypatch) -> None:
    """The line said only "Cannot write …" after the whole fit: a bespoke solver's rows,
    which are printed nowhere, were lost without a word."""
    import errno

    from glidectl import step_fitting
    from glidectl.errors import write_error

    written, real = [], step_fitting.write_schedule_file

    def full_at_second(path, *args, **kwargs):
        if written:
            raise write_error(path, OSError(errno.ENOSPC, "No space left on device"))
        written.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(step_fitting, "write_schedule_file", full_at_second)
    out = tmp_path / "s.json"
    code, _, stderr = glidectl(
        "fit-steps", weights["base"], "--prompt", "a cat", "--images", "1",
        "--reference-steps", "12", "--rounds", "1", "--check-images", "0", "--out", out,
        "--calls", "3", "--calls", "5")
    assert code == 1, stderr
    assert (f"Cannot write {str(out)!r} (No space left on device); free disk space and try "
            "again (the 5-call fit is lost; the file keeps the fits of 3 calls).") in \
        " ".join(stderr.split())


def test_a_grey_model_is_fitted_on_the_grey_ode_sample_runs(glidectl, tmp_path) -> None:
    """A model that recommends grey is sampled grey, so its steps are fitted to that ODE
    (x0 projected onto grey) unless --no-grey; the file and the sample line say which."""
    from glidectl.glide import save_weights
    from glidectl.glide.loading import load_model
    from glidectl.pipeline import RECOMMENDED_KEY
    from glidectl.samplers.schedules import build_sigmas
    from glidectl.step_fitting import reference

    model = save_weights(tiny_glide("base", 0), tmp_path / "grey.safetensors",
                         metadata={RECOMMENDED_KEY: json.dumps({"grey": True})})
    fit = ("fit-steps", model, "--calls", "3", "--method", "gits", "--sampler", "euler",
           "--prompt", "a cat", "--images", "1", "--reference-steps", "12", "--check-images",
           "1")
    for flag, grey in ((None, True), ("--no-grey", False)):
        out = tmp_path / f"{grey}.json"
        code, _, stderr = glidectl(*fit, *([flag] if flag else []), "--out", out)
        assert code == 0, stderr
        data = json.loads(out.read_text())
        assert data["grey"] is grey and ("(guidance 3, grey, " in data["about"]) is grey
        assert f"--guidance 3 {'--grey' if grey else '--no-grey'}" in stderr
        # the held-out figures are those of the ODE sample runs with this grey
        target = reference(load_model(model), ["a cat"], 3.0, seed=2, steps=12,
                           grey=grey)
        check = target.check("euler", build_sigmas(str(out), 3, target.denoiser.sigmas))
        assert check["mean"] == pytest.approx(data["held_out"]["3"]["mean"], rel=1e-5)
        assert check["ddim50_mean"] == pytest.approx(data["held_out"]["3"]["ddim50_mean"],
                                                     rel=1e-5)


@pytest.mark.parametrize("sampler", ["euler", "plms"])
def test_the_fit_solves_the_ode_sample_runs(weights, sampler) -> None:
    """fit-steps started from noise·σ_0 and always clipped x0, while sample starts from
    x_T·√(1+σ_0²) and clips as the sampler says (plms: never): from the same noise, what
    the fit's sampler draws is now what sample draws."""
    from glidectl.glide.loading import load_model
    from glidectl.samplers.noise import image_generators, randn_per_image
    from glidectl.sampling import StageOptions, sample_stage, tokenizer_for
    from glidectl.step_fitting import reference

    model = load_model(weights["base"])
    target = reference(model, ["a cat"], 3.0, seed=5, steps=10, sampler=sampler)
    options = StageOptions(sampler=sampler, steps=3, guidance=3.0, sigma_max=2.0)
    sigmas = options.sigmas(target.denoiser.sigmas)
    assert torch.equal(target.noise, randn_per_image(image_generators([5]), (3, 8, 8)))
    with torch.no_grad():
        fitted = target.sample(sampler, sigmas)
    drawn = sample_stage(model, ["a cat"], tokenizer_for(model), [5], options)
    torch.testing.assert_close(fitted.clamp(-1, 1), drawn)  # sample's result is clamped


def test_a_killed_fit_leaves_a_file_that_says_which_counts_it_lacks(glidectl, weights,
                                                                    tmp_path) -> None:
    """`fit-steps --calls 3 --calls 40` (a real process) killed with SIGKILL while it fits
    40 calls: no handler runs, so nothing is said then. The file it left holds 3 steps and
    records 40 as not fitted; the next fit-steps into it says so (not only "exists"), and
    sample at 40 steps warns that its σ's are interpolated from the counts fitted."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "s.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "glidectl", "fit-steps", str(weights["base"]), "--prompt",
         "a cat", "--images", "1", "--reference-steps", "12", "--rounds", "1",
         "--check-images", "0", "--calls", "3", "--calls", "40", "--out", str(out),
         "--device", "cpu"],
        env={**os.environ, "OMP_NUM_THREADS": "1", "GLIDECTL_LOAD_PLUGINS": ""},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    try:  # the file is written (atomically) once 3 calls are fitted; 40 take half a minute
        while proc.poll() is None and time.monotonic() < deadline and not out.is_file():
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the fit ended before it could be killed"
    data = json.loads(out.read_text())
    assert list(data["positions"]) == ["3"] and data["not_fitted"] == [40]
    before = out.read_bytes()
    code, _, stderr = glidectl("fit-steps", weights["base"], "--prompt", "a cat", "--calls",
                               "3", "--calls", "40", "--out", out)
    assert code == 2 and stderr == (
        f"Error: {str(out)!r} exists, but the fit that wrote it stopped before fitting 40 "
        "steps, so it holds σ's for 3 steps only; pass --overwrite to fit every count again "
        "(a fit cannot add counts to a file), or another --out.\n")
    assert out.read_bytes() == before
    sample = ("sample", "a cat", "--base", weights["base"], "--schedule", out, "-q",
              "--precision", "fp32")
    code, _, stderr = glidectl(*sample, "--steps", "40", "--out", tmp_path / "at-40")
    assert code == 0, stderr
    said = " ".join(stderr.split())
    assert (f"Schedule file {str(out)!r} holds no σ's for 40 steps: the fit that wrote it "
            "stopped before fitting them, so these are interpolated from its 3-step σ's; "
            "sample with --steps 3, or fit every count with glidectl fit-steps "
            f"{weights['base']} --prompts PROMPTS.txt --sampler unipc --calls 3 --calls 40 "
            f"--guidance 3 --out {out} --overwrite.") in said, said
    code, _, stderr = glidectl(*sample, "--steps", "3", "--out", tmp_path / "at-3")
    assert code == 0 and "holds no σ's" not in stderr, stderr


def test_a_heun_files_refit_line_fits_the_steps_it_holds(glidectl, weights, tmp_path) -> None:
    """A file stores step counts, and fit-steps takes model calls: the refit line of a heun
    file (3 steps, 4 not fitted) said --calls 3 --calls 4, which heun cannot make (4) or
    fits 2 steps (3); it now says --calls 5 --calls 7 (2n − 1 calls) and refits 3 and 4."""
    import shlex

    from glidectl.samplers.tuned import read_schedule_file, unfitted_warning

    out = tmp_path / "heun.json"
    fit = ("--prompt", "a cat", "--images", "1", "--reference-steps", "12", "--rounds", "1",
           "--check-images", "0")
    with ctrl_c_at(7):
        code, _, stderr = glidectl("fit-steps", weights["base"], *fit, "--sampler", "heun",
                                   "--calls", "5", "--calls", "7", "--out", out)
    assert code == 130 and list(read_schedule_file(out)) == [3], stderr
    assert json.loads(out.read_text())["not_fitted"] == [4]
    said = unfitted_warning(out, 4, str(weights["base"]))
    refit = shlex.split(said.split("fit every count with ")[1].rstrip("."))
    assert refit[5:11] == ["--sampler", "heun", "--calls", "5", "--calls", "7"], refit
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\n")
    refit[refit.index("PROMPTS.txt")] = str(prompts)
    code, _, stderr = glidectl(*refit[1:], *fit[2:])
    assert code == 0, stderr
    assert sorted(read_schedule_file(out)) == [3, 4]
    assert "not_fitted" not in json.loads(out.read_text())


def test_a_refit_worse_on_the_held_out_images_keeps_the_start(glidectl, weights,
                                                              tmp_path) -> None:
    """A bespoke fit (noise seed 2) refitted to a tuning target unlike the held-out one (its
    reference negated, as images unlike those sampled): the check finds the start more
    accurate, so the file keeps the start's solver and says so; without the check
    (``--check-images 0``) a refit is written. (Refitted on the model's own ODE, which of the
    two is ahead on this tiny model is a matter of a few per cent and of float rounding.)"""
    from glidectl.glide.loading import load_model
    from glidectl.samplers.tuned import read_schedule_file
    from glidectl.step_fitting import fit_steps, reference

    fit = ("fit-steps", weights["base"], "--calls", "3", "--method", "bespoke", "--prompt",
           "a cat", "--images", "3", "--reference-steps", "12")
    start, kept, unchecked = (tmp_path / f"{n}.json" for n in ("start", "kept", "unchecked"))
    code, _, stderr = glidectl(*fit, "--seed", "2", "--rounds", "2", "--evals", "30",
                               "--out", start)
    assert code == 0, stderr
    model = load_model(weights["base"])
    tuning = reference(model, ["a cat"] * 3, 3.0, seed=1, steps=12)
    tuning.ref = -tuning.ref
    held_out = reference(model, ["a cat"] * 3, 3.0, seed=2, steps=12)
    lines: list[str] = []
    found = fit_steps(tuning, [3], "bespoke", "unipc", kept, "test", log=lines.append,
                      held_out=held_out, start=str(start), evals=8)
    data, first = json.loads(kept.read_text()), json.loads(start.read_text())
    check = data["held_out"]["3"]
    assert check["kept_start"] and check["refit_mean"] > 1.2 * check["mean"]
    assert (f"3 calls: the refit does no better on the held-out images than {start}'s solver "
            f"(mean {check['refit_mean']:.5f} against {check['mean']:.5f}); kept that one "
            "for 3 calls (--check-images 0 keeps the refit).") in lines
    assert data["coefficients"]["3"] == first["coefficients"]["3"]
    assert read_schedule_file(kept)[3] == pytest.approx(read_schedule_file(start)[3], rel=1e-6)
    # the σ line shows the σ's kept (the start's), not the refit's, after the check
    shown = [line for line in lines if line.startswith("3: ")]
    assert shown == ["3: " + ", ".join(f"{float(v):.4g}" for v in found[3][:-1])]
    assert lines.index(shown[0]) > [i for i, line in enumerate(lines)
                                    if "kept that one" in line][0]
    code, _, stderr = glidectl(*fit, "--seed", "1", "--evals", "8", "--start", start,
                               "--check-images", "0", "--out", unchecked)
    assert code == 0 and "kept that one" not in stderr, stderr
    assert json.loads(unchecked.read_text())["coefficients"]["3"] != first["coefficients"]["3"]


def test_a_fit_that_learned_its_tuning_noise_says_refit_on_more_images(glidectl, weights,
                                                                        tmp_path) -> None:
    """A bespoke fit whose solver errs more than 1.25× on the held-out noise than on its
    tuning images says so in one line and names the refit (tuned to a target unlike the
    held-out one, its reference negated); at the tuning images' own error it says nothing."""
    from glidectl.glide.loading import load_model
    from glidectl.samplers.schedules import build_sigmas
    from glidectl.samplers.tuned import read_coefficients
    from glidectl.step_fitting import errors, fit_steps, overfit_hint, reference

    model = load_model(weights["base"])
    tuning = reference(model, ["a cat"] * 3, 3.0, seed=1, steps=12)
    tuning.ref = -tuning.ref
    held_out = reference(model, ["a cat"] * 3, 3.0, seed=2, steps=12)
    lines: list[str] = []
    out = tmp_path / "fit.json"
    fit_steps(tuning, [3], "bespoke", "unipc", out, "test", log=lines.append,
              held_out=held_out, rounds=1, evals=8)
    check = json.loads(out.read_text())["held_out"]["3"]
    hint = [line for line in lines if "tuning noise" in line]
    assert len(hint) == 1 and hint[0].startswith("3 calls: the solver errs ")
    assert f"(mean {check['mean']:.5f} against " in hint[0]
    assert "--start FILE (the file written) --images 12 and another --out refit it" in hint[0]
    sigmas = build_sigmas(str(out), 3, tuning.denoiser.sigmas)
    rows = read_coefficients(out, 3, sigmas)
    with torch.no_grad():
        own = errors(tuning.sample("bespoke", sigmas, rows), tuning.ref)["mean"]
    quiet: list[str] = []
    overfit_hint(tuning, sigmas, rows, {"mean": 1.2 * own}, 3, quiet.append)
    assert quiet == []
    overfit_hint(tuning, sigmas, rows, {"mean": 1.3 * own}, 3, quiet.append)
    assert quiet == [f"3 calls: the solver errs 1.30x more on the held-out images than on its 3 "
                     f"tuning images (mean {1.3 * own:.5f} against {own:.5f}): it fits its "
                     "tuning noise; --start FILE (the file written) --images 12 and another "
                     "--out refit it on more images for a solver that carries to new noise."]


def test_the_median_of_an_even_count_is_the_mean_of_the_middle_two():
    from glidectl.step_fitting import errors

    ref = torch.zeros(4, 1)
    out = torch.tensor([[1.0], [3.0], [4.0], [10.0]])
    found = errors(out, ref)
    assert found["median"] == pytest.approx(3.5) and found["mean"] == pytest.approx(4.5)
    assert found["worst"] == pytest.approx(10.0)
    assert errors(out[:3], ref[:3])["median"] == pytest.approx(3.0)


def test_the_library_fit_checks_its_arguments_and_gives_the_model_back_as_it_was(
        tmp_path) -> None:
    """Called from Python, reference() split a prompt string into one-character prompts and
    took a NaN guidance, fit_steps() ran an unknown method as a descent, took no int for
    calls and ran gits on a target without a trajectory (torch's error), and a bespoke fit
    left the caller's model frozen (requires_grad False)."""
    from glidectl.errors import GlidectlError
    from glidectl.step_fitting import fit_steps, reference

    model = tiny_glide("base", 0)
    target = reference(model, "a red circle", 3.0, 0, steps=12)
    assert target.noise.shape[0] == 1
    with pytest.raises(GlidectlError, match=r"guidance must be a finite number >= 0, got nan"):
        reference(model, ["x"], float("nan"), 0, steps=12)
    with pytest.raises(GlidectlError, match="prompt or a list of prompts"):
        reference(model, [], 3.0, 0, steps=12)
    with pytest.raises(GlidectlError, match="Unknown fitting method 'nope'"):
        fit_steps(target, [3], "nope", "unipc", tmp_path / "f.json", "test")
    with pytest.raises(GlidectlError, match=r"this target has none; build it with "
                       r"reference\(\.\.\., trajectory=True\)"):  # was torch.stack's error
        fit_steps(target, [3], "gits", "unipc", tmp_path / "f.json", "test")
    assert not (tmp_path / "f.json").exists()
    found = fit_steps(target, 3, "bespoke", "unipc", tmp_path / "b.json", "test", evals=2,
                      log=lambda line: None)
    assert list(found) == [3] and all(p.requires_grad for p in model.parameters())


def test_an_empty_prompts_file_is_refused_beside_prompt_too(tmp_path) -> None:
    """--prompt x --prompts EMPTY fitted on x alone, silently; the file alone was refused."""
    from glidectl.cli.fit_cmd import read_prompts
    from glidectl.errors import GlidectlError

    empty = tmp_path / "p.txt"
    empty.write_text("\n# none\n")
    for given in ([], ["a cat"]):
        with pytest.raises(GlidectlError, match="holds no prompt .only blank lines and # "
                           "comments.; write one per line"):
            read_prompts(given, empty)
    assert read_prompts(["a cat"], None) == ["a cat"]


def test_a_gpt2_model_is_fitted_with_the_vocabulary_of_vocab_dir(glidectl, weights, tmp_path,
                                                                  gpt2_vocab, monkeypatch):
    """fit-steps had no --vocab-dir: a GPT-2 model offline without tiktoken's cache could
    not be fitted but through the environment, and a missing vocabulary named a flag
    fit-steps did not take. Its prompts are now tokenized with that folder's vocabulary,
    the "sample with" line passes it on, and a byte model says it is not used."""
    from test_remake import _swapped_vocab

    from glidectl import tokenizer
    from glidectl.glide import save_weights
    from glidectl.step_fitting import reference

    monkeypatch.setenv(tokenizer.VOCAB_ENV, str(gpt2_vocab))  # this machine's default
    model = tiny_glide("base", 3, tokenizer="gpt2")
    path = save_weights(model, tmp_path / "gpt2.safetensors")
    other = _swapped_vocab(gpt2_vocab, tmp_path / "other")
    mine, default = (reference(model, ["cat a dog"], 2.0, 0, 4, vocab_dir=v).ref
                     for v in (str(other), None))
    assert not mine.equal(default)  # the other vocabulary's tokens drew another picture
    fit = ("--calls", "3", "--prompt", "cat a dog", "--images", "1", "--reference-steps",
           "12", "--rounds", "1", "--check-images", "0")
    code, _, stderr = glidectl("fit-steps", path, *fit, "--vocab-dir", other,
                               "--out", tmp_path / "s.json")
    assert code == 0, stderr
    assert f"--vocab-dir {other}" in stderr.split("sample with: ")[1], stderr
    code, _, stderr = glidectl("fit-steps", path, *fit, "--vocab-dir", tmp_path / "gone",
                               "--out", tmp_path / "t.json")
    assert code == 2 and stderr.startswith(
        f"Error: The GPT-2 vocabulary folder {str(tmp_path / 'gone')!r} given with "
        "--vocab-dir does not exist;"), stderr
    assert not (tmp_path / "t.json").exists()
    code, _, stderr = glidectl("fit-steps", weights["base"], *fit, "--vocab-dir", other,
                               "--out", tmp_path / "b.json")
    assert code == 0 and "Warning: --vocab-dir not used: the base model reads UTF-8 bytes" \
        in stderr and "--vocab-dir" not in stderr.split("sample with: ")[1], stderr
