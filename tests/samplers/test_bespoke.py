"""The bespoke solver: coefficients read off a sampler, fitted to an ODE, stored in a file."""

from __future__ import annotations

import math

import pytest
import torch

from glidectl import plugins
from glidectl.errors import GlidectlError
from glidectl.samplers import get_sigmas
from glidectl.samplers.analytic import GaussianMixtureDenoiser
from glidectl.samplers.bespoke import (
    fit_coefficients,
    linear_coefficients,
    sample_bespoke,
    still_falling,
)
from glidectl.samplers.tuned import read_coefficients, write_schedule_file

SIGMA_MIN, SIGMA_MAX = 0.002, 80.0


def _mixture(n: int, seed: int) -> tuple[GaussianMixtureDenoiser, torch.Tensor, torch.Tensor]:
    den = GaussianMixtureDenoiser.random(dims=8, components=4, seed=1)
    x = den.prior(n, SIGMA_MAX, torch.Generator().manual_seed(seed))
    return den, x, den(den.ode_solution(x, SIGMA_MAX, SIGMA_MIN, 400), SIGMA_MIN)


@pytest.mark.parametrize("name", ["euler", "dpm++2m", "dpm++3m", "unipc", "unipc_bh1", "deis",
                                  "ipndm"])
def test_coefficients_read_off_a_sampler_reproduce_it(name: str) -> None:
    den, x, _ = _mixture(64, 0)
    sigmas = get_sigmas("karras", 7, SIGMA_MIN, SIGMA_MAX)
    sampler = plugins.samplers().get(name)
    rows = linear_coefficients(sampler, sigmas)
    assert [len(r) for r in rows] == list(range(2, 9))
    out = sample_bespoke(den, x, sigmas, coefficients=rows)
    torch.testing.assert_close(out, sampler(den, x, sigmas), rtol=0, atol=1e-9)


def test_two_call_samplers_have_no_bespoke_coefficients() -> None:
    with pytest.raises(ValueError, match="one-call-per-step"):
        linear_coefficients(plugins.samplers().get("heun"), get_sigmas("karras", 4, 0.01, 80.0))


def test_fitting_lowers_the_error_on_held_out_noise() -> None:
    den, x, ref = _mixture(256, 1)
    _, x_held, ref_held = _mixture(256, 2)
    sigmas = get_sigmas("exponential", 6, SIGMA_MIN, SIGMA_MAX)
    start = linear_coefficients(plugins.samplers().get("unipc"), sigmas)
    rows, fitted, best = fit_coefficients(den, x, sigmas, ref, start, evals=40)
    assert torch.equal(fitted, sigmas)

    def rms(coefficients, x, ref) -> float:
        return (sample_bespoke(den, x, sigmas, coefficients=coefficients) - ref
                ).pow(2).mean().sqrt().item()

    assert best == pytest.approx(rms(rows, x, ref))
    assert best < 0.4 * rms(start, x, ref)  # measured 0.18 (Adam's 300 steps: 0.41)
    assert rms(rows, x_held, ref_held) < 0.4 * rms(start, x_held, ref_held)  # 0.24


def test_a_schedule_file_carries_coefficients_for_its_own_sigmas(tmp_path) -> None:
    sigmas = get_sigmas("exponential", 4, 0.01, 80.0)
    rows = linear_coefficients(plugins.samplers().get("dpm++2m"), sigmas)
    path = tmp_path / "s.json"
    write_schedule_file(path, {4: sigmas}, 0.01, 80.0, "test", sampler="bespoke",
                        coefficients={4: rows})
    again = get_sigmas(str(path), 4, 0.01, 80.0)
    for got, want in zip(read_coefficients(path, 4, again), rows, strict=True):
        assert got == pytest.approx(want, rel=1e-12)
    with pytest.raises(GlidectlError, match="no bespoke coefficients for 5 steps .it has: 4."):
        read_coefficients(path, 5, get_sigmas(str(path), 5, 0.01, 80.0))
    with pytest.raises(GlidectlError, match="samples from 40 to"):
        read_coefficients(path, 4, get_sigmas(str(path), 4, 0.01, 40.0))
    # another model's noise levels (an upsampler's σ_min) were blamed on --sigma-max
    with pytest.raises(GlidectlError, match=r"holds bespoke coefficients for σ's down to 0.01, "
                       r"fitted to a model with other noise levels, but this model's 4 steps "
                       r"end at 0.02; fit them to this model with glidectl fit-steps MODEL"):
        read_coefficients(path, 4, get_sigmas(str(path), 4, 0.02, 80.0))
    # a descent file said "(it has: none); sample with --steps set to one of those"
    write_schedule_file(path, {4: sigmas}, 0.01, 80.0, "test", sampler="unipc")
    with pytest.raises(GlidectlError, match=r"holds no bespoke coefficients \(it holds σ's "
                       r"only\); sample it with --sampler unipc, or fit them with"):
        read_coefficients(path, 4, again)


