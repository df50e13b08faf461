"""What a sampler is: one function plus what the pipeline needs to know about it.

Torch-free so that plugin modules can import it at their top level.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..callables import doc_summary, takes_keyword
from ..errors import GlidectlError, got, takes

SamplerFn = Callable[..., Any]


@dataclass(frozen=True)
class Sampler:
    """A sampler function ``fn(denoiser, x, sigmas, extra=None, callback=None, **options)``.

    ``fn`` walks ``x`` (at noise level ``sigmas[0]``, variance-exploding scale ``x0 + σ·ε``)
    down ``sigmas`` (descending, usually ending in 0) and returns the result. Stochastic
    samplers also take ``noise_sampler(sigma, sigma_next) -> Tensor`` (fresh N(0, I) like x).
    """

    fn: SamplerFn
    calls_per_step: int = 1
    schedule: str = "karras"
    clip: bool = True
    description: str = ""
    calls: Callable[[int], int] | None = None
    min_steps: int = 1  # the fewest steps it can take (plms: 3)

    def model_calls(self, steps: int) -> int:
        """Model evaluations for ``steps`` steps (for progress bars)."""
        if self.calls is not None:
            return self.calls(steps)
        return steps * self.calls_per_step

    def __call__(
        self,
        denoiser: Any,
        x: Any,
        sigmas: Any,
        extra: dict[str, Any] | None = None,
        callback: Callable[[dict[str, Any]], None] | None = None,
        noise_sampler: Callable[[float, float], Any] | None = None,
        **options: Any,
    ) -> Any:
        if noise_sampler is not None and takes_keyword(self.fn, "noise_sampler"):
            options["noise_sampler"] = noise_sampler
        return self.fn(denoiser, x, sigmas, extra, callback, **options)

    def accepts(self, option: str) -> bool:
        """Whether ``fn`` takes this keyword option (e.g. ``eta``)."""
        return takes_keyword(self.fn, option)

    def default(self, option: str) -> Any:
        """The value ``fn`` takes for ``option`` when none is passed (None: none it names)."""
        try:
            found = inspect.signature(self.fn).parameters.get(option)
        except (TypeError, ValueError):
            return None
        return None if found is None or found.default is inspect.Parameter.empty \
            else found.default

    @property
    def stochastic(self) -> bool:
        """Whether it draws fresh noise at each step as called by default (ddim takes a
        noise sampler but η 0 unless asked)."""
        return self.accepts("noise_sampler") and self.default("eta") != 0


def _whole(value: Any) -> bool:
    """Whether ``value`` is a whole number >= 1 (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def field_problem(sampler: Sampler) -> str | None:
    """What is wrong with a :class:`Sampler`'s fields (``Sampler(schedule=None)``,
    ``min_steps="3"``: errors deep in sampling otherwise), else None."""
    checks = (("fn", callable(sampler.fn), "a function"),
              ("calls_per_step", _whole(sampler.calls_per_step), "a whole number >= 1"),
              ("min_steps", _whole(sampler.min_steps), "a whole number >= 1"),
              ("schedule", isinstance(sampler.schedule, str), "a schedule name"),
              ("clip", sampler.clip in (True, False), "True or False"),
              ("calls", sampler.calls is None or callable(sampler.calls),
               "None or a function calls(steps) -> model calls"))
    for field, ok, wanted in checks:
        if not ok:
            return f"Sampler({field}=...) takes {wanted}, got {got(getattr(sampler, field))}"
    return None


def as_sampler(obj: Any) -> Sampler:
    """A registered object as a :class:`Sampler` (a bare function means deterministic, 1 call);
    a Sampler with fields of the wrong kind is a TypeError saying which."""
    if isinstance(obj, Sampler):
        if problem := field_problem(obj):
            raise TypeError(problem)
        return obj
    if callable(obj):
        return Sampler(
            fn=obj,
            calls_per_step=int(getattr(obj, "calls_per_step", 1)),
            description=doc_summary(obj),
        )
    raise TypeError(f"a sampler must be a Sampler or a function, got {type(obj).__name__}")


def model_calls(sampler: str | Sampler, steps: int) -> int:
    """Model evaluations of ``steps`` steps of a sampler (by registered name or spec): one
    per step for most, about two for heun and dpm++2s_a (heun's 10 steps are 19 calls).
    ``steps`` below 1, or below the sampler's fewest (plms: 3), is one sentence."""
    import numbers

    name = sampler if isinstance(sampler, str) else "given"
    if isinstance(sampler, str):
        from .. import plugins

        sampler = plugins.samplers().get(sampler)
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise takes("model_calls(): steps=", "a whole number of steps >= 1", steps)
    spec = as_sampler(sampler)
    if steps < spec.min_steps:
        raise GlidectlError(f"model_calls(): the {name} sampler needs at least "
                            f"{spec.min_steps} steps, got steps={int(steps)}.")
    return spec.model_calls(int(steps))
