"""Samplers: k-diffusion-style functions of (denoiser, x, sigmas, extra, callback).

Writing one: define ``fn(denoiser, x, sigmas, extra=None, callback=None, noise_sampler=None)``
that walks x (VE scale, x0 + σ·ε) down ``sigmas`` calling ``denoiser(x, sigma)`` → x0, and
register ``Sampler(fn)`` from a ``register_samplers`` hook.
This package imports torch only when one of its torch-backed names is first used.
"""

from __future__ import annotations

import importlib
from typing import Any

from .spec import Sampler, as_sampler, model_calls

_LAZY = {
    "GlideDenoiser": "denoiser", "Denoiser": "denoiser", "to_d": "denoiser",
    "alpha_bar": "denoiser", "GaussianDenoiser": "analytic",
    "get_ancestral_step": "euler", "sample_euler": "euler",
    "sample_euler_ancestral": "euler", "sample_heun": "euler",
    "sample_dpmpp_2m": "dpm", "sample_dpmpp_2s_ancestral": "dpm", "sample_dpmpp_2m_sde": "dpm",
    "sample_ddpm": "discrete", "sample_ddim": "discrete", "sample_plms": "discrete",
    "sample_dpmpp_3m": "dpm", "sample_unipc": "unipc", "sample_ipndm": "multistep",
    "sample_deis": "multistep", "GaussianMixtureDenoiser": "analytic",
    "get_sigmas": "schedules", "get_sigmas_polyexponential": "schedules",
    "build_sigmas": "schedules", "get_sigmas_karras": "schedules",
    "get_sigmas_exponential": "schedules", "get_sigmas_respaced": "schedules",
    "sigmas_from_alphas_cumprod": "schedules", "per_image_noise_sampler": "noise",
}

__all__ = ["Sampler", "as_sampler", "model_calls", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
