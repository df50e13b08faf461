"""Step search (GITS, descent) and schedule files."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

from glidectl.errors import GlidectlError
from glidectl.samplers import get_sigmas
from glidectl.samplers.analytic import GaussianDenoiser
from glidectl.samplers.schedules import build_sigmas
from glidectl.samplers.search import (
    descend_sigmas,
    euler_step_costs,
    search_sigmas,
    shortest_path,
)
from glidectl.samplers.tuned import (
    get_sigmas_from_file,
    read_schedule_file,
    write_schedule_file,
)


def test_shortest_path_is_the_brute_force_optimum() -> None:
    g = torch.Generator().manual_seed(0)
    k = 8
    step = torch.rand(k, k, generator=g, dtype=torch.float64).triu(1)
    step[step == 0] = float("inf")
    end = torch.rand(k, generator=g, dtype=torch.float64)
    for n in (1, 2, 3, 5, k):
        path, total = shortest_path(step, end, n)
        best = min(
            (sum(float(step[a, b]) for a, b in itertools.pairwise((0, *rest))) + float(end[
                rest[-1] if rest else 0]), (0, *rest))
            for rest in itertools.combinations(range(1, k), n - 1))
        assert total == pytest.approx(best[0]) and tuple(path) == best[1]


def test_search_on_an_exact_trajectory_costs_nothing_where_euler_is_exact() -> None:
    """Data N(μ, 0): D(x, σ) = μ for every x, the ODE is a straight line and Euler is exact,
    so every step costs ~0 and the end cost alone decides (any last node is exact too)."""
    den = GaussianDenoiser(mu=0.3, s=1e-9)
    grid = get_sigmas("karras", 40, 0.01, 80.0)[:-1]
    x_T = den.prior((16,), 80.0, torch.Generator().manual_seed(0))
    xs = torch.stack([den.ode_solution(x_T, 80.0, float(s)) for s in grid])
    ds = torch.stack([den(x, float(s)) for x, s in zip(xs, grid, strict=True)])
    step, end = euler_step_costs(grid, xs, ds, ds[-1])
    assert step[torch.isfinite(step)].max() < 1e-20 and end.max() < 1e-20


def test_search_puts_steps_where_the_trajectory_bends() -> None:
    """Data N(0.5, 0.5²): the trajectory bends around σ ≈ s, so 4 searched σ's beat 4
    evenly-in-log σ's on the Euler cost, and the sampler (DDIM) does better on them."""
    from glidectl import plugins

    den = GaussianDenoiser(0.5, 0.5)
    grid = get_sigmas("karras", 200, 0.002, 80.0)[:-1]
    x_T = den.prior((64,), 80.0, torch.Generator().manual_seed(0))
    xs = torch.stack([den.ode_solution(x_T, 80.0, float(s)) for s in grid])
    ds = torch.stack([den(x, float(s)) for x, s in zip(xs, grid, strict=True)])
    found = search_sigmas(grid, xs, ds, ds[-1], 4)
    assert len(found) == 5 and found[-1] == 0 and found[0] == grid[0]
    assert torch.all(found[:-1].diff() < 0)
    ddim = plugins.samplers().get("ddim")
    exact = ds[-1]
    err_found = (ddim(den, x_T, found) - exact).abs().max()
    err_log = (ddim(den, x_T, get_sigmas("exponential", 4, 0.002, 80.0)) - exact).abs().max()
    assert err_found < err_log / 2


def test_descent_lowers_the_samplers_own_error_and_keeps_the_ends() -> None:
    """DDIM with 4 steps on N(0.5, 0.5²) data: descent from exponential σ's nearly halves
    the error to the exact ODE solution (0.375 → 0.195); σ_max stays, σ's stay descending,
    and the last σ stays put without a floor and above the floor with one."""
    from glidectl import plugins

    den = GaussianDenoiser(0.5, 0.5)
    x_T = den.prior((64,), 80.0, torch.Generator().manual_seed(0))
    exact = den.ode_solution(x_T, 80.0, 0.0)
    ddim = plugins.samplers().get("ddim")

    def loss(sigmas: torch.Tensor) -> float:
        return (ddim(den, x_T, sigmas) - exact).pow(2).mean().sqrt().item()

    start = get_sigmas("exponential", 4, 0.002, 80.0)
    fixed, fixed_loss = descend_sigmas(loss, start, rounds=8)
    free, free_loss = descend_sigmas(loss, start, sigma_floor=0.002, rounds=8)
    for found, value in ((fixed, fixed_loss), (free, free_loss)):
        assert len(found) == 5 and found[-1] == 0 and torch.all(found[:-1].diff() < 0)
        assert float(found[0]) == pytest.approx(80.0)
        assert value == pytest.approx(loss(found)) and value < 0.6 * loss(start)
    assert float(fixed[-2]) == pytest.approx(0.002) and float(free[-2]) > 0.002
    assert free_loss < fixed_loss  # the free last σ is used
    with pytest.raises(ValueError, match="sigma_floor"):
        descend_sigmas(loss, start, sigma_floor=1.0)


