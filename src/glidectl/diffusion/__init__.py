"""GLIDE's Gaussian diffusion: schedules, respacing, forward process, reverse step, losses."""

from __future__ import annotations

from .gaussian import GaussianDiffusion
from .guidance import classifier_free_guidance, guide_output
from .respace import space_timesteps
from .schedules import get_named_beta_schedule

__all__ = [
    "GaussianDiffusion",
    "classifier_free_guidance",
    "create_diffusion",
    "get_named_beta_schedule",
    "guide_output",
    "space_timesteps",
]


def create_diffusion(
    schedule: str = "squaredcos_cap_v2", steps: int = 1000, respacing: str = ""
) -> GaussianDiffusion:
    """The ``steps``-step chain of the named schedule, respaced by ``respacing`` ("" = none;
    "N", "a,b,c", "ddimN" or "fast27" as in GLIDE)."""
    return GaussianDiffusion(get_named_beta_schedule(schedule, steps)).respace(respacing)
