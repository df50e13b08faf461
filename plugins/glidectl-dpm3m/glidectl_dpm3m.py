"""DPM-Solver++(3M) SDE (Lu et al. 2022) as a glidectl sampler plugin.

With λ = −log σ, h = λ' − λ and h_η = (1+η)h, the SDE step integrates D(λ) exactly
against (1+η)·e^(−(1+η)(λ'−λ)) for a quadratic D through the last three denoised values:
x' = e^(−h_η)·x + (1 − e^(−h_η))·D + φ₂·h·D' + φ₃·h²·D[λ,λ₁,λ₂] + σ'·√(1 − e^(−2ηh))·z,
φ₂ = 1 − (1 − e^(−h_η))/h_η,  φ₃ = 1 − 2/h_η + 2(1 − e^(−h_η))/h_η².
"""

import math

from glidectl.hookspecs import hookimpl
from glidectl.samplers.spec import Sampler


def sample_dpmpp_3m_sde(denoiser, x, sigmas, extra=None, callback=None, noise_sampler=None,
                        eta=1.0):
    import torch

    Ds, hs = [], []  # earlier denoised values and step sizes, most recent last
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        D = denoiser(x, sigma, **(extra or {}))
        if callback:
            callback({"i": i, "x": x, "sigma": sigma, "sigma_next": sigma_next, "denoised": D})
        if sigma_next == 0:
            return D
        h = math.log(sigma / sigma_next)
        a = h * (1 + eta)
        x = math.exp(-a) * x - math.expm1(-a) * D
        phi_2, phi_3 = 1 + math.expm1(-a) / a, 1 - 2 / a - 2 * math.expm1(-a) / a**2
        if Ds:
            d1_0 = (D - Ds[-1]) * h / hs[-1]  # h · first divided difference
            d1 = d1_0
            if len(Ds) > 1:
                d1_1 = (Ds[-1] - Ds[-2]) * h / hs[-2]
                d2 = (d1_0 - d1_1) * h / (hs[-1] + hs[-2])  # h² · second divided difference
                d1 = d1_0 + d2 * hs[-1] / h  # h · D'(λ) of the quadratic
                x = x + phi_3 * d2
            x = x + phi_2 * d1
        if eta:
            z = noise_sampler(sigma, sigma_next) if noise_sampler else torch.randn_like(x)
            x = x + z * sigma_next * math.sqrt(-math.expm1(-2 * eta * h))
        Ds, hs = [*Ds[-1:], D], [*hs[-1:], h]
    return x


@hookimpl
def register_samplers(register):
    register("dpm++3m_sde", Sampler(sample_dpmpp_3m_sde,
                                    description="DPM-Solver++(3M) SDE (plugin example)."))
