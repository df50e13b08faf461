"""Prompt → 64 px (classifier-free guidance) → optional 256 px upsampler → PIL images.

:class:`GlidePipeline` is the one sampling front end: ``glidectl sample``, ``eval`` and ``ui``
load it with :meth:`GlidePipeline.from_specs` (models by spec, LoRAs, device, precision,
compile; each model's spec, file and sha256 recorded) and call :meth:`GlidePipeline.generate`
with one seed per image. Image i of a request with seed s uses seed s+i unless explicit
``seeds`` are given; the upsampler stage adds 1000003.
"""

from __future__ import annotations

import inspect
import json
import os
import time
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .devices import Precision, check_compile, pick_device, pick_precision
from .errors import (
    GlidectlError,
    a_or_an,
    check_callback,
    flags_in_force,
    got,
    in_keywords,
    keyword_errors,
    takes,
)
from .file_hashes import file_sha256
from .images import to_pil
from .pipeline_models import (  # noqa: F401  (re-exported)
    ModelRecord,
    _check_models,
    check_pair,
    default_upsampler,
    loaded_record,
    model_precision,
    resolve_upsampler,
    upsampler_resample,
)
from .pipeline_records import PipelineRecords
from .pipeline_settings import (
    PipelineSettings,
    _check_numbers,
    _check_types,
    seed_list,
    unknown_options,
)
from .ranges import COUNT, check, check_seed_span
from .samplers.schedule_files import read_once
from .samplers.tuned import (
    grey_warning,
    guidance_warning,
    is_schedule_file,
    model_warning,
    schedule_file_warning,
    unfitted_warning,
)
from .sampling import (  # noqa: F401  (re-exported: the pipeline is the public entry point)
    BASE_DEFAULTS,
    PRECISIONS,
    UPSAMPLE_DEFAULTS,
    UPSAMPLE_SEED_OFFSET,
    UPSAMPLE_TEMP,
    StageOptions,
    Warn,
    all_kept_message,
    as_image_tensor,
    as_low_res_tensor,
    as_mask_tensor,
    check_image_input,
    check_inpaint_pair,
    input_messages,
    model_device,
    opened,
    prompt_warnings,
    quantize_8bit,
    resample_filter,
    resample_word,
    sample_base,
    sample_stage,
    sample_upsample,
    sigma_table,
    stage_model_calls,
    tokenizer_for,
    upsampler_words,
)
from .sampling import warn_all as _warn
from .sampling_defaults import (  # noqa: F401  (re-exported)
    BATCH_SIZE,
    RECOMMENDED_FIELDS,
    RECOMMENDED_KEY,
    recommended_settings,
    with_adapter_grey,
)
from .tokenizer import FLAG_VOCAB, vocab_named

StepFn = Callable[[str, int, int], None]
Loras = str | os.PathLike | Sequence[str | os.PathLike] | None  # ``PATH[:SCALE]``s, one, none
OUTPUTS = ("pil", "np", "tensor")  # what generate() returns: PIL images or one array/tensor


# generate()'s keywords for the flags of glidectl sample that its errors name
KEYWORDS = {f"--{k.replace('_', '-')}": k for k in (
    "base", "upsampler", "low_res", "low_res_resample", "inpaint_image", "inpaint_mask",
    "sampler", "steps", "schedule", "guidance", "guidance_interval", "guidance_rescale",
    "dynamic_threshold", "sigma_max", "eta", "upsample_sampler", "upsample_steps",
    "upsample_schedule", "upsample_guidance", "upsample_eta", "upsample_temp", "precision",
    "seed", "n", "batch_size", "device", "vocab_dir", "grey")} | {
    "--lora": "loras", "--compile": "compile=True"}
SAID_AS_KEYWORDS = keyword_errors(KEYWORDS, {
    r"in glidectl sample with --base none --low-res IMAGE": "with base=None and low_res=IMAGE",
    r"the inpaint flags": "inpaint_image and inpaint_mask"})


