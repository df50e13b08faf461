"""Stored step schedules: where to put n σ's between σ_max and σ_min.

``optimised`` (built in) is NOT a published schedule. benchmarks/tune_schedule.py found it
for the ``ipndm`` sampler on an exact Gaussian-mixture problem (48 dims, 16 components of
std 0.2, means uniform in [−1, 1] — image-range data; σ 80 → 0.002; training mixture
seed 1, held out from the benchmark's). Each row gives u_i, the fraction of the way from
log σ_max to log σ_min of the i-th σ; other step counts interpolate the nearest stored row
in log σ, as Align Your Steps does (Sabour et al. 2024). It spends its steps around
σ ≈ 0.3–3, where the mixture's components separate; whether that suits a given model is
an empirical question (bench_samplers.py measures trained GLIDE models too).

A schedule FILE (JSON, ``--schedule path/schedule.json``) stores positions found on one
model's own ODE (``glidectl fit-steps MODEL``, :mod:`glidectl.step_fitting`: coordinate
descent of one sampler's error, or GITS dynamic programming, see :mod:`.search`), kept next
to the model it was found on. A file fitted with ``--method bespoke`` also stores, per step
count, the coefficients of the bespoke solver on exactly those σ's (:mod:`.bespoke`).
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import write_text
from ..errors import GlidectlError, cause, one_line
from ..ranges import is_finite_number, plain_number
from .schedule_files import schedule_bytes
from .schedules import append_zero
from .spec import as_sampler, model_calls

FILE_FORMAT = "glidectl.schedule/1"
COEFFICIENT_LIMIT = 1e6  # fitted rows weigh ε (≤ σ_max) and x0's (~1): far larger diverges

# n: u_0..u_(n−1), from `python benchmarks/tune_schedule.py --sampler ipndm`
POSITIONS: dict[int, tuple[float, ...]] = {
    6: (0.0000, 0.1823, 0.3456, 0.5542, 0.7236, 1.0000),
    8: (0.0000, 0.1366, 0.2536, 0.3356, 0.3814, 0.5543, 0.7126, 1.0000),
    10: (0.0000, 0.1201, 0.1954, 0.3097, 0.3633, 0.3941, 0.5118, 0.6364, 0.7922, 1.0000),
    12: (0.0000, 0.0929, 0.2217, 0.3065, 0.3503, 0.3797, 0.4087, 0.5382, 0.6288, 0.6859,
         0.8334, 1.0000),
    15: (0.0000, 0.1112, 0.1828, 0.2590, 0.3309, 0.3674, 0.3945, 0.4175, 0.4498, 0.4902,
         0.5561, 0.6143, 0.6667, 0.8578, 1.0000),
    20: (0.0000, 0.0442, 0.0903, 0.1386, 0.1792, 0.2323, 0.2883, 0.3473, 0.3769, 0.4006,
         0.4229, 0.4691, 0.5055, 0.5595, 0.6203, 0.6434, 0.7157, 0.7972, 0.8906, 1.0000),
    30: (0.0000, 0.0436, 0.0564, 0.0844, 0.1131, 0.1428, 0.1734, 0.2013, 0.2383, 0.2646,
         0.2997, 0.3317, 0.3650, 0.3889, 0.4137, 0.4366, 0.4577, 0.4682, 0.4806, 0.5121,
         0.5454, 0.6035, 0.6410, 0.6763, 0.7251, 0.7660, 0.8163, 0.8714, 0.9322, 1.0000),
}


def nearest_count(counts: Iterable[int], n: int) -> int | None:
    """The stored step count whose row n σ's are interpolated from: the nearest (the larger
    on a tie), never the 1-step row for n > 1 (σ_max alone says nothing of where steps go
    between the ends); None where no stored row serves."""
    usable = [k for k in counts if k == n or k > 1]
    return min(usable, key=lambda k: (abs(k - n), -k)) if usable else None


def sigmas_from_positions(positions: dict[int, tuple[float, ...]], n: int, sigma_min: float,
                          sigma_max: float) -> torch.Tensor:
    """n σ's at stored positions u (fractions of the way from log σ_max to log σ_min; the
    nearest stored row of 2 or more, interpolated, for other n), then 0."""
    if n == 1:
        return append_zero(torch.tensor([sigma_max], dtype=torch.float64))
    nearest = nearest_count(positions, n)
    if nearest is None:
        raise ValueError(f"no stored row of 2 or more steps to interpolate {n} steps from")
    stored = positions[nearest]
    u = np.interp(np.linspace(0, 1, n), np.linspace(0, 1, len(stored)), stored)
    log_max, log_min = math.log(sigma_max), math.log(sigma_min)
    sigmas = np.clip(np.exp(log_max + u * (log_min - log_max)), sigma_min, sigma_max)
    sigmas[u == 0], sigmas[u == 1] = sigma_max, sigma_min  # the ends exact, not a rounding off
    return append_zero(torch.as_tensor(sigmas))


def get_sigmas_optimised(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """n σ's at the stored positions (interpolated for other n), then 0."""
    return sigmas_from_positions(POSITIONS, n, sigma_min, sigma_max)