def test_a_schedule_read_back_ends_exactly_on_its_sigmas(tmp_path) -> None:
    """σ's read from a file end on the σ_min and σ_max it was written with, not a rounding
    below (fit-steps --start FILE stopped on it: the descent's floor is that σ_min)."""
    lo = 0.0064254127711420635
    path = tmp_path / "s.json"
    write_schedule_file(path, {4: get_sigmas("exponential", 4, lo, 80.0)}, lo, 80.0, "test")
    back = get_sigmas_from_file(path, 4, lo, 80.0)
    assert float(back[0]) == 80.0 and float(back[-2]) == lo
    descend_sigmas(lambda s: float(s[1]), back, sigma_floor=lo, rounds=1)


def test_schedule_file_round_trip_and_use(tmp_path) -> None:
    sigmas = {3: torch.tensor([80.0, 5.0, 0.5, 0.0], dtype=torch.float64),
              5: torch.tensor([80.0, 20.0, 4.0, 1.0, 0.1, 0.0], dtype=torch.float64)}
    path = tmp_path / "schedule.json"
    write_schedule_file(path, sigmas, 0.002, 80.0, "test")
    assert sorted(read_schedule_file(path)) == [3, 5]
    for n, expected in sigmas.items():
        torch.testing.assert_close(get_sigmas(str(path), n, 0.002, 80.0), expected,
                                   rtol=1e-5, atol=0)
    four = get_sigmas(str(path), 4, 0.002, 80.0)  # the nearest stored row, interpolated
    assert len(four) == 5 and four[-1] == 0 and torch.all(four[:-1].diff() < 0)
    table = torch.logspace(math.log10(0.002), math.log10(2e4), 1000).numpy()
    torch.testing.assert_close(build_sigmas(str(path), 5, table), sigmas[5], rtol=1e-5, atol=0)

def test_a_one_step_row_is_not_interpolated_for_other_counts(tmp_path) -> None:
    """A file fitted at 1 and 10 calls served 2–5 steps from its 1-step row ([0]: σ_max
    alone), every σ 80, and sampling failed on a schedule that does not descend; they come
    from the 10-step row, and a file holding 1 step only says so in one sentence."""
    ten = get_sigmas("exponential", 10, 0.002, 80.0)
    path = tmp_path / "s.json"
    write_schedule_file(path, {1: torch.tensor([80.0, 0.0]), 10: ten}, 0.002, 80.0, "test",
                        sampler="unipc")
    for n in (1, 2, 5, 10, 12):
        sigmas = get_sigmas(str(path), n, 0.002, 80.0)
        assert len(sigmas) == n + 1 and torch.all(sigmas[:-1].diff() < 0), n
    torch.testing.assert_close(get_sigmas(str(path), 5, 0.002, 80.0),
                               get_sigmas("exponential", 5, 0.002, 80.0))
    only = tmp_path / "one.json"
    write_schedule_file(only, {1: torch.tensor([80.0, 0.0])}, 0.002, 80.0, "test",
                        sampler="heun")
    assert float(get_sigmas(str(only), 1, 0.002, 80.0)[0]) == 80.0
    with pytest.raises(GlidectlError) as info:
        get_sigmas(str(only), 5, 0.002, 80.0)
    assert str(info.value) == (
        f"Schedule file {str(only)!r} holds σ's for 1 step only, which say nothing of where "
        "5 steps go; use it for 1 step, or fit 5 steps into a file of their own (glidectl "
        "fit-steps MODEL --prompts PROMPTS.txt --calls 9 --out FILE).")



