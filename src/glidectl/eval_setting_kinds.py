"""An eval's settings of the wrong kind or out of range, as one sentence each.

The checks run whenever :class:`glidectl.eval_settings.EvalSettings` is made: by hand, by
``settings_for`` (whose errors name its ``flags`` keys) or by ``glidectl eval`` (its flags).
Sentences name the flag; the entry points say it as their caller's keyword.
"""

from __future__ import annotations

import numbers
import os
import re
from collections.abc import Iterable
from typing import Any

from .errors import GlidectlError, got
from .ranges import FLAGS, GUIDANCE, SEED, STEPS, check

# what GLIDE's respacing takes (glidectl.diffusion.respace.space_timesteps)
RESPACING = re.compile(r"\s*(?:\d+(?:,\d+)*|ddim\d+|fast27)\s*")


def whole_number(flag: str, value: Any) -> None:
    """One sentence unless ``value`` is an int (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise GlidectlError(f"{flag} must be a whole number, got {got(value)}.")


def check_counts(n: Any, batch_size: Any, seed: Any, rerank: Any, grey: Any) -> None:
    """Images, batch size, seed and rerank: whole numbers; the seed and rerank in range;
    ``grey``: True or False."""
    for flag, value in (("--n", n), ("--batch-size", batch_size), ("--seed", seed),
                        ("--rerank", rerank)):
        whole_number(flag, value)
    check("--seed", seed, SEED)
    check("--rerank", rerank, FLAGS["--rerank"])
    if not isinstance(grey, bool):
        raise GlidectlError(f"--grey must be True or False, got {got(grey)}.")


def check_stage(stage: Any, flags: dict[str, str], field: str) -> None:
    """One stage's sampler (a name), steps (a count or a respacing string), guidance (a
    number or None) and schedule (a name, a file or None); ``flags``: each field's flag."""
    from .eval_settings import Stage

    if not isinstance(stage, Stage):
        raise GlidectlError(f"{field}= takes a glidectl.eval_settings.Stage(sampler=..., "
                            f"steps=..., guidance=..., schedule=...), got {got(stage)}.")
    if not isinstance(stage.sampler, str):
        raise GlidectlError(f"{flags['sampler']} must be a sampler's name such as 'dpm++2m', "
                            f"got {got(stage.sampler)}.")
    steps = stage.steps
    if isinstance(steps, str):
        if not RESPACING.fullmatch(steps):
            raise GlidectlError(
                f"{flags['steps']} must be a number of steps such as 25 or a respacing "
                f"string such as fast27, ddim50 or 10,10,5, got {got(steps)}.")
    elif isinstance(steps, bool) or not isinstance(steps, numbers.Integral):
        raise GlidectlError(f"{flags['steps']} must be a whole number of steps such as 25 (or "
                            f"a respacing string such as fast27), got {got(steps)}.")
    else:
        check(flags["steps"], steps, STEPS)
    guidance = stage.guidance
    if guidance is not None and (isinstance(guidance, bool) or not isinstance(
            guidance, numbers.Real)):
        raise GlidectlError(f"{flags['guidance']} must be a number (or None: no guidance), "
                            f"got {got(guidance)}.")
    check(flags["guidance"], guidance, GUIDANCE)
    if stage.schedule is not None and not isinstance(stage.schedule, str | os.PathLike):
        raise GlidectlError(f"{flags['schedule']} must be a schedule's name such as 'karras' "
                            f"or a schedule file's path, got {got(stage.schedule)}.")


def model_spec(flag: str, spec: Any, none_ok: bool = True) -> str | None:
    """A model spec as text (a path too; None when ``none_ok``: no such model)."""
    if spec is None and none_ok:
        return None
    if not isinstance(spec, str | os.PathLike):
        raise GlidectlError(f"{flag} must be a model spec (openai:base, a weights file or a "
                            f"training run folder), got {got(spec)}.")
    return os.fspath(spec)


def lora_specs(loras: Any) -> tuple[str, ...]:
    """``loras`` as a tuple of ``PATH[:SCALE]`` texts (one adapter alone: a tuple of it)."""
    if isinstance(loras, str | os.PathLike):
        return (os.fspath(loras),)
    if isinstance(loras, Iterable) and not isinstance(loras, bytes):
        loras = tuple(loras)
        if all(isinstance(x, str | os.PathLike) for x in loras):
            return tuple(os.fspath(x) for x in loras)
    raise GlidectlError("--lora takes an adapter's path (PATH[:SCALE]) or a list of them, got "
                        f"{got(loras)}.")
