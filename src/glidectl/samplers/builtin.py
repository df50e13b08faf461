"""The built-in samplers, registered through the same hook third-party plugins use."""

from __future__ import annotations

from functools import partial

from ..hookspecs import hookimpl
from .spec import Sampler

# The multistep ODE solvers' own schedule: even steps in log-SNR (DPM-Solver's advice for
# 32-64 px pixel models); on quickstart models it beat Karras ρ = 7 for all four at every
# count measured (10-30 calls), on Gaussian mixtures by the mean error at 10-20 (CHANGELOG).
LOG_SNR = "exponential"


def _two_per_step_but_last(steps: int) -> int:
    return max(2 * steps - 1, 0)


@hookimpl
def register_samplers(register):
    from .bespoke import sample_bespoke
    from .discrete import _plms_calls, sample_ddim, sample_ddpm, sample_plms
    from .dpm import (
        sample_dpmpp_2m,
        sample_dpmpp_2m_sde,
        sample_dpmpp_2s_ancestral,
        sample_dpmpp_3m,
    )
    from .euler import sample_euler, sample_euler_ancestral, sample_heun
    from .multistep import sample_deis, sample_ipndm
    from .unipc import sample_unipc

    register("ddpm", Sampler(
        sample_ddpm, schedule="respaced",
        description="Ancestral DDPM with GLIDE's learned variance."), aliases=("p_sample",))
    register("ddim", Sampler(
        sample_ddim, schedule="respaced", description="DDIM; eta=0 deterministic (default)."))
    register("plms", Sampler(
        sample_plms, schedule="respaced", clip=False, calls=_plms_calls, min_steps=3,
        description="PRK warm-up then pseudo linear multistep, as crowsonkb's GLIDE fork."))
    register("euler", Sampler(sample_euler, description="Euler on the probability-flow ODE."))
    register("euler_a", Sampler(
        sample_euler_ancestral, description="Euler ancestral."),
        aliases=("euler_ancestral",))
    register("heun", Sampler(
        sample_heun, calls_per_step=2, calls=_two_per_step_but_last,
        description="Heun's second-order method (Karras et al.)."))
    register("dpm++2m", Sampler(
        sample_dpmpp_2m, schedule=LOG_SNR, description="DPM-Solver++(2M), second-order multistep."),
        aliases=("dpm++", "dpmpp_2m"))
    register("dpm++2s_a", Sampler(
        sample_dpmpp_2s_ancestral, calls_per_step=2,
        calls=_two_per_step_but_last, description="DPM-Solver++(2S) ancestral."),
        aliases=("dpmpp_2s_a",))
    register("dpm++2m_sde", Sampler(
        sample_dpmpp_2m_sde, description="DPM-Solver++(2M) SDE."),
        aliases=("dpmpp_2m_sde",))
    register("dpm++3m", Sampler(
        sample_dpmpp_3m, schedule=LOG_SNR,
        description="DPM-Solver++(3M), third-order multistep (ODE)."),
        aliases=("dpmpp_3m",))
    register("unipc", Sampler(
        sample_unipc, schedule=LOG_SNR,
        description="UniPC-3, B(h) = e^h − 1 (bh2): predictor-corrector, "
        "one call per step."), aliases=("unipc_bh2",))
    register("unipc_bh1", Sampler(
        partial(sample_unipc, variant="bh1"), schedule=LOG_SNR,
        description="UniPC-3 with B(h) = h (bh1)."))
    register("ipndm", Sampler(
        sample_ipndm, description="iPNDM: fourth-order Adams-Bashforth, lower-order warm-up."))
    register("bespoke", Sampler(
        sample_bespoke, description="Bespoke linear solver fitted to one model (Shaul et al. "
        "2024): needs --schedule FILE from glidectl fit-steps --method bespoke."))
    register("deis", Sampler(
        sample_deis, description="DEIS ρAB: variable-step third-order Adams-Bashforth in σ."))


@hookimpl
def register_schedules(register):
    from .schedules import get_sigmas_exponential, get_sigmas_karras, get_sigmas_polyexponential
    from .tuned import get_sigmas_optimised

    register("karras", get_sigmas_karras)
    # log-SNR = −2·log σ on the VE scale, so even steps in log-SNR are even steps in log σ.
    register("exponential", get_sigmas_exponential, aliases=("logsnr",))
    register("polyexponential", get_sigmas_polyexponential)
    register("optimised", get_sigmas_optimised, aliases=("optimized",))