def test_the_sampler_without_coefficients_says_how_to_get_them() -> None:
    den, x, _ = _mixture(4, 0)
    with pytest.raises(GlidectlError, match="--method bespoke"):
        sample_bespoke(den, x, get_sigmas("karras", 3, 0.01, 80.0))
    with pytest.raises(GlidectlError, match="need 3 rows"):
        sample_bespoke(den, x, get_sigmas("karras", 3, 0.01, 80.0), coefficients=[[1.0, 0.0]])


class _TimedNet(torch.nn.Module):
    """A fake GLIDE network whose ε depends on x and on the timestep t."""

    def forward(self, x, t, text_emb=None, **kwargs):
        eps = 0.1 * x * (1 + t[:, None, None, None] / 1000)
        return torch.cat([eps, torch.zeros_like(eps)], dim=1)


def test_the_glide_denoiser_takes_a_sigma_tensor_and_passes_its_gradient() -> None:
    from glidectl.diffusion import create_diffusion
    from glidectl.samplers.denoiser import GlideDenoiser

    den = GlideDenoiser(_TimedNet(), create_diffusion().alphas_cumprod, clip=False)
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    for value in (0.05, 1.3, 37.0):
        sigma = torch.tensor(value, dtype=torch.float64, requires_grad=True)
        assert den.differentiable_t(sigma).item() == pytest.approx(den.sigma_to_t(value))
        out = den(x, sigma)
        torch.testing.assert_close(out, den(x, value))
        (grad,) = torch.autograd.grad(out.sum(), sigma)
        step = 1e-2 * value  # float32 outputs: a wide central difference
        numeric = (den(x, value + step).sum() - den(x, value - step).sum()) / (2 * step)
        assert float(grad) == pytest.approx(float(numeric), rel=1e-2)


def test_fitting_the_sigmas_too_keeps_them_descending_above_the_floor() -> None:
    den, x, ref = _mixture(128, 1)
    sigmas = get_sigmas("exponential", 5, 0.01, SIGMA_MAX)
    start = linear_coefficients(plugins.samplers().get("unipc"), sigmas)
    rows, fixed_sigmas, fixed = fit_coefficients(den, x, sigmas, ref, start, evals=30)
    rows, moved, best = fit_coefficients(den, x, sigmas, ref, start, evals=30,
                                         move_sigmas=True, sigma_floor=0.005)
    assert best < fixed  # measured 0.0186 vs 0.0391
    assert float(moved[0]) == pytest.approx(SIGMA_MAX) and moved[-1] == 0
    assert moved[-2] >= 0.005
    assert torch.all(moved[:-1].diff() < 0) and not torch.equal(moved, sigmas)
    again = (sample_bespoke(den, x, moved, coefficients=rows) - ref).pow(2).mean().sqrt()
    assert float(again) == pytest.approx(best)


def test_a_fit_never_returns_worse_than_its_start() -> None:
    """σ's that end on the floor start the σ-moving fit 3 % of a step above it, so its first
    evaluation is not the start; one evaluation must not leave the result worse."""
    den, x, ref = _mixture(64, 1)
    sigmas = get_sigmas("exponential", 5, SIGMA_MIN, SIGMA_MAX)
    start = linear_coefficients(plugins.samplers().get("unipc"), sigmas)
    before = (sample_bespoke(den, x, sigmas, coefficients=start) - ref).pow(2).mean().sqrt()
    rows, moved, best = fit_coefficients(den, x, sigmas, ref, start, evals=1,
                                         move_sigmas=True, sigma_floor=SIGMA_MIN)
    assert best <= float(before) + 1e-12
    after = (sample_bespoke(den, x, moved, coefficients=rows) - ref).pow(2).mean().sqrt()
    assert float(after) == pytest.approx(best)


