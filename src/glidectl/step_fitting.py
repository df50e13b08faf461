"""Fit sampling steps to one model's own ODE, for ``glidectl sample --schedule FILE``.

The target is the model's guided probability-flow ODE solved closely (``reference_steps``
dpm++3m steps on Karras σ's) from tuning noise and prompts, the ODE ``glidectl sample``
runs (its denoiser and start, :mod:`.sampling`): x0 clipped as the fitted sampler clips it,
and with grey every x0 prediction projected onto grey, as ``sample --grey`` runs it.
Methods: ``descent`` moves the log σ's of one sampler by coordinate descent
(:func:`.samplers.search.descend_sigmas`, from exponential σ's, the last σ free above the
table's smallest) to minimise that sampler's RMS distance to the reference; ``gits`` runs
GITS dynamic programming on the reference trajectory without sampling
(:func:`.samplers.search.search_sigmas`); ``bespoke`` runs the descent, then fits a bespoke
solver's coefficients and σ's by L-BFGS through the model
(:func:`.samplers.bespoke.fit_coefficients`). Results go to a schedule file
(:mod:`.samplers.tuned`), with each count's errors on held-out noise beside DDIM-50's (a fit
is scored on the samples it was fitted to, which flatters it).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from . import plugins
from .errors import GlidectlError, WriteError, canonical_word
from .ranges import is_finite_number
from .samplers.bespoke import (
    Rows,
    fit_coefficients,
    linear_coefficients,
    sample_bespoke,
    still_falling,
)
from .samplers.denoiser import GlideDenoiser
from .samplers.schedules import build_sigmas
from .samplers.search import descend_sigmas, search_sigmas
from .samplers.spec import as_sampler
from .samplers.tuned import has_coefficients, read_coefficients, write_schedule_file
from .sampling_defaults import BASE_GUIDANCE

METHODS = ("descent", "gits", "bespoke")
Log = Callable[[str], None]


def model_guidance(spec: str, given: float | None) -> float:
    """``given``, else the guidance the model's checkpoint recommends, else GLIDE's 3."""
    from .glide.loading import resolve_spec
    from .pipeline import recommended_settings

    if given is not None:
        return given
    return float(recommended_settings(resolve_spec(spec)).get("guidance") or BASE_GUIDANCE)


def model_grey(spec: str, given: bool | None) -> bool:
    """``given``, else whether the model's checkpoint recommends grey sampling (it was
    trained on greyscale data), as ``glidectl sample`` decides."""
    from .glide.loading import resolve_spec
    from .pipeline import recommended_settings

    if given is not None:
        return given
    return recommended_settings(resolve_spec(spec)).get("grey") is True


def require_base(model: torch.nn.Module, spec: str, who: str = "fit-steps fits") -> None:
    """One sentence unless ``model`` is a text-to-image base model: the ODE fitted (and the
    step benchmarks score) takes no low-res or inpaint image. ``who`` starts it."""
    opts = model.options
    if opts.super_res or opts.inpaint:
        raise GlidectlError(f"{who} text-to-image base models, not {opts.kind} models like "
                            f"{spec!r}; pass a base model.")


def guided_denoiser(model: torch.nn.Module, prompts: list[str], guidance: float,
                    grey: bool = False, sampler: str = "unipc",
                    vocab_dir: str | None = None) -> GlideDenoiser:
    """The denoiser ``sample`` builds for ``sampler`` (:func:`.sampling.stage_denoiser`):
    text encoded once (a GPT-2 model's with the vocabulary in ``vocab_dir``, else the
    default one), [cond, uncond] rows, x0 clipped as that sampler clips it; ``grey``
    projects each x0 prediction onto grey images."""
    from .sampling import StageOptions, stage_denoiser, tokenizer_for

    options = StageOptions(sampler=sampler, guidance=guidance, grey=grey)
    return stage_denoiser(model, prompts, tokenizer_for(model, vocab_dir), options)


def steps_for_calls(sampler: str, calls: int) -> int | None:
    """Steps whose model calls equal ``calls`` (None if the sampler cannot hit it)."""
    spec = plugins.samplers().get(sampler)
    for steps in range(1, calls + 1):
        if spec.model_calls(steps) == calls:
            return steps
    return None


@dataclass
class Target:
    """Noise and the reference solution from it (and its trajectory, for GITS): the tuning
    target of a fit, or the held-out one it is checked on."""

    denoiser: GlideDenoiser
    noise: torch.Tensor  # unit-variance starting noise, one row per image
    grid: torch.Tensor  # the reference's σ's
    ref: torch.Tensor
    xs: list[torch.Tensor] = field(default_factory=list)
    ds: list[torch.Tensor] = field(default_factory=list)
    seed: int = 0  # of the noise

    def start(self, sigmas: torch.Tensor) -> torch.Tensor:
        """x at ``sigmas[0]`` from the noise, as ``sample`` starts."""
        from .sampling import start_x

        return start_x(self.noise, sigmas)

    def sample(self, sampler: str, sigmas: torch.Tensor, rows: Rows | None = None
               ) -> torch.Tensor:
        """``sampler`` on these σ's from the noise (the bespoke solver when ``rows``)."""
        if rows is not None:
            return sample_bespoke(self.denoiser, self.start(sigmas), sigmas, coefficients=rows)
        return plugins.samplers().get(sampler)(self.denoiser, self.start(sigmas), sigmas)

    def rms(self, sampler: str, sigmas: torch.Tensor) -> float:
        return (self.sample(sampler, sigmas) - self.ref).pow(2).mean().sqrt().item()

    @cached_property
    def ddim50(self) -> dict[str, float]:
        """DDIM with 50 Karras steps: the baseline of the held-out check."""
        with torch.no_grad():
            return errors(self.sample("ddim", build_sigmas("karras", 50, self.denoiser.sigmas)),
                          self.ref)

    def check(self, sampler: str, sigmas: torch.Tensor, rows: Rows | None = None
              ) -> dict[str, float]:
        """The fitted solver's :func:`errors` from this (held-out) noise, with DDIM-50's
        means and the ratio of the two (< 1: more accurate than DDIM-50)."""
        with torch.no_grad():
            found = errors(self.sample(sampler, sigmas, rows), self.ref)
        base = self.ddim50
        return {"images": len(self.noise), "noise_seed": self.seed, **found,
                "ddim50_mean": base["mean"], "ddim50_rms": base["rms"],
                "vs_ddim50": found["mean"] / base["mean"]}


