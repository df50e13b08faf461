"""Sampler accuracy vs model calls: RMSE to a converged probability-flow ODE solution.

Every sampler starts from the same x_T and is compared, per problem, with the same ODE
solved to convergence. Per sampler × schedule × model calls it prints ``worst`` (the largest
sample's RMSE), ``rms`` (root of the mean squared error over all samples: the figure that
counts the samples that end in another mode), ``mean`` and ``median`` (of each sample's
RMSE), then the fewest calls that match DDIM-50 on Karras σ's (the baseline) and a tenth
of its error, judged by the mean (the issue's measure) and by the stricter rms.

Problems:
  * gmm: an exact Gaussian mixture (48 dims, 16 components of std 0.2, means uniform in
    [−1, 1], mixture seed 0 or ``--mixture-seed``; the ``optimised`` schedule was tuned on
    seed 1), σ 80 → 0.002,
    reference = RK4 in log σ with 1000 steps (agrees with 2000 to ~1e-8);
  * model (``--model RUN``): a trained base model with its guidance, σ 80 → the table's
    smallest, reference = 500-step dpm++3m from the same noise (compared with 250 steps);
  * upsampler (``--upsampler RUN``): a trained upsampler without guidance, every sampler
    against GLIDE's default fast27 DDPM, distance to a 250-step DDPM from the same noise.

    python benchmarks/bench_samplers.py                      # gmm only, ~2 min on 2 cores
    python benchmarks/bench_samplers.py --model runs/quickstart --json out.json
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from typing import Any

import torch
from bench_args import json_out, nonnegative_int, positive_int, run, write_json

from glidectl import plugins
from glidectl.errors import GlidectlError
from glidectl.samplers import get_sigmas
from glidectl.samplers.analytic import GaussianMixtureDenoiser
from glidectl.samplers.schedules import build_sigmas, check_schedule_name
from glidectl.samplers.tuned import is_schedule_file, read_coefficients, read_schedule_file
from glidectl.sampling import PRECISIONS
from glidectl.step_fitting import (
    errors,
    guided_denoiser,
    model_guidance,
    require_base,
    steps_for_calls,
)

SAMPLERS = ("ddim", "euler", "heun", "dpm++2m", "dpm++3m", "unipc", "unipc_bh1", "deis",
            "ipndm")
SCHEDULES = ("karras", "exponential", "polyexponential", "optimised")
CALLS = (6, 8, 10, 12, 15, 20, 30, 50)


def fitted_coefficients(name: str, schedule: str, sigmas: torch.Tensor) -> dict | None:
    """``{"coefficients": rows}`` for a bespoke sampler from a schedule file that holds them
    for this step count, {} for other samplers, None when the file has none to give."""
    if not plugins.samplers().get(name).accepts("coefficients"):
        return {}
    if not is_schedule_file(schedule):
        return None
    try:
        return {"coefficients": read_coefficients(schedule, len(sigmas) - 1, sigmas)}
    except GlidectlError:
        return None


def sweep(problem: str, run: Callable[..., torch.Tensor], ref: torch.Tensor,
          make_sigmas: Callable[[str, int], torch.Tensor], samplers=SAMPLERS,
          schedules=SCHEDULES, calls_list=CALLS) -> list[dict[str, Any]]:
    """Every sampler × schedule × calls it can make (a bespoke sampler: the step counts its
    schedule file holds coefficients for)."""
    rows = []
    for name in samplers:
        for schedule in schedules:
            for calls in calls_list:
                steps = steps_for_calls(name, calls)
                if steps is None:
                    continue
                sigmas = make_sigmas(schedule, steps)
                options = fitted_coefficients(name, schedule, sigmas)
                if options is None:
                    continue
                start = time.perf_counter()
                out = run(name, sigmas, **options)
                rows.append({"problem": problem, "sampler": name, "schedule": schedule,
                             "steps": steps, "calls": calls, **errors(out, ref),
                             "seconds": time.perf_counter() - start})
    return rows


def summarise(problem: str, rows: list[dict[str, Any]], baseline: dict[str, float]
              ) -> list[dict[str, Any]]:
    """Per sampler × schedule: fewest calls at DDIM-50's error, and at a tenth of it, by
    the mean of per-sample RMSE (``calls_at_ddim50``, ``calls_at_tenth_of_ddim50``) and by
    the RMS over every sample (``…_rms``: stricter, a few far-off samples dominate it)."""
    out = []
    for key in sorted({(r["sampler"], r["schedule"]) for r in rows}):
        mine = sorted((r for r in rows if (r["sampler"], r["schedule"]) == key),
                      key=lambda r: r["calls"])
        fewest = {}
        for metric, suffix in (("mean", ""), ("rms", "_rms")):
            for goal, scale in (("calls_at_ddim50", 1), ("calls_at_tenth_of_ddim50", 10)):
                fewest[goal + suffix] = next((r["calls"] for r in mine
                                              if r[metric] <= baseline[metric] / scale), None)
        out.append({"problem": problem, "sampler": key[0], "schedule": key[1], **fewest})
    return out


def print_rows(title: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n{title}")
    print(f"{'sampler':<10} {'schedule':<16} {'steps':>5} {'calls':>5} {'worst':>9} {'rms':>9} "
          f"{'mean':>9} {'median':>9}")
    for r in rows:
        print(f"{r['sampler']:<10} {r['schedule']:<16} {r['steps']:>5} {r['calls']:>5} "
              f"{r['worst']:>9.5f} {r['rms']:>9.5f} {r['mean']:>9.5f} {r['median']:>9.5f}")


def print_summary(problem: str, summary: list[dict[str, Any]], baseline: dict[str, float]
                  ) -> None:
    what = "fast27 DDPM" if problem == "upsampler" else "DDIM-50 on Karras σ's"
    print(f"\n{problem}: fewest model calls matching {what} (mean {baseline['mean']:.5f}, "
          f"rms {baseline['rms']:.5f}) and a tenth of it, by mean and by rms")
    print(f"  {'sampler':<10} {'schedule':<16} {'mean':>5} {'tenth':>5} {'rms':>5} {'tenth':>5}")
    keys = ("calls_at_ddim50", "calls_at_tenth_of_ddim50", "calls_at_ddim50_rms",
            "calls_at_tenth_of_ddim50_rms")
    for s in sorted(summary, key=lambda s: tuple(s[k] or 999 for k in keys)):
        print(f"  {s['sampler']:<10} {s['schedule']:<16} "
              + " ".join(f"{s[k] or '>max':>5}" for k in keys))


def gmm_problem(args: argparse.Namespace) -> tuple[list, list, dict]:
    den = GaussianMixtureDenoiser.random(seed=args.mixture_seed)
    x = den.prior(args.samples, 80.0, torch.Generator().manual_seed(args.mixture_seed))
    ref = den(den.ode_solution(x, 80.0, 0.002, 1000), 0.002)
    check = den(den.ode_solution(x, 80.0, 0.002, 2000), 0.002)
    print(f"gmm reference: RK4 1000 steps; rms vs 2000 steps {errors(ref, check)['rms']:.2e}")

    def run(name: str, sigmas: torch.Tensor, **options) -> torch.Tensor:
        return plugins.samplers().get(name)(den, x, sigmas, **options)

    def make(schedule: str, steps: int) -> torch.Tensor:
        return get_sigmas(schedule, steps, 0.002, 80.0)

    baseline = errors(run("ddim", make("karras", 50)), ref)
    rows = sweep("gmm", run, ref, make)
    if args.gmm_bespoke:
        fit_gmm_bespoke(args.gmm_bespoke, den, args.mixture_seed, args.gmm_calls)
        rows += sweep("gmm", run, ref, make, samplers=["bespoke"],
                      schedules=[args.gmm_bespoke], calls_list=args.gmm_calls)
    return rows, summarise("gmm", rows, baseline), baseline


def fit_gmm_bespoke(path: str, den: GaussianMixtureDenoiser, seed: int, calls: list[int]
                    ) -> None:
    """Fit bespoke coefficients on the mixture's own ODE from TUNING noise (seed 1000 +
    mixture seed, 512 samples; the benchmark scores noise seed = mixture seed), from
    ``ipndm`` on the ``optimised`` σ's (σ's moved too), and write both to a schedule file."""
    from glidectl.samplers.bespoke import fit_coefficients, linear_coefficients
    from glidectl.samplers.tuned import write_schedule_file

    x = den.prior(512, 80.0, torch.Generator().manual_seed(1000 + seed))
    ref = den(den.ode_solution(x, 80.0, 0.002, 1000), 0.002)
    found, coefficients = {}, {}
    for n in calls:
        sigmas = get_sigmas("optimised", n, 0.002, 80.0)
        start = linear_coefficients(plugins.samplers().get("ipndm"), sigmas)
        coefficients[n], found[n], value = fit_coefficients(
            den, x, sigmas, ref, start, move_sigmas=True, sigma_floor=0.002)
        print(f"gmm bespoke {n} calls: tuning rms {value:.5f}", flush=True)
    write_schedule_file(path, found, 0.002, 80.0, f"bespoke fit on mixture seed {seed}, "
                        f"tuning noise seed {1000 + seed}, from ipndm on optimised σ's, σ's moved",
                        sampler="bespoke", coefficients=coefficients)
    print(f"wrote {path}", flush=True)


def demo_prompts(n: int, seed: int = 0) -> list[str]:
    """n of the 36 quickstart captions (repeated beyond 36): in order for seed 0 (the
    benchmark's), shuffled by ``seed`` otherwise (tune_schedule.py tunes on seed 1, noise
    and order held out)."""
    from bench_quickstart import demo_prompts as every_caption

    prompts = every_caption(per_class=1)
    prompts = prompts * -(-n // len(prompts))  # more images than captions: each again
    if seed:
        order = torch.randperm(len(prompts), generator=torch.Generator().manual_seed(seed))
        prompts = [prompts[i] for i in order]
    return prompts[:n]


def model_problem(args: argparse.Namespace) -> tuple[list, list, dict]:
    from glidectl.glide.loading import load_model

    model = load_model(args.model).eval()
    require_base(model, args.model, "--model takes")
    prompts = demo_prompts(args.images)
    guidance = model_guidance(args.model, args.guidance)
    den = guided_denoiser(model, prompts, guidance)
    size = model.options.image_size
    x_T = torch.randn(len(prompts), 3, size, size,
                      generator=torch.Generator().manual_seed(args.model_noise_seed))

    def run(name: str, sigmas: torch.Tensor, **options) -> torch.Tensor:
        return plugins.samplers().get(name)(den, x_T * float(sigmas[0]), sigmas, **options)

    def make(schedule: str, steps: int) -> torch.Tensor:
        return build_sigmas(schedule, steps, den.sigmas)

    ref = run("dpm++3m", make("karras", 500))
    check = run("dpm++3m", make("karras", 250))
    print(f"model reference: dpm++3m 500 steps; rms vs 250 steps {errors(ref, check)['rms']:.2e}"
          f"; guidance {guidance}, {len(prompts)} images of {size} px, "
          f"noise seed {args.model_noise_seed}")
    if args.model_precision != "fp32":  # what `glidectl sample --precision` runs; ref stays fp32
        den.autocast_dtype = PRECISIONS[args.model_precision]
        floor = errors(run("dpm++3m", make("karras", 500)), ref)
        print(f"samplers run in {args.model_precision} against the fp32 reference; the same "
              f"500 steps in {args.model_precision}: mean {floor['mean']:.2e}, "
              f"rms {floor['rms']:.2e}")
    baseline = errors(run("ddim", make("karras", 50)), ref)
    rows = sweep("model", run, ref, make, samplers=args.model_samplers,
                 schedules=args.model_schedules, calls_list=args.model_calls)
    return rows, summarise("model", rows, baseline), baseline


def upsampler_problem(args: argparse.Namespace) -> tuple[list, list, dict]:
    """Every sampler against GLIDE's fast27 DDPM default on a trained upsampler, scored by
    the distance to a 250-step DDPM from the same x_T and per-image noise generators."""
    from glidectl.data.demo import make_demo_sample
    from glidectl.glide.loading import load_model
    from glidectl.images import from_pil
    from glidectl.pipeline import UPSAMPLE_TEMP, quantize_8bit, sigma_table, tokenizer_for
    from glidectl.samplers.denoiser import GlideDenoiser
    from glidectl.samplers.noise import image_generators, per_image_noise_sampler

    model = load_model(args.upsampler).eval()
    if not model.options.super_res or model.options.inpaint:
        raise GlidectlError(f"--upsampler takes upsamplers, not {model.options.kind} models "
                            f"like {args.upsampler!r}; pass an upsampler (a base model goes "
                            "to --model).")
    small = model.options.low_res_size
    size = model.options.image_size
    demos = [make_demo_sample("shapes", 10_000 + i, size) for i in range(args.images)]
    high = torch.cat([from_pil(d.image) for d in demos])  # held-out demo pictures
    low_res = quantize_8bit(torch.nn.functional.interpolate(
        high, size=(small, small), mode="bicubic", antialias=True).clamp(-1, 1))
    tokens, mask = tokenizer_for(model).encode_batch([d.caption for d in demos],
                                                     model.options.text_ctx)
    with torch.no_grad():
        text_emb = model.encode_text(tokens, mask)
    den = GlideDenoiser(model, sigma_table(model), text_emb=text_emb,
                        model_kwargs={"low_res": low_res})
    seeds = list(range(len(demos)))
    x_T = torch.randn(len(demos), 3, size, size, generator=torch.Generator().manual_seed(0))
    x_T = x_T * UPSAMPLE_TEMP

    def run(name: str, sigmas: torch.Tensor, **options) -> torch.Tensor:
        noise = per_image_noise_sampler(image_generators(seeds), x_T)
        den.clip = plugins.samplers().get(name).clip
        x = x_T * math.sqrt(1 + float(sigmas[0]) ** 2)
        return plugins.samplers().get(name)(den, x, sigmas, noise_sampler=noise, **options)

    def make(schedule: str, steps: int | str) -> torch.Tensor:
        return build_sigmas(schedule, steps, den.sigmas)

    ref = run("ddpm", make("respaced", 250))
    fast27 = errors(run("ddpm", make("respaced", "fast27")), ref)
    print(f"upsampler ({size} px from {small} px, {len(demos)} images): reference 250-step "
          f"DDPM; fast27 DDPM (27 calls) rms {fast27['rms']:.5f} mean {fast27['mean']:.5f}")
    rows = sweep("upsampler", run, ref, make, samplers=args.upsampler_samplers,
                 schedules=("respaced", "karras"), calls_list=args.upsampler_calls)
    return rows, summarise("upsampler", rows, fast27), fast27


def check_names(args: argparse.Namespace) -> None:
    """One line, before the mixture sweep and the model's references, for a sampler or
    schedule the model and upsampler sweeps cannot use (an unknown name, a schedule file
    that is not there or not one)."""
    for name in (*args.model_samplers, *args.upsampler_samplers):
        plugins.samplers().get(name)
    for schedule in args.model_schedules:
        check_schedule_name(schedule)
        if is_schedule_file(schedule):
            read_schedule_file(schedule)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=positive_int, default=1024, help="gmm samples")
    parser.add_argument("--mixture-seed", type=nonnegative_int, default=0,
                        help="gmm means and noise seed (1 is the one `optimised` was tuned on)")
    parser.add_argument("--gmm-bespoke", metavar="FILE", type=json_out,
                        help="Also fit a bespoke solver to "
                        "the mixture (tuning noise), write it to FILE and score it.")
    parser.add_argument("--gmm-calls", type=positive_int, nargs="+", default=[10, 15, 20],
                        help="Model calls of the gmm bespoke fits.")
    parser.add_argument("--model", help="A trained base model (run folder or file).")
    parser.add_argument("--guidance", type=float,
                        help="Default: the model's recommended, else 3.")
    parser.add_argument("--images", type=positive_int, default=36)
    parser.add_argument("--model-calls", type=positive_int, nargs="+", default=[8, 10, 15, 20])
    parser.add_argument("--model-noise-seed", type=nonnegative_int, default=0,
                        help="Seed of the model's x_T (1 is the tuning noise of fit-steps and "
                        "tune_schedule.py; any other is held out).")
    parser.add_argument("--model-precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                        help="Run the samplers (DDIM-50 too) under this autocast, as "
                        "`glidectl sample --precision` does; the reference stays fp32.")
    parser.add_argument("--model-samplers", nargs="+",
                        default=["ddim", "dpm++2m", "dpm++3m", "unipc", "ipndm"])
    parser.add_argument("--model-schedules", nargs="+", default=["karras", "optimised"])
    parser.add_argument("--upsampler", help="A trained upsampler (run folder or file).")
    parser.add_argument("--upsampler-samplers", nargs="+",
                        default=["ddpm", "dpm++2m", "unipc", "ipndm"])
    parser.add_argument("--upsampler-calls", type=positive_int, nargs="+",
                        default=[8, 12, 15, 20, 27])
    parser.add_argument("--skip-gmm", action="store_true")
    parser.add_argument("--json", type=json_out, help="Write every row and summary to this file.")
    parser.add_argument("--threads", type=positive_int, default=1)
    args = parser.parse_args()
    if args.gmm_bespoke and args.skip_gmm:
        parser.error("--gmm-bespoke fits and scores a solver on the mixture, which --skip-gmm "
                     "skips; drop one of them")
    check_names(args)
    torch.set_num_threads(args.threads)
    results: dict[str, Any] = {"rows": [], "summary": [], "baseline": {}}
    problems = ([] if args.skip_gmm else [("gmm", gmm_problem)]) + (
        [("model", model_problem)] if args.model else []) + (
        [("upsampler", upsampler_problem)] if args.upsampler else [])
    for name, problem in problems:
        rows, summary, baseline = problem(args)
        print_rows(f"{name}: distance to the 250-step DDPM" if name == "upsampler"
                   else f"{name}: error to the converged ODE solution", rows)
        print_summary(name, summary, baseline)
        results["rows"] += rows
        results["summary"] += summary
        results["baseline"][name] = baseline
    if args.json:
        write_json(args.json, results)


if __name__ == "__main__":
    run(main)
