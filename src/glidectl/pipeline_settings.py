"""generate()'s keywords as each stage's settings: recommendations, defaults, checks, calls."""

from __future__ import annotations

import difflib
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from . import plugins
from .errors import GlidectlError
from .ranges import FLAGS, SEED, STEPS, check
from .samplers.guidance import parse_interval
from .samplers.schedules import sigmas_from_alphas_cumprod
from .samplers.spec import as_sampler
from .samplers.tuned import coefficient_steps, is_schedule_file
from .sampling import (
    BASE_DEFAULTS,
    UPSAMPLE_DEFAULTS,
    StageOptions,
    sigma_table,
    stage_model_calls,
    stage_word,
)
from .sampling_defaults import RECOMMENDED_FIELDS, recommended_line, upsample_steps_for


def coefficient_file_steps(sampler: Any, schedule: Any, steps: int | str) -> int | str:
    """The steps of a stage given none: ``steps`` (recommended or default), or the count a
    schedule file holds coefficients for when the sampler takes them (bespoke), as
    :func:`glidectl.samplers.tuned.coefficient_steps` picks it."""
    samplers = plugins.samplers()
    if not (isinstance(schedule, str) and is_schedule_file(schedule) and isinstance(
            sampler, str) and sampler in samplers):
        return steps
    if not as_sampler(samplers.get(sampler)).accepts("coefficients"):
        return steps
    return coefficient_steps(schedule, steps)


def check_recommended_sampler(name: Any) -> None:
    """One sentence when the base model recommends a sampler no loaded plugin registers
    (a run that previewed with a plugin's sampler, sampled where that plugin is not
    installed or left out; it was "Unknown sampler …, did you mean …?" for a flag not
    given): ``sample``, ``eval``, the UI and ``generate()`` alike."""
    if not isinstance(name, str) or name.lower() in plugins.samplers():
        return
    fix = (f"no loaded plugin registers; load the plugin that provides it ({plugins.ALLOW_ENV} "
           f"leaves out the installed {', '.join(plugins.left_out)}) or install it"
           if plugins.left_out else "no installed plugin registers; install the plugin that "
           "provides it (glidectl plugins lists what is installed)")
    raise GlidectlError(f"The base model recommends the sampler {name!r} (it previewed with it "
                        f"in training), which {fix}, or pass --sampler NAME.")


