"""Respacing strings pick exactly GLIDE's timesteps and give its respaced chains."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glidectl.diffusion import create_diffusion, space_timesteps
from glidectl.errors import GlidectlError

SECTIONS = ["27", "17", "50", "100", "ddim25", "ddim50", "10,10,10", "fast27", "10"]


@pytest.mark.parametrize("section", SECTIONS)
def test_respacing_matches_golden(dg: dict[str, torch.Tensor], dg_json: dict, section: str) -> None:
    expected = dg_json["respacing"][section]
    kept = sorted(space_timesteps(1000, section))
    assert kept == expected["use_timesteps_sorted"]
    assert len(kept) == expected["count"]
    assert kept == dg[f"respace/{section}/timestep_map"].tolist()
    for schedule, key in [("squaredcos_cap_v2", "cos"), ("linear", "linear")]:
        diffusion = create_diffusion(schedule, 1000, section)
        assert diffusion.num_timesteps == len(kept)
        np.testing.assert_array_equal(diffusion.timestep_map, kept)
        for attr in ("betas", "alphas_cumprod"):
            ref = dg[f"respace/{section}/{key}/{attr}"].numpy()
            np.testing.assert_allclose(getattr(diffusion, attr), ref, rtol=1e-12, atol=0)


def test_respaced_chain_keeps_original_alphas_cumprod() -> None:
    full = create_diffusion("squaredcos_cap_v2", 1000)
    short = full.respace("ddim50")
    np.testing.assert_allclose(
        short.alphas_cumprod, full.alphas_cumprod[short.timestep_map], rtol=1e-12
    )
    np.testing.assert_array_equal(full.timestep_map, np.arange(1000))
    assert len(short.timestep_map) == 50
    np.testing.assert_array_equal(short.original_betas, full.betas)


def test_model_sees_original_timesteps() -> None:
    diffusion = create_diffusion("squaredcos_cap_v2", 1000, "10")
    t = torch.tensor([0, 1, 9])
    assert diffusion.model_timesteps(t).tolist() == [0, 111, 999]
    assert diffusion.model_timesteps(t).dtype == torch.int64
    frac = diffusion.model_timesteps(torch.tensor([7.5, 8.0]))
    assert frac.tolist() == [832.5, 888.0]


@pytest.mark.parametrize("section", ["ddim999", "abc", "0", "600,600", "ddimx",
                                     "ddim1_0", "1_0,5", "\u0663", "ddim\uff11\uff10"])
def test_bad_respacing_is_a_user_error(section: str) -> None:
    with pytest.raises(GlidectlError, match="respacing"):
        space_timesteps(1000, section)
    with pytest.raises(GlidectlError) as info:  # it was two sentences
        space_timesteps(1000, section)
    assert str(info.value).count(". ") == 0 and str(info.value).endswith(
        "; use 'N', comma-separated counts like '10,10,10', 'ddimN' or 'fast27'.")
