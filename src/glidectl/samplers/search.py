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

:func:`descend_sigmas` instead runs the sampler itself: coordinate descent of the log-σ
step sizes on the sampler's distance to a reference (costs one sample per trial, but sees
everything the Euler cost misses: the sampler's own order and its last step).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .schedules import append_zero


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


def step_logits(sigmas: torch.Tensor, sigma_floor: float | None = None
                ) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """A schedule (n ≥ 2 σ's then 0) as logits, and the map back: the log-σ steps are a
    softmax of the logits times the total drop, so σ's stay descending and σ_max stays put.
    Without ``sigma_floor`` the last σ stays put too; with it the last σ is free above
    ``sigma_floor`` (a trailing gap to it is one more logit; σ's that end on the floor start
    3 % of a mean step above it). The map is differentiable."""
    sig = sigmas.double()[:-1]
    top = math.log(float(sig[0]))
    incs = -sig.log().diff()
    if sigma_floor is not None:
        if not 0 < sigma_floor <= float(sig[-1]):
            raise ValueError(f"sigma_floor must be in (0, {float(sig[-1])}], got {sigma_floor}")
        room = math.log(float(sig[0]) / sigma_floor)
        gap = max(math.log(float(sig[-1]) / sigma_floor), 0.03 * float(incs.mean()))
        incs = torch.cat([incs * (room - gap) / float(incs.sum()), incs.new_tensor([gap])])
    total = float(incs.sum())

    def to_sigmas(logits: torch.Tensor) -> torch.Tensor:
        drops = torch.softmax(logits, 0) * total
        if sigma_floor is not None:
            drops = drops[:-1]
        return append_zero((top - torch.cat([drops.new_zeros(1), drops.cumsum(0)])).exp())

    return incs.log(), to_sigmas


def descend_sigmas(loss: Callable[[torch.Tensor], float], sigmas: torch.Tensor, *,
                   sigma_floor: float | None = None, rounds: int = 14, step: float = 0.5
                   ) -> tuple[torch.Tensor, float]:
    """Coordinate descent of a schedule (n σ's then 0) on ``loss(sigmas)``; returns the best
    σ's and their loss.

    The σ's move as :func:`step_logits` (descending, σ_max fixed, the last σ fixed or free
    above ``sigma_floor``). Each round moves every logit by ±``step`` and keeps what lowers
    the loss; a round without a gain halves ``step``.
    """
    sig = sigmas.double()[:-1]
    if len(sig) < 2:
        return sigmas.double(), loss(sigmas.double())
    logits, to_sigmas = step_logits(sigmas, sigma_floor)
    best = loss(to_sigmas(logits))
    for _ in range(rounds):
        improved = False
        for i in range(len(logits)):
            for sign in (1, -1):
                trial = logits.clone()
                trial[i] += sign * step
                value = loss(to_sigmas(trial))
                if value < best:
                    best, logits, improved = value, trial, True
        if not improved:
            step /= 2
    return to_sigmas(logits), best
