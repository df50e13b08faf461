"""Per-image noise: image i of a request draws all its noise from its own generator, so it
comes out the same whatever the batch size."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def draw(noise_sampler: Callable[[float, float], torch.Tensor] | None, x: torch.Tensor,
         sigma: float, sigma_next: float) -> torch.Tensor:
    """Fresh N(0, I) like ``x`` for a sampler step: the injected ``noise_sampler``, else torch's."""
    return noise_sampler(sigma, sigma_next) if noise_sampler else torch.randn_like(x)


def image_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per image (CPU so the same seed gives the same image on any device)."""
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def randn_per_image(generators: Sequence[torch.Generator], shape: Sequence[int],
                    device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
                    ) -> torch.Tensor:
    """A [len(generators), *shape] N(0, I) draw, row i from generator i."""
    rows = [torch.randn(tuple(shape), generator=g, dtype=dtype) for g in generators]
    return torch.stack(rows).to(device)


def per_image_noise_sampler(generators: Sequence[torch.Generator], like: torch.Tensor
                            ) -> Callable[[float, float], torch.Tensor]:
    """A ``noise_sampler(σ, σ')`` for stochastic samplers that draws row i from generator i."""

    def noise_sampler(sigma: float, sigma_next: float) -> torch.Tensor:
        return randn_per_image(generators, like.shape[1:], like.device, like.dtype)

    return noise_sampler
