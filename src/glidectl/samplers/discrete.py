"""GLIDE's own samplers, written over the σ-space denoiser: DDPM, DDIM and PLMS.

On the VE scale (x = x_t/√ᾱ_t) the DDPM posterior and the DDIM update become short
formulas in σ, so these run on any σ sequence, though they are meant for GLIDE's respaced
timesteps (``schedule="respaced"``).
"""

from __future__ import annotations

import math

import torch

from ..errors import GlidectlError
from .denoiser import Callback, NoiseSampler, alpha_bar, report, to_d
from .noise import draw


@torch.no_grad()
def sample_ddpm(denoiser, x, sigmas, extra=None, callback: Callback = None,
                noise_sampler: NoiseSampler = None) -> torch.Tensor:
    """Ancestral DDPM (Ho et al. 2020) with GLIDE's learned variance.

    The step σ → σ' has β = 1 − ᾱ/ᾱ' and posterior variance β̃ = β(1 − ᾱ')/(1 − ᾱ); the
    network's v ∈ [−1, 1] picks log Σ = f·log β + (1 − f)·log β̃ with f = (v + 1)/2
    (denoisers without a learned variance get β̃). On the VE scale the posterior mean is
    D + (σ'/σ)²·(x − D).
    """
    extra = extra or {}
    learned = getattr(denoiser, "learned_variance", False)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        if learned:
            denoised, v = denoiser(x, sigma, variance=True, **extra)
        else:
            denoised, v = denoiser(x, sigma, **extra), None
        report(callback, i, x, sigma, sigma_next, denoised)
        if sigma_next == 0:
            x = denoised
            continue
        a_t, a_s = alpha_bar(sigma), alpha_bar(sigma_next)
        beta = (sigma**2 - sigma_next**2) / (1 + sigma**2)
        log_beta_tilde = math.log(beta * (1 - a_s) / (1 - a_t))
        if v is None:
            log_var = torch.full_like(x, log_beta_tilde)
        else:
            f = (v + 1) / 2
            log_var = f * math.log(beta) + (1 - f) * log_beta_tilde
        mean = denoised + (sigma_next / sigma) ** 2 * (x - denoised)
        z = draw(noise_sampler, x, sigma, sigma_next)
        x = mean + torch.exp(0.5 * log_var) / math.sqrt(a_s) * z
    return x


@torch.no_grad()
def sample_ddim(denoiser, x, sigmas, extra=None, callback: Callback = None,
                noise_sampler: NoiseSampler = None, eta: float = 0.0) -> torch.Tensor:
    """DDIM (Song et al. 2021). With η = 0 this is Euler on the probability-flow ODE.

    VP update x' = √ᾱ'·x0 + √(1 − ᾱ' − σ_η²)·ε + σ_η·z with
    σ_η = η·√((1 − ᾱ')/(1 − ᾱ))·√(1 − ᾱ/ᾱ'); divided by √ᾱ' it reads
    x' = D + √(σ'² − σ_η²/ᾱ')·ε + (σ_η/√ᾱ')·z.
    """
    extra = extra or {}
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = denoiser(x, sigma, **extra)
        report(callback, i, x, sigma, sigma_next, denoised)
        if sigma_next == 0:
            x = denoised
            continue
        a_t, a_s = alpha_bar(sigma), alpha_bar(sigma_next)
        eps = to_d(x, sigma, denoised)
        sigma_eta2 = eta**2 * (1 - a_s) / (1 - a_t) * (1 - a_t / a_s) / a_s
        x = denoised + math.sqrt(max(sigma_next**2 - sigma_eta2, 0.0)) * eps
        if eta:
            x = x + math.sqrt(sigma_eta2) * draw(noise_sampler, x, sigma, sigma_next)
    return x


def _plms_calls(steps: int) -> int:
    n = max(steps - 2, 0)
    return 4 * min(n, 3) + max(n - 3, 0)


@torch.no_grad()
def sample_plms(denoiser, x, sigmas, extra=None, callback: Callback = None) -> torch.Tensor:
    """PLMS (Liu et al. 2022, "Pseudo Numerical Methods for Diffusion Models on Manifolds").

    Three pseudo Runge-Kutta steps (ε at σ, the midpoint twice, σ') warm up, then pseudo
    linear multistep ε' = (55ε₀ − 59ε₁ + 37ε₂ − 9ε₃)/24 (warm-up steps contribute their
    combined ε' to the history). The "transfer" φ(x, ε, σ → σ') is
    x + (σ' − σ)·ε on the VE scale. The midpoint has ᾱ and t halfway between the two steps'
    (fractional t). Like crowsonkb's GLIDE fork: x_T is taken as the sample at ``sigmas[1]``
    (the first σ is skipped), the last step to σ = 0 is not taken, and ε is used unclipped.
    """
    extra = extra or {}
    sigmas = [float(s) for s in sigmas]
    sigma_0, sigmas = sigmas[0], [s for s in sigmas[1:] if s > 0]
    if len(sigmas) < 2:
        raise GlidectlError("The plms sampler needs at least 3 steps; raise --steps.")
    x = x * math.sqrt((1 + sigmas[0] ** 2) / (1 + sigma_0**2))
    timed = hasattr(denoiser, "sigma_to_t")

    def eps(x: torch.Tensor, sigma: float, t: float | None = None) -> torch.Tensor:
        kwargs = dict(extra)
        if timed:
            kwargs["t"] = denoiser.sigma_to_t(sigma) if t is None else t
        return to_d(x, sigma, denoiser(x, sigma, **kwargs))

    history: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        e_1 = eps(x, sigma)
        if len(history) < 3:
            a_mid = (alpha_bar(sigma) + alpha_bar(sigma_next)) / 2
            sigma_mid = math.sqrt((1 - a_mid) / a_mid)
            t_mid = (denoiser.sigma_to_t(sigma) + denoiser.sigma_to_t(sigma_next)) / 2 \
                if timed else None
            e_2 = eps(x + (sigma_mid - sigma) * e_1, sigma_mid, t_mid)
            e_3 = eps(x + (sigma_mid - sigma) * e_2, sigma_mid, t_mid)
            e_4 = eps(x + (sigma_next - sigma) * e_3, sigma_next)
            e_prime = (e_1 + 2 * e_2 + 2 * e_3 + e_4) / 6
            history.append(e_prime)  # the fork keeps the warm-up's combined ε
        else:
            e_prime = (55 * e_1 - 59 * history[-1] + 37 * history[-2] - 9 * history[-3]) / 24
            history = [*history[-2:], e_1]
        report(callback, i, x, sigma, sigma_next, x - sigma * e_1)
        x = x + (sigma_next - sigma) * e_prime
    return x