def is_schedule_file(schedule: str) -> bool:
    """Whether a ``--schedule`` value names a schedule file rather than a registered name."""
    return str(schedule).lower().endswith(".json")


def write_schedule_file(path: str | Path, sigmas: dict[int, torch.Tensor], sigma_min: float,
                        sigma_max: float, about: str, sampler: str | None = None,
                        coefficients: dict[int, list[list[float]]] | None = None,
                        held_out: dict[int, dict[str, float]] | None = None,
                        model_sha256: str | None = None, grey: bool | None = None,
                        guidance: float | None = None,
                        not_fitted: list[int] | None = None,
                        weights_sha256: str | None = None) -> None:
    """Store σ sequences (n σ's then 0, per n) as positions in [σ_max, σ_min], atomically;
    ``sampler`` records the sampler they were tuned for (None: any); ``coefficients`` a
    bespoke solver's rows per n; ``held_out`` its errors on held-out noise per n;
    ``model_sha256`` the weights file they were fitted to and ``weights_sha256`` its tensors
    (:func:`~glidectl.glide.checkpoints.state_sha256`: the same weights in another file, an
    export of the run, are the same); ``grey`` whether they were fitted
    to grey sampling's ODE (``glidectl sample --grey``); ``guidance`` the guidance scale of
    the ODE they were fitted to; ``not_fitted`` the step counts the fit writing it has still
    to fit (a file a stopped fit left keeps them: :func:`unfitted_counts`)."""
    total = math.log(sigma_max / sigma_min)
    positions = {str(n): [round((math.log(sigma_max) - math.log(float(v))) / total, 12)
                          for v in s[:-1]] for n, s in sorted(sigmas.items())}
    data = {"format": FILE_FORMAT, "about": about, "sampler": sampler,
            "sigma_min": sigma_min, "sigma_max": sigma_max, "positions": positions}
    if model_sha256:
        data["model_sha256"] = model_sha256
    if weights_sha256:
        data["weights_sha256"] = weights_sha256
    if grey is not None:
        data["grey"] = grey
    if guidance is not None:
        data["guidance"] = guidance
    if not_fitted:
        data["not_fitted"] = sorted(set(not_fitted))
    if coefficients:
        data["coefficients"] = {str(n): rows for n, rows in sorted(coefficients.items())}
    if held_out:
        data["held_out"] = {str(n): {k: _finite(v) for k, v in figures.items()}
                            for n, figures in sorted(held_out.items())}
    write_text(path, json.dumps(data, indent=1, allow_nan=False) + "\n")


def _finite(value: Any) -> Any:
    """A figure as JSON can hold it: a solver that diverged on held-out noise errs NaN or
    infinity, stored as null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _load(path: str | Path) -> dict:
    """A schedule file's JSON object (one-sentence errors; {} for a non-object)."""
    try:
        data = json.loads(schedule_bytes(path))
    except FileNotFoundError:
        raise GlidectlError(f"Schedule file {str(path)!r} does not exist; write one with "
                            "glidectl fit-steps MODEL --prompts PROMPTS.txt --out FILE, or name "
                            "a schedule such as karras.") from None
    except IsADirectoryError:
        raise GlidectlError(f"Schedule file {str(path)!r} is a folder; pass the JSON file "
                            "glidectl fit-steps wrote (--out FILE.json).") from None
    except UnicodeDecodeError:
        raise GlidectlError(f"Schedule file {str(path)!r} is not UTF-8 text; pass the JSON "
                            "file glidectl fit-steps wrote (--out FILE.json).") from None
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: nested too deep
        raise GlidectlError(f"Schedule file {str(path)!r} is not readable JSON "
                            f"({cause(exc)}).") from exc
    return data if isinstance(data, dict) else {}


