"""σ-space and fractional-timestep helpers the samplers rely on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glidectl.diffusion import create_diffusion


@pytest.fixture(scope="module")
def short():
    return create_diffusion("squaredcos_cap_v2", 1000, "10")


def test_sigmas_cover_the_original_chain(short, dg) -> None:
    sigmas = short.sigmas()
    ac = dg["schedule/cos/alphas_cumprod"].numpy()
    assert sigmas.dtype == np.float64 and sigmas.shape == (1000,)
    np.testing.assert_allclose(sigmas, np.sqrt((1 - ac) / ac), rtol=1e-12)
    assert 19_000 < sigmas[-1] < 21_000 and 60 < sigmas[-11] < 80
    assert (np.diff(sigmas) > 0).all()


def test_sigma_to_t_inverts_t_to_sigma(short) -> None:
    t = torch.tensor([0.0, 0.25, 1.0, 416.75, 500.0, 998.5, 999.0], dtype=torch.float64)
    torch.testing.assert_close(short.sigma_to_t(short.t_to_sigma(t)), t, rtol=0, atol=1e-9)
    integer = torch.tensor([0, 17, 999])
    sig = torch.from_numpy(short.sigmas()[integer.numpy()])
    torch.testing.assert_close(short.sigma_to_t(sig), integer.double(), rtol=0, atol=1e-9)


def test_sigma_to_t_interpolates_log_sigma_and_clamps(short) -> None:
    s = short.sigmas()
    mid = torch.tensor([np.sqrt(s[10] * s[11])])  # geometric mean: halfway in log σ
    assert short.sigma_to_t(mid).item() == pytest.approx(10.5, abs=1e-9)
    assert short.sigma_to_t(torch.tensor([1e-6, 1e9])).tolist() == [0.0, 999.0]
    assert short.sigma_to_t(torch.tensor([1.0], dtype=torch.float32)).dtype == torch.float32


def test_plms_model_timesteps(short, dg, dg_json) -> None:
    """Respaced fractional t → model timesteps, as in the PLMS golden trace."""
    expected = dg_json["sampling"]["samplers"]["plms"]["model_timesteps"]
    respaced = []
    for i in range(8, 0, -1):
        respaced += [i, i - 0.5, i - 0.5, i - 1] if i > 5 else [i]
    got = short.model_timesteps(torch.tensor(respaced, dtype=torch.float64)).tolist()
    assert got == expected == dg["sample/plms/model_timesteps"].tolist()
