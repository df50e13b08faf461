"""The built-in GLIDE samplers reproduce the reference samples (golden README §3)."""

from __future__ import annotations

import math

import pytest
import torch

from glidectl import plugins
from glidectl.diffusion import create_diffusion
from glidectl.samplers.denoiser import GlideDenoiser
from glidectl.samplers.schedules import build_sigmas


def _guided_denoiser(model, dg, calls: list[float] | None = None) -> GlideDenoiser:
    """Guidance 3 over [cond0, cond1] + [uncond, uncond], text encoded once."""
    with torch.no_grad():
        text_emb = model.encode_text(dg["sample/tokens"], dg["sample/mask"])
    denoiser = GlideDenoiser(
        model, create_diffusion("squaredcos_cap_v2", 1000).alphas_cumprod,
        text_emb=text_emb, guidance=3.0, clip=True,
    )
    if calls is not None:
        forward = denoiser.model_output
        denoiser.model_output = lambda x_t, t, *sigma: (calls.append(t), forward(x_t, t, *sigma))[1]
    return denoiser


def _run(name: str, model, dg, **kwargs) -> tuple[torch.Tensor, list[float], torch.Tensor]:
    sampler = plugins.samplers().get(name)
    calls: list[float] = []
    denoiser = _guided_denoiser(model, dg, calls)
    denoiser.clip = sampler.clip
    sigmas = build_sigmas("respaced", "10", denoiser.sigmas)
    x_T = dg["sample/x_T"][:2]
    x = x_T * math.sqrt(1 + float(sigmas[0]) ** 2)
    return sampler(denoiser, x, sigmas, **kwargs), calls, sigmas


def test_ddim_matches_reference(golden_base, dg) -> None:
    final, calls, _ = _run("ddim", golden_base, dg, eta=0.0)
    assert calls == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
    torch.testing.assert_close(final, dg["sample/ddim/final"][:2], atol=1e-3, rtol=0)


def test_ddpm_matches_reference_with_recorded_noise(golden_base, dg) -> None:
    noise = iter(dg["sample/noise_seq"][:, :2])
    final, calls, _ = _run("ddpm", golden_base, dg, noise_sampler=lambda s, s_next: next(noise))
    assert len(calls) == 10
    torch.testing.assert_close(final, dg["sample/p_sample/final"][:2], atol=1e-3, rtol=0)


def test_plms_matches_reference_with_fractional_timesteps(golden_base, dg) -> None:
    final, calls, sigmas = _run("plms", golden_base, dg)
    assert calls == pytest.approx(dg["sample/plms/model_timesteps"].tolist())
    assert plugins.samplers().get("plms").model_calls(10) == 17
    # The fork stops at respaced index 0 (σ_0 > 0): its output is on the VP scale there.
    final = final / math.sqrt(1 + float(sigmas[-2]) ** 2)
    torch.testing.assert_close(final, dg["sample/plms/final"][:2], atol=1e-3, rtol=1e-4)


def test_ddpm_takes_the_posterior_variance_from_a_network_whose_variance_head_is_zero(
        golden_base, dg) -> None:
    """A network trained on `train.loss = "eps"` keeps its variance channels' zero
    initialisation, so v = 0 everywhere: ancestral DDPM read that as the geometric mean of β
    and β̃ (grain left in every upsampled picture). Such a network samples with β̃, as a
    denoiser without a learned variance does; a trained head (the golden model's) is read."""
    import copy

    assert golden_base.variance_trained
    zero = copy.deepcopy(golden_base)
    with torch.no_grad():
        zero.out[2].weight[3:] = 0
        zero.out[2].bias[3:] = 0
    assert not zero.variance_trained
    assert _guided_denoiser(golden_base, dg).learned_variance
    assert not _guided_denoiser(zero, dg).learned_variance

    def ddpm(model, learned: bool) -> torch.Tensor:
        noise = iter(dg["sample/noise_seq"][:, :2])
        denoiser = _guided_denoiser(model, dg)
        denoiser.learned_variance = learned
        sigmas = build_sigmas("respaced", "10", denoiser.sigmas)
        x = dg["sample/x_T"][:2] * math.sqrt(1 + float(sigmas[0]) ** 2)
        return plugins.samplers().get("ddpm")(denoiser, x, sigmas,
                                              noise_sampler=lambda s, s_next: next(noise))

    as_sampled = ddpm(zero, _guided_denoiser(zero, dg).learned_variance)
    assert torch.equal(as_sampled, ddpm(zero, False))
    assert (as_sampled - ddpm(zero, True)).abs().max() > 1e-2  # v = 0 was another variance