def read_schedule_file(path: str | Path, data: dict | None = None
                       ) -> dict[int, tuple[float, ...]]:
    """The positions stored in a schedule file (or in ``data``, its JSON already read),
    checked (one-sentence errors)."""
    data = _load(path) if data is None else data
    rows = data.get("positions")
    try:
        positions = {int(n): tuple(row) for n, row in rows.items()}
    except (AttributeError, TypeError, ValueError):
        positions = {}
    ok = positions and all(
        n >= 1 and len(row) == n and all(is_finite_number(u) for u in row) and row[0] == 0
        and all(b > a for a, b in zip(row, row[1:], strict=False)) and row[-1] <= 1
        for n, row in positions.items())
    if data.get("format") != FILE_FORMAT or not ok:
        raise GlidectlError(f"Schedule file {str(path)!r} is not a {FILE_FORMAT} file "
                            "(positions: n → n increasing fractions from 0 to at most 1); "
                            "write one with glidectl fit-steps MODEL --out FILE.")
    if not isinstance(data.get("sampler"), str | None):
        raise GlidectlError(f"Schedule file {str(path)!r} names its sampler with "
                            f"{one_line(json.dumps(data['sampler']))[:40]}, not a sampler name; "
                            "set \"sampler\" to a name such as unipc (or null), or refit it "
                            "with glidectl fit-steps.")
    return {n: tuple(float(u) for u in row) for n, row in positions.items()}


def schedule_file_warning(path: str | Path, sampler: str) -> str | None:
    """One sentence when a schedule file records another sampler than ``sampler`` (its
    positions were tuned for that sampler's errors), else None."""
    data = _load(path)
    read_schedule_file(path, data)  # a sampler field that is no name: one sentence
    tuned = one_line(data.get("sampler") or "")
    if not tuned:
        return None
    from .. import plugins

    names = plugins.samplers()
    own = "its own schedule"
    try:
        if names.get(tuned) is names.get(sampler):
            return None
        own = f"its own {as_sampler(names.get(sampler)).schedule} schedule"
    except GlidectlError:
        pass
    return (f"Schedule file {str(path)!r} was tuned for the {tuned} sampler, not {sampler}: "
            f"its steps may be worse than {own} for {sampler}; sample with --sampler "
            f"{tuned}, or fit a file for {sampler} with glidectl fit-steps MODEL "
            f"{'--method bespoke' if sampler == 'bespoke' else f'--sampler {sampler}'}.")


def model_warning(path: str | Path, model_sha256: Callable[[], str | None], model: str,
                  upsampler: bool = False, *, guidance: float | None = None,
                  grey: bool | None = None,
                  weights_sha256: Callable[[], str | None] | None = None,
                  adapters: Sequence[tuple[str, float]] = ()) -> str | None:
    """One sentence when a schedule file records a fit to other weights than ``model``'s
    (``model_sha256()``, asked only when the file records one; where the files differ, the
    tensors' ``weights_sha256()`` when the file records theirs), or ``model`` is sampled
    with LoRA ``adapters`` ((path, scale) pairs: fit-steps fits no adapters), else None.
    ``upsampler``: the file is the upsampler's, which fit-steps does not fit; ``guidance``,
    ``grey``: the sampling the refit it names fits (:func:`_refit`)."""
    data = _load(path)
    fitted = data.get("model_sha256")
    adapters = [(a, scale) for a, scale in adapters if scale != 0]  # scale 0: no change
    if isinstance(fitted, str) and adapters:
        return _adapters_warning(path, data, model, upsampler, adapters,
                                 guidance=guidance, grey=grey)
    if not isinstance(fitted, str) or fitted == (sha := model_sha256()) or not sha:
        return None
    tensors = data.get("weights_sha256")
    if isinstance(tensors, str) and weights_sha256 is not None and tensors == weights_sha256():
        return None  # the same weights in another file (an export, a copy with other metadata)
    fix = UPSAMPLER_FIX if upsampler else "refit it with " + _refit(
        path, data, model, guidance=guidance, grey=grey, out=own_out(path, model))
    return (f"Schedule file {str(path)!r} was fitted to other weights (sha256 "
            f"{one_line(fitted)[:12]}…) than {model} ({sha[:12]}…): its steps suit "
            f"that model's ODE; {fix}.")