def test_a_diverged_held_out_check_is_written_as_null(tmp_path) -> None:
    """A solver that diverged on held-out noise errs NaN; the file stays strict JSON."""
    path = tmp_path / "s.json"
    write_schedule_file(path, {3: torch.tensor([80.0, 5.0, 0.5, 0.0])}, 0.002, 80.0, "test",
                        held_out={3: {"mean": float("nan"), "rms": float("inf"), "images": 4}})

    def strict(name: str):
        raise ValueError(f"{name} in a schedule file")

    data = json.loads(path.read_text(), parse_constant=strict)
    assert data["held_out"]["3"] == {"mean": None, "rms": None, "images": 4}
    assert sorted(read_schedule_file(path)) == [3]


def test_bad_schedule_files_are_one_sentence_errors(tmp_path) -> None:
    with pytest.raises(GlidectlError, match="does not exist"):
        get_sigmas(str(tmp_path / "missing.json"), 5, 0.002, 80.0)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(GlidectlError, match="not readable JSON"):
        get_sigmas(str(bad), 5, 0.002, 80.0)
    bad.write_text(json.dumps({"format": "glidectl.schedule/1", "positions": {"3": [0, 0.5]}}))
    with pytest.raises(GlidectlError, match="positions"):
        read_schedule_file(bad)
    bad.write_text("[0, 0.5, 1]")  # valid JSON, not an object
    with pytest.raises(GlidectlError, match="not a glidectl.schedule/1 file"):
        read_schedule_file(bad)
    bad.write_text("[" * 100_000 + "]" * 100_000)  # nested deeper than json can recurse
    with pytest.raises(GlidectlError, match="not readable JSON"):
        get_sigmas(str(bad), 5, 0.002, 80.0)
    # a folder, and text in another encoding, said as such (were "[Errno 21] Is a
    # directory" and a codec's complaint about byte positions)
    (tmp_path / "folder.json").mkdir()
    with pytest.raises(GlidectlError, match=r"folder\.json' is a folder; pass the JSON file"):
        get_sigmas(str(tmp_path / "folder.json"), 5, 0.002, 80.0)
    bad.write_bytes('{"about": "caf\u00e9"}'.encode("latin-1"))
    with pytest.raises(GlidectlError, match="is not UTF-8 text; pass the JSON file"):
        get_sigmas(str(bad), 5, 0.002, 80.0)


def test_a_file_for_another_sampler_warns_naming_the_samplers_own_schedule(tmp_path) -> None:
    """The warning compared the file with karras, which dpm++2m does not use, and said to
    "tune a file" without the command that does."""
    from glidectl.samplers.tuned import schedule_file_warning

    path = tmp_path / "schedule.json"
    write_schedule_file(path, {3: torch.tensor([80.0, 2.0, 0.1, 0.0])}, 0.002, 80.0, "test",
                        sampler="unipc")
    assert schedule_file_warning(path, "unipc_bh2") is None  # an alias of the same sampler
    assert schedule_file_warning(path, "dpm++2m").endswith(
        "may be worse than its own exponential schedule for dpm++2m; sample with --sampler "
        "unipc, or fit a file for dpm++2m with glidectl fit-steps MODEL --sampler dpm++2m.")
    assert "worse than its own karras schedule for heun" in schedule_file_warning(path, "heun")


def test_a_file_fitted_to_other_weights_names_a_refit_that_runs(tmp_path) -> None:
    """The refit it named (`glidectl fit-steps MODEL`) stopped for want of prompts, then of
    --overwrite, and fitted the default 10 calls (a bespoke file then had no coefficients for
    the steps it was used at); the command given now parses and replaces this file at the
    step counts it holds."""
    import shlex

    import typer

    from glidectl.cli.app import build_app
    from glidectl.samplers.tuned import model_warning

    path = tmp_path / "my run" / "schedule.json"
    path.parent.mkdir()
    for sampler, how in (("unipc", ["--sampler", "unipc"]), ("bespoke", ["--method", "bespoke"]),
                         (None, ["--method", "gits"])):
        write_schedule_file(path, {12: torch.linspace(80.0, 0.1, 12).tolist() + [0.0],
                                   3: torch.tensor([80.0, 2.0, 0.1, 0.0])}, 0.002, 80.0,
                            "test", sampler=sampler, model_sha256="0" * 64)
        text = model_warning(path, lambda: "1" * 64, str(path.parent))
        words = shlex.split(text.split("refit it with ")[1].rstrip("."))
        assert words == ["glidectl", "fit-steps", str(path.parent), "--prompts", "PROMPTS.txt",
                         *how, "--calls", "3", "--calls", "12", "--out", str(path),
                         "--overwrite"]
        fit_steps = typer.main.get_command(build_app()).commands["fit-steps"]
        fit_steps.make_context("glidectl fit-steps", words[2:])  # every flag is fit-steps'


