"""Euler, Euler ancestral and Heun on the probability-flow ODE dx/dσ = (x − D(x, σ))/σ
(Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models")."""

from __future__ import annotations

import math

import torch

from .denoiser import Callback, NoiseSampler, report, to_d
from .noise import draw


def get_ancestral_step(sigma: float, sigma_next: float, eta: float = 1.0) -> tuple[float, float]:
    """Split σ → σ' into a deterministic step to σ_down and fresh noise σ_up
    (σ_down² + σ_up² = σ'²); η = 1 matches the DDPM posterior variance."""
    if not eta or sigma_next == 0:
        return sigma_next, 0.0
    sigma_up = min(sigma_next,
                   eta * math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
    return math.sqrt(sigma_next**2 - sigma_up**2), sigma_up


@torch.no_grad()
def sample_euler(denoiser, x, sigmas, extra=None, callback: Callback = None) -> torch.Tensor:
    """Euler: x ← x + d·(σ' − σ) with d = (x − D)/σ. On GLIDE's timesteps this is DDIM η=0."""
    extra = extra or {}
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = denoiser(x, sigma, **extra)
        report(callback, i, x, sigma, sigma_next, denoised)
        x = x + to_d(x, sigma, denoised) * (sigma_next - sigma)
    return x


@torch.no_grad()
def sample_euler_ancestral(denoiser, x, sigmas, extra=None, callback: Callback = None,
                           noise_sampler: NoiseSampler = None, eta: float = 1.0) -> torch.Tensor:
    """Euler ancestral: an Euler step to σ_down, then noise of scale σ_up back up to σ'."""
    extra = extra or {}
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = denoiser(x, sigma, **extra)
        report(callback, i, x, sigma, sigma_next, denoised)
        sigma_down, sigma_up = get_ancestral_step(sigma, sigma_next, eta)
        x = x + to_d(x, sigma, denoised) * (sigma_down - sigma)
        if sigma_up:
            z = draw(noise_sampler, x, sigma, sigma_next)
            x = x + z * sigma_up
    return x


@torch.no_grad()
def sample_heun(denoiser, x, sigmas, extra=None, callback: Callback = None) -> torch.Tensor:
    """Heun (Karras et al. 2022, Algorithm 1): Euler predictor, trapezoidal corrector;
    the last step to σ = 0 is plain Euler."""
    extra = extra or {}
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = denoiser(x, sigma, **extra)
        report(callback, i, x, sigma, sigma_next, denoised)
        d = to_d(x, sigma, denoised)
        dt = sigma_next - sigma
        if sigma_next == 0:
            x = x + d * dt
            continue
        x_2 = x + d * dt
        d_2 = to_d(x_2, sigma_next, denoiser(x_2, sigma_next, **extra))
        x = x + (d + d_2) / 2 * dt
    return x
