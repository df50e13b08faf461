"""Find a step schedule: on a Gaussian-mixture problem, or on a trained model's own ODE.

Gaussian mixture (the default): the stored ``optimised`` schedule
(glidectl/samplers/tuned.py) came from this script: for each step count, the interior
log σ's between σ_max = 80 and σ_min = 0.002 were moved by coordinate descent to minimise
the RMS distance of ``--sampler`` to the exact probability-flow ODE solution, on a TRAINING
mixture (means seed 1, noise seed 1) — not on the mixture that
benchmarks/bench_samplers.py scores (seed 0), so that benchmark measures a held-out
problem. Positions are printed as fractions u of the way from log σ_max to log σ_min.

    python benchmarks/tune_schedule.py --sampler ipndm --steps 6 8 10 12 15 20   # ~2 min

A trained model (``--model RUN``), on reference trajectories of the model's own guided
probability-flow ODE — 500 dpm++3m steps on Karras σ's from TUNING noise and prompts (noise
seed 1, the quickstart captions shuffled by seed 1; bench_samplers.py scores noise seed 0):
``--method descent`` (the default) moves the log-σ steps of ``--sampler`` (default unipc)
by coordinate descent from exponential σ's, the last σ free above the table's smallest, to
minimise the sampler's RMS distance to the reference (``--steps`` are model calls);
``--method gits`` runs GITS dynamic programming (Chen et al. 2024, see
glidectl/samplers/search.py) without sampling; ``--method bespoke`` runs the descent, then
fits a bespoke solver's coefficients and σ's by L-BFGS through the model, from
``--sampler``'s own (Shaul et al. 2024, see glidectl/samplers/bespoke.py), for
``glidectl sample --sampler bespoke --schedule FILE``. The positions go to a schedule file, by
default next to the model, that ``glidectl sample --schedule FILE`` and
``bench_samplers.py --model-schedules FILE`` use.

    python benchmarks/tune_schedule.py --model runs/quickstart --steps 10   # ~8 min, 1 core
    python benchmarks/tune_schedule.py --model runs/quickstart --steps 10 --method bespoke
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time

import torch

from glidectl import plugins
from glidectl.errors import GlidectlError
from glidectl.samplers import get_sigmas
from glidectl.samplers.analytic import GaussianMixtureDenoiser
from glidectl.samplers.bespoke import fit_coefficients, linear_coefficients
from glidectl.samplers.schedules import build_sigmas
from glidectl.samplers.search import descend_sigmas, search_sigmas
from glidectl.samplers.tuned import read_coefficients, write_schedule_file

SIGMA_MIN, SIGMA_MAX = 0.002, 80.0


def tune(sampler: str, n: int, den, x, ref, rounds: int = 12) -> torch.Tensor:
    """Coordinate descent (glidectl.samplers.search.descend_sigmas) from Karras ρ = 7, ends
    fixed, on the RMS distance to ``ref``."""
    fn = plugins.samplers().get(sampler)

    def loss(sigmas: torch.Tensor) -> float:
        return (fn(den, x, sigmas) - ref).pow(2).mean().sqrt().item()

    return descend_sigmas(loss, get_sigmas("karras", n, SIGMA_MIN, SIGMA_MAX), rounds=rounds)[0]


def tune_model(args: argparse.Namespace) -> None:
    """Positions on a trained model's own ODE (descent or GITS), written to a schedule file."""
    from pathlib import Path

    from bench_samplers import demo_prompts, guided_denoiser, model_guidance, steps_for

    from glidectl.glide.loading import load_model

    model = load_model(args.model).eval()
    guidance = model_guidance(args.model, args.guidance)
    prompts = demo_prompts(args.images, seed=1)
    den = guided_denoiser(model, prompts, guidance)
    size = model.options.image_size
    x_T = torch.randn(len(prompts), 3, size, size, generator=torch.Generator().manual_seed(1))
    grid = build_sigmas("karras", args.reference_steps, den.sigmas)
    xs, ds = [], []  # the trajectory: GITS only (500 steps of every image)
    keep_trajectory = args.method == "gits"
    ref = plugins.samplers().get("dpm++3m")(
        den, x_T * float(grid[0]), grid,
        callback=(lambda step: (xs.append(step["x"]), ds.append(step["denoised"])))
        if keep_trajectory else None)
    sampler = args.sampler or "unipc"
    if keep_trajectory:
        keep = sorted({*range(0, len(xs), args.every), len(xs) - 1})  # coarser: faster DP
        sigmas, xs, ds = grid[keep], torch.stack(xs)[keep], torch.stack(ds)[keep]
        found = {n: search_sigmas(sigmas, xs, ds, ref, n) for n in args.steps}
        how = "GITS dynamic programming"
    else:
        fn = plugins.samplers().get(sampler)

        def loss(sigmas: torch.Tensor) -> float:
            out = fn(den, x_T * float(sigmas[0]), sigmas)
            return (out - ref).pow(2).mean().sqrt().item()

        found, coefficients = {}, {}
        model.requires_grad_(False)  # bespoke fits need gradients to x and σ only
        for calls in args.steps:
            steps = steps_for(sampler, calls)
            if steps is None:
                print(f"{sampler} cannot make exactly {calls} model calls; pick another "
                      "--steps value.", file=sys.stderr)
                raise SystemExit(2)
            if args.start:  # an earlier file's σ's instead of a descent
                found[steps] = build_sigmas(args.start, steps, den.sigmas)
                value = loss(found[steps])
                print(f"{calls} calls: tuning RMS {value:.5f} ({args.start})", flush=True)
            else:
                start = build_sigmas("exponential", steps, den.sigmas)
                found[steps], value = descend_sigmas(loss, start, sigma_floor=den.sigma_min,
                                                     rounds=args.rounds)
                print(f"{calls} calls: tuning RMS {loss(start):.5f} (exponential) -> "
                      f"{value:.5f}", flush=True)
            if args.method == "bespoke":
                sigmas = found[steps]
                began = time.perf_counter()
                rows = linear_coefficients(fn, sigmas)
                if args.start:  # resume the start file's fit when it holds one for n
                    with contextlib.suppress(GlidectlError):
                        rows = read_coefficients(args.start, steps, sigmas)
                coefficients[steps], found[steps], fitted = fit_coefficients(
                    den, x_T * float(sigmas[0]), sigmas, ref, rows,
                    evals=args.evals, move_sigmas=not args.fixed_sigmas,
                    sigma_floor=den.sigma_min, log=lambda m: print(m, flush=True))
                print(f"{calls} calls: bespoke tuning RMS {value:.5f} -> {fitted:.5f} "
                      f"({time.perf_counter() - began:.0f} s)", flush=True)
        how = (f"σ's of {args.start}" if args.start
               else f"coordinate descent of {sampler} (from exponential σ's)")
        if args.method == "bespoke":
            moved = "" if args.fixed_sigmas else " and σ's moved"
            how += (f", then bespoke coefficients fitted from {sampler}'s{moved} "
                    f"({args.evals} L-BFGS evaluations)")
            sampler = "bespoke"
    for n, s in found.items():
        print(f"{n}: {', '.join(f'{float(v):.4g}' for v in s[:-1])}")
    path = args.out or str(Path(args.model) / "schedule.json")
    write_schedule_file(path, found, float(grid[-2]), float(grid[0]),
                        f"{how} on {args.model} (guidance {guidance}, {len(prompts)} tuning "
                        f"images, noise seed 1, reference {args.reference_steps} dpm++3m "
                        "Karras steps)", sampler=None if args.method == "gits" else sampler,
                        coefficients=coefficients if args.method == "bespoke" else None)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sampler", help="The sampler to tune for (default: ipndm on the "
                        "mixture, unipc on a model).")
    parser.add_argument("--method", choices=("descent", "gits", "bespoke"), default="descent",
                        help="On a model: descent of the sampler's own error, GITS, or the "
                        "descent then a bespoke solver fitted from the sampler.")
    parser.add_argument("--start", metavar="FILE", help="On a model: start from this "
                        "schedule file's σ's instead of a descent (e.g. to fit --method "
                        "bespoke on an earlier descent's file), and from its bespoke "
                        "coefficients when it holds them for the step count (a refit).")
    parser.add_argument("--evals", type=int, default=150,
                        help="Bespoke fit: L-BFGS evaluations of the loss and its gradient.")
    parser.add_argument("--fixed-sigmas", action="store_true",
                        help="Bespoke fit: keep the σ's where the descent put them.")
    parser.add_argument("--steps", type=int, nargs="+", default=[6, 8, 10, 12, 15, 20],
                        help="Step counts (on a model with descent: model calls).")
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--model", help="A trained base model: search on its own ODE.")
    parser.add_argument("--out", help="Schedule file to write (default: RUN/schedule.json).")
    parser.add_argument("--guidance", type=float,
                        help="Default: the model's recommended, else 3.")
    parser.add_argument("--images", type=int, default=24, help="Tuning images on a model.")
    parser.add_argument("--reference-steps", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=10, help="Descent rounds on a model.")
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
        sigmas = tune(args.sampler or "ipndm", n, den, x, ref)
        u = [(math.log(SIGMA_MAX) - math.log(float(s))) / total for s in sigmas[:-1]]
        out = plugins.samplers().get(args.sampler or "ipndm")(den, x, sigmas)
        print(f"{n}: ({', '.join(f'{v:.4f}' for v in u)}),  "
              f"# train RMS {(out - ref).pow(2).mean().sqrt().item():.4f}", flush=True)


if __name__ == "__main__":
    main()
