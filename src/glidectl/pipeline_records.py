"""What a pipeline's outputs record: its models, vocabulary, prompts and each picture's settings."""

from __future__ import annotations

import os
from typing import Any

import torch

from .file_hashes import file_sha256
from .pipeline_models import ModelRecord
from .samplers.tuned import is_schedule_file
from .sampling import StageOptions

IN_MEMORY = "(in memory)"  # an input image passed as a PIL image or tensor: no file


class PipelineRecords:
    """:class:`glidectl.pipeline.GlidePipeline`'s records of its models (metadata.json) and
    of what made each picture (each PNG's text chunks)."""

    def vocab_record(self, base_stage: bool = True) -> dict[str, Any]:
        """:func:`glidectl.tokenizer.vocab_record` of the stages that run (``base_stage``:
        whether the base model samples)."""
        from .tokenizer import vocab_record

        return vocab_record([tok for tok, ran in (
            (self.tokenizer, base_stage and self.base is not None),
            (self.upsampler_tokenizer, self.upsampler is not None)) if ran], self.vocab_dir)

    def vocab_dir_warnings(self, base_stage: bool = True) -> list[str]:
        """The warning for a ``vocab_dir`` that no stage that runs reads (its models take
        UTF-8 bytes), as a list: empty when there is none."""
        if not self.vocab_dir or self.vocab_record(base_stage):
            return []
        stages = [name for name, model, ran in (("base model", self.base, base_stage),
                                                ("upsampler", self.upsampler, True))
                  if model is not None and ran]
        return [f"--vocab-dir not used: the {' and the '.join(stages)} "
                f"{'reads' if len(stages) == 1 else 'read'} UTF-8 bytes (tokenizer \"byte\"), "
                "not GPT-2's vocabulary."]

    def models_info(self) -> dict[str, dict[str, Any]]:
        """Per stage (``base``, ``upsample``) the :meth:`ModelRecord.info` dict that
        metadata.json records."""
        return {s: self.records.get(s, ModelRecord(s, IN_MEMORY)).info(m)
                for s, m in self.stage_models().items()}

    def prompt_record(self, prompt: str) -> dict[str, str]:
        """``prompt`` as outputs store it (:func:`glidectl.out_dir.prompt_record`), with the
        text the first stage's model reads when it drops tokens."""
        from .out_dir import prompt_record
        from .sampling import prompt_used

        model = self.base if self.base is not None else self.upsampler
        tok = self.tokenizer if self.base is not None else self.upsampler_tokenizer
        ctx = model.options.text_ctx
        return prompt_record(prompt, prompt_used(tok, prompt, ctx), cut=tok.count(prompt) > ctx)

    def request_record(self, base: StageOptions, up: StageOptions, inputs: dict[str, Any],
                       batch_size: int, hashes: bool = True,
                       precision: str | None = None,
                       low_res_resample: str | None = None) -> dict[str, Any]:
        """:meth:`picture_record` of a request with its input images (``low_res``,
        ``inpaint_image``, ``inpaint_mask``: a file's path and sha256, ``"(in memory)"`` for
        an image or tensor passed in, None) and its batch size: what ``sample``, the web UI
        and ``generate()`` record with every image, so ``sample --from-png`` makes it again.
        ``hashes=False`` leaves out the weights files' sha256 (not yet read: seconds for
        OpenAI's), so a remake takes the files as they are then; ``precision``: the one the
        request ran in, when not the pipeline's; ``low_res_resample``: the filter that
        shrinks a low-res input of another size (recorded with a low-res input)."""
        record = self.picture_record(base, up, base_stage=inputs.get("low_res") is None,
                                     hashes=hashes)
        if precision is not None:
            record["precision"] = precision
        for key in ("low_res", "inpaint_image", "inpaint_mask"):
            value = inputs.get(key)
            is_file = isinstance(value, str | os.PathLike)
            record[key] = str(value) if is_file else (None if value is None else IN_MEMORY)
            if is_file:  # an image edited in place makes other pictures
                record[f"{key}_sha256"] = file_sha256(value)
        if inputs.get("low_res") is not None:
            record["low_res_resample"] = low_res_resample or self.low_res_filter()
        record["batch_size"] = batch_size
        return record

    def picture_record(self, base: StageOptions, up: StageOptions,
                       base_stage: bool = True, hashes: bool = True) -> dict[str, Any]:
        """What makes a request's pictures, keyed as ``glidectl sample``'s flags, as sample
        and the web UI record it in each PNG: each model's spec, weights file and sha256, its
        LoRAs (``PATH:SCALE`` and sha256), the settings of each stage that runs (a schedule
        file with its sha256), σ_max (where a stage's schedule takes it), precision, the
        GPT-2 vocabulary's sha256 (and ``vocab_dir``), glidectl's version and the plugins
        whose sampler or schedule ran. ``base_stage=False``: only the upsampler ran (a given
        low-res image). Prompt, seed and model calls are the image's own: callers add them."""
        from . import __version__
        from .plugins import plugins_used

        record: dict[str, Any] = {}
        for key, stage in (("base", "base"), ("upsampler", "upsample")):
            ran = self.stage_models().get(stage) is not None and (base_stage or stage != "base")
            found = self.records.get(stage) if ran else None
            record[key] = found.spec if found else (IN_MEMORY if ran else None)
            if found is not None and found.path is not None:  # a run folder's latest moves on
                record[f"{key}_file"] = str(found.path)
                if hashes:
                    record[f"{key}_sha256"] = found.sha256
            dtype = getattr(self.stage_models().get(stage), "torso_dtype", torch.float32)
            if ran and dtype != torch.float32:  # load_model(dtype=...): sample loads float32
                record[f"{key}_dtype"] = str(dtype).removeprefix("torch.")
        stages = [(prefix, opts) for prefix, opts, ran in (
            ("", base, base_stage and self.base is not None),
            ("upsample_", up, self.upsampler is not None)) if ran]
        schedules = [opts.schedule or opts.sampler_spec().schedule for _, opts in stages]
        for (prefix, opts), schedule in zip(stages, schedules, strict=True):
            record.update({f"{prefix}sampler": opts.sampler, f"{prefix}steps": str(opts.steps),
                           f"{prefix}schedule": schedule, f"{prefix}guidance": opts.guidance})
            if is_schedule_file(schedule):  # a refit under the same name makes other images
                record[f"{prefix}schedule_sha256"] = file_sha256(schedule)
            if prefix:
                record["upsample_temp"] = opts.temperature
                continue
            interval = opts.guidance_interval
            record.update({
                "eta": opts.eta if opts.sampler_spec().accepts("eta") else None,
                "guidance_interval": ",".join(f"{v:g}" for v in interval) if interval else None,
                "guidance_rescale": opts.guidance_rescale or None,
                "dynamic_threshold": opts.dynamic_threshold,
            })
        first = (base if base_stage and self.base is not None else up)
        record.update(api_only(base if first is base else None,
                               up if self.upsampler is not None else None))
        record.update(self.vocab_record(base_stage))
        loras = [x for r in self.records.values() for x in r.loras]
        record.update({
            # None where every stage that ran keeps GLIDE's respaced steps (it sets no σ)
            "sigma_max": None if "sigma_max" in self.idle_settings(base, up, base_stage)
            else first.sigma_max,
            "quantize_t": first.quantize_t or None,
            "grey": first.grey,
            "precision": self.precision.name, "glidectl": __version__,
            # kernels differ by device type and under torch.compile: so do the pixels
            "device": self.device.type, "compile": self.compiled or None,
            "loras": [f"{x['path']}:{float(x['scale'])!r}" for x in loras] or None,  # exact
            "lora_sha256": [x["sha256"] for x in loras] or None,
            # what else decides an adapter's pictures: its settings, and the folder read (a
            # LoRA run's latest step moves on)
            "lora_config_sha256": [x.get("config_sha256") for x in loras] or None,
            "lora_dirs": [x.get("dir") for x in loras] or None,
            "plugins": plugins_used([o.sampler for _, o in stages], schedules),
        })
        return record


