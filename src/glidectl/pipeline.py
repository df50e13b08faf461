"""Prompt → 64 px (classifier-free guidance) → optional 256 px upsampler → PIL images.

Sampling with models in hand (:class:`GlidePipeline`, :func:`sample_base`,
:func:`sample_upsample`) is kept apart from loading them (:func:`generate`), so training
previews can sample an in-memory model. Image i of a request with seed s draws all its noise
from its own generator (seed s+i; the upsampler stage s+i+1000003), so it comes out the same
whatever the batch size.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from PIL import Image

from . import plugins
from .errors import GlidectlError
from .images import from_pil, known_mask_from_pil, to_pil
from .samplers.denoiser import GlideDenoiser
from .samplers.noise import image_generators, per_image_noise_sampler, randn_per_image
from .samplers.schedules import DEFAULT_SIGMA_MAX, build_sigmas, sigmas_from_alphas_cumprod
from .samplers.spec import Sampler, as_sampler

UPSAMPLE_TEMP = 0.997
UPSAMPLE_SEED_OFFSET = 1_000_003
PRECISIONS = {"no": None, "fp16": torch.float16, "bf16": torch.bfloat16}
Warn = Callable[[str], None]


@dataclass(frozen=True)
class StageOptions:
    """How one stage (base or upsampler) samples."""

    sampler: str = "dpm++2m"
    steps: int | str = 25
    schedule: str | None = None
    guidance: float | None = 3.0
    eta: float | None = None
    temperature: float = 1.0
    sigma_max: float | None = DEFAULT_SIGMA_MAX
    clip_denoised: bool = True
    quantize_t: bool = False
    guidance_interval: tuple[float, float] | None = None  # guide only for LO <= σ <= HI
    guidance_rescale: float = 0.0  # φ of guidance rescale (0 = off)
    dynamic_threshold: float | None = None  # percentile of Imagen's x0 thresholding

    def sampler_spec(self) -> Sampler:
        return as_sampler(plugins.samplers().get(self.sampler))

    def sigmas(self, table: np.ndarray) -> torch.Tensor:
        spec = self.sampler_spec()
        return build_sigmas(self.schedule or spec.schedule, self.steps, table,
                            sigma_max=self.sigma_max)

    def model_calls(self, alphas_cumprod: np.ndarray) -> int:
        """Model forwards for one batch (one forward covers cond and uncond rows), given the
        model's ᾱ table (:func:`sigma_table`)."""
        sigmas = self.sigmas(sigmas_from_alphas_cumprod(alphas_cumprod))
        return self.sampler_spec().model_calls(len(sigmas) - 1)


