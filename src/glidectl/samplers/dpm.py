"""DPM-Solver++ samplers (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of
Diffusion Probabilistic Models"), in data-prediction form with λ = −log σ and h = λ' − λ.

One step of the exponential integrator is x' = (σ'/σ)·x + (1 − e^(−h))·D, exact when D is
constant over the step; the higher-order solvers correct D with earlier or midpoint values.
"""

from __future__ import annotations

import math

import torch

from .denoiser import Callback, NoiseSampler, report
from .euler import get_ancestral_step
from .noise import draw


@torch.no_grad()
def sample_dpmpp_2m(denoiser, x, sigmas, extra=None, callback: Callback = None) -> torch.Tensor:
    """DPM-Solver++(2M): second-order multistep, D_d = (1 + 1/(2r))·D − 1/(2r)·D_prev with
    r = h_prev/h; first and last steps are first order."""
    extra = extra or {}
    old_denoised, h_last = None, None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = denoiser(x, sigma, **extra)
        report(callback, i, x, sigma, sigma_next, denoised)
        if sigma_next == 0:
            x = denoised
            continue
        h = math.log(sigma / sigma_next)
        if old_denoised is None:
            denoised_d = denoised
        else:
            r = h_last / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - 1 / (2 * r) * old_denoised
        x = (sigma_next / sigma) * x - math.expm1(-h) * denoised_d
        old_denoised, h_last = denoised, h
    return x


@torch.no_grad()
def sample_dpmpp_2s_ancestral(denoiser, x, sigmas, extra=None, callback: Callback = None,
                              noise_sampler: NoiseSampler = None, eta: float = 1.0
                              ) -> torch.Tensor:
    """DPM-Solver++(2S) ancestral: a second-order singlestep (midpoint, r = 1/2) to σ_down,
    then noise of scale σ_up."""
    extra = extra or {}
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = denoiser(x, sigma, **extra)
        report(callback, i, x, sigma, sigma_next, denoised)
        sigma_down, sigma_up = get_ancestral_step(sigma, sigma_next, eta)
        if sigma_down == 0:
            x = denoised
            continue
        h = math.log(sigma / sigma_down)
        sigma_s = sigma * math.exp(-h / 2)
        x_2 = (sigma_s / sigma) * x - math.expm1(-h / 2) * denoised
        denoised_2 = denoiser(x_2, sigma_s, **extra)
        x = (sigma_down / sigma) * x - math.expm1(-h) * denoised_2
        if sigma_up:
            z = draw(noise_sampler, x, sigma, sigma_next)
            x = x + z * sigma_up
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde(denoiser, x, sigmas, extra=None, callback: Callback = None,
                        noise_sampler: NoiseSampler = None, eta: float = 1.0) -> torch.Tensor:
    """DPM-Solver++(2M) SDE: with h_η = (1 + η)·h,
    x' = e^(−h_η)·x + (1 − e^(−h_η))·D + φ₂·(D − D_prev)/r + σ'·√(1 − e^(−2ηh))·z,
    φ₂ = 1 − (1 − e^(−h_η))/h_η (the exact integral of a linear D over the step)."""
    extra = extra or {}
    old_denoised, h_last = None, None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = denoiser(x, sigma, **extra)
        report(callback, i, x, sigma, sigma_next, denoised)
        if sigma_next == 0:
            x = denoised
            continue
        h = math.log(sigma / sigma_next)
        h_eta = h * (1 + eta)
        x = math.exp(-h_eta) * x - math.expm1(-h_eta) * denoised
        if old_denoised is not None:
            r = h_last / h
            phi_2 = 1 + math.expm1(-h_eta) / h_eta
            x = x + phi_2 * (denoised - old_denoised) / r
        if eta:
            z = draw(noise_sampler, x, sigma, sigma_next)
            x = x + z * sigma_next * math.sqrt(-math.expm1(-2 * eta * h))
        old_denoised, h_last = denoised, h
    return x


@torch.no_grad()
def sample_dpmpp_3m(denoiser, x, sigmas, extra=None, callback: Callback = None,
                    lower_order_final: bool = True) -> torch.Tensor:
    """DPM-Solver++(3M) (Lu et al. 2022): third-order multistep. D over the step is the
    quadratic through the last three denoised values, integrated exactly:
    x' = (σ'/σ)·x + (1 − e^(−h))·D + φ₂·h·D' + φ₃·h²·D[λ, λ₁, λ₂],
    φ₂ = 1 − (1 − e^(−h))/h, φ₃ = 1 − 2/h + 2(1 − e^(−h))/h². The first steps warm up at
    lower order; with ``lower_order_final`` so do the last two before σ = 0."""
    extra = extra or {}
    n_pos = sum(1 for s in sigmas if float(s) > 0)
    Ds: list[torch.Tensor] = []
    hs: list[float] = []
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = denoiser(x, sigma, **extra)
        report(callback, i, x, sigma, sigma_next, denoised)
        if sigma_next == 0:
            return denoised
        h = math.log(sigma / sigma_next)
        order = min(3, len(Ds) + 1, n_pos - 1 - i) if lower_order_final else min(3, len(Ds) + 1)
        x = (sigma_next / sigma) * x - math.expm1(-h) * denoised
        phi_2, phi_3 = 1 + math.expm1(-h) / h, 1 - 2 / h - 2 * math.expm1(-h) / h**2
        if order >= 2:
            d1_0 = (denoised - Ds[-1]) * h / hs[-1]  # h · first divided difference
            d1 = d1_0
            if order == 3:
                d1_1 = (Ds[-1] - Ds[-2]) * h / hs[-2]
                d2 = (d1_0 - d1_1) * h / (hs[-1] + hs[-2])  # h² · second divided difference
                d1 = d1_0 + d2 * hs[-1] / h  # h · D'(λ) of the quadratic
                x = x + phi_3 * d2
            x = x + phi_2 * d1
        Ds, hs = [*Ds[-1:], denoised], [*hs[-1:], h]
    return x