def errors(out: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """Distances of samples to their references: the RMS over all, and the mean (the measure
    quoted), median (of an even count, the mean of the middle two, as numpy's) and worst
    of each sample's own RMSE."""
    per_sample = (out - ref).reshape(len(out), -1).pow(2).mean(1)
    own = per_sample.sqrt()
    return {"rms": per_sample.mean().sqrt().item(), "mean": own.mean().item(),
            "median": own.double().quantile(0.5).item(), "worst": own.max().item()}


@torch.no_grad()
def reference(model: torch.nn.Module, prompts: list[str], guidance: float, seed: int,
              steps: int = 500, trajectory: bool = False, grey: bool = False,
              sampler: str = "unipc", vocab_dir: str | None = None) -> Target:
    """The guided ODE ``sample`` runs with ``sampler`` (the one the steps are fitted for:
    its start, and x0 clipped as it clips), solved by ``steps`` dpm++3m Karras steps from
    noise ``seed`` (with ``grey``, the ODE of grey sampling: x0 projected onto grey;
    ``vocab_dir``: a GPT-2 model's vocabulary folder, as ``sample --vocab-dir``)."""
    from .sampling import model_device, start_x

    prompts = _prompt_list(prompts)
    if not (is_finite_number(guidance) and guidance >= 0):
        raise GlidectlError(f"reference(): guidance must be a finite number >= 0, got "
                            f"{guidance!r:.40}.")
    den = guided_denoiser(model, prompts, guidance, grey, sampler, vocab_dir)
    size = model.options.image_size
    noise = torch.randn(len(prompts), 3, size, size,
                        generator=torch.Generator().manual_seed(seed)).to(model_device(model))
    grid = build_sigmas("karras", steps, den.sigmas)
    xs: list[torch.Tensor] = []
    ds: list[torch.Tensor] = []
    keep = (lambda s: (xs.append(s["x"]), ds.append(s["denoised"]))) if trajectory else None
    ref = plugins.samplers().get("dpm++3m")(den, start_x(noise, grid), grid, callback=keep)
    return Target(den, noise, grid, ref, xs, ds, seed)


def _prompt_list(prompts: Any) -> list[str]:
    """``prompts`` as a list of prompts (a string is one prompt, not its characters)."""
    if isinstance(prompts, str):
        return [prompts]
    if not (isinstance(prompts, list | tuple) and prompts
            and all(isinstance(p, str) for p in prompts)):
        raise GlidectlError(f"The prompts to fit on must be a prompt or a list of prompts, got "
                            f"{prompts!r:.60}.")
    return list(prompts)


def gits_sampler(sampler: str, calls: list[int]) -> str:
    """The sampler GITS σ's for ``calls`` are sampled and checked with: ``sampler`` where it
    makes one model call per step at every count (GITS picks one σ per call), else unipc
    (heun on 5 GITS σ's makes 9 calls; fit-steps' ``sample with:`` line names unipc)."""
    spec = plugins.samplers().get(sampler)
    return sampler if all(spec.model_calls(n) == n for n in calls) else "unipc"


def gits_nodes(reference_steps: int, every: int = 2) -> int:
    """How many σ's of a ``reference_steps``-step reference GITS picks its steps among
    (every ``every``-th and the last: :func:`fit_calls`)."""
    return len({*range(0, reference_steps, every), reference_steps - 1})


def fit_words(method: str, sampler: str) -> tuple[str, str]:
    """``method`` and ``sampler`` as their lower-case words (``BESPOKE`` → ``bespoke``), which
    the schedule file records; others as given, for :func:`check_method` to refuse."""
    return canonical_word(method, METHODS), canonical_word(sampler, plugins.samplers())


def draws_noise(sampler: str) -> bool:
    """Whether ``sampler`` draws fresh noise at each step as fit-steps calls it. glidectl's
    own say so by their signature; a plugin's that takes ``noise_sampler`` (the README's
    signature, deterministic or not) is run once on a stand-in problem (x0 = 0, 3 steps) to
    see whether it asks for noise; one that fails there is left to fail in the fit itself."""
    entry = plugins.samplers().entry(sampler)
    spec = as_sampler(entry.obj)
    if not spec.stochastic or entry.plugin in plugins.DEFAULT_PLUGINS:
        return spec.stochastic
    asked = []

    def noise(sigma: Any, sigma_next: Any) -> torch.Tensor:
        asked.append(sigma)
        return torch.zeros(1, 3, 8, 8)

    try:
        spec(lambda x, sigma, **_: torch.zeros_like(x), torch.ones(1, 3, 8, 8),
             torch.tensor([10.0, 1.0, 0.1, 0.0], dtype=torch.float64), noise_sampler=noise)
    except (Exception, SystemExit):  # its error is the fit's to report, with the model
        pass
    return bool(asked)


def check_method(method: str, sampler: str, calls: list[int],
                 reference_steps: int | None = None, start: str | Path | None = None
                 ) -> tuple[str, str]:
    """One sentence unless ``sampler`` can be fitted by ``method`` at every call count (for
    gits, on a reference of ``reference_steps`` steps, when given; from no ``start`` file);
    else the two as :func:`fit_words` gives them."""
    method, sampler = fit_words(method, sampler)
    if method not in METHODS:
        raise GlidectlError(f"Unknown fitting method {method!r}; use {', '.join(METHODS)}.")
    if method == "gits" and start:  # GITS ignores σ's to start from
        raise GlidectlError("--method gits searches the reference's own path and takes no "
                            "--start; drop --start, or refit with --method descent or bespoke.")
    spec = as_sampler(plugins.samplers().get(sampler))  # unknown: one line, nearest name
    if method != "gits" and draws_noise(sampler):
        raise GlidectlError(f"{sampler} draws fresh noise at each step, so its steps cannot be "
                            "fitted to the model's ODE (each fit would chase other noise); "
                            "fit a deterministic sampler: unipc, dpm++2m, dpm++3m, ipndm, "
                            "deis, ddim, euler or heun.")
    if spec.accepts("coefficients"):
        raise GlidectlError(f"{sampler} runs fitted coefficients and is not itself fitted "
                            "from; fit it with --method bespoke --sampler unipc (the sampler "
                            "its fit starts from).")
    for n in calls:
        if n < 1:
            raise GlidectlError(f"--calls must be at least 1, got {n}.")
        if method == "bespoke" and spec.model_calls(n) != n:
            raise GlidectlError(f"--method bespoke starts from a sampler with one model call "
                                f"per step, and {sampler} makes more; use unipc, dpm++2m, "
                                "dpm++3m, ipndm or deis.")
        if method != "gits" and steps_for_calls(sampler, n) is None:
            raise GlidectlError(f"{sampler} cannot make exactly {n} model calls; pick another "
                                "--calls value or another --sampler.")
        if method == "gits" and reference_steps is not None and \
                n > (most := gits_nodes(reference_steps)):
            raise GlidectlError(f"--method gits picks its {n} steps among {most} σ's of the "
                                f"{reference_steps}-step reference, too few; pass "
                                f"--reference-steps {2 * n} or more, or fewer --calls.")
    return method, sampler


def fit_calls(target: Target, calls: int, method: str, sampler: str, *, rounds: int = 10,
              evals: int = 150, fixed_sigmas: bool = False, every: int = 2,
              start: str | None = None, log: Log = print) -> tuple[int, torch.Tensor,
                                                                   Rows | None]:
    """Steps, σ's (then 0) and bespoke rows (None for other methods) for one call count."""
    den = target.denoiser
    if method == "gits":  # steps = calls for any one-call sampler; coarser grid: faster DP
        keep = sorted({*range(0, len(target.xs), every), len(target.xs) - 1})
        sigmas = search_sigmas(target.grid[keep], torch.stack(target.xs)[keep],
                               torch.stack(target.ds)[keep], target.ref, calls)
        return calls, sigmas, None
    steps = steps_for_calls(sampler, calls)
    with torch.no_grad():
        if start and method == "descent":  # the descent goes on from the file's σ's
            first = build_sigmas(start, steps, den.sigmas)
            sigmas, value = descend_sigmas(lambda s: target.rms(sampler, s), first,
                                           sigma_floor=den.sigma_min, rounds=rounds)
            log(f"{calls} calls: tuning RMS {target.rms(sampler, first):.5f} "
                f"({_start_name(start, steps)}) -> {value:.5f}")
        elif start:  # an earlier file's σ's (and its solver) instead of a descent
            sigmas = build_sigmas(start, steps, den.sigmas)
            value = target.rms(sampler, sigmas)
            log(f"{calls} calls: tuning RMS {value:.5f} ({_start_name(start, steps)})")
        else:
            first = build_sigmas("exponential", steps, den.sigmas)
            sigmas, value = descend_sigmas(lambda s: target.rms(sampler, s), first,
                                           sigma_floor=den.sigma_min, rounds=rounds)
            log(f"{calls} calls: tuning RMS {target.rms(sampler, first):.5f} (exponential) "
                f"-> {value:.5f}")
    if method != "bespoke":
        return steps, sigmas, None
    began = time.perf_counter()
    wants = {p: p.requires_grad for p in den.model.parameters()}
    den.model.requires_grad_(False)  # the fit needs gradients to x and σ only
    try:
        return _fit_bespoke(target, calls, steps, sigmas, value, sampler, start, evals,
                            fixed_sigmas, log, began)
    finally:  # the caller's model as it was given (a notebook may train it next)
        for p, wanted in wants.items():
            p.requires_grad_(wanted)


def _start_name(start: str, steps: int) -> str:
    """How a log line names ``start``'s σ's for ``steps`` steps: the file, or, where it
    holds none for that count, the count they are interpolated from."""
    from .samplers.tuned import nearest_count, read_schedule_file

    counts = read_schedule_file(start)
    if steps in counts:
        return start
    return f"{start}'s {nearest_count(counts, steps)}-step σ's, interpolated to {steps}"


def _fit_bespoke(target: Target, calls: int, steps: int, sigmas: torch.Tensor, value: float,
                 sampler: str, start: str | None, evals: int, fixed_sigmas: bool, log: Log,
                 began: float) -> tuple[int, torch.Tensor, Rows]:
    """:func:`fit_calls`'s bespoke coefficients (and σ's) from ``sampler``'s on ``sigmas``
    (``value``: their tuning RMS)."""
    den = target.denoiser
    rows = linear_coefficients(plugins.samplers().get(sampler), sigmas)
    if start and has_coefficients(start, steps):  # resume the start file's fit for this count
        rows = read_coefficients(start, steps, sigmas)
    trace: list[float] = []
    rows, sigmas, fitted = fit_coefficients(
        den, target.start(sigmas), sigmas, target.ref, rows, evals=evals,
        move_sigmas=not fixed_sigmas, sigma_floor=den.sigma_min, log=log, trace=trace)
    if not (math.isfinite(fitted) and all(math.isfinite(c) for r in rows for c in r)):
        raise GlidectlError(f"The bespoke fit for {calls} calls diverged (tuning RMS "
                            f"{fitted}); nothing was written for it: refit without --start, "
                            "or with fewer --evals.")
    if start and has_coefficients(start, steps) and trace:  # from the start's own solver
        value = trace[0]
    log(f"{calls} calls: bespoke tuning RMS {value:.5f} -> {fitted:.5f} "
        f"({time.perf_counter() - began:.0f} s)")
    falling = still_falling(trace, evals)
    if falling is not None and falling[0] >= 0.001:  # 0.1 %
        log(f"{calls} calls: the fit stopped at its limit of {evals} evaluations with the "
            f"tuning RMS still falling ({falling[0] * 100:.1f} % in the last {falling[1]}); "
            "--start FILE (the file written) --evals N with the same prompts, --images and "
            "--seed and another --out continues it.")
    return steps, sigmas, rows


def _start_if_better(held_out: Target, start: str | None, steps: int,
                     refit: dict[str, float]) -> tuple[torch.Tensor, Rows, dict] | None:
    """The ``start`` file's bespoke solver for ``steps`` (σ's, rows and its held-out check)
    when it errs less on the held-out images than its refit (``refit``: its check), else
    None: a refit fits its tuning images closer and can generalise worse."""
    if not start or not has_coefficients(start, steps):
        return None
    sigmas = build_sigmas(start, steps, held_out.denoiser.sigmas)
    rows = read_coefficients(start, steps, sigmas)
    check = held_out.check("bespoke", sigmas, rows)
    if check["mean"] <= refit["mean"]:
        return sigmas, rows, {**check, "kept_start": True, "refit_mean": refit["mean"]}
    return None


OVERFIT = 1.25  # held-out mean over tuning mean above which a bespoke fit is called overfitted


def overfit_hint(target: Target, sigmas: torch.Tensor, rows: Rows, check: dict[str, float],
                 calls: int, log: Log) -> None:
    """One line when a bespoke solver errs ``OVERFIT``× more on the held-out noise
    (``check``) than on its own tuning images: it learned its tuning noise (on a quickstart
    model trained at lr 5e-4, the same captions from new noise erred 1.5× more), and a refit
    on more images carries further (24 → 96 took that model's 15-call solver from 0.131× to
    0.100× DDIM-50 held out; benchmarks/MEASUREMENTS.md)."""
    with torch.no_grad():
        tuned = errors(target.sample("bespoke", sigmas, rows), target.ref)["mean"]
    if tuned > 0 and check["mean"] > OVERFIT * tuned:
        log(f"{calls} calls: the solver errs {check['mean'] / tuned:.2f}x more on the held-out "
            f"images than on its {len(target.noise)} tuning images (mean {check['mean']:.5f} "
            f"against {tuned:.5f}): it fits its tuning noise; --start FILE (the file written) "
            f"--images {4 * len(target.noise)} and another --out refit it on more images for a "
            "solver that carries to new noise.")


def _log_sigmas(steps: int, sigmas: torch.Tensor, log: Log) -> None:
    """The σ's a step count's fit keeps, in one line (``25: 80, 41.2, …``)."""
    log(f"{steps}: {', '.join(f'{float(v):.4g}' for v in sigmas[:-1])}")


def fit_steps(target: Target, calls: list[int], method: str, sampler: str, out: str | Path,
              about: str, log: Log = print, held_out: Target | None = None,
              model_sha256: str | None = None, guidance: float | None = None,
              weights_sha256: str | None = None, **options) -> dict[int, torch.Tensor]:
    """:func:`fit_calls` for each call count, the schedule file rewritten (atomically) after
    each, so a stopped fit keeps the counts it finished; returns steps → σ's. With
    ``held_out`` (a reference from other noise) each count is checked on it (on σ's a GITS
    fit found, :func:`gits_sampler`) and the figures stored in the file under ``held_out``;
    ``guidance``, the target's scale, is recorded in the file, and until every count is
    fitted the step counts still to fit (``not_fitted``)."""
    method, sampler = fit_words(method, sampler)
    found: dict[int, torch.Tensor] = {}
    calls_of: dict[int, int] = {}  # steps → the model calls they were fitted for
    coefficients: dict[int, Rows] = {}
    checks: dict[int, dict[str, float]] = {}
    how = (f"σ's of {options['start']}" if options.get("start") else
           "GITS dynamic programming" if method == "gits" else
           f"coordinate descent of {sampler} (from exponential σ's)")
    if method == "bespoke":
        moved = "" if options.get("fixed_sigmas") else " and σ's moved"
        how += (f", then bespoke coefficients fitted from {sampler}'s{moved} "
                f"({options.get('evals', 150)} L-BFGS evaluations)")
    if isinstance(calls, int):
        calls = [calls]
    calls = list(dict.fromkeys(calls))  # a count given twice is fitted once, not again
    if method == "gits" and not target.xs:
        raise GlidectlError("--method gits searches the reference's trajectory, and this "
                            "target has none; build it with reference(..., trajectory=True).")
    check_method(method, sampler, list(calls), len(target.xs) if method == "gits" else None,
                 options.get("start"))
    asked = [n if method == "gits" else steps_for_calls(sampler, n) for n in calls]
    checked = gits_sampler(sampler, list(calls)) if method == "gits" else sampler
    for n in calls:
        steps, sigmas, rows = fit_calls(target, n, method, sampler, log=log, **options)
        found[steps], calls_of[steps] = sigmas, n
        if rows is not None:
            coefficients[steps] = rows
        if held_out is None:
            _log_sigmas(steps, sigmas, log)
        else:
            checks[steps] = c = held_out.check(checked, sigmas, rows)
            log(f"{n} calls, {'bespoke' if rows is not None else checked}, held out "
                f"({c['images']} images, noise seed {c['noise_seed']}): "
                f"mean {c['mean']:.5f}, RMS {c['rms']:.5f}, worst {c['worst']:.5f}; DDIM-50 "
                f"mean {c['ddim50_mean']:.5f}: {c['vs_ddim50']:.2f}x its error")
            if rows is not None and (kept := _start_if_better(held_out, options.get("start"),
                                                              steps, c)):
                found[steps], coefficients[steps], checks[steps] = kept
                log(f"{n} calls: the refit does no better on the held-out images than "
                    f"{options['start']}'s solver (mean {c['mean']:.5f} against "
                    f"{kept[2]['mean']:.5f}); kept that one for {n} calls "
                    "(--check-images 0 keeps the refit).")
            elif rows is not None:
                overfit_hint(target, sigmas, rows, checks[steps], n, log)
            _log_sigmas(steps, found[steps], log)  # what the file keeps: the start's, maybe
        try:
            write_schedule_file(out, found, float(target.grid[-2]), float(target.grid[0]),
                                f"{how} on {about}",
                                sampler={"gits": None, "bespoke": "bespoke"}.get(method, sampler),
                                coefficients=coefficients or None, held_out=checks or None,
                                model_sha256=model_sha256, weights_sha256=weights_sha256,
                                grey=target.denoiser.grey,
                                guidance=guidance,  # until the last: a stopped fit's file says
                                not_fitted=[s for s in asked if s is not None and s not in found])
        except WriteError as exc:  # a full disk: the σ's are above, a solver's rows are not
            kept = ", ".join(str(calls_of[s]) for s in sorted(set(found) - {steps}))
            raise WriteError(f"{str(exc).rstrip('.')} (the {n}-call fit is lost"
                             + (f"; the file keeps the fits of {kept} calls)." if kept
                                else ").")) from None
    return found
