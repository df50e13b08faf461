"""Find a step schedule: on a Gaussian-mixture problem, or on a trained model's own ODE.

Gaussian mixture (the default): the stored ``optimised`` schedule
(glidectl/samplers/tuned.py) came from this script: for each step count, the interior
log σ's between σ_max = 80 and σ_min = 0.002 were moved by coordinate descent to minimise
the RMS distance of ``--sampler`` to the exact probability-flow ODE solution, on a TRAINING
mixture (means seed 1, noise seed 1) — not on the mixture that
benchmarks/bench_samplers.py scores (seed 0), so that benchmark measures a held-out
problem. Positions are printed as fractions u of the way from log σ_max to log σ_min.

    python benchmarks/tune_schedule.py --sampler ipndm --steps 6 8 10 12 15 20   # ~2 min

A trained model (``--model RUN``): what ``glidectl fit-steps`` does
(glidectl/step_fitting.py), on the quickstart captions, so that the README's figures can be
made again — reference trajectories of the model's own guided probability-flow ODE, 500
dpm++3m steps on Karras σ's from TUNING noise and prompts (noise seed 1, the quickstart
captions shuffled by seed 1; bench_samplers.py scores noise seed 0): ``--method descent``
(the default) moves the log-σ steps of ``--sampler`` (default unipc) by coordinate descent
from exponential σ's, the last σ free above the table's smallest, to minimise the sampler's
RMS distance to the reference (``--steps`` are model calls); ``--method gits`` runs GITS
dynamic programming (Chen et al. 2024, see glidectl/samplers/search.py) without sampling;
``--method bespoke`` runs the descent, then fits a bespoke solver's coefficients and σ's by
L-BFGS through the model, from ``--sampler``'s own (Shaul et al. 2024, see
glidectl/samplers/bespoke.py), for ``glidectl sample --sampler bespoke --schedule FILE``.
The positions go to a schedule file, by default next to the model (RUN/schedule.json, where
``glidectl fit-steps`` writes; an existing one is kept unless ``--overwrite``), that
``glidectl sample --schedule FILE`` and ``bench_samplers.py --model-schedules FILE`` use.

    python benchmarks/tune_schedule.py --model runs/quickstart --steps 10   # ~8 min, 1 core
    python benchmarks/tune_schedule.py --model runs/quickstart --steps 10 --method bespoke
"""

from __future__ import annotations

import argparse
import math

import torch
from bench_args import at_least, positive_int, run

from glidectl import plugins
from glidectl.samplers import get_sigmas
from glidectl.samplers.analytic import GaussianMixtureDenoiser
from glidectl.samplers.search import descend_sigmas

SIGMA_MIN, SIGMA_MAX = 0.002, 80.0


def tune(sampler: str, n: int, den, x, ref, rounds: int = 12) -> torch.Tensor:
    """Coordinate descent (glidectl.samplers.search.descend_sigmas) from Karras ρ = 7, ends
    fixed, on the RMS distance to ``ref``."""
    fn = plugins.samplers().get(sampler)

    def loss(sigmas: torch.Tensor) -> float:
        return (fn(den, x, sigmas) - ref).pow(2).mean().sqrt().item()

    return descend_sigmas(loss, get_sigmas("karras", n, SIGMA_MIN, SIGMA_MAX), rounds=rounds)[0]


def tune_model(args: argparse.Namespace) -> None:
    """Positions (and a bespoke solver) on a trained model's own ODE, through
    glidectl.step_fitting (what ``glidectl fit-steps`` runs), on the quickstart captions."""
    from pathlib import Path

    from bench_samplers import demo_prompts

    from glidectl.cli.fit_cmd import check_out, check_start, default_out, partial_path
    from glidectl.errors import GlidectlError
    from glidectl.glide.loading import load_model
    from glidectl.step_fitting import (
        check_method,
        fit_steps,
        model_guidance,
        reference,
        require_base,
    )

    sampler = args.sampler or "unipc"
    try:  # gits' reference too, before the model loads; in this script's words (--steps)
        check_method(args.method, sampler, args.steps, args.reference_steps, args.start)
    except GlidectlError as exc:
        raise GlidectlError(str(exc).replace("--calls", "--steps")) from None
    # where `glidectl fit-steps` writes, checked as it checks, before minutes of work: an
    # existing file (its fit, an earlier run's) is kept unless --overwrite
    path = Path(args.out).expanduser() if args.out else default_out(args.model)
    check_out(path, args.overwrite, [])
    if args.start:
        check_start(Path(args.start), path)
    model = load_model(args.model).eval()
    require_base(model, args.model, "--model takes")
    guidance = model_guidance(args.model, args.guidance)
    prompts = demo_prompts(args.images, seed=1)
    target = reference(model, prompts, guidance, seed=1, steps=args.reference_steps,
                       trajectory=args.method == "gits")
    # as fit-steps: an existing file is replaced once every count is fitted, the counts
    # finished before that go to FILE.partial.json (a stop keeps FILE whole)
    write_to = partial_path(path) if path.exists() else path
    fit_steps(target, args.steps, args.method, sampler, write_to,
              f"{args.model} (guidance {guidance}, {len(prompts)} tuning images, noise seed 1, "
              f"reference {args.reference_steps} dpm++3m Karras steps)",
              log=lambda m: print(m, flush=True), rounds=args.rounds, evals=args.evals,
              fixed_sigmas=args.fixed_sigmas, every=args.every, start=args.start)
    if write_to != path:
        write_to.replace(path)
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
    parser.add_argument("--evals", type=positive_int, default=150,
                        help="Bespoke fit: L-BFGS evaluations of the loss and its gradient.")
    parser.add_argument("--fixed-sigmas", action="store_true",
                        help="Bespoke fit: keep the σ's where the descent put them.")
    parser.add_argument("--steps", type=positive_int, nargs="+", default=[6, 8, 10, 12, 15, 20],
                        help="Step counts (on a model with descent: model calls).")
    parser.add_argument("--samples", type=positive_int, default=512)
    parser.add_argument("--model", help="A trained base model: search on its own ODE.")
    parser.add_argument("--out", help="Schedule file to write (default: RUN/schedule.json).")
    parser.add_argument("--overwrite", action="store_true",
                        help="Replace an existing --out (else it is kept and the run stops).")
    parser.add_argument("--guidance", type=float,
                        help="Default: the model's recommended, else 3.")
    parser.add_argument("--images", type=positive_int, default=24, help="Tuning images on a model.")
    parser.add_argument("--reference-steps", type=at_least(10), default=500,
                        help="dpm++3m Karras steps of a model's reference (10 or more).")
    parser.add_argument("--rounds", type=positive_int, default=10,
                        help="Descent rounds on a model.")
    parser.add_argument("--every", type=positive_int, default=2,
                        help="Keep every k-th reference σ.")
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
    run(main)
