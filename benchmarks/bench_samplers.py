"""Sampler accuracy vs cost: RMSE to a reference solution of the probability-flow ODE.

Every sampler starts from the same x_T and is compared with a many-step solution of the same
ODE problem on the same kind of step schedule:
  * respaced: GLIDE's timesteps from t = 999 (σ ≈ 20,000), the default of ddim/ddpm/plms;
    reference = DDIM η=0 over (nearly) every timestep;
  * karras: σ from 80 down, the default of the σ-space samplers; reference = many-step Heun.
Table 1: the exact denoiser of a finite image set (256 demo:shapes pictures, 32 px), the
posterior mean Σᵢ softmax(−|x − xᵢ|²/2σ²)·xᵢ: a nonlinear, multimodal stand-in for a trained
model. "karras 80→0.5" compares x at σ = 0.5, the smooth part of the flow; the full runs end
by snapping to one training image, so there the median per-image RMSE is the telling figure.
Table 2: data N(0.5, 0.5²), whose ODE solution is exact. Table 3: a small GLIDE network with
RANDOM weights (guidance 3, GLIDE's x0 clipping): real model-call cost, a rough flow.

    python benchmarks/bench_samplers.py            # a few minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from glidectl import plugins
from glidectl.diffusion import create_diffusion
from glidectl.glide import create_model, preset_options
from glidectl.samplers.analytic import GaussianDenoiser
from glidectl.samplers.denoiser import GlideDenoiser
from glidectl.samplers.schedules import build_sigmas, get_sigmas_karras, sigmas_from_alphas_cumprod

SAMPLERS = ("ddim", "plms", "euler", "heun", "dpm++2m")
STEPS = (10, 20, 50)


def small_model(image_size: int, seed: int = 0) -> torch.nn.Module:
    """The 'tiny' preset at ``image_size`` px with random (non-zero) output layers."""
    model = create_model(preset_options("base", "tiny").replace(image_size=image_size))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
    return model.eval()


def glide_denoiser(model: torch.nn.Module, batch: int) -> GlideDenoiser:
    tokens = torch.randint(0, 256, (batch, model.options.text_ctx),
                           generator=torch.Generator().manual_seed(1))
    texts = torch.cat([tokens, torch.full_like(tokens, 256)])
    mask = torch.cat([torch.ones_like(tokens, dtype=torch.bool),
                      torch.zeros_like(tokens, dtype=torch.bool)])
    with torch.no_grad():
        text_emb = model.encode_text(texts, mask)
    return GlideDenoiser(model, create_diffusion().alphas_cumprod, text_emb=text_emb,
                         guidance=3.0, clip=True)


def run(name: str, denoiser, x_T: torch.Tensor, sigmas: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Final sample on the VP scale (x / √(1+σ_end²)) and wall seconds."""
    sampler = plugins.samplers().get(name)
    start = time.perf_counter()
    out = sampler(denoiser, x_T * math.sqrt(1 + float(sigmas[0]) ** 2), sigmas)
    seconds = time.perf_counter() - start
    sigma_end = float(sigmas[-2] if name == "plms" else sigmas[-1])  # the fork stops at σ_0
    return out / math.sqrt(1 + sigma_end**2), seconds


class ImageSetDenoiser:
    """The exact denoiser of a finite set of images (their posterior mean under noise σ)."""

    def __init__(self, images: torch.Tensor):
        self.data = images.reshape(len(images), -1).double()
        self.calls = 0

    def __call__(self, x: torch.Tensor, sigma: float, **_) -> torch.Tensor:
        self.calls += 1
        flat = x.reshape(len(x), -1).double()
        d2 = torch.cdist(flat, self.data).pow(2)
        weights = torch.softmax(-d2 / (2 * float(sigma) ** 2), dim=1)
        return (weights @ self.data).reshape(x.shape).to(x.dtype)


def demo_images(count: int, size: int) -> torch.Tensor:
    from glidectl.data.demo import make_demo_sample
    from glidectl.images import from_pil

    return torch.cat([from_pil(make_demo_sample("shapes", i, size).image) for i in
                      range(count)])