def test_a_fit_does_not_depend_on_the_scale_of_its_error() -> None:
    """The same problem in units 1,000 times smaller (x, σ and the denoiser's output scaled by
    1e-3, so the MSE by 1e-6, as small as a trained model's) fits to the same solver: the loss
    is relative to the start's, and L-BFGS's tolerances are absolute."""
    den, x, ref = _mixture(64, 1)
    sigmas = get_sigmas("exponential", 5, SIGMA_MIN, SIGMA_MAX)
    unipc = plugins.samplers().get("unipc")
    _, _, best = fit_coefficients(den, x, sigmas, ref, linear_coefficients(unipc, sigmas),
                                  evals=30)
    c = 1e-3

    def small(x, sigma, **kwargs):
        return c * den(x / c, sigma / c, **kwargs)

    _, _, scaled = fit_coefficients(small, c * x, c * sigmas, c * ref,
                                    linear_coefficients(unipc, c * sigmas), evals=30)
    assert scaled / c == pytest.approx(best, rel=1e-6)


class _FailsOnce:
    """A mixture denoiser whose third call returns NaN (a line-search probe gone too far)."""

    def __init__(self, den: GaussianMixtureDenoiser):
        self.den, self.calls = den, 0

    def __call__(self, x, sigma, **kwargs):
        self.calls += 1
        out = self.den(x, sigma, **kwargs)
        return out * float("nan") if self.calls == 3 * 5 else out


def test_a_non_finite_probe_is_rejected_and_a_fit_never_ends_worse() -> None:
    den, x, ref = _mixture(64, 1)
    sigmas = get_sigmas("exponential", 5, SIGMA_MIN, SIGMA_MAX)
    start = linear_coefficients(plugins.samplers().get("unipc"), sigmas)
    first = float((sample_bespoke(den, x, sigmas, coefficients=start) - ref).pow(2).mean().sqrt())
    trace: list[float] = []
    rows, _, best = fit_coefficients(_FailsOnce(den), x, sigmas, ref, start, evals=8,
                                     trace=trace)
    assert math.isfinite(best) and best < first
    # every evaluation, the rejected probe's too, with the best so far: the limit was reached
    assert len(trace) >= 8 and trace[-1] == best and trace == sorted(trace, reverse=True)
    assert still_falling(trace, 8) == (pytest.approx(1 - trace[-1] / trace[-2]), 1)
    again = (sample_bespoke(den, x, sigmas, coefficients=rows) - ref).pow(2).mean().sqrt()
    assert float(again) == pytest.approx(best)
    rows, _, best = fit_coefficients(den, x, sigmas, ref, start, evals=1)
    assert rows == start and best == pytest.approx(first)


def test_still_falling_reads_the_last_tenth_of_a_fit_that_ran_into_its_limit() -> None:
    trace = [1.0] * 80 + [0.5] * 10 + [0.5 - 0.01 * i for i in range(10)]
    assert still_falling(trace, 100) == (pytest.approx(1 - 0.41 / 0.5), 10)
    assert still_falling([1.0] * 100, 100) == (0, 10)  # at the limit, but flat
    assert still_falling(trace[:60], 100) is None  # L-BFGS stopped before the limit
    assert still_falling([float("inf"), 0.3], 2) is None  # no finite figure to compare


class _Clipping:
    """A mixture denoiser that says it clips its x0 to [−1, 1] (as GLIDE's does)."""

    clip = True

    def __init__(self, den: GaussianMixtureDenoiser):
        self.den = den

    def __call__(self, x, sigma, **kwargs):
        return self.den(x, sigma, **kwargs).clamp(-1, 1)


def test_the_result_is_clipped_when_the_denoiser_clips() -> None:
    den, x, _ = _mixture(64, 0)
    sigmas = get_sigmas("karras", 4, SIGMA_MIN, SIGMA_MAX)
    rows = [[*r[:-1], 3 * r[-1]] for r in linear_coefficients(plugins.samplers().get("ddim"),
                                                               sigmas)]
    clipping = _Clipping(den)
    clipped = sample_bespoke(clipping, x, sigmas, coefficients=rows)
    clipping.clip = False  # the same x0's, no clip of the result
    loose = sample_bespoke(clipping, x, sigmas, coefficients=rows)
    assert loose.abs().max() > 1.5
    torch.testing.assert_close(clipped, loose.clamp(-1, 1), rtol=0, atol=0)


def test_wrong_rows_name_the_row_or_the_count():
    from glidectl.samplers.bespoke import check_rows

    check_rows([[1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]], 3)
    with pytest.raises(GlidectlError, match=r"need 3 rows, row i of i \+ 1 numbers, row 2 "
                                            r"holds 2 instead of 3; fit them"):
        check_rows([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0, 0.0, 0.0]], 3)
    with pytest.raises(GlidectlError, match=r"need 3 rows, row i of i \+ 1 numbers, got 2 rows"):
        check_rows([[1.0, 0.0], [1.0, 0.0, 0.0]], 3)