def _adapters_warning(path: str | Path, data: dict, model: str, upsampler: bool,
                      adapters: list[tuple[str, float]], *, guidance: float | None,
                      grey: bool | None) -> str:
    """The sentence for a schedule file used on ``model`` with LoRA ``adapters`` ((path,
    scale) pairs) applied: fit-steps fitted it to weights without them, so it names the
    merge and the refit."""
    lora = " ".join(shlex.join(["--lora", a if scale == 1 else f"{a}:{scale:g}"])
                    for a, scale in adapters)
    if upsampler:
        fix = UPSAMPLER_FIX
    else:
        one, scale = adapters[0]
        merge = (shlex.join(["glidectl", "lora", "merge", one, "--base", model,
                             *(["--scale", f"{scale:g}"] if scale != 1 else []),
                             "-o", "merged.safetensors"]) if len(adapters) == 1 else
                 "glidectl lora merge each in turn, --base the file the last merge wrote, the "
                 "last -o merged.safetensors")
        # to a new file: ``path`` still suits the model without the adapters
        refit = _refit(path, data, "merged.safetensors", guidance=guidance, grey=grey,
                       out=MERGED_SCHEDULE)
        fix = (f"fold {'it' if len(adapters) == 1 else 'them'} in ({merge}), fit that with "
               f"{refit} "
               f"and sample merged.safetensors with --schedule {MERGED_SCHEDULE} instead")
    return (f"Schedule file {str(path)!r} was fitted to weights without LoRA adapters, and "
            f"these images sample {model} with {lora}: its steps suit another model's ODE; "
            f"{fix}.")


# what an upsampler's mismatched schedule file can do instead of a refit
UPSAMPLER_FIX = ("drop it from the upsampler stage (glidectl fit-steps fits base models "
                 "only)")


# where the refit for a model with LoRA adapters folded in writes (not over the base's file)
MERGED_SCHEDULE = "merged-schedule.json"


def _refit(path: str | Path, data: dict, model: str, *, guidance: float | None = None,
           grey: bool | None = None, out: str | None = None) -> str:
    """The fit-steps command that fits ``path`` again: the same method and step counts, at
    ``guidance`` and ``grey`` (the sampling at hand, so one line mends every mismatch the
    warnings name; None: as the file was fitted). The grey flag is named where grey is
    sampled or was fitted (else fit-steps follows the model, as sample does). ``out``: a
    new file to write instead of replacing ``path``."""
    tuned = data.get("sampler")
    how = (["--method", "gits"] if tuned is None else ["--method", "bespoke"]
           if tuned == "bespoke" else ["--sampler", one_line(str(tuned))])
    counts = sorted({*_counts(data), *unfitted_counts(data)})  # as asked, if it stopped
    calls = [word for n in counts for word in ("--calls", str(_calls_of(tuned, n)))]
    scale = fitted_guidance(data) if guidance is None else guidance
    at = [] if scale is None else ["--guidance", f"{scale:g}"]
    fitted_grey = data.get("grey") if isinstance(data.get("grey"), bool) else None
    shade = fitted_grey if grey is None else grey
    flag = [] if not (shade or fitted_grey) else ["--grey" if shade else "--no-grey"]
    replace = out is None or Path(out).exists()
    return shlex.join(["glidectl", "fit-steps", model, "--prompts", "PROMPTS.txt", *how,
                       *calls, *at, *flag, "--out", out or str(path),
                       *(["--overwrite"] if replace else [])])


def own_out(path: str | Path, model: str) -> str | None:
    """Where a refit for ``model`` writes when ``path`` was fitted to other weights: the
    model's own place (RUN/schedule.json of its run, MODEL-schedule.json beside a weights
    file), not over ``path``, which still suits the model it was fitted to; None (replace
    ``path``) where that place is ``path`` itself (a run trained on since its fit)."""
    from ..runs import run_holding

    given = Path(model).expanduser()
    held = run_holding(given) if given.exists() else None
    own = held[0] / "schedule.json" if held is not None else given / "schedule.json" \
        if given.is_dir() else given.with_name(f"{given.stem}-schedule.json") \
        if given.is_file() else None
    if own is None or own.resolve() == Path(path).expanduser().resolve():
        return None
    return str(own)