def test_an_upsamplers_file_is_not_told_to_refit_with_fit_steps(tmp_path) -> None:
    """fit-steps refuses upsamplers, so an upsampler's schedule file fitted to other weights
    or to the other ODE is told to be dropped, not refitted with the upsampler."""
    from glidectl.samplers.tuned import grey_warning, model_warning

    path = tmp_path / "schedule.json"
    write_schedule_file(path, {3: torch.tensor([80.0, 2.0, 0.1, 0.0])}, 0.002, 80.0, "test",
                        model_sha256="0" * 64, grey=True)
    for text in (model_warning(path, lambda: "1" * 64, "up.safetensors", upsampler=True),
                 grey_warning(path, False, "up.safetensors", upsampler=True)):
        assert text.endswith(" drop it from the upsampler stage (glidectl fit-steps fits "
                             "base models only)."), text
        assert "fit-steps up.safetensors" not in text


def test_the_refit_line_carries_the_guidance_the_file_was_fitted_at(tmp_path) -> None:
    """A file's refit line could not say the guidance it was fitted at (only its ``about``
    text did), so the refit fitted the model's default instead; a file that records it
    refits at it, and one sampled at another guidance says so in one sentence."""
    import json
    import shlex

    import typer

    from glidectl.cli.app import build_app
    from glidectl.samplers.tuned import grey_warning, guidance_warning, model_warning

    path = tmp_path / "schedule.json"
    write_schedule_file(path, {3: torch.tensor([80.0, 2.0, 0.1, 0.0])}, 0.002, 80.0, "test",
                        sampler="unipc", model_sha256="0" * 64, grey=True, guidance=2.5)
    assert json.loads(path.read_text())["guidance"] == 2.5
    fit_steps = typer.main.get_command(build_app()).commands["fit-steps"]
    for text in (model_warning(path, lambda: "1" * 64, "run"), grey_warning(path, False, "run")):
        words = shlex.split(text.split("refit it with ")[1].rstrip("."))
        assert words[5:11] == ["--sampler", "unipc", "--calls", "3", "--guidance", "2.5"], words
        fit_steps.make_context("glidectl fit-steps", words[2:])
    assert guidance_warning(path, 2.5) is None
    said = guidance_warning(path, 4.0, "run")
    assert said.startswith(f"Schedule file {str(path)!r} was fitted at guidance 2.5, and these "
                           "images sample at 4: its steps suit the other ODE; sample with "
                           "--guidance 2.5, or refit it with glidectl fit-steps run "), said
    # the refit is at the guidance sampled (and grey as fitted, no sampling said otherwise)
    assert "--calls 3 --guidance 4 --grey --out" in said
    # told the sampling at hand, every warning's line is the one refit that mends it all
    lines = {w.split("refit it with ")[1] for w in (
        guidance_warning(path, 4.0, "run", grey=False),
        grey_warning(path, False, "run", guidance=4.0),
        model_warning(path, lambda: "1" * 64, "run", guidance=4.0, grey=False))}
    assert len(lines) == 1 and "--calls 3 --guidance 4 --no-grey --out" in lines.pop()
    assert "sample at 1:" in guidance_warning(path, None)  # unguided: scale 1
    assert guidance_warning(path, 1.0, "up", upsampler=True).endswith(
        "sample with --upsample-guidance 2.5, or drop it from the upsampler stage (glidectl "
        "fit-steps fits base models only).")
    write_schedule_file(path, {3: torch.tensor([80.0, 2.0, 0.1, 0.0])}, 0.002, 80.0, "test",
                        sampler="unipc", grey=True)  # as files from before guidance was kept
    assert guidance_warning(path, 4.0) is None
    assert "--guidance" not in grey_warning(path, False, "run")
