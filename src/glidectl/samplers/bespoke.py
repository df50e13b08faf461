"""Bespoke solvers: one linear update per step, its coefficients fitted to a model's own ODE.

Shaul et al. 2024, "Bespoke Non-Stationary Solvers for Fast Sampling of Diffusion and Flow
Models" (ICML). On fixed σ's every deterministic sampler here is linear in the starting
noise and the denoised values: x_i = a_i·ε + Σ_(j<i) b_ij·D_j, with ε = x_T/σ_0 and
D_j = D(x_j, σ_j), and its result is such a sum too. A non-stationary solver leaves every
a_i and b_ij free — n(n + 3)/2 numbers for n model calls — and fits them by L-BFGS
through the model, on the distance to reference samples of the model's own ODE
from tuning noise, starting from the coefficients of a good sampler on a tuned schedule
(:func:`linear_coefficients`), moving the σ's too if asked (as the paper moves its times).
Here the solver works on the data prediction D, clipped as the model samples. The
coefficients are stored in the schedule file next to the σ positions they were fitted on
(:mod:`.tuned`), for the one step count they were fitted for.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..errors import GlidectlError
from .denoiser import Callback, report
from .search import step_logits

Rows = list[list[float]]  # row i (1..n): i + 1 coefficients of [ε, D_0, …, D_(i−1)]


def check_rows(rows: Rows, n: int) -> None:
    """One sentence unless ``rows`` holds n rows, row i (from 1) of i + 1 numbers."""
    wrong = next((i for i, row in enumerate(rows) if len(row) != i + 2), None)
    if len(rows) != n or wrong is not None:
        got = (f"got {len(rows)} rows" if len(rows) != n else
               f"row {wrong + 1} holds {len(rows[wrong])} instead of {wrong + 2}")
        raise GlidectlError(f"Bespoke coefficients for {n} steps need {n} rows, row i of i + 1 "
                            f"numbers, {got}; fit them for this step count with glidectl "
                            "fit-steps MODEL --method bespoke.")


def solve(denoiser, x, sigmas, rows, extra=None, callback: Callback = None):
    """The linear solver: x_0 = x, x_i = rows[i−1]·[ε, D_0, …, D_(i−1)], result rows[n−1]·…,
    clipped to [−1, 1] when the denoiser clips its x0 (as every other sampler's result is)
    (rows and σ's may be tensors that need gradients; the denoiser then gets σ tensors)."""
    extra = extra or {}
    grad = torch.is_tensor(sigmas) and sigmas.requires_grad
    basis = [x / float(sigmas[0].detach() if grad else sigmas[0])]
    for i in range(len(sigmas) - 1):
        if i:
            x = sum(c * b for c, b in zip(rows[i - 1], basis, strict=True))
        sigma, sigma_next = ((sigmas[i], sigmas[i + 1]) if grad
                             else (float(sigmas[i]), float(sigmas[i + 1])))
        denoised = denoiser(x, sigma, **extra)
        report(callback, i, x, sigma, sigma_next, denoised)
        basis.append(denoised)
    out = sum(c * b for c, b in zip(rows[-1], basis, strict=True))
    return out.clamp(-1, 1) if getattr(denoiser, "clip", False) else out


@torch.no_grad()
def sample_bespoke(denoiser, x, sigmas, extra=None, callback: Callback = None,
                   coefficients: Rows | None = None) -> torch.Tensor:
    """One model call per step, each x a fitted linear combination of ε and every earlier
    D (``coefficients``: from a schedule file of ``glidectl fit-steps --method bespoke``)."""
    if coefficients is None:
        raise GlidectlError("The bespoke sampler needs coefficients fitted to the model: pass "
                            "--schedule FILE written by glidectl fit-steps MODEL --method "
                            "bespoke.")
    check_rows(coefficients, len(sigmas) - 1)
    return solve(denoiser, x, sigmas, coefficients, extra, callback)


def linear_coefficients(sampler: Callable, sigmas: torch.Tensor) -> Rows:
    """The coefficient rows of a deterministic sampler on these σ's (ending in 0), read off
    by running it on unit vectors: ε = e_0 and the j-th model call returning e_(j+1); row i
    is where the sampler calls the model the (i+1)-th time (UniPC's predicted x, not the
    corrected one it reports), the last row its result."""
    n = len(sigmas) - 1
    xs: list[torch.Tensor] = []

    def unit(x: torch.Tensor, sigma: float, **_) -> torch.Tensor:
        if len(xs) == n:
            raise ValueError(f"the sampler made more than {n} calls on {n} steps; only "
                             "one-call-per-step samplers have bespoke coefficients")
        xs.append(x[0].clone())
        return torch.eye(n + 1, dtype=torch.float64)[len(xs) : len(xs) + 1]

    start = torch.eye(n + 1, dtype=torch.float64)[:1] * float(sigmas[0])
    out = sampler(unit, start, sigmas)
    if len(xs) != n:
        raise ValueError(f"the sampler made {len(xs)} calls on {n} steps; only one-call-per-step "
                         "samplers have bespoke coefficients")
    return [row[: i + 2].tolist() for i, row in enumerate([*xs[1:], out[0]])]


def fit_coefficients(denoiser, x: torch.Tensor, sigmas: torch.Tensor, ref: torch.Tensor,
                     rows: Rows, *, evals: int = 150, move_sigmas: bool = False,
                     sigma_floor: float | None = None, log: Callable[[str], None] | None = None,
                     trace: list[float] | None = None) -> tuple[Rows, torch.Tensor, float]:
    """L-BFGS on the mean squared distance of :func:`solve` to ``ref`` from ``x``, from
    ``rows`` on ``sigmas``, for about ``evals`` evaluations of the loss and its gradient (the
    last line search may take a few more) or until L-BFGS stops by itself; returns
    the best rows seen, their σ's and their RMS. ``trace``, if given, gets the best RMS so
    far after each evaluation (:func:`still_falling` reads it).

    The ε coefficients move by a factor e^p (they span σ_max to σ_min), the D ones by
    additive offsets. With ``move_sigmas`` the σ's move too (as in the paper), through
    :func:`.search.step_logits`: descending, σ_max fixed, the last σ free above
    ``sigma_floor``; the denoiser must then take a σ tensor and pass its gradient. What is
    returned is never worse than the start (``rows`` on ``sigmas``, evaluated first). The
    denoiser must pass gradients to x (model weights are frozen here). The loss is smooth and
    deterministic (every tuning sample in every evaluation), which suits a quasi-Newton
    method with a line search: on a quickstart model, from the same start, it went as far in
    25 evaluations (0.0218 → 0.0144) as Adam did in 300 steps (0.0146). The loss is the MSE
    as a fraction of the start's, so the fit does not depend on the error's scale: with the
    MSE itself as the loss (about 1e-6 on a quickstart model), L-BFGS's absolute tolerances
    ended some fits within a few dozen evaluations that, relative to the start, go on to a
    lower error. (Where the start's error is not finite, σ's on the floor, the loss is the
    MSE itself.)
    """
    init = [torch.tensor(row, dtype=torch.float64) for row in rows]
    scale = [torch.zeros((), dtype=torch.float64, requires_grad=True) for _ in init]
    shift = [torch.zeros(len(row) - 1, dtype=torch.float64, requires_grad=True) for row in init]
    params = [*scale, *shift]
    sigmas = sigmas.double()
    move = move_sigmas and len(sigmas) > 2
    if move:
        logits, to_sigmas = step_logits(sigmas, sigma_floor)
        logits.requires_grad_(True)
        params.append(logits)
    opt = torch.optim.LBFGS(params, lr=1, max_iter=evals, max_eval=evals, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-12,
                            tolerance_change=1e-14)

    def current() -> tuple[list[torch.Tensor], torch.Tensor]:
        return ([torch.cat([r[:1] * p.exp(), r[1:] + s])
                 for r, p, s in zip(init, scale, shift, strict=True)],
                to_sigmas(logits) if move else sigmas)

    with torch.no_grad():  # the start itself: σ's that end on the floor are moved to start
        start = (solve(denoiser, x, sigmas, [torch.tensor(r, dtype=x.dtype) for r in rows])
                 - ref).pow(2).mean().sqrt().item()
    best: list = [start if math.isfinite(start) else float("inf"), rows, sigmas]
    per_start = start * start if math.isfinite(start) and start > 0 else 1.0
    count = [0]

    def closure() -> torch.Tensor:
        opt.zero_grad()
        coeffs, sig = current()
        mse = (solve(denoiser, x, sig, [c.to(x.dtype) for c in coeffs]) - ref).pow(2).mean()
        value = mse.sqrt().item()
        loss = mse / per_start  # 1 at the start: see the docstring
        if math.isfinite(value) and value < best[0]:
            best[:] = [value, [c.detach().tolist() for c in coeffs], sig.detach().clone()]
        if trace is not None:
            trace.append(best[0])
        if not math.isfinite(value):  # a line-search probe too far: tell it "much worse"
            return torch.tensor(1e30, dtype=torch.float64)
        if log and count[0] % 25 == 0:
            log(f"  fit {count[0]}/{evals}: rms {value:.5f}")
        count[0] += 1
        loss.backward()
        return loss

    opt.step(closure)
    if log:
        log(f"  fit: best rms {best[0]:.5f} in {count[0]} evaluations")
    return best[1], best[2], best[0]


def still_falling(trace: list[float], evals: int) -> tuple[float, int] | None:
    """How much the best RMS fell (a fraction) over the last tenth of a fit's ``trace``, and
    over how many evaluations, when the fit ran into its ``evals`` limit, else None (L-BFGS
    stopped it by itself)."""
    if len(trace) < evals or len(trace) < 2:
        return None
    last = max(1, evals // 10)
    before, after = trace[-last - 1], trace[-1]
    return (1 - after / before, last) if math.isfinite(before) and before > 0 else None