def _calls_of(tuned: Any, steps: int) -> int:
    """The ``--calls`` value whose fit writes ``steps`` steps for the sampler a file was
    tuned for (heun's 10 steps: 19 calls; GITS and bespoke fits: one call per step; a
    sampler not installed here: ``steps``, its refit then names it)."""
    if not isinstance(tuned, str):
        return steps
    try:
        return model_calls(tuned, steps)
    except GlidectlError:
        return steps


def fitted_guidance(data: dict) -> float | None:
    """The guidance scale a schedule file's JSON records it was fitted at (None: files
    from before it was recorded, or no number)."""
    scale = data.get("guidance")
    return float(scale) if is_finite_number(scale) else None


def guidance_warning(path: str | Path, guidance: float | None, model: str | None = None,
                     upsampler: bool = False, *, grey: bool | None = None,
                     other_model: bool = False) -> str | None:
    """One sentence when a schedule file records a fit at another guidance scale than
    ``guidance`` (None: unguided, scale 1), else None (files from before the scale was
    recorded say nothing). ``upsampler``: the file is the upsampler's; ``grey``: as
    sampled, for the refit it names; ``other_model``: the file was fitted to other weights
    (:func:`model_warning`), so sampling at its guidance would not mend it."""
    data = _load(path)
    fitted = fitted_guidance(data)
    sampled = 1.0 if guidance is None else float(guidance)
    if fitted is None or math.isclose(fitted, sampled, rel_tol=1e-6):
        return None
    flag = "--upsample-guidance" if upsampler else "--guidance"
    fix = UPSAMPLER_FIX if upsampler else "refit it with " + _refit(
        path, data, model or "MODEL", guidance=sampled, grey=grey,
        out=own_out(path, model) if other_model and model else None)
    return (f"Schedule file {str(path)!r} was fitted at guidance {fitted:g}, and these images "
            f"sample at {sampled:g}: its steps suit the other ODE; "
            f"{_or_sample(f'{flag} {fitted:g}', fix, upsampler and other_model)}.")


def _or_sample(flags: str, fix: str, other_model: bool) -> str:
    """A mismatch warning's advice: sample with ``flags``, or the ``fix``; the fix alone
    for a file fitted to other weights, which those flags leave on the wrong model."""
    return fix if other_model else f"sample with {flags}, or {fix}"


def grey_warning(path: str | Path, grey: bool, model: str | None = None,
                 upsampler: bool = False, *, guidance: float | None = None,
                 other_model: bool = False) -> str | None:
    """One sentence when a schedule file records a fit to another ODE than the one sampled
    (``grey``: x0 predictions projected onto grey, ``glidectl sample --grey``), else None
    (files from before ``grey`` was recorded say nothing). ``upsampler``: the file is the
    upsampler's, which fit-steps does not fit; ``other_model``: as for
    :func:`guidance_warning`."""
    data = _load(path)
    fitted = data.get("grey")
    if not isinstance(fitted, bool) or fitted == grey:
        return None
    ode, sampled = ("grey sampling's ODE", "in colour") if fitted else ("the colour ODE", "grey")
    fix = UPSAMPLER_FIX if upsampler else "refit it with " + _refit(
        path, data, model or "MODEL", guidance=guidance, grey=grey,
        out=own_out(path, model) if other_model and model else None)
    return (f"Schedule file {str(path)!r} was fitted to {ode}, and these images sample "
            f"{sampled}: its steps suit the other ODE; "
            f"{_or_sample('--grey' if fitted else '--no-grey', fix, upsampler and other_model)}.")


def unfitted_counts(data: dict) -> list[int]:
    """The step counts a schedule file's JSON records its fit was asked for and stopped
    before fitting (Ctrl-C, a failure, ``kill -9``); [] for a finished fit."""
    counts = data.get("not_fitted")
    if not isinstance(counts, list):
        return []
    return sorted({n for n in counts if isinstance(n, int) and not isinstance(n, bool) and n > 0})


def _counts(data: dict) -> list[int]:
    """The step counts a schedule file's JSON holds σ's for (unchecked)."""
    rows = data.get("positions")
    return sorted(int(n) for n in rows if str(n).isdigit()) if isinstance(rows, dict) else []


