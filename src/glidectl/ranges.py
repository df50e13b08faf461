"""Allowed ranges of numbers (config keys and command-line flags), checked when read.

Seeds: 0 to 2**63-1 (``SEED``); torch would silently fold larger or negative seeds onto the
same generator state (-1 and 2**64-1 draw identical noise). Where a seed of -1 means "draw a
random seed" (the web UI), ``SEED_OR_RANDOM`` allows it. Switches in the environment
(``GLIDECTL_OFFLINE=1``) read one way: :func:`switched_on`.
"""

from __future__ import annotations

import math
import numbers
import os
import re
from dataclasses import dataclass
from typing import Any

SEED_MAX = 2**63 - 1

#: A number as written on a command line: ASCII digits, a point, an exponent (nan and inf
#: too, for the range check to name). Python's int() and float() also take ``1_0`` (10) and
#: other scripts' digits, which a number typed by mistake must not become.
_PLAIN_FLOAT = re.compile(r"[+-]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
                          r"|nan|inf(?:inity)?)", re.IGNORECASE)
_PLAIN_INT = re.compile(r"[+-]?[0-9]+")


def is_finite_number(value: Any) -> bool:
    """A finite real number: an int or a float (numpy's too), not a bool, a string, a
    tensor, NaN or infinity."""
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(value))


def plain_number(text: str, kind: type = float) -> bool:
    """Whether ``text`` is a plain decimal ``kind`` (int: digits only)."""
    pattern = _PLAIN_INT if kind is int else _PLAIN_FLOAT
    return pattern.fullmatch(text.strip()) is not None


def switched_on(variable: str) -> bool:
    """Whether the environment ``variable`` is on: 1, true, yes or on in any case (0, false,
    no, off and empty are off, as in ``HF_HUB_OFFLINE``)."""
    return os.environ.get(variable, "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Range:
    """``min <= value <= max`` (or ``< below``, ``> above``); floats must also be finite."""

    min: float | None = None
    max: float | None = None
    below: float | None = None
    above: float | None = None

    def describe(self) -> str:
        if self.above is not None:
            return f"above {_num(self.above)}" + (
                f" and at most {_num(self.max)}" if self.max is not None else "")
        lo = None if self.min is None else _num(self.min)
        hi = _num(self.max) if self.max is not None else None
        if self.below is not None:
            return f"from {lo} to below {_num(self.below)}" if lo is not None \
                else f"below {_num(self.below)}"
        if lo is not None and hi is not None:
            return f"from {lo} to {hi}"
        if lo is not None:
            return f"at least {lo}"
        return f"at most {hi}" if hi is not None else "a finite number"

    def problem(self, value: Any) -> str | None:
        """None when ``value`` (a number or a list of numbers) is allowed, else why not."""
        values = value if isinstance(value, list) else [value]
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if isinstance(v, float) and not math.isfinite(v):
                return f"must be {self.describe()} (a finite number); got {v!r}"
            if ((self.min is not None and v < self.min)
                    or (self.max is not None and v > self.max)
                    or (self.below is not None and v >= self.below)
                    or (self.above is not None and v <= self.above)):
                return f"must be {self.describe()}; got {_got(v)}"
        return None


def _got(value: float) -> str:
    """``value`` as :func:`_num` writes it, or in full where that rounds it (1.000001 is
    not written "1" beside a bound of 1)."""
    text = _num(value)
    if isinstance(value, float) and text != "2**63-1" and float(text) != value:
        return repr(value)
    return text


def _num(value: float) -> str:
    if value == SEED_MAX:
        return "2**63-1"
    if isinstance(value, int) and len(digits := str(abs(value))) > 24:  # 1e308 from a form
        return f"{'-' * (value < 0)}{digits[0]}.{digits[1:3]}e+{len(digits) - 1}"
    return f"{value:g}" if isinstance(value, float) else str(value)


SEED = Range(0, SEED_MAX)
SEED_OR_RANDOM = Range(-1, SEED_MAX)
GUIDANCE = Range(0, 100)
COUNT = Range(1, 1_000_000)  # images, batch sizes
STEPS = Range(1, 10_000)  # sampler steps

#: Numeric command-line flags by name: the same range wherever a flag appears. A numeric flag
#: missing here fails tests/test_ranges.py, so every new one gets a range.
FLAGS: dict[str, Range] = {
    "--seed": SEED,
    "--guidance": GUIDANCE,
    "--upsample-guidance": GUIDANCE,
    "--up-guidance": GUIDANCE,
    "--n": COUNT,
    "--batch-size": COUNT,
    "--rerank": Range(0, 1_000_000),
    "--eta": Range(0, 1),
    "--upsample-temp": Range(0, 2),
    "--sigma-max": Range(0.001, 10_000),
    "--steps": Range(1, 10**9),  # train: optimizer steps (the flag sets train.epochs = 0)
    "--scale": Range(-10, 10),  # lora merge: adapter strength (negative subtracts it)
    "--port": Range(1, 65535),
    "--keep-models": Range(1, 100),  # ui: loaded pipelines kept
    "--grid-max": COUNT,  # eval: images grid.png shows
    "--limit": Range(1, 10**9),
    "--size": Range(8, 4096),
    "--text-ctx": Range(1, 4096),
    "--guidance-rescale": Range(0, 1),  # φ of guidance rescale
    "--dynamic-threshold": Range(50, 100),  # percentile of |x0|
    "--calls": STEPS,  # fit-steps: model calls to fit for
    "--images": COUNT,  # fit-steps: tuning images
    "--check-images": Range(0, 1_000_000),  # fit-steps: held-out images (0: no check)
    "--reference-steps": Range(10, 100_000),
    "--evals": Range(1, 100_000),  # fit-steps: L-BFGS evaluations
    "--rounds": Range(0, 1000),  # fit-steps: descent rounds
}


def check(label: str, value: Any, rng: Range) -> None:
    """Raise the one-line user error when ``value`` (named ``label``) is outside ``rng``."""
    from .errors import GlidectlError

    problem = None if value is None else rng.problem(value)
    if problem:
        raise GlidectlError(f"{label} {problem}.")


def check_seed_span(label: str, seed: Any, count: int) -> None:
    """The one-line user error when images ``seed + i`` (``i`` < ``count``) run past
    2**63-1, where the seed alone is in range (the last image's seed would be refused)."""
    from .errors import GlidectlError

    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        return  # the range check names it
    last = seed + count - 1
    if last > SEED_MAX:
        raise GlidectlError(
            f"{label} {seed} with {count} images gives the last one seed {last} (image i "
            f"takes seed + i), past 2**63-1; pass a seed of at most {SEED_MAX - count + 1}.")
