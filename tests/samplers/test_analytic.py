"""Every built-in sampler on data N(μ, s²), whose denoiser and ODE solution are exact."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from glidectl import plugins
from glidectl.samplers.analytic import GaussianDenoiser
from glidectl.samplers.bespoke import linear_coefficients
from glidectl.samplers.schedules import get_sigmas_karras

MU, S = 0.5, 0.5
SIGMA_MIN, SIGMA_MAX = 0.02, 80.0
DETERMINISTIC_ORDER = {"euler": 1, "ddim": 1, "heun": 2, "dpm++2m": 2, "plms": 2}
# Orders of the newer multistep samplers, with their few-step safeguard switched off.
HIGH_ORDER = [
    ("dpm++3m", {"lower_order_final": False}, 3),
    ("unipc", {"lower_order_final": False}, 4),  # UniP-3 + UniC: one order up, no extra call
    ("unipc_bh1", {"lower_order_final": False}, 4),
    ("unipc", {"order": 2}, 3),
    ("unipc_bh1", {"order": 2}, 3),
    ("unipc", {"order": 1}, 2),
    ("deis", {}, 3),
    ("deis", {"max_order": 4}, 4),
    ("ipndm", {}, 2),  # fixed equal-step weights on Karras' uneven steps
]
STOCHASTIC = ["ddpm", "euler_a", "dpm++2s_a", "dpm++2m_sde"]


def _ode_error(name: str, steps: int, **options) -> float:
    """Max error against the exact ODE solution over the same σ range."""
    den = GaussianDenoiser(MU, S)
    sigmas = get_sigmas_karras(steps, SIGMA_MIN, SIGMA_MAX)
    x = den.prior((512,), SIGMA_MAX, torch.Generator().manual_seed(0))
    out = plugins.samplers().get(name)(den, x, sigmas, **options)
    if name == "plms":  # starts at sigmas[1], stops at the last σ > 0 (as the GLIDE fork)
        s0, s1, s_last = float(sigmas[0]), float(sigmas[1]), float(sigmas[-2])
        exact = den.ode_solution(x * math.sqrt((1 + s1**2) / (1 + s0**2)), s1, s_last)
    else:  # every other sampler's last step to σ = 0 returns D(x, σ_min)
        exact = den(den.ode_solution(x, SIGMA_MAX, SIGMA_MIN), SIGMA_MIN)
    return (out - exact).abs().max().item()


@pytest.mark.parametrize("name", sorted(DETERMINISTIC_ORDER))
def test_deterministic_sampler_converges_to_exact_ode_solution_at_its_order(name: str) -> None:
    errors = [_ode_error(name, n) for n in (20, 40, 80)]
    orders = [math.log2(a / b) for a, b in zip(errors, errors[1:], strict=False)]
    assert errors[-1] < 0.06
    assert min(orders) > DETERMINISTIC_ORDER[name] - 0.25, (errors, orders)


@pytest.mark.parametrize("name,options,order", HIGH_ORDER)
def test_multistep_sampler_converges_at_its_order(name: str, options: dict, order: int) -> None:
    errors = [_ode_error(name, n, **options) for n in (40, 80, 160)]
    orders = [math.log2(a / b) for a, b in zip(errors, errors[1:], strict=False)]
    assert orders[-1] > order - 0.25 and min(orders) > order - 0.5, (errors, orders)


def test_ipndm_is_deis_of_order_four_on_even_steps() -> None:
    """The fixed Adams–Bashforth weights are the exact polynomial integral for equal steps."""
    den = GaussianDenoiser(MU, S)
    x = den.prior((64,), 4.0, torch.Generator().manual_seed(0))
    sigmas = torch.linspace(4.0, 1.0, 12, dtype=torch.float64)  # no final 0: stop at σ = 1
    ipndm = plugins.samplers().get("ipndm")(den, x, sigmas)
    deis = plugins.samplers().get("deis")(den, x, sigmas, max_order=4)
    torch.testing.assert_close(ipndm, deis, rtol=1e-10, atol=1e-10)
    assert (ipndm - den.ode_solution(x, 4.0, 1.0)).abs().max() < 5e-3


def test_unipc_variants_differ_only_where_the_coefficients_are_fixed() -> None:
    """B(h) cancels where ρ solves the order conditions (UniC-3) and matters where it is
    fixed (UniP-2's ρ = 1/2): bh1 and bh2 agree at order 3, differ at order 2."""
    errors = {(v, o): _ode_error(v, 20, order=o, lower_order_final=False)
              for v in ("unipc", "unipc_bh1") for o in (2, 3)}
    assert errors[("unipc", 3)] == pytest.approx(errors[("unipc_bh1", 3)], rel=1e-3)
    assert errors[("unipc", 2)] != pytest.approx(errors[("unipc_bh1", 2)], rel=0.05)


def test_ddim_with_eta_zero_is_euler() -> None:
    den = GaussianDenoiser(MU, S)
    sigmas = get_sigmas_karras(12, SIGMA_MIN, SIGMA_MAX)
    x = den.prior((64,), SIGMA_MAX, torch.Generator().manual_seed(3))
    ddim = plugins.samplers().get("ddim")(den, x, sigmas, eta=0.0)
    euler = plugins.samplers().get("euler")(den, x, sigmas)
    torch.testing.assert_close(ddim, euler, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name,options", [(n, {}) for n in STOCHASTIC] + [("ddim", {"eta": 1.0})])
def test_stochastic_sampler_reaches_the_data_mean_and_variance(name: str, options: dict) -> None:
    den = GaussianDenoiser(MU, S)
    g = torch.Generator().manual_seed(1)
    x = den.prior((20_000,), SIGMA_MAX, g)
    sigmas = get_sigmas_karras(200, SIGMA_MIN, SIGMA_MAX)
    out = plugins.samplers().get(name)(
        den, x, sigmas,
        noise_sampler=lambda s, s_next: torch.randn(x.shape, generator=g, dtype=x.dtype),
        **options,
    )
    assert out.mean().item() == pytest.approx(MU, abs=0.015)
    assert out.var().item() == pytest.approx(S**2, rel=0.08)  # ancestral bias ~ 1/steps


def test_stochastic_samplers_use_the_injected_noise() -> None:
    den = GaussianDenoiser(MU, S)
    sigmas = get_sigmas_karras(6, SIGMA_MIN, SIGMA_MAX)
    x = den.prior((8,), SIGMA_MAX, torch.Generator().manual_seed(2))
    for name in STOCHASTIC:
        zero = plugins.samplers().get(name)(den, x, sigmas,
                                            noise_sampler=lambda s, sn: torch.zeros_like(x))
        one = plugins.samplers().get(name)(den, x, sigmas,
                                           noise_sampler=lambda s, sn: torch.ones_like(x))
        assert not torch.allclose(zero, one), name


def test_model_calls_match_what_samplers_do() -> None:
    sigmas = get_sigmas_karras(7, SIGMA_MIN, SIGMA_MAX)
    euler = linear_coefficients(plugins.samplers().get("euler"), sigmas)
    for entry in plugins.samplers():
        den = GaussianDenoiser(MU, S)
        fitted = {"coefficients": euler} if entry.obj.accepts("coefficients") else {}
        entry.obj(den, torch.zeros(2, dtype=torch.float64) + 80, sigmas, **fitted)
        assert den.calls == entry.obj.model_calls(7), entry.name


def test_model_calls_counts_calls_not_steps() -> None:
    from glidectl.samplers import model_calls

    assert model_calls("heun", 10) == 19
    assert model_calls("unipc", 10) == 10 and model_calls("dpm++3m", 10) == 10
    assert model_calls(plugins.samplers().get("plms"), 10) == 17


@pytest.mark.parametrize("steps, said", [
    ("10", "steps= takes a whole number of steps >= 1, got '10' (str)."),  # was a TypeError
    (2.5, "steps= takes a whole number of steps >= 1, got 2.5 (float)."),  # was 4.0 calls
    (0, "steps= takes a whole number of steps >= 1, got 0 (int)."),
    (-1, "steps= takes a whole number of steps >= 1, got -1 (int)."),  # was 0 calls
])
def test_model_calls_of_steps_that_are_no_count_say_so(steps, said) -> None:
    from glidectl.errors import GlidectlError
    from glidectl.samplers import model_calls

    with pytest.raises(GlidectlError) as error:
        model_calls("heun", steps)
    assert str(error.value) == f"model_calls(): {said}"
    with pytest.raises(GlidectlError, match=r"^model_calls\(\): the plms sampler needs at "
                       r"least 3 steps, got steps=2\.$"):  # was 0 calls
        model_calls("plms", 2)
    assert model_calls("heun", np.int64(10)) == 19