def stopped_fit_message(path: str | Path) -> str | None:
    """What an existing schedule file a stopped fit left lacks, as the start of a sentence
    ("'FILE' exists, but the fit that wrote it stopped before fitting 40 steps, so it holds
    σ's for 3 steps only"); None for a finished fit's file or one that cannot be read."""
    try:
        data = _load(path)
    except GlidectlError:
        return None
    missing = unfitted_counts(data)
    if not missing:
        return None
    return (f"{str(path)!r} exists, but the fit that wrote it stopped before fitting "
            f"{', '.join(map(str, missing))} steps, so it holds σ's for "
            f"{', '.join(map(str, _counts(data)))} steps only")


def stopped_refit_clause(partial: str | Path) -> str:
    """What the FILE.partial.json a refit into FILE left when it stopped holds, as part of a
    sentence ("'s.partial.json' beside it holds σ's for 3 steps from a refit into it that
    stopped before fitting 40 steps")."""
    try:
        data = _load(partial)
    except GlidectlError:
        data = {}
    have, missing = _counts(data), unfitted_counts(data)
    if not have:
        return f"{str(partial)!r} beside it is left from a refit into it that stopped"
    steps = ", ".join(map(str, have))
    if not missing:
        return (f"{str(partial)!r} beside it holds σ's for {steps} steps, every count of a "
                "refit into it that stopped before replacing it")
    return (f"{str(partial)!r} beside it holds σ's for {steps} steps from a refit into it "
            f"that stopped before fitting {', '.join(map(str, missing))} steps")


def unfitted_warning(path: str | Path, steps: int | str, model: str | None = None,
                     upsampler: bool = False, *, guidance: float | None = None,
                     grey: bool | None = None) -> str | None:
    """One sentence when a schedule file has no σ's for ``steps`` (a count, or its digits:
    ``generate(steps="7")``) because the fit that wrote it stopped before fitting them (its
    σ's are then interpolated from the counts fitted), else None. ``upsampler``: the file
    is the upsampler's, which fit-steps does not fit."""
    if isinstance(steps, str) and plain_number(steps, int):
        steps = int(steps)
    data = _load(path)
    have = _counts(data)
    if not have or steps in have or steps not in unfitted_counts(data):
        return None
    nearest = nearest_count(have, steps)  # the row interpolated
    if nearest is None:
        return None  # get_sigmas_from_file says why the file cannot serve
    fix = UPSAMPLER_FIX if upsampler else "fit every count with " + _refit(
        path, data, model or "MODEL", guidance=guidance, grey=grey)
    return (f"Schedule file {str(path)!r} holds no σ's for {steps} steps: the fit that wrote "
            "it stopped before fitting them, so these are interpolated from its "
            f"{nearest}-step σ's; sample with --steps {nearest}, or {fix}.")


def has_coefficients(path: str | Path, n: int) -> bool:
    """Whether a schedule file stores bespoke coefficients for n steps (unchecked)."""
    stored = _load(path).get("coefficients")
    return isinstance(stored, dict) and str(n) in stored


def coefficient_steps(path: str | Path, steps: int | str) -> int | str:
    """The steps a sampler fitted by coefficients takes on schedule file ``path`` when no
    steps are given: ``steps`` (the model's recommended or the default count) when the file
    holds coefficients for it (or none at all: :func:`read_coefficients` says why), else
    its one count; several others are one sentence naming them."""
    stored = _load(path).get("coefficients")
    counts = sorted(int(k) for k in stored if str(k).isdigit()) if isinstance(
        stored, dict) else []
    if steps in counts or not counts:
        return steps
    if len(counts) == 1:
        return counts[0]
    have = ", ".join(map(str, counts[:-1])) + f" and {counts[-1]}"
    raise GlidectlError(f"Schedule file {str(path)!r} holds bespoke coefficients for {have} "
                        "steps; pass --steps with one of those counts.")