def rmse(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """RMSE over everything, and the median over images of each image's RMSE (robust to the
    rare image that ends in another mode of a multimodal ODE)."""
    per_image = (a - b).reshape(len(a), -1).pow(2).mean(1).sqrt()
    return (a - b).pow(2).mean().sqrt().item(), per_image.median().item()


def table(title: str, rows: list[tuple[str, int, int, tuple[float, float], float]]) -> None:
    print(f"\n{title}")
    print(f"{'sampler':<10} {'steps':>5} {'calls':>5} {'RMSE':>10} {'median':>10} {'ms/image':>9}")
    for name, steps, calls, (err, median), ms in rows:
        print(f"{name:<10} {steps:>5} {calls:>5} {err:>10.5f} {median:>10.5f} {ms:>9.1f}")


def glide_tables(args: argparse.Namespace) -> None:
    model = small_model(args.image_size)
    den = glide_denoiser(model, args.batch)
    x_T = torch.randn(args.batch, 3, args.image_size, args.image_size,
                      generator=torch.Generator().manual_seed(0))
    n_ref = args.glide_ref_steps
    refs = {}
    ref_sigmas = build_sigmas("respaced", n_ref, den.sigmas)
    refs["respaced"], sec = run("ddim", den, x_T, ref_sigmas)
    print(f"reference (respaced): DDIM over {n_ref} timesteps, {sec:.0f} s")
    refs["karras"], sec = run("heun", den, x_T, build_sigmas("karras", n_ref // 2, den.sigmas))
    check, _ = run("heun", den, x_T, build_sigmas("karras", n_ref // 4, den.sigmas))
    # (with random weights the clipped flow is rough, so the reference converges slowly)
    print(f"reference (karras σ_max=80): {n_ref // 2}-step Heun, {sec:.0f} s; "
          f"RMSE vs {n_ref // 4}-step Heun {rmse(refs['karras'], check)[0]:.5f}")
    scale = refs["respaced"].pow(2).mean().sqrt().item()
    print(f"RMS of the reference sample: {scale:.3f}")
    for schedule in ("respaced", "karras"):
        rows = []
        for name in SAMPLERS:
            if name == "plms" and schedule == "karras":
                continue  # PLMS's fixed multistep weights assume GLIDE's even timesteps
            for steps in STEPS:
                sigmas = build_sigmas(schedule, steps, den.sigmas)
                den.calls = 0
                out, sec = run(name, den, x_T, sigmas)
                rows.append((name, steps, den.calls, rmse(out, refs[schedule]),
                             1000 * sec / args.batch))
        table(f"GLIDE small model ({args.image_size}px, batch {args.batch}, guidance 3), "
              f"schedule {schedule}", rows)


def image_set_tables(args: argparse.Namespace) -> None:
    den = ImageSetDenoiser(demo_images(256, args.image_size))
    table_sigmas = sigmas_from_alphas_cumprod(create_diffusion().alphas_cumprod)
    x_T = torch.randn(64, 3, args.image_size, args.image_size,
                      generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    problems = {
        # the smooth part of the flow: Karras σ 80 → 0.5, compared at σ = 0.5 (no final step)
        "karras 80→0.5": lambda n: get_sigmas_karras(n + 1, 0.5, 80.0)[:-1],
        "karras 80→0": lambda n: build_sigmas("karras", n, table_sigmas),
        "respaced": lambda n: build_sigmas("respaced", n, table_sigmas),
    }
    for problem, make in problems.items():
        ref_name = "ddim" if problem == "respaced" else "heun"
        ref, _ = run(ref_name, den, x_T, make(1000))
        check, _ = run("heun", den, x_T, make(500))
        print(f"\nreference ({problem}): 1000-step {ref_name}; RMSE vs 500-step heun "
              f"{rmse(ref, check)[0]:.5f}; RMS of the reference {ref.pow(2).mean().sqrt():.3f}")
        rows = []
        for name in SAMPLERS:
            if name == "plms" and problem != "respaced":
                continue  # PLMS starts at sigmas[1] (GLIDE fork): a different problem
            for steps in STEPS:
                den.calls = 0
                out, sec = run(name, den, x_T, make(steps))
                rows.append((name, steps, den.calls, rmse(out, ref), 1000 * sec / len(x_T)))
        table(f"Exact denoiser of 256 demo:shapes images ({args.image_size}px, 64 samples), "
              f"{problem}", rows)


def gaussian_table() -> None:
    den = GaussianDenoiser(0.5, 0.5)
    x = den.prior((4096,), 80.0, torch.Generator().manual_seed(0))
    rows = []
    for name in SAMPLERS:
        for steps in STEPS:
            sigmas = get_sigmas_karras(steps, 0.002, 80.0)
            den.calls = 0
            start = time.perf_counter()
            out = plugins.samplers().get(name)(den, x, sigmas)
            sec = time.perf_counter() - start
            if name == "plms":
                s0, s1, s_end = float(sigmas[0]), float(sigmas[1]), float(sigmas[-2])
                exact = den.ode_solution(x * math.sqrt((1 + s1**2) / (1 + s0**2)), s1, s_end)
            else:
                exact = den(den.ode_solution(x, 80.0, 0.002), 0.002)
            rows.append((name, steps, den.calls, rmse(out, exact), 1000 * sec / 4096))
    table("Analytic Gaussian data N(0.5, 0.5²), Karras σ 80 → 0.002, exact ODE reference", rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-glide", action="store_true", help="Only tables 1 and 2.")
    parser.add_argument("--glide-ref-steps", type=int, default=250,
                        help="Reference DDIM timesteps for the GLIDE table (Heun: half).")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    image_set_tables(args)
    gaussian_table()
    if not args.skip_glide:
        glide_tables(args)


if __name__ == "__main__":
    main()
