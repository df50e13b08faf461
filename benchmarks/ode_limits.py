"""What stops a few-call sampler from reaching a tenth of DDIM-50's error: measured.

Gaussian mixture (the exact problem of bench_samplers.py, ``--mixture-seed S``): a sample whose
ODE path passes near a boundary between components ends in another component for a tiny
error, and one such sample in 1,024 adds ~0.02 to the RMS. For each sampler × calls: how many
samples "switch" (per-sample RMSE > 0.1 against the exact solution), the RMS, and the RMS of
the others. Then, for one sampler at ``--calls`` (``ipndm`` on ``optimised`` σ's, or
``--sampler bespoke --schedule FILE``), the exact ODE is followed from the sampler's own state
at each step: the samples that switch there were lost by that step's state error, which is
printed beside them (RMS of x_i − x(σ_i), the exact ODE's state at σ_i).

Trained model (``--model RUN``): the denoiser D(x, σ) at fixed x (picture + σ·noise) on 61 σ's
within ±0.15 of each σ in log σ: the RMS residual of a cubic fit (a smooth D leaves ~0 at this
scale: the exact mixture's D leaves 1e-5 to 5e-4 of its change) against D's change across the
window. Then ``unipc`` on exponential σ's at 20–200 calls against a 1000-step ``dpm++3m``
reference: an error that stops falling as calls grow is the roughness, not the solver's order.
Last, ``unipc`` at ``--calls`` (15) on ``--follow-schedule``'s σ's is followed like the
mixture's sampler: the fine ODE (a fifth of the reference's steps) from its corrected state
at each call, to show where its error is made (a 0.01 quickstart model on its fitted σ's:
it builds up from σ 6 to 0.4, and the last calls cancel part of it).
Quickstart models trained before ``model.time_embed_max_freq`` left 0.9-5.9 % (the timestep
embedding's fast sinusoids, kept at their random initial weights); scratch models now leave
at most 0.09 % and ``unipc`` converges (seed 0: 0.0032 / 0.00038 / 0.00015 at 20 / 30 / 40).

    python benchmarks/ode_limits.py --mixture-seed 2                       # ~2 min
    python benchmarks/ode_limits.py --skip-gmm --model runs/quickstart     # ~10 min, 1 core

``--per-image K`` then asks whether choosing the steps per image would help: ``unipc`` at
``--calls`` on σ's descended for all images together, and on σ's descended for each of the
first K images alone against its own reference — hindsight no sampler has, so an upper
bound on what a sample-adaptive step rule could give (quickstart seed 0, 36 images, 15
calls: 0.00187 → 0.00115 on the mean of the first 12, still above a tenth of DDIM-50).

    python benchmarks/ode_limits.py --skip-gmm --model RUN --images 36 --per-image 12

``--per-image-bespoke FILE`` asks the same of the whole solver: FILE's bespoke solver at
``--calls`` refitted (coefficients and σ's, ``--evals`` L-BFGS evaluations) on each image
alone (quickstart seed 0, 12 images, 15 calls: 0.00213 shared → 0.00080 own, below a tenth
of DDIM-50 on 11 of 12, ~1 min an image). That is hindsight, not a sampler: on a 0.01 model
the σ's alone, moved at most 6 % per image, take 36 images from 0.00224 to 0.00088 — each image is
steered, and σ's fitted to other noises of its caption do not carry over.

    python benchmarks/ode_limits.py --skip-gmm --model RUN --model-calls 20 \
        --per-image-bespoke RUN/schedule.json
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch
from bench_args import json_out, nonnegative_int, positive_int, run, write_json
from bench_samplers import demo_prompts, fitted_coefficients

from glidectl import plugins
from glidectl.errors import GlidectlError
from glidectl.samplers import get_sigmas
from glidectl.samplers.analytic import GaussianMixtureDenoiser
from glidectl.samplers.bespoke import fit_coefficients
from glidectl.samplers.schedules import build_sigmas
from glidectl.samplers.search import descend_sigmas
from glidectl.step_fitting import (
    Target,
    errors,
    guided_denoiser,
    model_guidance,
    require_base,
    steps_for_calls,
)

SWITCHED = 0.1  # per-sample RMSE: the sample ended in another component
GMM_RUNS = [("ddim", "karras", c) for c in (50, 200, 1000)] + [
    ("unipc", "karras", c) for c in (15, 30, 50, 100)] + [
    ("ipndm", "optimised", c) for c in (10, 15, 20, 30)]


def per_sample(out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return (out - ref).reshape(len(out), -1).pow(2).mean(1).sqrt()


def switch_figures(e: torch.Tensor) -> dict[str, float]:
    keep = e <= SWITCHED
    return {"switched": int((~keep).sum()), "rms": e.pow(2).mean().sqrt().item(),
            "rms_others": e[keep].pow(2).mean().sqrt().item()}


def followed_sigmas(sampler: str, schedule: str, calls: int) -> tuple[torch.Tensor, dict]:
    """The σ's (and a bespoke schedule file's coefficients) on which ``sampler`` makes
    ``calls`` model calls on the mixture, else one sentence (before any work)."""
    steps = steps_for_calls(sampler, calls)
    if steps is None:
        raise GlidectlError(f"--sampler {sampler} cannot make exactly {calls} model calls "
                            "(--calls counts calls, not steps); pick another --calls.")
    sigmas = get_sigmas(schedule, steps, 0.002, 80.0)
    options = fitted_coefficients(sampler, schedule, sigmas)
    if options is None:
        raise GlidectlError(f"--sampler {sampler} needs a schedule file with coefficients "
                            f"for {calls} calls, and --schedule {schedule!r} holds none; pass "
                            "--calls with a count it was fitted for, or fit one with "
                            f"bench_samplers.py --gmm-bespoke FILE --gmm-calls {calls}.")
    return sigmas, options


def gmm_limits(args: argparse.Namespace) -> dict:
    follow_sigmas, options = followed_sigmas(args.sampler, args.schedule, args.calls)
    den = GaussianMixtureDenoiser.random(seed=args.mixture_seed)
    x = den.prior(args.samples, 80.0, torch.Generator().manual_seed(args.mixture_seed))
    ref = den(den.ode_solution(x, 80.0, 0.002, args.ode_steps), 0.002)
    print(f"gmm mixture {args.mixture_seed}, {args.samples} samples; switched = per-sample "
          f"RMSE > {SWITCHED}")
    print(f"{'sampler':<10} {'schedule':<16} calls switched      rms  rms-others")
    rows = []
    for name, schedule, calls in GMM_RUNS:
        sigmas = get_sigmas(schedule, steps_for_calls(name, calls), 0.002, 80.0)
        e = per_sample(plugins.samplers().get(name)(den, x, sigmas), ref)
        rows.append({"sampler": name, "schedule": schedule, "calls": calls,
                     **switch_figures(e)})
        r = rows[-1]
        print(f"{name:<10} {schedule:<16} {calls:5d} {r['switched']:8d} {r['rms']:8.4f} "
              f"{r['rms_others']:11.4f}", flush=True)

    states: list[tuple[float, torch.Tensor]] = []

    def recording(x_i: torch.Tensor, sigma: float, **kw) -> torch.Tensor:
        states.append((float(sigma), x_i))
        return den(x_i, sigma, **kw)

    e = per_sample(plugins.samplers().get(args.sampler)(recording, x, follow_sigmas, **options),
                   ref)
    print(f"\n{args.sampler} on {args.schedule} σ's, {args.calls} calls: "
          f"{switch_figures(e)['switched']} switched; following the exact ODE from its state "
          "at each call:")
    print(" call    sigma  state error  switched")
    follow, exact, at = [], x, 80.0
    for i, (sigma, x_i) in enumerate(states[1:], 1):
        if sigma < 0.002:  # the last call, at σ_min, is followed too
            break
        # the exact path, onward
        exact, at = den.ode_solution(exact, at, sigma, args.ode_steps), sigma
        state = (x_i - exact).pow(2).mean().sqrt().item()
        end = per_sample(den(den.ode_solution(x_i, sigma, 0.002, args.ode_steps), 0.002), ref)
        follow.append({"call": i, "sigma": sigma, "state_error": state,
                       "switched": int((end > SWITCHED).sum())})
        print(f"{i:5d} {sigma:8.4f} {state:12.2e} {follow[-1]['switched']:9d}", flush=True)
    return {"mixture_seed": args.mixture_seed, "samples": args.samples, "runs": rows,
            "follow": {"sampler": args.sampler, "schedule": args.schedule,
                       "calls": args.calls, "steps": follow}}


def model_limits(args: argparse.Namespace) -> dict:
    from glidectl.glide.loading import load_model

    torch.manual_seed(0)
    model = load_model(args.model).eval()
    require_base(model, args.model, "--model takes")
    n, size = args.images, model.options.image_size
    prompts, guidance = demo_prompts(n), model_guidance(args.model, args.guidance)
    den = guided_denoiser(model, prompts, guidance)
    g = torch.Generator().manual_seed(0)
    picture = (torch.rand(n, 3, size, size, generator=g) * 2 - 1) * 0.8
    noise = torch.randn(n, 3, size, size, generator=g)
    print(f"\nmodel {args.model}: D(x, σ) at fixed x on 61 σ's within ±0.15 in log σ "
          f"(unclipped, {n} images)")
    print("   sigma  D change  cubic residual  relative")
    rough = []
    offsets = np.linspace(-0.15, 0.15, 61)
    basis = torch.tensor(np.vander(offsets, 4), dtype=torch.float64)
    den.clip = False
    with torch.no_grad():
        for sigma in args.sigmas:
            x = picture + sigma * noise
            d = torch.stack([den(x, sigma * math.exp(o)) for o in offsets]).flatten(1).double()
            residual = d - basis @ torch.linalg.lstsq(basis, d).solution
            rough.append({"sigma": sigma, "change": (d[-1] - d[0]).pow(2).mean().sqrt().item(),
                          "cubic_residual": residual.pow(2).mean().sqrt().item()})
            r = rough[-1]
            print(f"{sigma:8.3f} {r['change']:9.2e} {r['cubic_residual']:15.2e} "
                  f"{r['cubic_residual'] / r['change']:9.4f}", flush=True)
        den.clip = True
        x_T = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))

        def run(name: str, schedule: str, steps: int) -> torch.Tensor:
            sigmas = build_sigmas(schedule, steps, den.sigmas)
            return plugins.samplers().get(name)(den, x_T * float(sigmas[0]), sigmas)

        steps = args.reference_steps
        ref = run("dpm++3m", "karras", steps)
        half = errors(run("dpm++3m", "karras", steps // 2), ref)["rms"]
        print(f"unipc (exponential σ's) RMS against a {steps}-step dpm++3m reference: "
              f"{steps // 2}-step dpm++3m {half:.5f}, "
              f"DDIM-50 {errors(run('ddim', 'karras', 50), ref)['rms']:.5f}")
        calls = {c: errors(run("unipc", "exponential", c), ref)["rms"] for c in args.model_calls}
        print("  " + ", ".join(f"{c} calls {v:.5f}" for c, v in calls.items()))
        follow = follow_model(den, x_T, ref, args.calls, max(steps // 5, 8),
                              args.follow_schedule)
        own = (per_image_steps(model, prompts, guidance, den, x_T, ref, args.calls,
                               args.per_image, args.rounds) if args.per_image else None)
    fits = (per_image_bespoke(model, prompts, guidance, x_T, ref, args.per_image_bespoke,
                              args.calls, args.per_image or n, args.evals)
            if args.per_image_bespoke else None)
    return {"model": args.model, "images": n, "roughness": rough, "reference_steps": steps,
            "half_reference": half, "unipc": calls, "follow": follow, "per_image": own,
            "per_image_bespoke": fits}


def per_image_steps(model, prompts: list[str], guidance: float, den, x_T: torch.Tensor,
                    ref: torch.Tensor, calls: int, count: int, rounds: int) -> dict:
    """What choosing the steps per image could give at most: ``unipc`` at ``calls`` on σ's
    descended for all images together, then on σ's descended for each of the first ``count``
    images alone, on its own reference (hindsight no sampler has)."""
    fn = plugins.samplers().get("unipc")

    def rms(d, x: torch.Tensor, r: torch.Tensor, sigmas: torch.Tensor) -> float:
        return (fn(d, x * float(sigmas[0]), sigmas) - r).pow(2).mean().sqrt().item()

    shared, _ = descend_sigmas(lambda s: rms(den, x_T, ref, s),
                               build_sigmas("exponential", calls, den.sigmas),
                               sigma_floor=den.sigma_min, rounds=rounds)
    print(f"\nunipc at {calls} calls: σ's descended for all {len(x_T)} images, then for each "
          "image alone (RMSE of that image)")
    rows = []
    for i in range(min(count, len(x_T))):
        one = guided_denoiser(model, [prompts[i]], guidance)
        x, r = x_T[i : i + 1], ref[i : i + 1]
        _, own = descend_sigmas(lambda s, one=one, x=x, r=r: rms(one, x, r, s), shared,
                                sigma_floor=den.sigma_min, rounds=rounds)
        rows.append({"image": i, "prompt": prompts[i], "shared": rms(one, x, r, shared),
                     "own": own})
        print(f"  {i:2d} {prompts[i]!r}: shared {rows[-1]['shared']:.5f}  own {own:.5f}",
              flush=True)
    means = {k: sum(row[k] for row in rows) / len(rows) for k in ("shared", "own")}
    print(f"  mean: shared {means['shared']:.5f}  own {means['own']:.5f}")
    return {"calls": calls, "rows": rows, **means}


def per_image_bespoke(model, prompts: list[str], guidance: float, x_T: torch.Tensor,
                      ref: torch.Tensor, schedule: str, calls: int, count: int, evals: int
                      ) -> dict:
    """What a solver whose coefficients fit each image could give at most: the bespoke
    solver of ``schedule`` at ``calls`` (fitted to all its tuning images together), then its
    coefficients and σ's refitted by ``evals`` L-BFGS evaluations on each of the first
    ``count`` images alone, against that image's own reference (hindsight again)."""
    target = Target(guided_denoiser(model, prompts, guidance), x_T, torch.empty(0), ref)
    sigmas = build_sigmas(schedule, calls, target.denoiser.sigmas)
    found = fitted_coefficients("bespoke", schedule, sigmas)
    if not found:
        raise SystemExit(f"{schedule} holds no bespoke coefficients for {calls} calls; fit "
                         f"them with glidectl fit-steps RUN --method bespoke --calls {calls}.")
    shared = found["coefficients"]
    with torch.no_grad():
        base = per_sample(target.sample("bespoke", sigmas, shared), ref)
    ddim = target.ddim50["mean"]
    model.requires_grad_(False)
    print(f"\nbespoke at {calls} calls ({schedule}), then refitted on each image alone "
          f"({evals} evaluations; RMSE of that image; a tenth of DDIM-50: {ddim / 10:.5f})")
    rows = []
    for i in range(min(count, len(x_T))):
        one = guided_denoiser(model, [prompts[i]], guidance)
        *_, own = fit_coefficients(one, x_T[i : i + 1] * float(sigmas[0]), sigmas,
                                   ref[i : i + 1], shared, evals=evals, move_sigmas=True,
                                   sigma_floor=one.sigma_min)
        rows.append({"image": i, "prompt": prompts[i], "shared": base[i].item(), "own": own})
        print(f"  {i:2d} {prompts[i]!r}: shared {base[i]:.5f}  own {own:.5f}", flush=True)
    means = {k: sum(row[k] for row in rows) / len(rows) for k in ("shared", "own")}
    below = sum(row["own"] < ddim / 10 for row in rows)
    print(f"  mean: shared {means['shared']:.5f}  own {means['own']:.5f}; own below a tenth "
          f"of DDIM-50 on {below} of {len(rows)}")
    return {"calls": calls, "schedule": schedule, "evals": evals, "ddim50_mean": ddim,
            "rows": rows, **means}