class PipelineSettings:
    """:class:`glidectl.pipeline.GlidePipeline`'s stage settings: ``generate`` keywords split
    by stage over the models' recommendations and the defaults, and the model calls they take."""

    def stages(self, **kwargs: Any) -> tuple[StageOptions, StageOptions, dict[str, Any]]:
        """Split ``generate`` keywords into base options, upsampler options and the rest.

        Base fields not given come from the base model's recommended settings (its
        checkpoint metadata), else from the built-in defaults; upsampler fields not given
        are GLIDE's fast27 DDPM, as in ``sample``, ``eval`` and the UI.
        """
        base, up, rest = {}, {}, {}
        for key, value in kwargs.items():
            if key.startswith("upsample_") and key[9:] in StageOptions.__dataclass_fields__:
                up[key[9:]] = value
            elif key == "upsample_temp":
                up["temperature"] = value
            elif key in StageOptions.__dataclass_fields__:
                base[key] = value
            else:
                rest[key] = value
        for stage in (base, up):  # "DDIM" runs and is recorded as ddim
            for key in ("sampler", "schedule"):
                if key in stage:
                    stage[key] = stage_word(key, stage[key])
        if isinstance(base.get("guidance_interval"), str):  # as --guidance-interval takes it
            base["guidance_interval"] = parse_interval(base["guidance_interval"])
        for key in ("sigma_max", "clip_denoised", "quantize_t"):
            if key in base and key not in up:
                up[key] = base[key]
        if up.get("steps") is None:  # fast27 on respaced steps, else 27 of another schedule
            up.pop("steps", None)
            up_sampler = up.get("sampler") or UPSAMPLE_DEFAULTS.sampler
            schedule = up.get("schedule")
            if schedule is None and isinstance(up_sampler, str) and up_sampler in (
                    samplers := plugins.samplers()):
                schedule = as_sampler(samplers.get(up_sampler)).schedule
            if isinstance(schedule, str):  # other kinds: refused by _check_numbers
                up["steps"] = upsample_steps_for(schedule)
        grey = self.upsampler_grey({"grey": base.get("grey"), "upsample_grey": up.get("grey")})
        steps_given = base.get("steps") is not None
        if base.get("sampler") is None:
            self._check_recommended_sampler()
        base = {**self.recommended("base"), **grey, **base}  # upsamplers: GLIDE's fast27 DDPM
        if not steps_given:  # a bespoke file's own count, not one it has no solver for
            base["steps"] = coefficient_file_steps(
                base.get("sampler") or BASE_DEFAULTS.sampler, base.get("schedule"),
                base.get("steps") or BASE_DEFAULTS.steps)
        if "grey" in base and "grey" not in up:  # a grey picture stays grey when upsampled
            up["grey"] = base["grey"]
        return replace(BASE_DEFAULTS, **base), replace(UPSAMPLE_DEFAULTS, **up), rest

    def _check_recommended_sampler(self) -> None:
        """One sentence when the base model recommends a sampler no installed plugin
        registers (a run that previewed with a plugin's sampler, sampled where that plugin
        is not installed; it was "Unknown sampler …, did you mean …?" for a flag not given)."""
        check_recommended_sampler(self.recommended("base").get("sampler"))

    def recommended(self, stage: str = "base") -> dict[str, Any]:
        """StageOptions fields the stage's model recommends (empty for OpenAI's models)."""
        rec = self.records.get(stage)
        return {k: v for k, v in (rec.recommended if rec else {}).items()
                if k in RECOMMENDED_FIELDS}

    def upsampler_grey(self, given: dict[str, Any]) -> dict[str, Any]:
        """``{"grey": True}`` when the upsampler recommends grey (it was trained on greyscale
        data) and neither ``grey`` nor ``upsample_grey`` is ``given`` (not None), else {}.
        Both stages then draw grey: such an upsampler has seen only grey 64 px inputs."""
        if given.get("grey") is not None or given.get("upsample_grey") is not None:
            return {}
        return {"grey": True} if self.recommended("upsample").get("grey") is True else {}

    def defaults_note(self, given: dict[str, Any], stage: str = "base") -> str | None:
        """One line naming the settings taken from the models' recommendations (the
        ``given`` keys — what the user set — excluded; ``stage="base"``: the base model's
        and the upsampler's ``grey``), or None when none were."""
        used = {k: v for k, v in self.recommended(stage).items() if given.get(k) is None}
        sampler = given.get("sampler") or used.get("sampler") or BASE_DEFAULTS.sampler
        if stage == "base" and "steps" in used and coefficient_file_steps(
                sampler, given.get("schedule"), used["steps"]) != used["steps"]:
            del used["steps"]  # the schedule file's count runs instead
        up = self.upsampler_grey(given) if stage == "base" and "grey" not in used else {}
        if not used and not up:
            return None

        def text(settings: dict[str, Any]) -> str:
            return ", ".join(k if v is True else f"{k} {v}" for k, v in settings.items())

        flags = " / ".join(f"--{'upsample-' if stage != 'base' else ''}"
                           f"{'no-' if v is True else ''}{k.replace('_', '-')}"
                           for k, v in {**used, **up}.items())
        if stage != "base":
            return (f"Using the {stage} model's recommended sampling settings ({text(used)}); "
                    f"pass {flags} to change them.")
        return recommended_line(text(used), text(up), flags)

    def idle_settings(self, base: StageOptions, up: StageOptions,
                      base_stage: bool = True) -> dict[str, str]:
        """Settings that change no pixel of this request, as {``generate`` keyword: why}:
        ``sigma_max`` when every stage that runs keeps GLIDE's respaced timesteps, and the
        base stage's ``guidance_interval`` / ``guidance_rescale`` at guidance 1 (the
        conditional model alone) or an interval that holds none of its σ's."""
        base_runs = base_stage and self.base is not None
        ran = [o for o, runs in ((base, base_runs), (up, self.upsampler is not None)) if runs]
        idle = {}
        if ran and all((o.schedule or o.sampler_spec().schedule) == "respaced" for o in ran):
            idle["sigma_max"] = ("the respaced schedule (GLIDE's own timesteps) starts at the "
                                 "model's top σ; pass --schedule karras (or another) to set it")
        if not base_runs:
            return idle
        unguided = base.guidance is None or float(base.guidance) == 1
        tools = {"guidance_interval": base.guidance_interval is not None,
                 "guidance_rescale": bool(base.guidance_rescale)}
        if unguided:
            idle.update({k: "guidance 1 is the conditional model alone"
                         for k, used in tools.items() if used})
        elif tools["guidance_interval"]:
            sampled = base.sigmas(sigmas_from_alphas_cumprod(sigma_table(self.base,
                                                                         self.diffusion)))
            top, low = float(sampled[0]), float(sampled[sampled > 0].min())
            lo, hi = base.guidance_interval
            if lo > top or hi < low:
                idle["guidance_interval"] = (f"{lo:g},{hi:g} holds none of the σ's sampled "
                                             f"({top:.3g} to {low:.3g}), so no step is guided")
        return idle

    def unused_keywords(self, given: dict[str, Any], base: StageOptions, up: StageOptions,
                        base_stage: bool = True) -> dict[str, str]:
        """The ``generate`` keywords ``given`` (not None) that change no pixel of this
        request, as {keyword: why}, as ``glidectl sample`` warns of its flags: a base
        setting with ``low_res`` (only the upsampler runs), ``eta`` / ``upsample_eta`` for a
        sampler that takes no η, and :meth:`idle_settings`."""
        set_ = {k for k, v in given.items() if v is not None}
        base_runs = base_stage and self.base is not None
        unused = {}
        if not base_runs:
            unused |= {k: "with low_res only the upsampler runs (upsample_sampler, "
                          "upsample_steps, upsample_schedule and upsample_guidance set it)"
                       for k in given if k in set_ and k in BASE_ONLY}
        if "eta" in set_ and base_runs and (why := eta_unused(base)):
            unused["eta"] = why
        if "upsample_eta" in set_:
            why = eta_unused(up) if self.upsampler is not None else "there is no upsampler"
            if why:
                unused["upsample_eta"] = why
        idle = self.idle_settings(base, up, base_stage)
        return unused | {k: why for k, why in idle.items() if k in set_ and k not in unused}

    def model_calls(self, n_images: int, batch_size: int, base: StageOptions,
                    up: StageOptions, low_res: bool = False) -> int:
        """Model forwards for the whole request (for progress bars)."""
        batches = -(-n_images // batch_size)
        return sum(self.calls_per_batch(s, base if s == "base" else up)
                   for s in self.stage_models() if not (s == "base" and low_res)) * batches

    def calls_per_batch(self, stage: str, options: StageOptions) -> int:
        """Network forwards for one batch of ``stage`` (cond and uncond rows share one)."""
        model = self.stage_models().get(stage)
        if model is None:
            return 0
        return stage_model_calls(stage, options, sigma_table(
            model, self.diffusion if stage == "base" else None))


def _check_numbers(base: StageOptions, up: StageOptions, seeds: Sequence[int]) -> None:
    """The one-line error for a seed or stage number outside the range the CLI allows
    (``nan`` guidance, a negative seed, ...), named by its ``generate`` keyword."""
    for s in seeds:
        _check_types({"seed": s}, int)
        check("seed", s, SEED)
    for prefix, opts in (("", base), ("upsample_", up)):
        for key, rng in (("guidance", FLAGS["--guidance"]), ("eta", FLAGS["--eta"]),
                         ("sigma_max", FLAGS["--sigma-max"]),
                         ("guidance_rescale", FLAGS["--guidance-rescale"]),
                         ("dynamic_threshold", FLAGS["--dynamic-threshold"]),
                         ("steps", STEPS)):
            if key != "steps":  # a count or a respacing string, checked by its range
                # φ has no None (off is 0): it was a TypeError in the denoiser
                _check_types({prefix + key: getattr(opts, key)}, float,
                             none_ok=key != "guidance_rescale")
            check(prefix + key, getattr(opts, key), rng)
    _check_types({"temperature": base.temperature, "upsample_temp": up.temperature}, float,
                 none_ok=False)
    check("upsample_temp", up.temperature, FLAGS["--upsample-temp"])
    for key, value in (("sampler", base.sampler), ("upsample_sampler", up.sampler),
                       ("schedule", base.schedule), ("upsample_schedule", up.schedule)):
        if not isinstance(value, str) and not (value is None and "schedule" in key):
            example = "'karras' or a schedule file" if "schedule" in key else "'dpm++2m'"
            raise GlidectlError(f"generate(): {key} must be a name such as {example}, got "
                                f"{value!r:.60} ({type(value).__name__}).")
    for key, value in (("grey", base.grey), ("upsample_grey", up.grey),
                       ("clip_denoised", base.clip_denoised), ("quantize_t", base.quantize_t),
                       ("upsample_clip_denoised", up.clip_denoised),
                       ("upsample_quantize_t", up.quantize_t)):
        if not isinstance(value, bool):
            raise GlidectlError(f"generate(): {key} must be True or False, got {value!r:.60} "
                                f"({type(value).__name__}).")
    interval = base.guidance_interval
    if interval is not None and (isinstance(interval, str) or not isinstance(
            interval, Sequence) or len(interval) != 2 or not all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) for v in interval)):
        raise GlidectlError("generate(): guidance_interval must be two σ values (lo, hi), "
                            f"got {interval!r:.60} ({type(interval).__name__}).")