BASE_DEFAULTS = StageOptions()
UPSAMPLE_DEFAULTS = StageOptions(
    sampler="ddpm", steps="fast27", guidance=None, temperature=UPSAMPLE_TEMP
)


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
    from .diffusion import create_diffusion

    opts = model.options
    return create_diffusion(opts.noise_schedule, opts.diffusion_steps).alphas_cumprod


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
    precision: str = "no",
    on_call: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Sample one image per prompt (row i from generator ``seeds[i]``) → [N,3,H,W] in [−1, 1].

    Text is encoded once (``model.encode_text``) and reused at every step. With guidance,
    uncond rows use the empty caption and one forward covers both. Inpainting
    (``inpaint_image`` [1|N,3,H,W], ``inpaint_mask`` [1|N,1,H,W], 1 = known) feeds both to the
    network and keeps the known pixels in every x0 prediction, as GLIDE's notebook does.
    """
    opts = model.options
    if len(seeds) != len(prompts):
        raise ValueError("sample_stage needs one seed per prompt")
    if precision not in PRECISIONS:
        raise GlidectlError(f"Unknown precision {precision!r}; use no, fp16 or bf16.")
    if (inpaint_image is None) != (inpaint_mask is None):
        raise GlidectlError("Inpainting needs both an image and a mask.")
    if inpaint_image is not None and not opts.inpaint:
        raise GlidectlError(
            f"Inpainting needs an inpaint model, but this is a {opts.kind!r} model; use "
            "openai:base-inpaint / openai:upsample-inpaint or a model trained as one."
        )
    if opts.super_res and low_res is None:
        raise GlidectlError(f"A {opts.kind} model needs a low-resolution input image.")
    spec = options.sampler_spec()
    device = model_device(model)
    n = len(prompts)
    guided = options.guidance is not None and options.guidance != 1.0
    texts = list(prompts) + ([""] * n if guided else [])
    tokens, mask = tokenizer.encode_batch(texts, opts.text_ctx)
    text_emb = model.encode_text(tokens.to(device), mask.to(device))

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

    denoiser = GlideDenoiser(
        model, sigma_table(model, diffusion), text_emb=text_emb,
        guidance=options.guidance if guided else None, model_kwargs=kwargs,
        clip=options.clip_denoised and spec.clip, denoised_fn=denoised_fn,
        quantize_t=options.quantize_t, autocast_dtype=PRECISIONS[precision], on_call=on_call,
        guidance_interval=options.guidance_interval, guidance_rescale=options.guidance_rescale,
        dynamic_threshold=options.dynamic_threshold,
    )
    sigmas = options.sigmas(denoiser.sigmas)
    generators = image_generators(seeds)
    size = opts.image_size
    x_T = randn_per_image(generators, (3, size, size), device) * options.temperature
    x = x_T * (1 + float(sigmas[0]) ** 2) ** 0.5
    sampler_options: dict[str, Any] = {}
    if options.eta is not None and spec.accepts("eta"):
        sampler_options["eta"] = options.eta
    out = spec(denoiser, x, sigmas, noise_sampler=per_image_noise_sampler(generators, x),
               **sampler_options)
    return out.clamp(-1, 1)


def _warn(messages: list[str], warn: Warn | None) -> None:
    for message in messages:
        (warn or (lambda m: warnings.warn(m, stacklevel=3)))(message)


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
    _warn(prompt_warnings(tokenizer, prompts, model.options.text_ctx), extra.pop("warn", None))
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
    _warn(prompt_warnings(tokenizer, prompts, model.options.text_ctx), extra.pop("warn", None))
    seeds = [seed + i + UPSAMPLE_SEED_OFFSET for i in range(len(prompts))]
    return sample_stage(model, prompts, tokenizer, seeds, stage, diffusion=diffusion,
                        low_res=quantize_8bit(low_res), **extra)


def _split(stage: StageOptions, options: dict[str, Any]) -> tuple[StageOptions, dict[str, Any]]:
    fields = {k: v for k, v in options.items() if k in StageOptions.__dataclass_fields__}
    return replace(stage, **fields), {k: v for k, v in options.items() if k not in fields}


def _as_image_tensor(image: Any, size: int) -> torch.Tensor:
    if isinstance(image, torch.Tensor):
        t = image[None] if image.ndim == 3 else image
        if t.shape[-1] != size:
            t = torch.nn.functional.interpolate(t.float(), size=(size, size), mode="bicubic",
                                                align_corners=False).clamp(-1, 1)
        return t
    return from_pil(_open(image), size)


def _as_mask_tensor(mask: Any, size: int) -> torch.Tensor:
    if isinstance(mask, torch.Tensor):
        t = mask.float()
        t = t.reshape(1, 1, *t.shape[-2:]) if t.ndim < 4 else t
        if t.shape[-1] != size:
            t = torch.nn.functional.interpolate(t, size=(size, size), mode="nearest")
        return t
    return known_mask_from_pil(_open(mask), size)


def _open(image: Any) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    try:
        return Image.open(image)
    except (OSError, ValueError) as exc:
        raise GlidectlError(
            f"Cannot read image {str(image)!r} ({exc}); pass a PNG or JPEG."
        ) from exc


class GlidePipeline:
    """Sample with models in hand: ``GlidePipeline(base, upsampler=None).generate(prompts)``.

    Tokenizers follow each model's options (GPT-2 for OpenAI's models, bytes for scratch
    ones) unless given. ``base`` may be None when every request passes ``low_res``.
    """

    def __init__(
        self,
        base: torch.nn.Module | None,
        upsampler: torch.nn.Module | None = None,
        *,
        tokenizer: Any = None,
        upsampler_tokenizer: Any = None,
        vocab_dir: str | None = None,
        diffusion: Any = None,
    ):
        if base is None and upsampler is None:
            raise GlidectlError("A pipeline needs a base model, an upsampler or both.")
        if upsampler is not None and not upsampler.options.super_res:
            raise GlidectlError(
                f"The upsampler is a {upsampler.options.kind!r} model; pass an upsample model."
            )
        if base is not None and base.options.super_res:
            raise GlidectlError(
                f"The base model is a {base.options.kind!r} model; pass it as the upsampler."
            )
        self.base, self.upsampler, self.diffusion = base, upsampler, diffusion
        self.tokenizer = tokenizer or (tokenizer_for(base, vocab_dir) if base else None)
        self.upsampler_tokenizer = upsampler_tokenizer or (
            tokenizer_for(upsampler, vocab_dir) if upsampler else None)

    def stages(self, **kwargs: Any) -> tuple[StageOptions, StageOptions, dict[str, Any]]:
        """Split ``generate`` keywords into base options, upsampler options and the rest."""
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
        for key in ("sigma_max", "clip_denoised", "quantize_t"):
            if key in base and key not in up:
                up[key] = base[key]
        return replace(BASE_DEFAULTS, **base), replace(UPSAMPLE_DEFAULTS, **up), rest

    def model_calls(self, n_images: int, batch_size: int, base: StageOptions,
                    up: StageOptions, low_res: bool = False) -> int:
        """Model forwards for the whole request (for progress bars)."""
        batches = -(-n_images // batch_size)
        total = 0
        if self.base is not None and not low_res:
            total += base.model_calls(sigma_table(self.base, self.diffusion))
        if self.upsampler is not None:
            total += up.model_calls(sigma_table(self.upsampler))
        return total * batches

    def generate(
        self,
        prompts: str | Sequence[str],
        *,
        n: int = 1,
        seed: int = 0,
        batch_size: int = 4,
        inpaint_image: Any = None,
        inpaint_mask: Any = None,
        low_res: Any = None,
        precision: str = "no",
        progress: Callable[[int, int], None] | None = None,
        warn: Warn | None = None,
        output: str = "pil",
        **stage_options: Any,
    ) -> Any:
        """``n`` images per prompt, image i (prompt-major) seeded ``seed + i``.

        Stage keywords: ``sampler, steps, schedule, guidance, eta, sigma_max, clip_denoised,
        quantize_t, guidance_interval=(lo, hi), guidance_rescale=φ, dynamic_threshold=p``
        for the base; ``upsample_sampler, upsample_steps, upsample_schedule,
        upsample_guidance, upsample_eta, upsample_temp`` for the upsampler. ``low_res``
        (image/tensor) skips the base and upsamples it. Returns PIL images whose ``info``
        holds prompt, seed and the model calls of its batch (``model_calls``;
        ``output="tensor"``: one [N,3,H,W] tensor in [−1, 1]).
        """
        base_opts, up_opts, rest = self.stages(**stage_options)
        if rest:
            raise TypeError(f"unknown generate() options: {', '.join(sorted(rest))}")
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts or n < 1 or batch_size < 1:
            raise GlidectlError("Nothing to generate: give at least one prompt, n >= 1 and "
                                "batch size >= 1.")
        if low_res is not None and self.upsampler is None:
            raise GlidectlError("A low-res input image needs an upsampler model.")
        if low_res is None and self.base is None:
            raise GlidectlError("Without a base model, pass a low-res image to upsample.")
        jobs = [(p, seed + i) for i, p in enumerate(p for p in prompts for _ in range(n))]
        total = self.model_calls(len(jobs), batch_size, base_opts, up_opts, low_res is not None)
        done = 0

        def on_call() -> None:
            nonlocal done
            done += 1
            if progress:
                progress(done, total)

        messages = [
            m for model, tok in ((self.base, self.tokenizer),
                                 (self.upsampler, self.upsampler_tokenizer))
            if model is not None for m in prompt_warnings(tok, prompts, model.options.text_ctx)
        ]
        _warn(list(dict.fromkeys(messages)), warn)
        outputs = []
        for start in range(0, len(jobs), batch_size):
            batch = jobs[start:start + batch_size]
            texts, seeds = [p for p, _ in batch], [s for _, s in batch]
            if low_res is not None:
                images = _as_image_tensor(low_res, self.upsampler.options.low_res_size)
            else:
                images = self._stage(self.base, self.tokenizer, texts, seeds, base_opts,
                                     inpaint_image, inpaint_mask, None, precision, on_call)
            if self.upsampler is not None:
                up_seeds = [s + UPSAMPLE_SEED_OFFSET for s in seeds]
                images = self._stage(self.upsampler, self.upsampler_tokenizer, texts, up_seeds,
                                     up_opts, inpaint_image, inpaint_mask,
                                     quantize_8bit(images), precision, on_call)
            outputs.append(images.cpu())
        result = torch.cat(outputs)
        if output == "tensor":
            return result
        pil = to_pil(result)
        per_batch = self.model_calls(1, 1, base_opts, up_opts, low_res is not None)
        for image, (prompt, s) in zip(pil, jobs, strict=True):
            image.info.update(prompt=prompt, seed=str(s), model_calls=str(per_batch))
        return pil

    def _stage(self, model, tokenizer, texts, seeds, options, inpaint_image, inpaint_mask,
               low_res, precision, on_call) -> torch.Tensor:
        size = model.options.image_size
        image = mask = None
        if inpaint_image is not None or inpaint_mask is not None:
            if inpaint_image is None or inpaint_mask is None:
                raise GlidectlError("Inpainting needs both --inpaint-image and --inpaint-mask.")
            if model.options.inpaint:
                image = _as_image_tensor(inpaint_image, size)
                mask = _as_mask_tensor(inpaint_mask, size)
            elif not model.options.super_res:
                raise GlidectlError(
                    f"Inpainting needs an inpaint base model, but this is a "
                    f"{model.options.kind!r} model; use openai:base-inpaint or a model "
                    "trained as base-inpaint."
                )
        return sample_stage(
            model, texts, tokenizer, seeds, options,
            diffusion=self.diffusion if model is self.base else None, low_res=low_res,
            inpaint_image=image, inpaint_mask=mask, precision=precision, on_call=on_call,
        )


def default_upsampler(base: str) -> str | None:
    """OpenAI's upsampler for OpenAI's base models; no upsampler for other models."""
    return {"openai:base": "openai:upsample",
            "openai:base-inpaint": "openai:upsample-inpaint"}.get(str(base))


def load_pipeline(base: str | None = "openai:base", upsampler: str | None = "auto", *,
                  device: str = "cpu", vocab_dir: str | None = None) -> GlidePipeline:
    """Load models named by specs (``openai:base``, a file or a run dir) into a pipeline.
    ``upsampler="auto"`` picks OpenAI's upsampler for OpenAI's base, else none."""
    from .glide.loading import load_model

    if upsampler == "auto":
        upsampler = default_upsampler(base) if base else None
    if upsampler in ("none", ""):
        upsampler = None
    base_model = load_model(base, device=device) if base else None
    up_model = load_model(upsampler, device=device) if upsampler else None
    return GlidePipeline(base_model, up_model, vocab_dir=vocab_dir)


def generate(prompt: str | Sequence[str], base: str | None = "openai:base",
             upsampler: str | None = "auto", *, device: str = "cpu",
             vocab_dir: str | None = None, **options: Any) -> Any:
    """One-call convenience: load the models named by the specs and ``GlidePipeline.generate``.

    >>> images = glidectl.generate("a corgi in a field", seed=1, n=2)
    """
    pipe = load_pipeline(base, upsampler, device=device, vocab_dir=vocab_dir)
    return pipe.generate(prompt, **options)
