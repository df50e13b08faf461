"""A data distribution with a closed-form denoiser, for testing and benchmarking samplers.

For data x0 ~ N(μ, s²) and x = x0 + σ·ε, E[x0 | x] = (s²x + σ²μ)/(s² + σ²), and the
probability-flow ODE dx/dσ = (x − D)/σ has the exact solution
x(σ') = μ + (x(σ) − μ)·√(s² + σ'²)/√(s² + σ²).
"""

from __future__ import annotations

from typing import Any

import torch


class GaussianDenoiser:
    """The exact denoiser D(x, σ) of N(μ, s²) data (elementwise)."""

    learned_variance = False

    def __init__(self, mu: float = 0.5, s: float = 0.5):
        self.mu, self.s = mu, s
        self.calls = 0

    def __call__(self, x: torch.Tensor, sigma: float, **_: Any) -> torch.Tensor:
        self.calls += 1
        s2, sig2 = self.s**2, float(sigma) ** 2
        return (s2 * x + sig2 * self.mu) / (s2 + sig2)

    def ode_solution(self, x: torch.Tensor, sigma: float, sigma_to: float = 0.0) -> torch.Tensor:
        """The exact probability-flow ODE solution from (x, σ) to σ_to."""
        ratio = ((self.s**2 + sigma_to**2) / (self.s**2 + sigma**2)) ** 0.5
        return self.mu + (x - self.mu) * ratio

    def prior(self, shape: tuple[int, ...], sigma: float, generator: torch.Generator | None = None
              ) -> torch.Tensor:
        """Exact samples of the noised marginal N(μ, s² + σ²), float64."""
        z = torch.randn(shape, generator=generator, dtype=torch.float64)
        return self.mu + z * (self.s**2 + float(sigma) ** 2) ** 0.5
