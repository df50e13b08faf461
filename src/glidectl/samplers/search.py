"""Step positions found by dynamic programming on a model's own reference trajectories.

GITS (Chen et al. 2024, "On the Trajectory Regularity of ODE-based Diffusion Sampling",
ICML): sampling trajectories of one model have nearly the same shape whatever the noise, so
a few reference trajectories on a fine σ grid decide where n coarse steps should go. The
cost of a coarse step from grid point i to j is the squared distance between the reference
x_j and one Euler (= DDIM) step from the reference x_i using the model's own D_i, already
computed along the reference; the cost of ending at i is the distance between D_i (what
every sampler here returns after its last model call) and the reference's final sample. A
shortest path with exactly n nodes (n model calls) is then found by dynamic programming.
No model call is made beyond the reference run.
"""

from __future__ import annotations

import torch


def euler_step_costs(sigmas: torch.Tensor, xs: torch.Tensor, denoised: torch.Tensor,
                     final: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Costs on a K-point grid: ``step[i, j]`` (i < j; +inf elsewhere) and ``end[i]``.

    ``sigmas`` (K, descending, > 0), ``xs``/``denoised`` (K, *shape): the reference's x and
    D(x, σ) at each grid σ; ``final`` (*shape): the reference sample. Costs are mean squared
    errors over every element.
    """
    k = len(sigmas)
    xs = xs.reshape(k, -1).double()
    d = (xs - denoised.reshape(k, -1).double()) / sigmas.double()[:, None]  # dx/dσ
    step = torch.full((k, k), float("inf"), dtype=torch.float64)
    for i in range(k - 1):
        dsig = (sigmas[i + 1:].double() - float(sigmas[i]))[:, None]
        step[i, i + 1:] = (xs[i] + dsig * d[i] - xs[i + 1:]).pow(2).mean(1)
    end = (denoised.reshape(k, -1).double() - final.reshape(1, -1).double()).pow(2).mean(1)
    return step, end


def shortest_path(step: torch.Tensor, end: torch.Tensor, n: int) -> tuple[list[int], float]:
    """The grid indices (starting at 0) of n nodes minimising Σ step costs + the end cost,
    and that total (exact dynamic programming, O(n·K²))."""
    k = len(end)
    if not 1 <= n <= k:
        raise ValueError(f"need 1 <= n <= {k} nodes, got {n}")
    best = torch.full((k,), float("inf"), dtype=torch.float64)
    best[0] = 0.0
    parents = []
    for _ in range(n - 1):
        total = best[:, None] + step  # total[i, j]: reach i, then step to j
        best, parent = total.min(0)
        parents.append(parent)
    final = best + end
    last = int(final.argmin())
    path = [last]
    for parent in reversed(parents):
        path.append(int(parent[path[-1]]))
    return path[::-1], float(final[last])


def search_sigmas(sigmas: torch.Tensor, xs: torch.Tensor, denoised: torch.Tensor,
                  final: torch.Tensor, n: int) -> torch.Tensor:
    """The n σ's (then 0) of the cheapest n-call path along a reference trajectory."""
    step, end = euler_step_costs(sigmas, xs, denoised, final)
    path, _ = shortest_path(step, end, n)
    return torch.cat([sigmas.double()[path], sigmas.new_zeros(1, dtype=torch.float64)])
