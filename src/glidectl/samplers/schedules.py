"""Step schedules: the descending noise levels σ a sampler walks, each ending in σ = 0.

σ_t = √((1 − ᾱ_t)/ᾱ_t) on the model's own 1000-step table. The cosine schedule's last σ is
about 20,000 (71 ten steps earlier), so σ-space schedules clamp σ_max (default 80).
"""

from __future__ import annotations

import math
import numbers
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import GlidectlError, PluginError, takes
from ..ranges import is_finite_number, plain_number
from ..sampling_defaults import SIGMA_MAX

DEFAULT_SIGMA_MAX = SIGMA_MAX
#: The most steps a schedule is asked for (8 MB of σ's): ten times fit-steps' longest
#: reference; ``get_sigmas(..., 10**9, ...)`` would fill memory before any check.
MAX_STEPS = 1_000_000


def sigmas_from_alphas_cumprod(alphas_cumprod: Sequence[float] | np.ndarray) -> np.ndarray:
    """σ_t = √((1 − ᾱ_t)/ᾱ_t) for every original timestep t (ascending in t), float64."""
    ac = np.asarray(alphas_cumprod, dtype=np.float64)
    return np.sqrt((1.0 - ac) / ac)


def append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def in_range(sigmas: torch.Tensor, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """``sigmas`` clamped to [σ_min, σ_max], then 0: a power or exp of the ends can land an
    ulp outside them (polyexponential's σ_0 was 80.00000000000004 for σ_max 80, outside a
    guidance interval ending at 80). σ's float64 lost (0, infinite, NaN) stay, for
    :func:`get_sigmas` to name."""
    held = torch.isfinite(sigmas) & (sigmas > 0)
    return append_zero(torch.where(held, sigmas.clamp(sigma_min, sigma_max), sigmas))


def get_sigmas_karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022): σ_i = (σ_max^(1/ρ) + i/(n−1)·(σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ."""
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    min_inv_rho, max_inv_rho = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return in_range((max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho, sigma_min,
                    sigma_max)


def get_sigmas_exponential(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """σ evenly spaced in log σ from σ_max down to σ_min."""
    log_sigmas = torch.linspace(math.log(sigma_max), math.log(sigma_min), n, dtype=torch.float64)
    return in_range(log_sigmas.exp(), sigma_min, sigma_max)


def get_sigmas_polyexponential(n: int, sigma_min: float, sigma_max: float, rho: float = 1.0
                               ) -> torch.Tensor:
    """k-diffusion's polyexponential: log σ falls along (1 − i/(n−1))^ρ (ρ = 1: exponential;
    ρ > 1 spends more steps at low σ)."""
    ramp = torch.linspace(1, 0, n, dtype=torch.float64) ** rho
    log_min, log_max = math.log(sigma_min), math.log(sigma_max)
    return in_range((ramp * (log_max - log_min) + log_min).exp(), sigma_min, sigma_max)


def get_sigmas_respaced(table: np.ndarray, timesteps: Sequence[int]) -> torch.Tensor:
    """GLIDE's respaced timesteps (e.g. from ``space_timesteps``) as σ, highest first."""
    ts = sorted(int(t) for t in timesteps)[::-1]
    return append_zero(torch.as_tensor(table[ts], dtype=torch.float64))


def respaced_timesteps(num_timesteps: int, section: str) -> list[int]:
    """The kept original timesteps of a GLIDE respacing string ("10", "ddim25", "fast27")."""
    from ..diffusion.respace import space_timesteps

    try:
        return sorted(space_timesteps(num_timesteps, section))
    except (ValueError, ZeroDivisionError) as exc:
        raise GlidectlError(
            f"Cannot respace {num_timesteps} steps as {section!r} ({exc}); use a step count "
            "such as 25, a list like '10,10,5', 'ddim50' or 'fast27'."
        ) from exc


def schedule_fn(schedule: str) -> Callable[..., torch.Tensor]:
    """The function behind a schedule name: a schedule file (``*.json``) or a registered
    schedule (an unknown name: one line with the nearest match)."""
    from .. import plugins
    from .tuned import get_sigmas_from_file, is_schedule_file

    if not is_schedule_file(schedule):
        return plugins.schedules().get(schedule)

    def from_file(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
        return get_sigmas_from_file(schedule, n, sigma_min, sigma_max)
    return from_file


def get_sigmas(schedule: str | os.PathLike, n: int, sigma_min: float, sigma_max: float,
               **options: Any) -> torch.Tensor:
    """``n`` descending σ's from ``sigma_max`` to ``sigma_min`` of a registered schedule
    (or a schedule file, ``*.json``), then 0 (float64). ``options`` (e.g. ``rho``) go to
    schedules that take them."""
    from ..callables import parameter_names

    if isinstance(schedule, os.PathLike):  # a schedule file as a pathlib.Path
        schedule = os.fspath(schedule)
    if not isinstance(schedule, str):
        raise takes("get_sigmas()", "a schedule name (karras, exponential, …) or a schedule "
                    "file's path", schedule)
    bounds = {"sigma_min": sigma_min, "sigma_max": sigma_max}
    for keyword, value in {**bounds, **{k: v for k, v in options.items() if k == "rho"}}.items():
        if not is_finite_number(value) or keyword == "rho" and value <= 0:
            raise takes(f"get_sigmas(): {keyword}=", "a finite number" + " above 0" * (
                keyword == "rho"), value)
    if schedule == "respaced":
        raise GlidectlError("The respaced schedule is GLIDE's own timesteps and needs a model's "
                            "σ table: use build_sigmas('respaced', steps, table).")
    fn = schedule_fn(schedule)
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise GlidectlError(f"The {schedule} schedule needs a whole number of steps >= 1, "
                            f"got {n!r}.")
    n = int(n)  # numpy's integers too
    if n > MAX_STEPS:
        raise GlidectlError(f"The {schedule} schedule takes at most {MAX_STEPS} steps, got {n}; "
                            "pass fewer steps.")
    if not 0 < sigma_min < sigma_max:
        raise GlidectlError(f"The {schedule} schedule needs 0 < sigma_min < sigma_max, got "
                            f"{sigma_min!r} and {sigma_max!r}.")
    accepted = parameter_names(fn)
    if unknown := [k for k in options if k not in accepted and k != "rho"]:  # rho: any
        import inspect

        own = list(inspect.signature(fn).parameters)[3:]  # after (n, sigma_min, sigma_max)
        takes_ = ", ".join(k for k in own if k in accepted) or "none"
        raise GlidectlError(f"get_sigmas(): the {schedule} schedule takes no option "
                            f"{unknown[0]!r} (its options: {takes_}).")
    given = {k: v for k, v in options.items() if k in accepted}
    try:
        sigmas = torch.as_tensor(fn(n, sigma_min, sigma_max, **given),
                                 dtype=torch.float64).flatten()
    except (OverflowError, ZeroDivisionError) as exc:  # karras' σ^(1/ρ) at ρ=1e-300
        raise _options_fault(schedule, fn, given, n, "overflow float64") from exc
    wrong = (f"{len(sigmas)} values" if len(sigmas) != n + 1
             else f"{float(sigmas[-1]):g} last" if sigmas[-1] != 0
             else "σ's that do not descend" if not torch.all(sigmas[:-1].diff() < 0) else None)
    shown = ", ".join(f"{float(v):g}" for v in sigmas[:6]) + (", …" if len(sigmas) > 6 else "")
    held = torch.all(sigmas[:-1] > 0) and torch.isfinite(sigmas).all()
    if given and (wrong or not held):  # ρ=1e300: the caller's option, not the schedule
        wrong = wrong or "σ's float64 cannot hold apart"
        raise _options_fault(schedule, fn, given, n, f"give {wrong} ([{shown}])")
    if not wrong and not held:
        last = ", ".join(f"{float(v):g}" for v in sigmas[-4:])  # where float64 ran out
        raise GlidectlError(f"The {schedule} schedule from σ {sigma_max:g} down to {sigma_min:g}"
                            f" in {n} steps ends in σ's float64 cannot hold apart (…, {last}): "
                            "the range is too wide; give a smaller sigma_max or larger "
                            "sigma_min.")
    if wrong:
        raise PluginError(f"Schedule {schedule!r} must return {n} descending σ's followed by "
                          f"0, got {wrong} ([{shown}]).")
    return sigmas


def _options_fault(schedule: str, fn: Callable[..., Any], given: dict[str, Any], n: int,
                   what: str) -> GlidectlError:
    """The sentence for a schedule whose σ's fail with the options passed (``rho=1e-300``):
    names them and their defaults, not the schedule, as the fault."""
    import inspect

    params = inspect.signature(fn).parameters
    said = ", ".join(f"{k}={v!r}" for k, v in given.items())
    defaults = ", ".join(f"{k}={params[k].default!r}" for k in given
                         if k in params and params[k].default is not inspect.Parameter.empty)
    return GlidectlError(f"get_sigmas(): the {schedule} schedule with {said} in {n} steps "
                         f"would {what}; pass options nearer "
                         f"{'its defaults, ' + defaults if defaults else 'their usual values'}.")


def check_schedule_name(schedule: str) -> None:
    """One line with the nearest match unless ``schedule`` is ``respaced``, a registered
    schedule or a schedule file's name (``*.json``; the file itself is not read)."""
    if schedule == "respaced":
        return
    try:
        schedule_fn(schedule)
    except PluginError:  # a plugin's register_schedules failed: its own line, no list
        raise
    except GlidectlError:  # … and the two kinds of schedule that are not registered
        from .. import plugins

        raise GlidectlError(plugins.schedules().unknown_message(
            schedule, also=", respaced (GLIDE's own timesteps), or a schedule file FILE.json "
            "from glidectl fit-steps")) from None


def build_sigmas(
    schedule: str | os.PathLike,
    steps: int | str,
    table: np.ndarray,
    *,
    sigma_max: float | None = DEFAULT_SIGMA_MAX,
    sigma_min: float | None = None,
    rho: float | None = None,
) -> torch.Tensor:
    """The σ sequence for ``steps`` steps of a named schedule over a model's σ table.

    ``respaced`` keeps GLIDE's own timesteps (``steps`` may be any respacing string) and
    ignores ``sigma_max``; every other schedule (registered, or a ``*.json`` file) runs
    from min(σ_max, table max) down to σ_min (default: the table's smallest σ, that of
    t = 0).
    """
    if isinstance(schedule, os.PathLike):  # a schedule file as a pathlib.Path
        schedule = os.fspath(schedule)
    if not isinstance(schedule, str):
        raise takes("build_sigmas()", "a schedule name (karras, exponential, respaced, …) or a "
                    "schedule file's path", schedule)
    for keyword, value in (("sigma_max", sigma_max), ("sigma_min", sigma_min)):
        if value is not None and not is_finite_number(value):
            raise takes(f"build_sigmas(): {keyword}=", "a finite number, or None for the "
                        "model's own", value)
    if schedule == "respaced":
        return get_sigmas_respaced(table, respaced_timesteps(len(table), str(steps)))
    check_schedule_name(schedule)
    if not plain_number(str(steps), int) or int(steps) < 1:  # not int()'s 1_0, ٣ or ²
        numeric = re.fullmatch(r"[+-]?\d*\.?\d+(e[+-]?\d+)?", str(steps).strip(), re.I) is not None
        try:
            respacing = not numeric and bool(respaced_timesteps(len(table), str(steps)))
        except GlidectlError:  # a word that is no respacing string either
            respacing = False
        hint = "" if numeric else (
            f"; a respacing string such as {steps!r} needs --schedule respaced (with a "
            "ddpm/ddim-style sampler), or pass a number of steps such as 27" if respacing else
            "; pass a number of steps such as 25 (or a respacing string such as fast27 with "
            "--schedule respaced)")
        raise GlidectlError(
            f"The {schedule} schedule needs a whole number of steps >= 1, got {steps!r}{hint}."
        )
    hi = float(table[-1]) if sigma_max is None else min(float(sigma_max), float(table[-1]))
    lo = float(table[0]) if sigma_min is None else max(float(sigma_min), float(table[0]))
    if hi <= lo and sigma_min is not None and lo > float(table[0]):  # the caller's own σ_min
        raise GlidectlError(f"build_sigmas(): sigma_min={sigma_min:g} is not below sigma_max "
                            f"{hi:g} (the smaller of sigma_max= and this model's largest σ); "
                            "pass a smaller sigma_min.")
    if hi <= lo:
        raise GlidectlError(f"sigma_max (--sigma-max) {sigma_max:g} is not above this model's "
                            f"smallest σ, {lo:.4g}; pass a larger one (default "
                            f"{DEFAULT_SIGMA_MAX:g}).")
    return get_sigmas(schedule, int(steps), lo, hi, **({} if rho is None else {"rho": rho}))