def read_coefficients(path: str | Path, n: int, sigmas: torch.Tensor) -> list[list[float]]:
    """The bespoke solver's rows for n steps stored in a schedule file, checked against the
    σ's they will run on (one-sentence errors)."""
    from .bespoke import check_rows

    data = _load(path)
    stored = data.get("coefficients") if isinstance(data.get("coefficients"), dict) else {}
    if str(n) not in stored:
        have = ", ".join(sorted(stored, key=lambda k: int(k) if k.isdigit() else 0))
        fit = f"fit them with glidectl fit-steps MODEL --method bespoke --calls {n}."
        if not have:  # a descent or GITS file: there is no count to pick
            tuned = data.get("sampler")
            use = (f"sample it with --sampler {one_line(tuned)[:40]}" if isinstance(tuned, str)
                   and tuned != "bespoke" else "sample it with another --sampler")
            raise GlidectlError(f"Schedule file {str(path)!r} holds no bespoke coefficients "
                                f"(it holds σ's only); {use}, or {fit}")
        raise GlidectlError(f"Schedule file {str(path)!r} holds no bespoke coefficients for "
                            f"{n} steps (it has: {have}); sample with --steps set to one of "
                            f"those, or {fit}")
    rows = stored[str(n)]
    if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
        rows = []
    check_rows(rows, n)
    if not all(is_finite_number(c) and abs(c) <= COEFFICIENT_LIMIT for r in rows for c in r):
        raise GlidectlError(f"Schedule file {str(path)!r} holds bespoke coefficients for {n} "
                            f"steps that are not all numbers within ±{COEFFICIENT_LIMIT:g} "
                            "(NaN, infinity or true/false among them); refit them with "
                            f"glidectl fit-steps MODEL --method bespoke --calls {n}.")
    positions = read_schedule_file(path, data)
    if n not in positions:  # rows fitted on n σ's must not run on σ's interpolated for them
        raise GlidectlError(f"Schedule file {str(path)!r} holds bespoke coefficients for {n} "
                            f"steps but no σ's for {n} steps; refit it with glidectl fit-steps "
                            f"MODEL --prompts PROMPTS.txt --method bespoke --calls {n}.")
    lo, hi = data.get("sigma_min"), data.get("sigma_max")
    if not (is_finite_number(lo) and is_finite_number(hi) and 0 < lo < hi):
        shown = ", ".join(one_line(json.dumps(v))[:20] if k in data else "missing"
                          for k, v in (("sigma_min", lo), ("sigma_max", hi)))
        raise GlidectlError(f"Schedule file {str(path)!r} holds bespoke coefficients for {n} "
                            "steps but no σ range they were fitted on (sigma_min, sigma_max: "
                            f"two numbers with 0 < sigma_min < sigma_max, got {shown}); "
                            "refit it with glidectl fit-steps MODEL --prompts PROMPTS.txt "
                            f"--method bespoke --calls {n}.")
    fitted = sigmas_from_positions(positions, n, float(lo), float(hi))
    if math.isclose(float(sigmas[0]), float(hi), rel_tol=1e-6) and not torch.allclose(
            fitted.double(), sigmas.double(), rtol=1e-6):  # the same top: another σ table
        raise GlidectlError(f"Schedule file {str(path)!r} holds bespoke coefficients for σ's "
                            f"down to {float(fitted[-2]):g}, fitted to a model with other noise "
                            f"levels, but this model's {n} steps end at {float(sigmas[-2]):g}; "
                            "fit them to this model with glidectl fit-steps MODEL --prompts "
                            f"PROMPTS.txt --method bespoke --calls {n}, or pick another "
                            "--sampler or --schedule.")
    if not torch.allclose(fitted.double(), sigmas.double(), rtol=1e-6):
        raise GlidectlError(f"Schedule file {str(path)!r} holds bespoke coefficients for its "
                            f"own σ's (from {hi} down), but this run samples from "
                            f"{float(sigmas[0]):g} to {float(sigmas[-2]):g}: leave --sigma-max "
                            "at the value it was fitted with, or refit.")
    return [[float(c) for c in r] for r in rows]


def get_sigmas_from_file(path: str | Path, n: int, sigma_min: float, sigma_max: float
                         ) -> torch.Tensor:
    """n σ's of a schedule file (the nearest stored n, interpolated, for others), then 0."""
    positions = read_schedule_file(path)
    if nearest_count(positions, n) is None:
        calls = _calls_of(_load(path).get("sampler"), n)
        raise GlidectlError(f"Schedule file {str(path)!r} holds σ's for 1 step only, which "
                            f"say nothing of where {n} steps go; use it for 1 step, or fit "
                            f"{n} steps into a file of their own (glidectl fit-steps MODEL "
                            f"--prompts PROMPTS.txt --calls {calls} --out FILE).")
    return sigmas_from_positions(positions, n, sigma_min, sigma_max)
