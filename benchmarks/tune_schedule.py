"""Find a step schedule: on a Gaussian-mixture problem, or on a trained model's own ODE.

Gaussian mixture (the default): the stored ``optimised`` schedule
(glidectl/samplers/tuned.py) came from this script: for each step count, the interior
log σ's between σ_max = 80 and σ_min = 0.002 were moved by coordinate descent to minimise
the RMS distance of ``--sampler`` to the exact probability-flow ODE solution, on a TRAINING
mixture (means seed 1, noise seed 1) — not on the mixture that
benchmarks/bench_samplers.py scores (seed 0), so that benchmark measures a held-out
problem. Positions are printed as fractions u of the way from log σ_max to log σ_min.

    python benchmarks/tune_schedule.py --sampler ipndm --steps 6 8 10 12 15 20   # ~2 min

A trained model (``--model RUN``): GITS dynamic programming (Chen et al. 2024, see
glidectl/samplers/search.py) on reference trajectories of the model's own guided
probability-flow ODE — 500 dpm++3m steps on Karras σ's from TUNING noise and prompts
(noise seed 1, the quickstart captions shuffled by seed 1; bench_samplers.py scores noise
seed 0). The positions go to a schedule file, by default next to the model, that
``glidectl sample --schedule FILE`` and ``bench_samplers.py --model-schedules FILE`` use.

    python benchmarks/tune_schedule.py --model runs/quickstart --steps 8 10 15   # ~10 min
"""

from __future__ import annotations

import argparse
import math

import torch

from glidectl import plugins
from glidectl.samplers.analytic import GaussianMixtureDenoiser
from glidectl.samplers.schedules import append_zero, build_sigmas
from glidectl.samplers.search import search_sigmas
from glidectl.samplers.tuned import write_schedule_file

SIGMA_MIN, SIGMA_MAX = 0.002, 80.0


def sigmas_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Positive log-σ increments (softmax of ``logits``) from σ_max down to σ_min, then 0."""
    total = math.log(SIGMA_MAX / SIGMA_MIN)
    steps = torch.softmax(logits, 0) * total
    log_sigmas = math.log(SIGMA_MAX) - torch.cat([steps.new_zeros(1), steps.cumsum(0)])
    return append_zero(log_sigmas.exp())


def tune(sampler: str, n: int, den, x, ref, rounds: int = 12) -> torch.Tensor:
    fn = plugins.samplers().get(sampler)

    def loss(logits: torch.Tensor) -> float:
        out = fn(den, x, sigmas_from_logits(logits))
        return (out - ref).pow(2).mean().sqrt().item()

    # start from Karras ρ = 7
    rho = 7.0
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    karras = (SIGMA_MAX ** (1 / rho) + ramp * (SIGMA_MIN ** (1 / rho) - SIGMA_MAX ** (1 / rho))
              ) ** rho
    logits = torch.log(-karras.log().diff())
    best = loss(logits)
    step = 0.5
    for _ in range(rounds):
        improved = False
        for i in range(len(logits)):
            for sign in (1, -1):
                trial = logits.clone()
                trial[i] += sign * step
                value = loss(trial)
                if value < best:
                    best, logits, improved = value, trial, True
        if not improved:
            step /= 2
    return sigmas_from_logits(logits)


def tune_model(args: argparse.Namespace) -> None:
    """GITS positions on a trained model's reference trajectories, written to ``args.out``."""
    from pathlib import Path

    from bench_samplers import demo_prompts, guided_denoiser

    from glidectl.glide.loading import load_model

    model = load_model(args.model).eval()
    prompts = demo_prompts(args.images, seed=1)
    den = guided_denoiser(model, prompts, args.guidance)
    size = model.options.image_size
    x_T = torch.randn(len(prompts), 3, size, size, generator=torch.Generator().manual_seed(1))
    grid = build_sigmas("karras", args.reference_steps, den.sigmas)
    xs, ds = [], []
    out = plugins.samplers().get("dpm++3m")(
        den, x_T * float(grid[0]), grid,
        callback=lambda step: (xs.append(step["x"]), ds.append(step["denoised"])))
    keep = sorted({*range(0, len(xs), args.every), len(xs) - 1})  # a coarser grid: faster DP
    sigmas, xs, ds = grid[keep], torch.stack(xs)[keep], torch.stack(ds)[keep]
    found = {n: search_sigmas(sigmas, xs, ds, out, n) for n in args.steps}
    for n, s in found.items():
        print(f"{n}: {', '.join(f'{float(v):.4g}' for v in s[:-1])}")
    path = args.out or str(Path(args.model) / "schedule.json")
    write_schedule_file(path, found, float(grid[-2]), float(grid[0]),
                        f"GITS dynamic programming on {args.model} (guidance {args.guidance}, "
                        f"{len(prompts)} tuning images, noise seed 1, reference "
                        f"{args.reference_steps} dpm++3m Karras steps)")
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sampler", default="ipndm")
    parser.add_argument("--steps", type=int, nargs="+", default=[6, 8, 10, 12, 15, 20])
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--model", help="A trained base model: search on its own ODE.")
    parser.add_argument("--out", help="Schedule file to write (default: RUN/schedule.json).")
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--reference-steps", type=int, default=500)
    parser.add_argument("--every", type=int, default=2, help="Keep every k-th reference σ.")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.model:
        tune_model(args)
        return
    den = GaussianMixtureDenoiser.random(seed=1)
    x = den.prior(args.samples, SIGMA_MAX, torch.Generator().manual_seed(1))
    ref = den(den.ode_solution(x, SIGMA_MAX, SIGMA_MIN, 1000), SIGMA_MIN)
    total = math.log(SIGMA_MAX / SIGMA_MIN)
    for n in args.steps:
        sigmas = tune(args.sampler, n, den, x, ref)
        u = [(math.log(SIGMA_MAX) - math.log(float(s))) / total for s in sigmas[:-1]]
        out = plugins.samplers().get(args.sampler)(den, x, sigmas)
        print(f"{n}: ({', '.join(f'{v:.4f}' for v in u)}),  "
              f"# train RMS {(out - ref).pow(2).mean().sqrt().item():.4f}", flush=True)


if __name__ == "__main__":
    main()
