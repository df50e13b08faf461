"""Classifier-free guidance: one forward, guided ε in both halves, variance kept per row."""

from __future__ import annotations

import pytest
import torch

from glidectl.diffusion import create_diffusion
from glidectl.diffusion.guidance import classifier_free_guidance, guide_output


def test_guided_eps_in_both_halves_and_variance_per_row() -> None:
    gen = torch.Generator().manual_seed(0)
    out = torch.randn(4, 6, 2, 2, generator=gen)
    guided = guide_output(out, 3.0)
    expected = out[2:, :3] + 3.0 * (out[:2, :3] - out[2:, :3])
    torch.testing.assert_close(guided[:2, :3], expected)
    torch.testing.assert_close(guided[2:, :3], expected)
    torch.testing.assert_close(guided[:, 3:], out[:, 3:])


def test_scale_one_is_the_conditional_model() -> None:
    out = torch.randn(2, 6, 2, 2)
    torch.testing.assert_close(guide_output(out, 1.0)[:, :3], out[:1, :3].expand(2, -1, -1, -1))


def test_wrapper_runs_the_model_once_on_duplicated_first_half() -> None:
    calls = []

    def model_fn(x: torch.Tensor, t: torch.Tensor, *, tag: str) -> torch.Tensor:
        calls.append((x.clone(), t, tag))
        return torch.cat([x * torch.arange(1, 5.0).view(4, 1, 1, 1), -x], dim=1)

    x = torch.randn(4, 3, 2, 2)
    guided = classifier_free_guidance(model_fn, 2.0)(x, torch.tensor([5] * 4), tag="kw")
    assert len(calls) == 1 and calls[0][2] == "kw"
    torch.testing.assert_close(calls[0][0], torch.cat([x[:2], x[:2]]))
    h = x[:2]
    eps = (h * torch.tensor([3.0, 4.0]).view(2, 1, 1, 1)) + 2.0 * (
        h * torch.tensor([1.0, 2.0]).view(2, 1, 1, 1)
        - h * torch.tensor([3.0, 4.0]).view(2, 1, 1, 1)
    )
    torch.testing.assert_close(guided[:, :3], torch.cat([eps, eps]))
    torch.testing.assert_close(guided[:, 3:], -torch.cat([h, h]))


def test_odd_batch_is_rejected() -> None:
    with pytest.raises(ValueError, match="even batch"):
        classifier_free_guidance(lambda x, t: x, 3.0)(torch.zeros(3, 3, 2, 2), torch.zeros(3))


def test_guided_ddpm_sampling_matches_golden(dg: dict[str, torch.Tensor]) -> None:
    """Tiny base model + guidance 3 + learned-variance ancestral steps over the '10' chain
    reproduce the reference p_sample_loop (noise from ``sample/noise_seq``)."""
    from golden_data import tiny_reference_model

    model = tiny_reference_model("base")

    diffusion = create_diffusion("squaredcos_cap_v2", 1000, "10")
    tokens, mask = dg["sample/tokens"], dg["sample/mask"]
    guided = classifier_free_guidance(
        lambda x, t: model(x, t, tokens=tokens, mask=mask), 3.0
    )
    x = dg["sample/x_T"]
    with torch.no_grad():
        for i, index in enumerate(range(diffusion.num_timesteps - 1, -1, -1)):
            t = torch.full((x.shape[0],), index, dtype=torch.long)
            p = diffusion.p_mean_variance(guided(x, diffusion.model_timesteps(t)), x, t)
            noise = dg["sample/noise_seq"][i] if index > 0 else torch.zeros_like(x)
            x = p["mean"] + torch.exp(0.5 * p["log_variance"]) * noise
    torch.testing.assert_close(x, dg["sample/p_sample/final"], atol=1e-3, rtol=0)
