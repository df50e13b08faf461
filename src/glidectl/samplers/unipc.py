"""UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast
Sampling of Diffusion Models"), in data-prediction form with λ = −log σ.

Each step predicts x' from the last ``order`` denoised values (UniP, order p), evaluates the
model once at x', then corrects x' with that very evaluation (UniC, order p + 1): the
corrector costs no extra model call because the next step reuses it. The free function B(h)
of the paper's update is h ("bh1") or e^h − 1 ("bh2").
"""

from __future__ import annotations

import math

import torch

from .denoiser import Callback, report


def _coefficients(h: float, rks: list[float], variant: str) -> tuple[list[float], list[float],
                                                                     float]:
    """ρ of the predictor (from ``rks[:-1]``) and of the corrector (all ``rks``), and B(h).

    Solves Σ_k ρ_k·r_k^(i−1) = i!·h·φ_(i+1)(h)/B(h), i = 1..p (the paper's eq. 8, with
    hh = −h because the data-prediction ODE runs towards larger λ).
    """
    hh = -h
    h_phi_1 = math.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    b_h = hh if variant == "bh1" else math.expm1(hh)
    rows, b, factorial = [], [], 1
    for i in range(1, len(rks) + 1):
        rows.append([r ** (i - 1) for r in rks])
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    p = len(rks)
    r_mat = torch.tensor(rows, dtype=torch.float64)
    b_vec = torch.tensor(b, dtype=torch.float64)
    if p == 1:
        rhos_p: list[float] = []
    elif p == 2:
        rhos_p = [0.5]  # the paper's choice for UniP-2
    else:
        rhos_p = torch.linalg.solve(r_mat[:-1, :-1], b_vec[:-1]).tolist()
    rhos_c = [0.5] if p == 1 else torch.linalg.solve(r_mat, b_vec).tolist()
    return rhos_p, rhos_c, b_h


@torch.no_grad()
def sample_unipc(denoiser, x, sigmas, extra=None, callback: Callback = None, order: int = 3,
                 variant: str = "bh2", lower_order_final: bool = True) -> torch.Tensor:
    """UniPC-p multistep: UniP-p predictor, UniC corrector, lower orders while warming up.

    With ``lower_order_final`` the last steps before σ = 0 drop to the orders the remaining
    step count can support (the paper's default for few steps). The step to σ = 0 returns
    the denoised value, as every sampler here does.
    """
    if variant not in ("bh1", "bh2"):
        raise ValueError(f"UniPC variant must be 'bh1' or 'bh2', got {variant!r}")
    extra = extra or {}
    sigmas = [float(s) for s in sigmas]
    n_pos = sum(1 for s in sigmas if s > 0)
    Ds: list[torch.Tensor] = []
    lams: list[float] = []
    step = None  # the last predictor step's terms, reused by the corrector
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, sigma, **extra)
        if step is not None and sigma_next > 0:  # UniC: correct x with the new evaluation
            (d1s, rhos_c, b_h, x_lin) = step
            corr = sum((r * d for r, d in zip(rhos_c[:-1], d1s, strict=True)),
                       torch.zeros_like(x))
            x = x_lin - b_h * (corr + rhos_c[-1] * (denoised - Ds[-1]))
        report(callback, i, x, sigma, sigma_next, denoised)
        Ds, lams = [*Ds, denoised][-order:], [*lams, -math.log(sigma)][-order:]
        if sigma_next == 0:
            return denoised
        p = min(order, len(Ds))
        if lower_order_final:
            p = min(p, n_pos - 1 - i)
        lam_t = -math.log(sigma_next)
        h = lam_t - lams[-1]
        rks = [(lams[-(k + 1)] - lams[-1]) / h for k in range(1, p)] + [1.0]
        d1s = [(Ds[-(k + 1)] - Ds[-1]) / rks[k - 1] for k in range(1, p)]
        rhos_p, rhos_c, b_h = _coefficients(h, rks, variant)
        x_lin = (sigma_next / sigma) * x - math.expm1(-h) * Ds[-1]
        pred = sum((r * d for r, d in zip(rhos_p, d1s, strict=True)), torch.zeros_like(x))
        x = x_lin - b_h * pred
        step = (d1s, rhos_c, b_h, x_lin)
    return x
