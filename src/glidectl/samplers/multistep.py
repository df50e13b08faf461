"""Adams–Bashforth multistep samplers on dx/dσ = ε(x, σ) = (x − D)/σ: one model call per step,
the ε of earlier steps extrapolated over the next one, lower orders while warming up.

Zhang & Chen 2023, "Fast Sampling of Diffusion Models with Exponential Integrator" (DEIS):
on the variance-exploding scale ρ = σ, so their ρAB method integrates the Lagrange
polynomial through the last ε's exactly over [σ, σ']; iPNDM is their improved PNDM, the
fixed Adams–Bashforth weights without PNDM's Runge–Kutta warm-up.
"""

from __future__ import annotations

import numpy as np
import torch

from .denoiser import Callback, report, to_d

# Adams–Bashforth weights for equal steps, newest ε first (orders 1–4).
AB_WEIGHTS = ((1.0,), (3 / 2, -1 / 2), (23 / 12, -16 / 12, 5 / 12),
              (55 / 24, -59 / 24, 37 / 24, -9 / 24))


def lagrange_weights(nodes: list[float], a: float, b: float) -> list[float]:
    """w_j with Σ_j w_j·f(nodes[j]) = (1/(b − a))·∫_a^b P(s) ds for the polynomial P
    interpolating f at ``nodes`` (exact in float64; O(k²) for k ≤ 4 nodes)."""
    out = []
    for j, node in enumerate(nodes):
        others = [m for k, m in enumerate(nodes) if k != j]
        basis = np.poly1d(np.poly(others)) / float(np.prod([node - m for m in others]))
        integral = np.polyint(basis)
        out.append(float((integral(b) - integral(a)) / (b - a)))
    return out


@torch.no_grad()
def sample_ipndm(denoiser, x, sigmas, extra=None, callback: Callback = None,
                 max_order: int = 4) -> torch.Tensor:
    """iPNDM: x' = x + (σ' − σ)·Σ_j w_j·ε_(i−j) with the equal-step Adams–Bashforth weights
    (up to order 4 after a 1-2-3 warm-up). On even steps this is ``deis`` with
    ``max_order=4``; on uneven ones (Karras) the fixed weights make it second order."""
    extra = extra or {}
    eps: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = denoiser(x, sigma, **extra)
        report(callback, i, x, sigma, sigma_next, denoised)
        if sigma_next == 0:
            return denoised
        eps = [to_d(x, sigma, denoised), *eps][:max_order]
        weights = AB_WEIGHTS[len(eps) - 1]
        x = x + (sigma_next - sigma) * sum(w * e for w, e in zip(weights, eps, strict=True))
    return x


@torch.no_grad()
def sample_deis(denoiser, x, sigmas, extra=None, callback: Callback = None,
                max_order: int = 3) -> torch.Tensor:
    """DEIS ρAB (variable-step Adams–Bashforth in σ): ε over [σ, σ'] is the polynomial
    through the last ``max_order`` (σ_j, ε_j), integrated exactly."""
    extra = extra or {}
    eps: list[torch.Tensor] = []
    nodes: list[float] = []
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = denoiser(x, sigma, **extra)
        report(callback, i, x, sigma, sigma_next, denoised)
        if sigma_next == 0:
            return denoised
        eps, nodes = [to_d(x, sigma, denoised), *eps][:max_order], [sigma, *nodes][:max_order]
        weights = lagrange_weights(nodes, sigma, sigma_next)
        x = x + (sigma_next - sigma) * sum(w * e for w, e in zip(weights, eps, strict=True))
    return x
