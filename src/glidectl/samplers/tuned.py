"""A step-optimised schedule, stored: where to put n σ's between σ_max and σ_min.

NOT a published schedule. Found by benchmarks/tune_schedule.py for the ``ipndm`` sampler
on an exact Gaussian-mixture problem (48 dims, 16 components of std 0.2, means uniform in
[−1, 1] — image-range data; σ 80 → 0.002; training mixture seed 1, held out from the
benchmark's). Each row gives u_i, the fraction of the way from log σ_max to log σ_min of
the i-th σ; other step counts interpolate the nearest stored row in log σ, as Align Your
Steps does (Sabour et al. 2024). It spends its steps around σ ≈ 0.3–3, where the mixture's
components separate; whether that suits a given model is an empirical question
(bench_samplers.py measures one trained GLIDE model too).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .schedules import append_zero

# n: u_0..u_(n−1), from `python benchmarks/tune_schedule.py --sampler ipndm`
POSITIONS: dict[int, tuple[float, ...]] = {
    6: (0.0000, 0.1823, 0.3456, 0.5542, 0.7236, 1.0000),
    8: (0.0000, 0.1366, 0.2536, 0.3356, 0.3814, 0.5543, 0.7126, 1.0000),
    10: (0.0000, 0.1201, 0.1954, 0.3097, 0.3633, 0.3941, 0.5118, 0.6364, 0.7922, 1.0000),
    12: (0.0000, 0.0929, 0.2217, 0.3065, 0.3503, 0.3797, 0.4087, 0.5382, 0.6288, 0.6859,
         0.8334, 1.0000),
    15: (0.0000, 0.1112, 0.1828, 0.2590, 0.3309, 0.3674, 0.3945, 0.4175, 0.4498, 0.4902,
         0.5561, 0.6143, 0.6667, 0.8578, 1.0000),
    20: (0.0000, 0.0442, 0.0903, 0.1386, 0.1792, 0.2323, 0.2883, 0.3473, 0.3769, 0.4006,
         0.4229, 0.4691, 0.5055, 0.5595, 0.6203, 0.6434, 0.7157, 0.7972, 0.8906, 1.0000),
    30: (0.0000, 0.0436, 0.0564, 0.0844, 0.1131, 0.1428, 0.1734, 0.2013, 0.2383, 0.2646,
         0.2997, 0.3317, 0.3650, 0.3889, 0.4137, 0.4366, 0.4577, 0.4682, 0.4806, 0.5121,
         0.5454, 0.6035, 0.6410, 0.6763, 0.7251, 0.7660, 0.8163, 0.8714, 0.9322, 1.0000),
}


def get_sigmas_optimised(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """n σ's at the stored positions (interpolated for other n), then 0."""
    if n == 1:
        return append_zero(torch.tensor([sigma_max], dtype=torch.float64))
    stored = POSITIONS[min(POSITIONS, key=lambda k: (abs(k - n), -k))]
    u = np.interp(np.linspace(0, 1, n), np.linspace(0, 1, len(stored)), stored)
    log_max, log_min = math.log(sigma_max), math.log(sigma_min)
    return append_zero(torch.as_tensor(np.exp(log_max + u * (log_min - log_max))))
