"""Noise schedules β_1..β_T (float64), as GLIDE names them."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ..errors import GlidectlError

SCHEDULES = ("squaredcos_cap_v2", "linear")


def betas_for_alpha_bar(
    num_timesteps: int, alpha_bar: Callable[[float], float], max_beta: float = 0.999
) -> np.ndarray:
    """Betas whose cumulative product follows ``alpha_bar(t)`` on t ∈ [0, 1], capped at
    ``max_beta`` (the cap keeps the last step finite)."""
    betas = []
    for i in range(num_timesteps):
        t1, t2 = i / num_timesteps, (i + 1) / num_timesteps
        betas.append(min(1.0 - alpha_bar(t2) / alpha_bar(t1), max_beta))
    return np.array(betas, dtype=np.float64)


def get_named_beta_schedule(name: str, num_timesteps: int) -> np.ndarray:
    """``"squaredcos_cap_v2"`` (Nichol & Dhariwal's cosine, base models) or ``"linear"``
    (DDPM's, scaled so any T matches the 1000-step endpoints; upsamplers)."""
    if num_timesteps < 1:
        raise GlidectlError(f"Diffusion steps must be at least 1, got {num_timesteps}.")
    if name == "linear":
        scale = 1000 / num_timesteps
        return np.linspace(scale * 0.0001, scale * 0.02, num_timesteps, dtype=np.float64)
    if name == "squaredcos_cap_v2":
        return betas_for_alpha_bar(
            num_timesteps, lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        )
    raise GlidectlError(
        f"Unknown noise schedule {name!r}; use one of: {', '.join(SCHEDULES)}."
    )