def seed_list(seeds: Any, images: int) -> list[Any]:
    """``generate(seeds=...)`` as a list of one seed per image, or one sentence (its seeds'
    kinds and ranges are :func:`_check_numbers`'s)."""
    if isinstance(seeds, str | bytes) or not isinstance(seeds, Iterable):
        raise GlidectlError("generate(): seeds must be a list of whole numbers, one per image, "
                            f"got {seeds!r:.60} ({type(seeds).__name__}).")
    seeds = list(seeds)
    if len(seeds) != images:
        raise GlidectlError(f"generate(): seeds holds {len(seeds)} seed"
                            f"{'s' if len(seeds) != 1 else ''} but the request makes {images} "
                            f"image{'s' if images != 1 else ''}; pass one seed per image.")
    return seeds


def unknown_options(names: Iterable[str], own: Iterable[str]) -> str:
    """"unknown option 'guidence' (did you mean 'guidance'?)" for ``generate`` keywords that
    are neither its ``own`` nor a stage's."""
    fields = list(StageOptions.__dataclass_fields__)
    known = [*own, *fields, *(f"upsample_{k}" for k in fields), "upsample_temp"]
    said = []
    for name in sorted(names):
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        said.append(f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name))
    return f"unknown option{'s' if len(said) > 1 else ''} {', '.join(said)}"


def _check_types(values: dict[str, Any], kind: type, none_ok: bool = True) -> None:
    """The one-line error for a ``generate`` keyword that is not a whole number (``int``) or
    not a number (``float``: ints too); None stands for a stage's default (unless not
    ``none_ok``: ``n``, ``seed``)."""
    wanted = numbers.Integral if kind is int else numbers.Real
    for key, value in values.items():
        if (value is not None or not none_ok) and (
                isinstance(value, bool) or not isinstance(value, wanted)):
            what = "a whole number" if kind is int else "a number"
            raise GlidectlError(f"generate(): {key} must be {what}, got {value!r:.60} "
                                f"({type(value).__name__}).")


# the base stage's settings: none changes a pixel when only the upsampler runs (low_res)
BASE_ONLY = ("sampler", "steps", "schedule", "guidance", "guidance_interval",
             "guidance_rescale", "dynamic_threshold", "eta")


def eta_unused(options: StageOptions) -> str | None:
    """Why η changes no pixel of a stage that runs (its sampler takes no η), or None."""
    if options.sampler_spec().accepts("eta"):
        return None
    return (f"the {options.sampler} sampler takes no η (ddim and the ancestral and SDE "
            "samplers do)")