class GlidePipeline(PipelineRecords, PipelineSettings):
    """Sample with models in hand: ``GlidePipeline(base, upsampler=None).generate(prompts)``.

    Tokenizers follow each model's options (GPT-2 for OpenAI's models, bytes for scratch
    ones) unless given. ``base`` may be None when every request passes ``low_res``.
    ``precision`` defaults to ``auto`` as in :meth:`from_specs` (see :func:`model_precision`).
    """

    @SAID_AS_KEYWORDS
    def __init__(
        self,
        base: torch.nn.Module | None,
        upsampler: torch.nn.Module | None = None,
        *,
        tokenizer: Any = None,
        upsampler_tokenizer: Any = None,
        vocab_dir: str | None = None,
        diffusion: Any = None,
        precision: str | Precision = "auto",
        records: dict[str, ModelRecord] | None = None,
    ):
        if base is None and upsampler is None:
            raise GlidectlError("A pipeline needs a base model, an upsampler or both.")
        for name, model in (("base", base), ("upsampler", upsampler)):
            if model is not None and not (isinstance(model, torch.nn.Module)
                                          and hasattr(model, "options")):
                raise GlidectlError(
                    f"GlidePipeline({name}=...) takes a loaded GLIDE model, got "
                    f"{model!r:.60}; to load one by spec use GlidePipeline.from_specs("
                    f"{name}=...).")
        _check_pipeline_keywords(tokenizer, upsampler_tokenizer, vocab_dir, diffusion, records)
        _check_models(base, upsampler, records or {})
        self.base, self.upsampler, self.diffusion = base, upsampler, diffusion
        with vocab_named(*FLAG_VOCAB):
            self.tokenizer = tokenizer or (tokenizer_for(base, vocab_dir) if base else None)
            self.upsampler_tokenizer = upsampler_tokenizer or (
                tokenizer_for(upsampler, vocab_dir) if upsampler else None)
        any_model = base if base is not None else upsampler
        self.precision = precision if isinstance(precision, Precision) else model_precision(
            precision, any_model)
        self.records = dict(records or {})
        for stage, model in (("base", base), ("upsample", upsampler)):
            if model is not None and stage not in self.records \
                    and (record := loaded_record(stage, model)) is not None:
                self.records[stage] = record
        self.compiled = False  # torch.compile'd by from_specs
        self.vocab_dir = vocab_dir  # as given: PNGs record it beside the vocabulary's sha256
        self._tensor_shas: dict[int, tuple[Any, str]] = {}  # model id → (versions, sha256)

    def _tensors_sha256(self, model: torch.nn.Module) -> str:
        """:func:`~glidectl.glide.checkpoints.state_sha256` of ``model``'s weights, hashed
        once while they are unchanged (a second or so for OpenAI's base: not every batch)."""
        from .glide.checkpoints import state_sha256
        from .glide.loading import weights_versions

        versions = weights_versions(model)
        cached = self._tensor_shas.get(id(model))
        if cached is None or cached[0] != versions:
            cached = self._tensor_shas[id(model)] = (versions, state_sha256(model.state_dict()))
        return cached[1]

    # ----------------------------------------------------------------- loading
    @classmethod
    @SAID_AS_KEYWORDS
    def from_specs(
        cls, base: str | None = "openai:base", upsampler: str | None = "auto", *,
        loras: Loras = (), device: str = "auto", precision: str = "auto",
        compile: bool = False, vocab_dir: str | None = None,
    ) -> GlidePipeline:
        """Load models named by specs (``openai:base``, a file or a run folder).

        ``upsampler="auto"`` picks OpenAI's upsampler for OpenAI's base, else none. Each
        ``PATH[:SCALE]`` LoRA is merged into the model of the kind it was trained for; then
        ``torch.compile`` when asked (``loras``: a list, or one adapter). ``records`` keeps
        each model's spec, file and sha256.
        """
        from .glide.loading import (
            check_spec_kind,
            follows_latest,
            load_model,
            read_resolved,
        )

        for keyword, spec in (("base=", base), ("upsampler=", upsampler)):
            if spec is not None:
                check_spec_kind(spec, keyword)
        if not isinstance(compile, bool):
            raise takes("compile=", "True or False", compile)
        _check_vocab_dir(vocab_dir)
        if loras is None:
            loras = []
        elif isinstance(loras, str | os.PathLike):  # one adapter, not its characters
            loras = [loras]
        elif not isinstance(loras, Iterable) or not all(
                isinstance(x, str | os.PathLike) for x in loras):
            raise GlidectlError("loras= takes an adapter's path (PATH[:SCALE]) or a list of "
                                f"them, got {loras!r:.60} ({type(loras).__name__}).")
        loras = [os.fspath(x) if isinstance(x, os.PathLike) else x for x in loras]
        dev = pick_device(device)
        if compile:  # torch would say it at the first forward, in a traceback
            check_compile(dev, "--compile", "go on without --compile")
        chosen = pick_precision(precision, dev)
        base = None if base in ("", "none") else base  # as `sample --base none`
        up_spec = resolve_upsampler(base, upsampler)
        if loras:  # an adapter no model will take: said before any model loads
            from .lora import check_adapter_stages

            check_adapter_stages(loras, base, up_spec)
        models: dict[str, torch.nn.Module | None] = {"base": None, "upsample": None}
        records: dict[str, ModelRecord] = {}

        def read(path: Path, moving: bool) -> tuple[Any, ...]:
            """Weights, recommended settings and (of a run folder, whose file may go once
            read) the sha256 now, all of one file."""
            model = load_model(path, device=dev)  # openai:NAME's cache must hold NAME
            return model, recommended_settings(path), file_sha256(path) if moving else None

        for stage, spec in (("base", base), ("upsample", up_spec)):
            if spec:
                path, (models[stage], recommended, sha) = read_resolved(
                    spec, partial(read, moving=follows_latest(spec)))
                records[stage] = ModelRecord(stage, str(spec), path, recommended=recommended,
                                             _sha=sha,
                                             low_res_resample=upsampler_resample(stage, path))
        b, u = models["base"], models["upsample"]
        _check_models(b, u, records)
        if loras:
            from .lora import apply_loras_by_kind

            by_kind = {m.options.kind: records[s] for s, m in models.items() if m is not None}
            filtered: set[str] = set()  # stages whose filter an adapter set
            for entry in apply_loras_by_kind([b, u], list(loras)):
                record = {k: entry[k] for k in ("path", "scale", "modules", "sha256",
                                                "config_sha256", "dir")}
                target = by_kind[entry["kind"]]
                target.loras.append(record)
                target.recommended = with_adapter_grey(target.recommended, entry["grey"])
                if entry.get("low_res_resample") and target.stage not in filtered:
                    # the first adapter's filter, as eval's: what it trained on last
                    target.low_res_resample = entry["low_res_resample"]
                    filtered.add(target.stage)
        for model in (b, u):
            if model is not None:
                model.eval()
                if compile:
                    model.compile()
        pipe = cls(b, u, vocab_dir=vocab_dir, precision=chosen, records=records)
        pipe.compiled = compile
        return pipe

    @property
    def device(self) -> torch.device:
        """The device the models are on (the base model's, else the upsampler's)."""
        return model_device(self.base if self.base is not None else self.upsampler)

    def stage_models(self) -> dict[str, torch.nn.Module]:
        """The loaded networks by stage name (base, upsample)."""
        return {s: m for s, m in (("base", self.base), ("upsample", self.upsampler))
                if m is not None}

    # ----------------------------------------------------------------- sampling
    @SAID_AS_KEYWORDS
    @read_once()  # a schedule file refitted meanwhile changes none of the pictures
    def generate(
        self,
        prompts: str | Sequence[str],
        *,
        n: int = 1,
        seed: int = 0,
        seeds: Sequence[int] | None = None,
        batch_size: int = BATCH_SIZE,
        inpaint_image: Any = None,
        inpaint_mask: Any = None,
        low_res: Any = None,
        low_res_resample: str | None = None,
        precision: str | None = None,
        progress: Callable[[int, int], None] | None = None,
        on_step: StepFn | None = None,
        timings: dict[str, float] | None = None,
        warn: Warn | None = None,
        output: str = "pil",
        on_images: Callable[[list[Any]], None] | None = None,
        keep_images: bool = True,
        **stage_options: Any,
    ) -> list[Image.Image] | np.ndarray | torch.Tensor:
        """``n`` images per prompt (1 to 1000000, as ``--n``), image i (prompt-major) seeded
        ``seeds[i]`` (default ``seed + i``).

        Stage keywords: ``sampler, steps, schedule, guidance, eta, sigma_max, clip_denoised,
        quantize_t, guidance_interval=(lo, hi), guidance_rescale=φ, dynamic_threshold=p,
        grey`` for the base (``grey=True``: grey pictures, the upsampler's too unless
        ``upsample_grey`` says otherwise); ``upsample_sampler, upsample_steps,
        upsample_schedule, upsample_guidance, upsample_eta, upsample_temp`` for the
        upsampler. ``steps``: a count, or a GLIDE respacing string (``"fast27"``,
        ``"ddim50"``, ``"10,10,5"``) with ``schedule="respaced"``; a string of digits
        (``"25"``) is that count on any schedule, as ``--steps 25`` is. ``low_res``
        (image/tensor) skips the base and upsamples it; one of another size than the
        upsampler's input is shrunk with ``low_res_resample`` (``"box"``, ``"bicubic"``;
        default: the upsampler's training filter, :meth:`low_res_filter`). ``inpaint_image``
        and ``inpaint_mask`` (paths or PIL images; a mask white where to repaint, or
        transparent there when it has transparency) inpaint with an inpainting model; a mask
        tensor is GLIDE's own, 1 on kept pixels (the inverse of an image mask).
        ``progress(done, total)`` counts model calls of the whole request, ``on_step(stage,
        done, total)`` those of one stage of one batch; ``timings`` accumulates seconds per
        stage. Returns PIL images whose ``info`` holds prompt, seed and the model calls of
        its batch (``model_calls``); ``output="np"``: one float32 [N,H,W,3] array in [0, 1]
        (as diffusers' ``output_type="np"``), ``output="tensor"``: one [N,3,H,W] tensor in
        [-1, 1]. ``on_images(batch)`` gets each batch's PIL images as soon as they are done
        (to write them before the request ends), whatever ``output``; with
        ``keep_images=False`` (and PIL output) they go there only and the list returned is
        empty, so a request of thousands of images holds one batch at a time.
        """
        base_opts, up_opts, rest = self.stages(**stage_options)
        if rest:
            own = inspect.signature(GlidePipeline.generate).parameters
            raise GlidectlError(f"generate(): {unknown_options(rest, own)}.")
        if isinstance(prompts, str):
            prompts = [prompts]
        elif isinstance(prompts, Iterable) and not isinstance(prompts, bytes):
            prompts = list(prompts)
        if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
            raise GlidectlError("generate() takes a prompt string or a list of prompt strings, "
                                f"got {prompts!r:.80}.")
        if output not in OUTPUTS:
            choices = ", ".join(map(repr, OUTPUTS))
            raise GlidectlError(f"generate(): output must be one of {choices}, got "
                                f"{output!r:.60}.")
        _check_types({"n": n, "batch_size": batch_size, "seed": seed}, int, none_ok=False)
        n = int(n)  # numpy's integers too, for the range checks
        for keyword, fn, call in (("progress", progress, "progress(done, total)"),
                                  ("on_step", on_step, "on_step(stage, done, total)"),
                                  ("on_images", on_images, "on_images(images)"),
                                  ("warn", warn, "warn(message)")):
            check_callback(fn, f"generate(): {keyword}=", call)
        if timings is not None and not isinstance(timings, MutableMapping):
            raise takes("generate(): timings=", "a dict (seconds are added per stage) or None",
                        timings)
        if not isinstance(keep_images, bool):
            raise takes("generate(): keep_images=", "True or False", keep_images)
        if not prompts or n < 1 or batch_size < 1:
            raise GlidectlError("Nothing to generate: give at least one prompt, n >= 1 and "
                                "batch size >= 1.")
        check("n", n, COUNT)  # as --n: n=10**9 filled memory with its seeds before a check
        if low_res is not None and self.upsampler is None:
            raise GlidectlError("A low-res input image needs an upsampler model.")
        if low_res is None and self.base is None:
            raise GlidectlError("Without a base model, pass a low-res image to upsample.")
        check_inpaint_pair(inpaint_image, inpaint_mask)
        for keyword, value in (("low_res", low_res), ("inpaint_image", inpaint_image)):
            check_image_input(value, keyword)
        check_image_input(inpaint_mask, "inpaint_mask", mask=True)
        if low_res_resample is None:
            low_res_resample = self.low_res_filter()
        low_res_resample = resample_word(low_res_resample)  # another name: one sentence
        if inpaint_image is not None and self.upsampler is not None and (
                not self.upsampler.options.inpaint):
            raise GlidectlError(
                "Inpainting with an upsampler needs an upsample-inpaint model, but this is "
                f"{a_or_an(repr(self.upsampler.options.kind))} model, which would repaint the "
                "kept pixels; pass --upsampler openai:upsample-inpaint (or a model trained as "
                "upsample-inpaint)" + (", or --upsampler none." if low_res is None else
                                       ", or drop the inpaint flags to upsample all of it."))
        if seeds is not None and seed != 0:
            raise GlidectlError(f"generate(): seed={seed} and seeds= both give the images' "
                                "seeds; pass seed= (image i gets seed + i) or seeds= (one "
                                "per image), not both.")
        texts_all = [p for p in prompts for _ in range(n)]
        request_seed = seed if seeds is None else None  # as sample's --seed
        if seeds is None:
            check_seed_span("seed", seed, len(texts_all))
        seeds = seed_list(seeds, len(texts_all)) if seeds is not None else [
            seed + i for i in range(len(texts_all))]
        _check_numbers(base_opts, up_opts, seeds)
        jobs = list(zip(texts_all, [int(s) for s in seeds], strict=True))
        chosen = pick_precision(precision, str(self.device)) if precision else self.precision
        precision = chosen.autocast
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
        if not flags_in_force():  # sample and the UI say their flags' own
            messages += _unused_lines(self.unused_keywords(stage_options, base_opts, up_opts,
                                                           low_res is None), stage_options)
        for stage, opts in (("base", base_opts), ("upsample", up_opts)):
            if not (opts.schedule and is_schedule_file(opts.schedule)) or \
                    stage not in self.stage_models() or stage == "base" and low_res is not None:
                continue  # a stage that does not run: its file's mismatches change no pixel
            record = self.records.get(stage)
            up = stage == "upsample"
            spec = record.spec if record is not None else None
            scale = 1.0 if opts.guidance is None else float(opts.guidance)
            weights = None
            if record is not None and self.stage_models().get(stage) is not None:
                net = getattr(self.stage_models()[stage], "_orig_mod", self.stage_models()[stage])
                weights = model_warning(
                    opts.schedule, lambda r=record: r.sha256, record.spec, up,
                    guidance=scale, grey=bool(opts.grey),
                    weights_sha256=lambda m=net: self._tensors_sha256(m),
                    adapters=[(str(lo["path"]), float(lo["scale"])) for lo in record.loras])
            messages += schedule_file_warnings(stage, opts, spec, weights)
        first = self.base if low_res is None else self.upsampler
        # every inpainting stage that runs (an upsample-inpaint one behind a plain base too)
        kinds = [m.options.kind for m in (first, self.upsampler) if m is not None and
                 m.options.inpaint]
        if kinds and inpaint_image is None:
            kinds = list(dict.fromkeys(kinds))
            messages.append(f"{' and '.join(map(a_or_an, kinds)).capitalize()} model without "
                            "an inpaint image and mask "
                            f"{'draws' if len(kinds) == 1 else 'draw'} the whole picture.")
        messages += input_messages({"low-res image": low_res, "inpaint image": inpaint_image,
                                    "inpaint mask": inpaint_mask},
                                   self.upsampler.options.low_res_size
                                   if self.upsampler is not None else None, low_res_resample)
        mask = opened(inpaint_mask)  # read once: checked here, cut into batches below
        if first is not None and first.options.inpaint and mask is not None:
            sizes = [first.options.image_size]
            if first is self.base and self.upsampler is not None and self.upsampler.options.inpaint:
                sizes.append(self.upsampler.options.image_size)  # it inpaints at its own size
            messages.append(all_kept_message(mask, *sizes))
        messages = [m for m in messages if m]
        _warn(list(dict.fromkeys(messages)), warn)
        outputs: list[Any] = []
        per_batch = self.model_calls(1, 1, base_opts, up_opts, low_res is not None)
        # each PIL image's record, as sample writes it: save_png(image, path, image.info);
        # the weights' sha256 (seconds for OpenAI's) only where on_images writes them
        common = self.request_record(base_opts, up_opts, {
            "low_res": low_res, "inpaint_image": inpaint_image, "inpaint_mask": inpaint_mask},
            batch_size, hashes=on_images is not None, precision=chosen.name,
            low_res_resample=low_res_resample) \
            if output == "pil" or on_images else {}
        prompt_records = {p: self.prompt_record(p) for p in dict.fromkeys(prompts)} \
            if common else {}
        inputs = {"low_res": None if low_res is None else as_low_res_tensor(
                      low_res, self.upsampler.options.low_res_size, low_res_resample),
                  "inpaint_image": opened(inpaint_image), "inpaint_mask": mask}
        for what, value in inputs.items():  # one for every image, or one per image
            _check_images(value, what, len(jobs))
        for start in range(0, len(jobs), batch_size):
            batch = jobs[start:start + batch_size]
            texts, batch_seeds = [p for p, _ in batch], [s for _, s in batch]
            given, inpaint_image, inpaint_mask = (
                _for_batch(v, len(jobs), slice(start, start + len(batch)))
                for v in inputs.values())
            if given is not None:
                images = given
            else:
                images = self._stage("base", texts, batch_seeds, base_opts, inpaint_image,
                                     inpaint_mask, None, precision, on_call, on_step, timings)
            if self.upsampler is not None:
                up_seeds = [s + UPSAMPLE_SEED_OFFSET for s in batch_seeds]
                images = self._stage("upsample", texts, up_seeds, up_opts, inpaint_image,
                                     inpaint_mask, quantize_8bit(images), precision, on_call,
                                     on_step, timings)
            if output != "pil":
                outputs.append(images.cpu())
                if not on_images:
                    continue
            pil = to_pil(images)
            for j, (image, (prompt, s)) in enumerate(zip(pil, batch, strict=True)):
                record = {**prompt_records[prompt], "seed": s, "request_seed": request_seed,
                          "image_index": start + j, "request_images": len(jobs),
                          "model_calls": per_batch, **common}
                image.info.update(prompt=prompt, seed=str(s), model_calls=str(per_batch),
                                  parameters=json.dumps(record, default=_plain))
            if output == "pil" and (keep_images or not on_images):
                outputs.extend(pil)
            if on_images:
                on_images(pil)
        if output == "pil":
            return outputs
        images = torch.cat(outputs)
        if output == "np":  # as diffusers' output_type="np"
            return ((images.float() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).numpy()
        return images

    def low_res_filter(self) -> str:
        """The filter (``data.low_res_resample``: ``"bicubic"``, ``"box"``) that shrinks a
        low-res input of another size, as the upsampler's training shrank its inputs: its
        first LoRA's that records one, else its weights' (their metadata, else their run's
        config), else bicubic (a model built in memory, OpenAI's)."""
        from .config import DataConfig

        record = self.records.get("upsample")
        found = record.low_res_resample if record is not None else None
        return found or DataConfig().low_res_resample

    def _stage(self, stage, texts, seeds, options, inpaint_image, inpaint_mask, low_res,
               precision, on_call, on_step, timings) -> torch.Tensor:
        model = self.base if stage == "base" else self.upsampler
        tokenizer = self.tokenizer if stage == "base" else self.upsampler_tokenizer
        size = model.options.image_size
        image = mask = None
        if inpaint_image is not None:  # with its mask: generate() checked the pair
            if model.options.inpaint:
                image = as_image_tensor(inpaint_image, size, "inpaint_image")
                mask = as_mask_tensor(inpaint_mask, size)
            elif not model.options.super_res:
                raise GlidectlError(
                    f"Inpainting needs an inpaint base model, but this is a "
                    f"{model.options.kind!r} model; use openai:base-inpaint or a model "
                    "trained as base-inpaint."
                )
        stage_total, stage_done = (self.calls_per_batch(stage, options) if on_step else 0), 0

        def call() -> None:
            nonlocal stage_done
            on_call()
            if on_step is not None:
                stage_done += 1
                on_step(stage, stage_done, stage_total)

        t0 = time.perf_counter()
        out = sample_stage(
            model, texts, tokenizer, seeds, options,
            diffusion=self.diffusion if stage == "base" else None, low_res=low_res,
            inpaint_image=image, inpaint_mask=mask, precision=precision, on_call=call,
        )
        if timings is not None:
            timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - t0
        return out

    def time_call(self, stage: str, batch: int, options: StageOptions) -> float:
        """Seconds of one network forward at this batch size (after one warm-up call)."""
        model = self.stage_models()[stage]
        tokenizer = self.tokenizer if stage == "base" else self.upsampler_tokenizer
        one = replace(options, sampler="euler", steps=1, schedule="karras")
        low = None
        if model.options.super_res:
            size = model.options.low_res_size
            low = torch.zeros(batch, 3, size, size)
        seconds = []
        for _ in range(2):
            t0 = time.perf_counter()
            sample_stage(model, [""] * batch, tokenizer, list(range(batch)), one, low_res=low,
                         precision=self.precision.autocast)
            seconds.append(time.perf_counter() - t0)
        return seconds[-1]


def schedule_file_warnings(stage: str, opts: StageOptions, spec: str | None,
                           weights: str | None = None) -> list[str]:
    """What a stage's schedule file (``opts.schedule``, a ``*.json``) says of the sampling
    at hand: another sampler, grey or guidance than it was fitted for, a count a stopped fit
    left out, and ``weights`` (:func:`model_warning`'s sentence, None: not checked).
    ``spec``: the stage's model as named, for the refit lines."""
    up = stage == "upsample"
    tuned = schedule_file_warning(opts.schedule, opts.sampler)
    # each refit line fits the sampling at hand: one line mends every mismatch
    scale = 1.0 if opts.guidance is None else float(opts.guidance)
    other = weights is not None  # its guidance or grey would not mend it
    said = [upsampler_words(tuned) if up and tuned else tuned,
            grey_warning(opts.schedule, opts.grey, spec, up, guidance=scale, other_model=other),
            guidance_warning(opts.schedule, opts.guidance, spec, up, grey=bool(opts.grey),
                             other_model=other),
            unfitted_warning(opts.schedule, opts.steps, spec, up, guidance=scale,
                             grey=bool(opts.grey)),
            weights]
    return [m for m in said if m]


def _check_pipeline_keywords(tokenizer: Any, upsampler_tokenizer: Any, vocab_dir: Any,
                             diffusion: Any, records: Any) -> None:
    """One sentence for a :class:`GlidePipeline` keyword of the wrong kind (a tokenizer's
    name where a tokenizer goes, a number for ``vocab_dir``)."""
    for keyword, tok in (("tokenizer", tokenizer), ("upsampler_tokenizer", upsampler_tokenizer)):
        if tok is not None and not all(callable(getattr(tok, m, None))
                                       for m in ("encode", "decode", "encode_batch")):
            by_name = (f"; for one by name pass glidectl.tokenizer.get_tokenizer({tok!r:.20})"
                       if isinstance(tok, str) else "")
            raise GlidectlError(
                f"GlidePipeline({keyword}=...) takes a tokenizer (encode, decode and "
                f"encode_batch), got {got(tok)}{by_name}, or leave it out to use each model's "
                "own.")
    _check_vocab_dir(vocab_dir)
    if diffusion is not None and not hasattr(diffusion, "original_alphas_cumprod"):
        raise takes("GlidePipeline(diffusion=...)", "a glidectl.diffusion.GaussianDiffusion "
                    "(glidectl.diffusion.create_diffusion()) or None", diffusion)
    if records is not None and not isinstance(records, dict):
        raise takes("GlidePipeline(records=...)", "a dict of ModelRecord by stage or None",
                    records)


def _check_vocab_dir(vocab_dir: Any) -> None:
    if vocab_dir is not None and not isinstance(vocab_dir, str | os.PathLike):
        raise takes("vocab_dir=", "a GPT-2 vocabulary folder's path or None", vocab_dir)


def load_pipeline(base: str | None = "openai:base", upsampler: str | None = "auto", *,
                  device: str = "auto", vocab_dir: str | None = None,
                  precision: str = "auto", loras: Loras = ()) -> GlidePipeline:
    """:meth:`GlidePipeline.from_specs` with the common arguments."""
    return GlidePipeline.from_specs(base, upsampler, device=device, vocab_dir=vocab_dir,
                                    precision=precision, loras=loras)


@SAID_AS_KEYWORDS
def _check_images(value: Any, what: str, wanted: int) -> None:
    """One sentence unless an input holds one image (a file, a PIL image, a tensor of one)
    or, an [N,…] tensor, one per image the request makes."""
    n = int(value.shape[0]) if isinstance(value, torch.Tensor) and value.ndim == 4 else 1
    if value is not None and n not in (1, wanted):
        raise GlidectlError(f"{what} holds {n} images but the request makes {wanted}; pass one "
                            "image, or one per image.")


def _for_batch(value: Any, total: int, cut: slice) -> Any:
    """A batch's part of an input: its rows of a tensor of one image per image requested,
    else the input itself (one for every image)."""
    if isinstance(value, torch.Tensor) and value.ndim == 4 and value.shape[0] == total > 1:
        return value[cut]
    return value


def generate(prompt: str | Sequence[str], base: str | None = "openai:base",
             upsampler: str | None = "auto", *, device: str = "auto",
             vocab_dir: str | None = None, loras: Loras = (),
             **options: Any) -> list[Image.Image] | np.ndarray | torch.Tensor:
    """One-call convenience: load the models named by the specs and ``GlidePipeline.generate``.
    ``device`` as ``glidectl sample --device``: ``auto`` takes a GPU when there is one;
    ``loras``: ``PATH[:SCALE]`` adapters as ``sample --lora`` takes them.

    >>> images = glidectl.generate("a corgi in a field", seed=1, n=2)
    """
    pipe = load_pipeline(base, upsampler, device=device, vocab_dir=vocab_dir, loras=loras)
    return pipe.generate(prompt, **options)


def _unused_lines(unused: dict[str, str], given: dict[str, Any]) -> list[str]:
    """One warning per reason for the keywords that change no pixel (``eta=0.5 not used:
    ...``), as ``glidectl sample`` says of its flags, in the caller's keywords."""
    from . import plugins

    by_why: dict[str, list[str]] = {}
    for key, why in unused.items():
        by_why.setdefault(why, []).append(f"{key}={given[key]!r:.40}")
    names = plugins.schedules().names()  # "pass --schedule karras" → schedule='karras'
    return [in_keywords(f"{', '.join(keys)} not used: {why}.", KEYWORDS, values=names)
            for why, keys in by_why.items()]


def _plain(value: Any) -> Any:
    """A numpy or torch scalar a caller passed (``seed=np.int64(5)``) as JSON takes it."""
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