def follow_model(den, x_T: torch.Tensor, ref: torch.Tensor, calls: int, fine: int,
                 schedule: str = "exponential") -> list[dict]:
    """Where a few-call sampler's error is made on a model: ``unipc`` on ``schedule``'s σ's
    at ``calls``, then from its state at each σ the ODE solved finely (``fine`` dpm++3m
    Karras steps down from that σ); the final error of each such path is the error made up
    to that σ, carried to the end. The state is the one the sampler carries on from (its
    callback's x: UniPC's corrected x), not the predicted x it called the model at."""
    sigmas = build_sigmas(schedule, calls, den.sigmas)
    states: list[tuple[float, torch.Tensor]] = []
    out = plugins.samplers().get("unipc")(
        den, x_T * float(sigmas[0]), sigmas,
        callback=lambda s: states.append((float(s["sigma"]), s["x"])))
    total = errors(out, ref)
    print(f"\nunipc on {schedule} σ's, {calls} calls: rms {total['rms']:.5f} (mean "
          f"{total['mean']:.5f}); the fine ODE from its state at each σ ends at rms:")
    rows = []
    for i, (sigma, x) in enumerate(states[1:], 1):
        if sigma <= den.sigma_min * 1.01:
            break
        path = build_sigmas("karras", fine, den.sigmas, sigma_max=sigma)
        end = errors(plugins.samplers().get("dpm++3m")(den, x, path), ref)
        rows.append({"call": i, "sigma": sigma, "rms": end["rms"], "mean": end["mean"]})
        print(f"  call {i:2d}  σ {sigma:8.4f}  {end['rms']:.5f} (mean {end['mean']:.5f})",
              flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mixture-seed", type=nonnegative_int, default=2)
    parser.add_argument("--samples", type=positive_int, default=1024)
    parser.add_argument("--sampler", default="ipndm")
    parser.add_argument("--schedule", default="optimised",
                        help="σ's of the followed sampler (a bespoke schedule file for bespoke)")
    parser.add_argument("--calls", type=positive_int, default=15)
    parser.add_argument("--follow-schedule", default="exponential",
                        help="On a model: the σ's unipc is followed on (a name or a schedule "
                        "file from glidectl fit-steps).")
    parser.add_argument("--skip-gmm", action="store_true")
    parser.add_argument("--ode-steps", type=positive_int, default=1000,
                        help="RK4 steps of each exact mixture ODE solve (80 → 0.002).")
    parser.add_argument("--model", help="A trained base model (run folder or file).")
    parser.add_argument("--guidance", type=float)
    parser.add_argument("--images", type=positive_int, default=12)
    parser.add_argument("--sigmas", type=float, nargs="+", default=[20, 5, 1, 0.3, 0.05])
    parser.add_argument("--model-calls", type=positive_int, nargs="+",
                        default=[20, 30, 40, 60, 80, 120, 200])
    parser.add_argument("--reference-steps", type=positive_int, default=1000)
    parser.add_argument("--per-image", type=nonnegative_int, default=0, metavar="K",
                        help="On a model: also descend unipc's σ's at --calls for each of the "
                        "first K images alone (an upper bound on per-image step choice).")
    parser.add_argument("--rounds", type=positive_int, default=10,
                        help="Descent rounds (--per-image).")
    parser.add_argument("--per-image-bespoke", metavar="FILE",
                        help="On a model: refit FILE's bespoke solver at --calls on each of "
                        "the first --per-image images (all when 0) alone (an upper bound on "
                        "a solver whose coefficients adapt to each image).")
    parser.add_argument("--evals", type=positive_int, default=100,
                        help="L-BFGS evaluations per image (--per-image-bespoke).")
    parser.add_argument("--threads", type=positive_int, default=1)
    parser.add_argument("--json", type=json_out, help="Write the figures to this file.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    found = {} if args.skip_gmm else {"gmm": gmm_limits(args)}
    if args.model:
        found["model"] = model_limits(args)
    if args.json:
        write_json(args.json, found)


if __name__ == "__main__":
    run(main)