# generate() keywords that glidectl sample has no flag for: recorded when they change a
# picture, so that sample --from-png refuses it rather than make another
API_ONLY = ("clip_denoised", "temperature", *(f"upsample_{k}" for k in (
    "eta", "sigma_max", "clip_denoised", "quantize_t", "grey", "guidance_interval",
    "guidance_rescale", "dynamic_threshold")))


def api_only(base: StageOptions | None, up: StageOptions | None) -> dict[str, Any]:
    """The settings of a request that ``sample`` cannot set (:data:`API_ONLY`) where they
    change its picture: the base stage's ``clip_denoised`` off and ``temperature``; the
    upsampler's own (``up``)
    where they are not what ``sample`` gives it — what it takes from the base stage (σ_max,
    clipping, quantized timesteps, grey; with no base stage ``sample`` sets σ_max,
    quantizing and grey for it) or its defaults — and not idle (σ_max on GLIDE's respaced
    steps, an η the sampler takes as its own default, guidance tools of an unguided
    upsampler). ``base``/``up``: the options of the stages that ran."""
    from .sampling import UPSAMPLE_DEFAULTS

    found: dict[str, Any] = {}
    if base is not None and not base.clip_denoised:
        found["clip_denoised"] = False
    if base is not None and base.temperature != 1.0:  # the start noise's scale
        found["temperature"] = base.temperature
    if up is None:
        return found
    spec = up.sampler_spec()
    guided = up.guidance is not None and float(up.guidance) != 1
    expected: dict[str, Any] = {"clip_denoised": base.clip_denoised if base else True}
    if base is not None:
        expected.update(sigma_max=base.sigma_max, quantize_t=base.quantize_t, grey=base.grey)
    if (up.schedule or spec.schedule) == "respaced":
        expected.pop("sigma_max", None)  # GLIDE's own timesteps start at the model's top σ
    if spec.accepts("eta") and up.eta is not None and up.eta != spec.default("eta"):
        found["upsample_eta"] = up.eta
    if guided:
        expected.update({k: getattr(UPSAMPLE_DEFAULTS, k)
                         for k in ("guidance_interval", "guidance_rescale")})
    expected["dynamic_threshold"] = UPSAMPLE_DEFAULTS.dynamic_threshold
    for key, value in expected.items():
        mine = getattr(up, key)
        if mine != value:
            found[f"upsample_{key}"] = list(mine) if isinstance(mine, tuple) else mine
    return found
