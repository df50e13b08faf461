"""Sampling with a model in hand: one stage (base or upsampler) from prompts and seeds.

:func:`sample_stage` is the one sampling loop; :func:`sample_base` / :func:`sample_upsample`
are the conveniences training previews use. Image i draws all its noise from its own
generator (seed s+i; the upsampler stage s+i+1000003), so it comes out the same whatever the
batch size. :class:`glidectl.pipeline.GlidePipeline` chains the stages.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from PIL import Image

from . import plugins
from .errors import GlidectlError, NonFiniteSample, a_or_an, canonical_word, one_line
from .glide.options import UPSAMPLE_FACTOR
from .greyscale import to_grey
from .images import centre_square, from_pil, known_mask_from_pil, to_pil
from .samplers.denoiser import GlideDenoiser
from .samplers.noise import image_generators, per_image_noise_sampler, randn_per_image
from .samplers.schedules import DEFAULT_SIGMA_MAX, build_sigmas, sigmas_from_alphas_cumprod
from .samplers.spec import Sampler, as_sampler
from .samplers.tuned import is_schedule_file, read_coefficients
from .sampling_defaults import (
    BASE_GUIDANCE,
    BASE_SAMPLER,
    BASE_STEPS,
    UPSAMPLE_SAMPLER,
    UPSAMPLE_STEPS,
    UPSAMPLE_TEMP,
)

UPSAMPLE_SEED_OFFSET = 1_000_003
# autocast dtype by precision word ("no" is the old spelling of fp32)
PRECISIONS = {"fp32": None, "no": None, "fp16": torch.float16, "bf16": torch.bfloat16}
Warn = Callable[[str], None]


def stage_word(key: str, value: Any) -> Any:
    """A stage's ``sampler`` or ``schedule`` (``key``) name in any case as its lower-case
    word, the one records hold (``auto`` as None: the sampler's own schedule); a schedule
    file's path, and a name no plugin registers, as given."""
    if key == "sampler":
        return canonical_word(value, plugins.samplers())
    if isinstance(value, os.PathLike):  # a schedule file as a pathlib.Path: its text
        value = os.fspath(value)
    if isinstance(value, str) and is_schedule_file(value):
        return value
    word = canonical_word(value, ("respaced", "auto"))
    if word == "auto":  # the sampler's own schedule, as --schedule auto (None)
        return None
    return word if word == "respaced" else canonical_word(value, plugins.schedules())


@dataclass(frozen=True)
class StageOptions:
    """How one stage (base or upsampler) samples."""

    sampler: str = BASE_SAMPLER
    steps: int | str = BASE_STEPS
    schedule: str | None = None
    guidance: float | None = BASE_GUIDANCE
    eta: float | None = None
    temperature: float = 1.0
    sigma_max: float | None = DEFAULT_SIGMA_MAX
    clip_denoised: bool = True
    quantize_t: bool = False
    guidance_interval: tuple[float, float] | None = None  # guide only for LO <= σ <= HI
    guidance_rescale: float = 0.0  # φ of guidance rescale (0 = off)
    dynamic_threshold: float | None = None  # percentile of Imagen's x0 thresholding
    grey: bool = False  # project every x0 prediction (and the picture) onto grey images

    def sampler_spec(self) -> Sampler:
        return as_sampler(plugins.samplers().get(self.sampler))

    def sigmas(self, table: np.ndarray) -> torch.Tensor:
        spec = self.sampler_spec()
        if not self.schedule:
            self._check_own_schedule(spec.schedule)
        return build_sigmas(self.schedule or spec.schedule, self.steps, table,
                            sigma_max=self.sigma_max)

    def _check_own_schedule(self, schedule: str) -> None:
        """A sampler's own schedule (``Sampler(schedule=...)``) that is not registered is its
        plugin's mistake, not an unknown --schedule the user never passed."""
        registry = plugins.schedules()
        if schedule == "respaced" or is_schedule_file(schedule) or schedule in registry:
            return
        entry = plugins.samplers().entry(self.sampler)
        close = registry.nearest(schedule)
        known = f"did you mean {close!r}?" if close else f"known: {', '.join(registry.names())}"
        raise GlidectlError(
            f"The {entry.name} sampler (plugin {plugins.who(entry.plugin)}) names "
            f"schedule={schedule!r} as its own, which is not registered ({known}); pass "
            "--schedule, or fix its Sampler(schedule=...)."
        )

    def coefficients(self, sigmas: torch.Tensor) -> list[list[float]] | None:
        """A bespoke solver's coefficients for these σ's from the ``schedule`` file (None
        without one: the sampler says what to pass)."""
        if not (self.schedule and is_schedule_file(self.schedule)):
            return None
        return read_coefficients(self.schedule, len(sigmas) - 1, sigmas)

    def model_calls(self, alphas_cumprod: np.ndarray) -> int:
        """Model forwards for one batch (one forward covers cond and uncond rows), given the
        model's ᾱ table (:func:`sigma_table`); a schedule or coefficients that cannot be
        used raise their one sentence here, before any sampling."""
        sigmas = self.sigmas(sigmas_from_alphas_cumprod(alphas_cumprod))
        spec = self.sampler_spec()
        if spec.accepts("coefficients") and self.coefficients(sigmas) is None:
            raise GlidectlError(f"The {self.sampler} sampler needs coefficients fitted to the "
                                "model: pass --schedule FILE written by glidectl fit-steps "
                                "MODEL --method bespoke.")
        if len(sigmas) - 1 < spec.min_steps:  # said before any stage samples
            raise GlidectlError(f"The {self.sampler} sampler needs at least {spec.min_steps} "
                                f"steps, got {str(self.steps)!r}.")
        return spec.model_calls(len(sigmas) - 1)


BASE_DEFAULTS = StageOptions()
UPSAMPLE_DEFAULTS = StageOptions(
    sampler=UPSAMPLE_SAMPLER, steps=UPSAMPLE_STEPS, guidance=None, temperature=UPSAMPLE_TEMP
)


def stage_model_calls(stage: str, options: StageOptions, alphas_cumprod: Any) -> int:
    """:meth:`StageOptions.model_calls` of one stage; the upsampler's errors say so and name
    its own flags (``--upsample-schedule``, not the base's ``--schedule``)."""
    try:
        return options.model_calls(alphas_cumprod)
    except GlidectlError as exc:
        text = str(exc)
        flag = "--steps" if stage == "base" else "--upsample-steps"
        if repr(str(options.steps)) in text:  # the steps are what is wrong: name their flag
            text = f"{flag} {options.steps}: {text[0].lower()}{text[1:]}"
        elif stage == "base":
            raise
        else:
            text = "Upsampler: " + text
        if stage != "base":
            text = upsampler_words(text)
        raise GlidectlError(text) from None


def upsampler_words(text: str) -> str:
    """A schedule or sampler message of the upsampler stage in its own words: its flags
    (``--upsample-schedule``, not the base's ``--schedule``), and no advice to run
    ``glidectl fit-steps``, which fits base models only."""
    text = text.replace("--schedule ", "--upsample-schedule ").replace(
        "--sampler ", "--upsample-sampler ")
    if (at := text.find("glidectl fit-steps MODEL")) >= 0:  # the clause goes
        cut = max(text.rfind(": ", 0, at), text.rfind("; ", 0, at), text.rfind(", or ", 0, at))
        text = (text[:cut] + "; glidectl fit-steps fits base models only, so pick another "
                "--upsample-sampler or --upsample-schedule.")
    return text


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def tokenizer_for(model: torch.nn.Module, vocab_dir: str | None = None) -> Any:
    """The tokenizer a model was trained with (``model.options.tokenizer``: gpt2 or byte)."""
    from .tokenizer import get_tokenizer

    return get_tokenizer(model.options.tokenizer, vocab_dir)


def sigma_table(model: torch.nn.Module, diffusion: Any = None) -> np.ndarray:
    """ᾱ of the model's own (unrespaced) noise schedule."""
    if diffusion is not None:
        return np.asarray(diffusion.original_alphas_cumprod, dtype=np.float64)
    return sigma_table_for(model.options)


def sigma_table_for(options: Any) -> np.ndarray:
    """ᾱ of the noise schedule named by model options (no weights needed)."""
    from .diffusion import create_diffusion

    return create_diffusion(options.noise_schedule, options.diffusion_steps).alphas_cumprod


def prompt_warnings(tokenizer: Any, prompts: Sequence[str], ctx: int) -> list[str]:
    """One message per distinct prompt longer than the model's text context."""
    out = []
    for prompt in dict.fromkeys(prompts):
        count = tokenizer.count(prompt)
        if count > ctx:
            short = prompt if len(prompt) <= 40 else prompt[:37] + "..."
            out.append(f"Prompt {short!r} is {count} tokens but the model reads {ctx}: "
                       f"the last {count - ctx} tokens were dropped.")
    return out


def quantize_8bit(images: torch.Tensor) -> torch.Tensor:
    """Round [−1, 1] images to the 256 levels of an 8-bit PNG, as GLIDE does before upsampling."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1


def _in_eval_mode(sample: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Sample with ``model`` in eval mode (no dropout: a seed gives one picture), then put
    back the mode it was in (a model a notebook is training stays in train mode)."""
    @functools.wraps(sample)
    def run(model: torch.nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
        was = model.training
        model.eval()
        try:
            return sample(model, *args, **kwargs)
        finally:
            model.train(was)

    return run


@_in_eval_mode
@torch.no_grad()
def sample_stage(
    model: torch.nn.Module,
    prompts: Sequence[str],
    tokenizer: Any,
    seeds: Sequence[int],
    options: StageOptions = BASE_DEFAULTS,
    *,
    diffusion: Any = None,
    low_res: torch.Tensor | None = None,
    inpaint_image: torch.Tensor | None = None,
    inpaint_mask: torch.Tensor | None = None,
    precision: str = "fp32",
    on_call: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Sample one image per prompt (row i from generator ``seeds[i]``) → [N,3,H,W] in [−1, 1].

    Text is encoded once (``model.encode_text``) and reused at every step. With guidance,
    uncond rows use the empty caption and one forward covers both. Inpainting
    (``inpaint_image`` [1|N,3,H,W], ``inpaint_mask`` [1|N,1,H,W], 1 = known) feeds both to the
    network and keeps the known pixels in every x0 prediction, as GLIDE's notebook does, and
    in the result (with ``grey``, only the drawn pixels are grey).
    """
    opts = model.options
    if len(seeds) != len(prompts):
        raise ValueError("sample_stage needs one seed per prompt")
    if precision not in PRECISIONS:
        raise GlidectlError(f"Unknown precision {precision!r}; use fp32, bf16 or fp16.")
    check_inpaint_pair(inpaint_image, inpaint_mask)
    if inpaint_image is not None and not opts.inpaint:
        raise GlidectlError(
            f"Inpainting needs an inpaint model, but this is {a_or_an(repr(opts.kind))} model; use "
            "openai:base-inpaint / openai:upsample-inpaint or a model trained as one."
        )
    if opts.super_res and low_res is None:
        raise GlidectlError(
            f"{a_or_an(opts.kind).capitalize()} model needs a low-resolution input image.")
    device = model_device(model)
    n = len(prompts)

    def rows(t: torch.Tensor) -> torch.Tensor:
        t = t.to(device=device, dtype=torch.float32)
        return t.expand(n, *t.shape[1:]) if t.shape[0] == 1 else t

    kwargs: dict[str, torch.Tensor] = {}
    denoised_fn = None
    if low_res is not None:
        kwargs["low_res"] = rows(low_res)
    if inpaint_image is not None and inpaint_mask is not None:
        image, known = rows(inpaint_image), rows(inpaint_mask)
        kwargs.update(inpaint_image=image * known, inpaint_mask=known)

        def denoised_fn(x0: torch.Tensor) -> torch.Tensor:
            return x0 * (1 - known) + image * known

    denoiser = stage_denoiser(model, prompts, tokenizer, options, diffusion=diffusion,
                              model_kwargs=kwargs, denoised_fn=denoised_fn,
                              precision=precision, on_call=on_call)
    spec = options.sampler_spec()
    sigmas = options.sigmas(denoiser.sigmas)
    generators = image_generators(seeds)
    size = opts.image_size
    x = start_x(randn_per_image(generators, (3, size, size), device) * options.temperature,
                sigmas)
    sampler_options: dict[str, Any] = {}
    if options.eta is not None and spec.accepts("eta"):
        sampler_options["eta"] = options.eta
    if spec.accepts("coefficients"):
        sampler_options["coefficients"] = options.coefficients(sigmas)
    out = spec(denoiser, x, sigmas, noise_sampler=per_image_noise_sampler(generators, x),
               **sampler_options)
    check_finite(out, denoiser, opts.kind, options.sampler, precision)
    if options.grey:  # the last step's x is its x0 to float rounding, or σ_min's noise away
        out = to_grey(out)
    if denoised_fn is not None:  # the kept pixels exactly as given, grey or not (plms's
        out = denoised_fn(out)  # last step stops short of them)
    return out.clamp(-1, 1)


def stage_denoiser(model: torch.nn.Module, prompts: Sequence[str], tokenizer: Any,
                   options: StageOptions, *, diffusion: Any = None,
                   model_kwargs: dict[str, torch.Tensor] | None = None,
                   denoised_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
                   precision: str = "fp32", on_call: Callable[[], None] | None = None
                   ) -> GlideDenoiser:
    """The denoiser a stage samples with: the prompts encoded once (with guidance other
    than 1, then the empty caption's rows), x0 clipped when ``clip_denoised`` and the sampler
    both say so, and ``options``' guidance tools and grey."""
    clip = options.clip_denoised and options.sampler_spec().clip  # an unknown name: first
    device = model_device(model)
    guided = options.guidance is not None and options.guidance != 1.0
    texts = list(prompts) + ([""] * len(prompts) if guided else [])
    tokens, mask = tokenizer.encode_batch(texts, model.options.text_ctx)
    with torch.no_grad():  # a bespoke fit differentiates the denoiser, never the text
        text_emb = model.encode_text(tokens.to(device), mask.to(device))
    return GlideDenoiser(
        model, sigma_table(model, diffusion), text_emb=text_emb,
        guidance=options.guidance if guided else None, model_kwargs=model_kwargs,
        clip=clip, denoised_fn=denoised_fn,
        quantize_t=options.quantize_t, autocast_dtype=PRECISIONS[precision], on_call=on_call,
        guidance_interval=options.guidance_interval, guidance_rescale=options.guidance_rescale,
        dynamic_threshold=options.dynamic_threshold, grey=options.grey,
    )


def start_x(x_T: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Where a sampler starts: unit noise ``x_T`` (the VP scale's x at σ_0) on the VE
    scale, x = x_T·√(1+σ_0²)."""
    return x_T * (1 + float(sigmas[0]) ** 2) ** 0.5


def check_finite(out: torch.Tensor, denoiser: GlideDenoiser, kind: str, sampler: str,
                 precision: str) -> None:
    """One sentence instead of a black image when sampling met NaN or infinite values:
    the network's (damaged weights, or a precision too coarse) or else the sampler's."""
    if denoiser.nonfinite:
        coarse = f" or {precision} too coarse for it (try --precision fp32)" if (
            precision not in ("fp32", "no")) else ""  # "no": autocast's word for fp32
        raise NonFiniteSample(f"The {kind} model returned NaN or infinite values while "
                              f"sampling: its weights may be damaged{coarse}.")
    if not bool(torch.isfinite(out).all()):
        raise NonFiniteSample(f"Sampler {sampler!r} produced NaN or infinite values from finite "
                              "model outputs; try another --sampler or --schedule.")


def warn_all(messages: list[str], warn: Warn | None) -> None:
    """Each message to ``warn``, else as a warning of the caller's line (the first frame
    outside glidectl: a notebook cell run again is another line, so it warns again)."""
    for message in messages:
        if warn is not None:
            warn(message)
        else:
            warnings.warn(message, stacklevel=_outside_level())


def _outside_level() -> int:
    """The ``stacklevel`` of the first frame outside the glidectl package, counted from the
    caller of this function's caller (what ``warnings.warn`` there counts from)."""
    import contextlib
    import sys

    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    between = {os.path.abspath(contextlib.__file__)}  # glidectl's decorators' frames
    frame, level = sys._getframe(2), 2
    while frame is not None and ((name := os.path.abspath(frame.f_code.co_filename))
                                 .startswith(package) or name in between):
        frame, level = frame.f_back, level + 1
    return level


def sample_base(
    model: torch.nn.Module,
    diffusion: Any,
    prompts: Sequence[str],
    tokenizer: Any = None,
    sampler: str = BASE_DEFAULTS.sampler,
    steps: int | str = BASE_DEFAULTS.steps,
    guidance: float | None = BASE_DEFAULTS.guidance,
    seed: int = 0,
    **options: Any,
) -> torch.Tensor:
    """Base-model samples for ``prompts`` (image i seeded ``seed + i``) → [N,3,H,W] in [−1, 1].

    ``diffusion`` (or None) only supplies the noise schedule; keyword ``options`` are
    :class:`StageOptions` fields plus ``sample_stage``'s (inpainting, precision, on_call).
    """
    tokenizer = tokenizer or tokenizer_for(model)
    stage, extra = _split(StageOptions(sampler=sampler, steps=steps, guidance=guidance), options)
    warn_all(prompt_warnings(tokenizer, prompts, model.options.text_ctx), extra.pop("warn", None))
    seeds = [seed + i for i in range(len(prompts))]
    return sample_stage(model, prompts, tokenizer, seeds, stage, diffusion=diffusion, **extra)


def sample_upsample(
    model: torch.nn.Module,
    diffusion: Any,
    prompts: Sequence[str],
    tokenizer: Any,
    low_res: torch.Tensor,
    sampler: str = UPSAMPLE_DEFAULTS.sampler,
    steps: int | str = UPSAMPLE_DEFAULTS.steps,
    guidance: float | None = UPSAMPLE_DEFAULTS.guidance,
    seed: int = 0,
    **options: Any,
) -> torch.Tensor:
    """Upsample ``low_res`` [N,3,h,w] in [−1, 1] (quantised to 8 bits first) with noise
    temperature 0.997 by default → [N,3,H,W] in [−1, 1]."""
    tokenizer = tokenizer or tokenizer_for(model)
    stage, extra = _split(replace(UPSAMPLE_DEFAULTS, sampler=sampler, steps=steps,
                                  guidance=guidance), options)
    warn_all(prompt_warnings(tokenizer, prompts, model.options.text_ctx), extra.pop("warn", None))
    seeds = [seed + i + UPSAMPLE_SEED_OFFSET for i in range(len(prompts))]
    return sample_stage(model, prompts, tokenizer, seeds, stage, diffusion=diffusion,
                        low_res=quantize_8bit(low_res), **extra)


def _split(stage: StageOptions, options: dict[str, Any]) -> tuple[StageOptions, dict[str, Any]]:
    fields = {k: v for k, v in options.items() if k in StageOptions.__dataclass_fields__}
    return replace(stage, **fields), {k: v for k, v in options.items() if k not in fields}


def as_image_tensor(image: Any, size: int, what: str = "image",
                    resample: str = "bicubic") -> torch.Tensor:
    """A path, PIL image or [N,]3,H,W tensor in [−1, 1] → [N,3,size,size]: the centre square,
    resized with PIL's antialiased ``resample`` filter (``"bicubic"`` or ``"box"``). Images
    are read to RGB as training reads them (a file turned upright by its EXIF orientation,
    16-bit levels scaled, transparency over white); a tensor of another size is resized as
    its image file is (its 8-bit levels), so one picture is one input whichever way it
    comes, and a tensor of ``size`` is taken as it is."""
    filter_ = resample_filter(resample)
    if isinstance(image, torch.Tensor):
        t = _checked_tensor(image, what)
        if tuple(t.shape[-2:]) == (size, size):
            return t
        return torch.cat([from_pil(im, size, filter_) for im in to_pil(t)])
    from .data.images import to_rgb

    # 16-bit, alpha, CMYK: as training reads
    return from_pil(to_rgb(_open(image))[0], size, filter_)


def as_low_res_tensor(image: Any, size: int, resample: str = "bicubic") -> torch.Tensor:
    """``low_res`` (a path, PIL image or tensor) → [N,3,size,size] as the upsampler takes it
    (:func:`as_image_tensor`): one of another size downscaled with ``resample``, the filter
    the upsampler's training downscaled its inputs with (``data.low_res_resample``)."""
    return as_image_tensor(image, size, "low_res", resample)


def resample_word(name: str, where: str = "generate(): low_res_resample") -> str:
    """A ``data.low_res_resample`` name in any case as its lower-case word; one sentence
    naming ``where`` for another name."""
    from .data.transforms import RESAMPLE

    name = canonical_word(name, RESAMPLE)
    if not isinstance(name, str) or name not in RESAMPLE:
        choices = " or ".join(map(repr, RESAMPLE))
        raise GlidectlError(f"{where} must be {choices} (the filter that shrinks a low-res "
                            f"image of another size), got {name!r:.60}; pass one of them.")
    return name


def resample_filter(name: str, where: str = "generate(): low_res_resample"
                    ) -> Image.Resampling:
    """PIL's filter for a ``data.low_res_resample`` name (:func:`resample_word`)."""
    from .data.transforms import RESAMPLE

    return RESAMPLE[resample_word(name, where)]


def _checked_tensor(image: torch.Tensor, what: str) -> torch.Tensor:
    """An image tensor as [N,3,H,W] float; one sentence for one holding NaN or values
    outside [-1, 1]."""
    t = (image[None] if image.ndim == 3 else image).float()
    if t.numel() and not torch.isfinite(t).all():  # NaN passes the range test below
        raise GlidectlError(f"The {what} tensor holds NaN or infinite values; images are "
                            "tensors of finite numbers in [-1, 1].")
    if t.numel() and (t.min() < -1.01 or t.max() > 1.01):
        raise GlidectlError(
            f"The {what} tensor holds values from {t.min().item():g} to "
            f"{t.max().item():g}, but images are tensors in [-1, 1]; pass x / 127.5 - 1 "
            "for 0-255 pixels.")
    return t


def as_mask_tensor(mask: Any, size: int) -> torch.Tensor:
    """A mask image (white = repaint) or a tensor with 1 on kept pixels → [N,1,size,size]
    of its centre square."""
    if isinstance(mask, torch.Tensor):
        t = mask.float()
        if t.numel() and (not torch.isfinite(t).all() or t.min() < 0 or t.max() > 1):
            low, high = t.min().item(), t.max().item()
            raise GlidectlError(f"The inpaint_mask tensor holds values from {low:g} to "
                                f"{high:g}; a mask is 1 on the pixels to keep and 0 on those "
                                "to repaint (1 - mask / 255 for a 0-255 mask that is white "
                                "where to repaint, as diffusers' are).")
        t = t.reshape(1, 1, *t.shape[-2:]) if t.ndim < 4 else t
        if tuple(t.shape[-2:]) != (size, size):  # as a mask file's is: PIL's nearest
            t = torch.stack([_nearest(m, size) for m in t.reshape(-1, *t.shape[-2:])])
            return t.reshape(-1, 1, size, size)
        return t
    return known_mask_from_pil(_open(mask), size)


def all_kept_message(mask: Any, *sizes: int) -> str | None:
    """A warning when the inpaint mask keeps every pixel at each inpainting stage's size in
    ``sizes`` (nothing white): the picture comes back as the image, every step spent for
    nothing; or repaints every pixel at each (all white or transparent: an inverted mask?),
    so the image is not used. A mask whose hole one stage's size misses says nothing."""
    known = [as_mask_tensor(mask, size) >= 0.5 for size in sizes]
    at = " and ".join(f"{size} px" for size in sizes)
    if all(bool(k.all()) for k in known):
        return (f"The inpaint mask keeps every pixel at {at} (white marks what to "
                "repaint), so the picture comes back as the inpaint image.")
    if not any(bool(k.any()) for k in known):
        return (f"The inpaint mask repaints every pixel at {at} (white or transparent "
                "marks what to repaint, black what is kept), so the inpaint image is not used; "
                "is the mask inverted?")
    return None


def _nearest(mask: torch.Tensor, size: int) -> torch.Tensor:
    """One [H,W] mask's centre square nearest-resized to ``size`` as PIL resizes a mask
    file (:func:`glidectl.images.known_mask_from_pil`), its values kept."""
    image = Image.fromarray(mask.detach().float().cpu().numpy())  # mode F
    image = image.resize((size, size), Image.Resampling.NEAREST, box=centre_square(*image.size))
    return torch.from_numpy(np.asarray(image, dtype=np.float32).copy())


def input_messages(inputs: dict[str, Any], low_res_size: int | None = None,
                   resample: str | None = None) -> list[str]:
    """Warnings for non-square input images (only their centre square is used) and for a
    low-res image that is not ``low_res_size`` px (it is resized to the upsampler's input,
    with the filter ``resample``); one sentence if the inpaint mask's shape is not the
    image's."""
    shapes = {what: _shape(x) for what, x in inputs.items() if x is not None}
    image, mask = shapes.get("inpaint image"), shapes.get("inpaint mask")
    if image and mask and image[0] * mask[1] != image[1] * mask[0]:
        raise GlidectlError(f"The inpaint mask is {mask[0]}×{mask[1]} px but the image "
                            f"{image[0]}×{image[1]} px; give a mask of the image's shape.")
    messages = [f"The {what}{_name(inputs[what])} is {w}×{h} px; only its centre "
                f"{min(w, h)}×{min(w, h)} square is used." for what, (w, h) in shapes.items()
                if w != h]
    messages += [m for what, keyword in (("low-res image", "low_res"),
                                         ("inpaint image", "inpaint_image"))
                 if (m := unit_range_message(inputs.get(what), keyword))]
    if (m := colour_mask_message(inputs.get("inpaint mask"))) is not None:
        messages.append(m)
    low = shapes.get("low-res image")
    if low and low_res_size and min(low) != low_res_size:
        side = min(low)
        messages.append(
            f"The low-res image{_name(inputs['low-res image'])} is {side} px across, but "
            f"this upsampler takes {low_res_size} px input: it is resized to "
            f"{low_res_size}×{low_res_size}{f' ({resample})' if resample else ''} first, so "
            "the output is "
            f"{low_res_size * UPSAMPLE_FACTOR} px (pass an image of {low_res_size} px to "
            "upsample it as it is).")
    return messages


def colour_mask_message(mask: Any) -> str | None:
    """A warning for an inpaint mask file or PIL image read by its brightness that is a
    colour picture (a pixel whose R, G and B differ by more than 64 levels): the photo
    passed as the mask, the image and mask swapped; None for a black and white or grey mask
    (a JPEG's colour noise included), one read by its alpha, a tensor or None."""
    if mask is None or isinstance(mask, torch.Tensor):
        return None
    from .data.images import to_rgb
    from .images import _alpha

    image = _open(mask)
    if _alpha(image) is not None:  # transparent = repaint, whatever the colour
        return None
    rgb = np.asarray(to_rgb(image)[0], dtype=np.int16)
    if not rgb.size or int((rgb.max(axis=-1) - rgb.min(axis=-1)).max()) <= 64:
        return None
    return (f"The inpaint mask{_name(mask)} is a colour picture, read by its brightness "
            "(white = repaint, black = keep); a mask is black and white (or transparent "
            "where to repaint), so if it is the picture to inpaint, swap the inpaint image "
            "and mask.")


def unit_range_message(image: Any, keyword: str) -> str | None:
    """A warning for an image tensor whose values all lie in [0, 1] and differ: the
    [0, 1] pixels of torchvision's ``ToTensor`` (read as [-1, 1], a washed-out picture, every
    pixel mid-grey or brighter); None for anything else (one flat tone, a file, PIL)."""
    if not isinstance(image, torch.Tensor) or not image.numel():
        return None
    low, high = image.float().aminmax()
    if not (0 <= low < high <= 1):  # NaN too: said as an error when it is read
        return None
    return (f"The {keyword} tensor holds values from {low.item():.3g} to {high.item():.3g} only, "
            "so it is read as a pale picture (images are tensors in [-1, 1], 0 mid-grey); "
            "if it holds [0, 1] pixels (torchvision's ToTensor), pass x * 2 - 1.")


def check_image_input(value: Any, keyword: str, mask: bool = False) -> None:
    """One sentence naming ``keyword`` for an input image ``generate()`` cannot read: not
    a path, PIL image or tensor (a numpy array, a list), or a tensor of another shape than
    [N,]3,H,W (a mask: [[N,]1,]H,W)."""
    if value is None or isinstance(value, str | os.PathLike):
        return
    if isinstance(value, Image.Image):  # an empty crop was sampled as some picture
        if min(value.size) > 0:
            return
        raise GlidectlError(f"generate(): {keyword} is a PIL image of {value.width}×"
                            f"{value.height} px, which holds no pixel; pass a picture (an "
                            "empty crop box gives such an image).")
    takes = "a [[N,]1,]H,W tensor (1 = keep)" if mask else "a [N,]3,H,W tensor in [-1, 1]"
    if isinstance(value, torch.Tensor):
        shape, channels = tuple(value.shape), 1 if mask else 3
        if (value.ndim in (3, 4) and shape[-3] == channels or mask and value.ndim == 2) and (
                min(shape[-2:]) > 0):
            return
        raise GlidectlError(f"generate(): {keyword} is a tensor of shape {shape}; pass {takes}.")
    if isinstance(value, np.ndarray):
        pixels = "H×W pixels (white = repaint)" if mask else "H×W×3 pixels"
        raise GlidectlError(f"generate(): {keyword} is a numpy array of shape {value.shape}; "
                            f"pass Image.fromarray(array) for 8-bit {pixels}, or {takes}.")
    raise GlidectlError(f"generate(): {keyword} must be an image file's path, a PIL image or "
                        f"{takes}, got {one_line(repr(value)):.60} ({type(value).__name__}).")


def opened(image: Any) -> Any:
    """A path opened as a PIL image (read once, however many batches resize it); tensors,
    PIL images and None as given."""
    return image if image is None or isinstance(image, torch.Tensor | Image.Image) \
        else _open(image)


def _shape(image: Any) -> tuple[int, int]:
    if isinstance(image, torch.Tensor):
        return int(image.shape[-1]), int(image.shape[-2])
    return _open(image).size


def _name(image: Any) -> str:
    return "" if isinstance(image, torch.Tensor | Image.Image) else f" {str(image)!r}"


def _open(image: Any) -> Image.Image:
    from .data.images import apply_orientation

    if isinstance(image, Image.Image):
        return image
    try:  # read whole (a truncated file fails here), upright by its EXIF orientation
        with warnings.catch_warnings():  # a large image is read; Pillow's note is not ours
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image_file = Image.open(image)
            image_file.load()
        return apply_orientation(image_file)
    except Image.DecompressionBombError as exc:
        raise GlidectlError(
            f"Cannot read image {str(image)!r}: {one_line(str(exc)).split(',')[0]}, "
            "Pillow's guard against decompression bombs; pass a smaller image (the model "
            "takes its centre square at its own size).") from None
    except (OSError, ValueError) as exc:
        raise GlidectlError(
            f"Cannot read image {str(image)!r} ({exc}); pass a PNG or JPEG."
        ) from exc


def check_inpaint_pair(image: Any, mask: Any) -> None:
    """Inpainting takes an image and a mask, or neither: one sentence otherwise."""
    if (image is None) != (mask is None):
        raise GlidectlError("Inpainting needs both --inpaint-image and --inpaint-mask.")


def prompt_used(tokenizer: Any, prompt: str, ctx: int) -> str:
    """The text a model reads of ``prompt``: the first ``ctx`` tokens, decoded."""
    return tokenizer.decode(tokenizer.encode(prompt)[:ctx])
