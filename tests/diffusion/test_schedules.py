"""Beta schedules and every derived array match GLIDE's float64 values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glidectl.diffusion import GaussianDiffusion, get_named_beta_schedule
from glidectl.errors import GlidectlError

ARRAYS = [
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "alphas_cumprod_next",
    "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod", "posterior_variance",
    "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
]


@pytest.mark.parametrize(("name", "key"), [("squaredcos_cap_v2", "cos"), ("linear", "linear")])
def test_schedule_arrays_match_golden(dg: dict[str, torch.Tensor], name: str, key: str) -> None:
    diffusion = GaussianDiffusion(get_named_beta_schedule(name, 1000))
    for attr in ARRAYS:
        ours = getattr(diffusion, attr)
        ref = dg[f"schedule/{key}/{attr}"].numpy()
        assert ours.dtype == np.float64, attr
        np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=0, err_msg=attr)


def test_cosine_schedule_caps_last_beta() -> None:
    betas = get_named_beta_schedule("squaredcos_cap_v2", 1000)
    assert betas[-1] == 0.999 and betas.max() == 0.999


def test_linear_schedule_keeps_endpoints_for_other_lengths() -> None:
    betas = get_named_beta_schedule("linear", 100)
    assert betas[0] == pytest.approx(0.001) and betas[-1] == pytest.approx(0.2)


def test_unknown_schedule_is_a_user_error() -> None:
    with pytest.raises(GlidectlError, match="squaredcos_cap_v2"):
        get_named_beta_schedule("cosine", 1000)
