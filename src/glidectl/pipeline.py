"""Prompt → 64 px (classifier-free guidance) → optional 256 px upsampler → PIL images.

:class:`GlidePipeline` is the one sampling front end: ``glidectl sample``, ``eval`` and ``ui``
load it with :meth:`GlidePipeline.from_specs` (models by spec, LoRAs, device, precision,
compile; each model's spec, file and sha256 recorded) and call :meth:`GlidePipeline.generate`
with one seed per image. Image i of a request with seed s uses seed s+i unless explicit
``seeds`` are given; the upsampler stage adds 1000003.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .devices import Precision, check_precision, pick_device, pick_precision
from .errors import GlidectlError, a_or_an, keyword_errors
from .glide.options import UPSAMPLE_FACTOR
from .images import to_pil
from .ranges import FLAGS, SEED, STEPS, check
from .samplers.guidance import parse_interval
from .samplers.schedule_files import read_once
from .samplers.tuned import is_schedule_file, model_warning, schedule_file_warning
from .sampling import (  # noqa: F401  (re-exported: the pipeline is the public entry point)
    BASE_DEFAULTS,
    PRECISIONS,
    UPSAMPLE_DEFAULTS,
    UPSAMPLE_SEED_OFFSET,
    UPSAMPLE_TEMP,
    StageOptions,
    Warn,
    as_image_tensor,
    as_mask_tensor,
    check_inpaint_pair,
    input_messages,
    model_device,
    opened,
    prompt_warnings,
    quantize_8bit,
    sample_base,
    sample_stage,
    sample_upsample,
    sigma_table,
    tokenizer_for,
)
from .sampling import warn_all as _warn
from .sampling_defaults import BATCH_SIZE, recommended_line
from .tokenizer import FLAG_VOCAB, vocab_named

StepFn = Callable[[str, int, int], None]
Loras = str | os.PathLike | Sequence[str | os.PathLike]  # ``PATH[:SCALE]`` adapters, or one
# safetensors metadata key of a trained model's recommended sampling settings (JSON)
RECOMMENDED_KEY = "glidectl.sampling"
RECOMMENDED_FIELDS = ("sampler", "steps", "schedule", "guidance", "eta", "sigma_max", "grey")
OUTPUTS = ("pil", "np", "tensor")  # what generate() returns: PIL images or one array/tensor


# generate()'s keywords for the flags of glidectl sample that its errors name
KEYWORDS = {f"--{k.replace('_', '-')}": k for k in (
    "base", "upsampler", "low_res", "inpaint_image", "inpaint_mask", "sampler", "steps",
    "schedule", "guidance", "guidance_interval", "guidance_rescale", "dynamic_threshold",
    "sigma_max", "eta", "upsample_sampler", "upsample_steps", "upsample_schedule",
    "upsample_guidance", "upsample_eta", "upsample_temp", "precision", "seed", "n",
    "batch_size", "device", "vocab_dir", "grey")} | {"--lora": "loras"}
SAID_AS_KEYWORDS = keyword_errors(KEYWORDS, {
    r"in glidectl sample with --base none --low-res IMAGE": "with base=None and low_res=IMAGE",
    r"the inpaint flags": "inpaint_image and inpaint_mask"})


_SHA256_SEEN: dict[tuple[int, int, int, int], str] = {}  # by (device, inode, size, mtime)


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes (the model hash in metadata.json). A file this process has
    hashed is not read again while it is the same file, unchanged (same inode, size and
    modification time): a remake checks a 1.5 GB checkpoint and then records it. As git
    does, a file modified in the last 2 s is always read (clocks stamp files coarsely, so
    a rewrite that quick could keep its time)."""
    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if key in _SHA256_SEEN:
            return _SHA256_SEEN[key]
        h = hashlib.sha256()
        while block := fh.read(chunk):
            h.update(block)
    digest = h.hexdigest()
    if time.time() - st.st_mtime > 2:
        if len(_SHA256_SEEN) >= 256:
            _SHA256_SEEN.clear()
        _SHA256_SEEN[key] = digest
    return digest


def recommended_settings(path: str | Path | None) -> dict[str, Any]:
    """The sampling settings a trained model recommends (its checkpoint metadata); {} for
    files without them, such as OpenAI's checkpoints (which keep the built-in defaults)."""
    if path is None or Path(path).suffix != ".safetensors":
        return {}
    from .glide.checkpoints import read_metadata

    try:
        data = json.loads(read_metadata(path).get(RECOMMENDED_KEY, "{}"))
    except (GlidectlError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if k in RECOMMENDED_FIELDS + ("prompts",)}


def check_pair(base: Any, upsampler: Any, names: dict[str, str] | None = None) -> None:
    """Refuse a base and an upsampler (their ModelOptions, either may be None) that cannot
    be chained: each of the right kind, the upsampler's input the base's output size.
    ``names``: the specs by stage ("base", "upsample"), to name them in the message."""
    names = names or {}
    up, b = (f" {names[s]!r}" if s in names else "" for s in ("upsample", "base"))
    if upsampler is not None and not upsampler.super_res:
        raise GlidectlError(f"The upsampler{up} is {a_or_an(repr(upsampler.kind))} model; "
                            "pass it as the base (--base) and an upsample model (a glidectl "
                            "upsample run or openai:upsample) as the upsampler.")
    if base is not None and base.super_res:
        raise GlidectlError(f"The base model{b} is {a_or_an(repr(base.kind))} model; pass it "
                            "as the upsampler (--upsampler) behind a base model, or in "
                            "glidectl sample with --base none --low-res IMAGE.")
    if base is None or upsampler is None:
        return
    if upsampler.low_res_size != base.image_size:
        size = base.image_size
        raise GlidectlError(
            f"The upsampler{up} takes {upsampler.low_res_size} px input but the base "
            f"model{b} makes {size} px images; pick a matching pair (an upsampler trained "
            f"with data.resolution = {UPSAMPLE_FACTOR * size} takes {size} px input)."
        )


def _check_models(base: torch.nn.Module | None, upsampler: torch.nn.Module | None,
                  records: dict[str, ModelRecord]) -> None:
    check_pair(*(m.options if m is not None else None for m in (base, upsampler)),
               {stage: r.spec for stage, r in records.items()})


@dataclass
class ModelRecord:
    """Where one loaded network came from: spec, file, LoRAs, recommended sampling."""

    stage: str
    spec: str
    path: Path | None = None
    loras: list[dict[str, Any]] = field(default_factory=list)
    recommended: dict[str, Any] = field(default_factory=dict)
    _sha: str | None = None

    @property
    def sha256(self) -> str | None:
        """The weights file's sha256 (read once, when first asked); None for no file."""
        if self._sha is None and self.path is not None:
            self._sha = file_sha256(self.path)
        return self._sha

    def info(self, model: torch.nn.Module) -> dict[str, Any]:
        """``spec``, ``path`` (the weights file), ``sha256``, ``kind``, ``image_size``,
        ``tokenizer`` and ``loras``, as metadata.json records them."""
        opts = model.options
        return {
            "spec": self.spec, "path": str(self.path) if self.path else None,
            "sha256": self.sha256, "kind": opts.kind, "image_size": opts.image_size,
            "tokenizer": opts.tokenizer, "loras": self.loras,
        }


def stage_model_calls(stage: str, options: StageOptions, alphas_cumprod: Any) -> int:
    """:meth:`StageOptions.model_calls` of one stage; the upsampler's errors say so and name
    its own flags (``--upsample-schedule``, not the base's ``--schedule``)."""
    try:
        return options.model_calls(alphas_cumprod)
    except GlidectlError as exc:
        if stage == "base":
            raise
        raise GlidectlError("Upsampler: " + str(exc).replace(
            "--schedule ", "--upsample-schedule ")) from None


def default_upsampler(base: str | None) -> str | None:
    """OpenAI's upsampler for OpenAI's base models; no upsampler for other models."""
    return {"openai:base": "openai:upsample",
            "openai:base-inpaint": "openai:upsample-inpaint"}.get(str(base))


def resolve_upsampler(base: str | None, upsampler: str | None) -> str | None:
    """``auto`` → :func:`default_upsampler`; ``none``/empty → None; a spec stays."""
    if upsampler == "auto":
        return default_upsampler(base) if base else None
    return None if upsampler in (None, "", "none") else upsampler


def model_precision(name: str, model: torch.nn.Module) -> Precision:
    """``name`` resolved on ``model``'s device, as ``glidectl sample --precision`` does; but
    ``auto`` runs a model whose weights are not float32 (``load_model(dtype=...)``,
    ``model.half()``) in its own dtype, without autocast."""
    dtype = getattr(model, "torso_dtype", torch.float32)
    if check_precision(name) == "auto" and dtype != torch.float32:
        return Precision("fp32", f"auto: the model's own {str(dtype).split('.')[-1]} weights, "
                                 "no autocast")
    return pick_precision(name, str(model_device(model)))


class GlidePipeline:
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
            if model is not None and not isinstance(model, torch.nn.Module):
                raise GlidectlError(
                    f"GlidePipeline({name}=...) takes a loaded model, got {model!r:.60}; "
                    f"to load one by spec use GlidePipeline.from_specs({name}=...).")
        _check_models(base, upsampler, records or {})
        self.base, self.upsampler, self.diffusion = base, upsampler, diffusion
        with vocab_named(*FLAG_VOCAB):
            self.tokenizer = tokenizer or (tokenizer_for(base, vocab_dir) if base else None)
            self.upsampler_tokenizer = upsampler_tokenizer or (
                tokenizer_for(upsampler, vocab_dir) if upsampler else None)
        any_model = base if base is not None else upsampler
        self.precision = precision if isinstance(precision, Precision) else model_precision(
            precision, any_model)
        self.records = records or {}
        self.compiled = False  # torch.compile'd by from_specs
        self.vocab_dir = vocab_dir  # as given: PNGs record it beside the vocabulary's sha256

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
        from .glide.loading import follows_latest, load_model, read_resolved

        if isinstance(loras, str | os.PathLike):  # one adapter, not its characters
            loras = [loras]
        loras = [os.fspath(x) if isinstance(x, os.PathLike) else x for x in loras]
        dev = pick_device(device)
        chosen = pick_precision(precision, dev)
        base = None if base in ("", "none") else base  # as `sample --base none`
        up_spec = resolve_upsampler(base, upsampler)
        models: dict[str, torch.nn.Module | None] = {"base": None, "upsample": None}
        records: dict[str, ModelRecord] = {}

        def read(path: Path, moving: bool) -> tuple[Any, ...]:
            """Weights, recommended settings and (of a run folder, whose file may go once
            read) the sha256 now, all of one file."""
            return (load_model(path, device=dev), recommended_settings(path),
                    file_sha256(path) if moving else None)

        for stage, spec in (("base", base), ("upsample", up_spec)):
            if spec:
                path, (models[stage], recommended, sha) = read_resolved(
                    spec, partial(read, moving=follows_latest(spec)))
                records[stage] = ModelRecord(stage, str(spec), path, recommended=recommended,
                                             _sha=sha)
        b, u = models["base"], models["upsample"]
        _check_models(b, u, records)
        if loras:
            from .lora import apply_loras_by_kind

            by_kind = {m.options.kind: records[s] for s, m in models.items() if m is not None}
            for entry in apply_loras_by_kind([b, u], list(loras)):
                record = {k: entry[k] for k in ("path", "scale", "modules", "sha256")}
                by_kind[entry["kind"]].loras.append(record)
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

    def models_info(self) -> dict[str, dict[str, Any]]:
        """Per stage (``base``, ``upsample``) the :meth:`ModelRecord.info` dict that
        metadata.json records."""
        return {s: self.records.get(s, ModelRecord(s, "(in memory)")).info(m)
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

    def picture_record(self, base: StageOptions, up: StageOptions,
                       base_stage: bool = True) -> dict[str, Any]:
        """What makes a request's pictures, keyed as ``glidectl sample``'s flags, as sample
        and the web UI record it in each PNG: each model's spec, weights file and sha256, its
        LoRAs (``PATH:SCALE`` and sha256), the settings of each stage that runs (a schedule
        file with its sha256), σ_max, precision, the GPT-2 vocabulary's sha256 (and
        ``vocab_dir``), glidectl's version and the plugins whose
        sampler or schedule ran. ``base_stage=False``: only the upsampler ran (a given
        low-res image). Prompt, seed and model calls are the image's own: callers add them."""
        from . import __version__
        from .plugins import plugins_used

        record: dict[str, Any] = {}
        for key, stage in (("base", "base"), ("upsampler", "upsample")):
            ran = self.stage_models().get(stage) is not None and (base_stage or stage != "base")
            found = self.records.get(stage) if ran else None
            record[key] = found.spec if found else None
            if found is not None and found.path is not None:  # a run folder's latest moves on
                record.update({f"{key}_file": str(found.path), f"{key}_sha256": found.sha256})
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
        record.update(self.vocab_record(base_stage))
        loras = [x for r in self.records.values() for x in r.loras]
        record.update({
            "sigma_max": first.sigma_max, "quantize_t": first.quantize_t or None,
            "grey": first.grey,
            "precision": self.precision.name, "glidectl": __version__,
            # kernels differ by device type and under torch.compile: so do the pixels
            "device": self.device.type, "compile": self.compiled or None,
            "loras": [f"{x['path']}:{float(x['scale'])!r}" for x in loras] or None,  # exact
            "lora_sha256": [x["sha256"] for x in loras] or None,
            "plugins": plugins_used([o.sampler for _, o in stages], schedules),
        })
        return record

    # ----------------------------------------------------------------- settings
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
        if isinstance(base.get("guidance_interval"), str):  # as --guidance-interval takes it
            base["guidance_interval"] = parse_interval(base["guidance_interval"])
        for key in ("sigma_max", "clip_denoised", "quantize_t"):
            if key in base and key not in up:
                up[key] = base[key]
        grey = self.upsampler_grey({"grey": base.get("grey"), "upsample_grey": up.get("grey")})
        base = {**self.recommended("base"), **grey, **base}  # upsamplers: GLIDE's fast27 DDPM
        if "grey" in base and "grey" not in up:  # a grey picture stays grey when upsampled
            up["grey"] = base["grey"]
        return replace(BASE_DEFAULTS, **base), replace(UPSAMPLE_DEFAULTS, **up), rest

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
        """``n`` images per prompt, image i (prompt-major) seeded ``seeds[i]`` (default
        ``seed + i``).

        Stage keywords: ``sampler, steps, schedule, guidance, eta, sigma_max, clip_denoised,
        quantize_t, guidance_interval=(lo, hi), guidance_rescale=φ, dynamic_threshold=p,
        grey`` for the base (``grey=True``: grey pictures, the upsampler's too unless
        ``upsample_grey`` says otherwise); ``upsample_sampler, upsample_steps,
        upsample_schedule, upsample_guidance, upsample_eta, upsample_temp`` for the
        upsampler. ``low_res``
        (image/tensor) skips the base and upsamples it. ``progress(done, total)`` counts
        model calls of the whole request, ``on_step(stage, done, total)`` those of one
        stage of one batch; ``timings`` accumulates seconds per stage. Returns PIL images
        whose ``info`` holds prompt, seed and the model calls of its batch (``model_calls``);
        ``output="np"``: one float32 [N,H,W,3] array in [0, 1] (as diffusers'
        ``output_type="np"``), ``output="tensor"``: one [N,3,H,W] tensor in [-1, 1].
        ``on_images(batch)`` gets each batch's PIL images as soon as they are done (to write
        them before the request ends); with ``keep_images=False`` they go there only and the
        list returned is empty, so a request of thousands of images holds one batch at a time.
        """
        base_opts, up_opts, rest = self.stages(**stage_options)
        if rest:
            raise TypeError(f"unknown generate() options: {', '.join(sorted(rest))}")
        if isinstance(prompts, str):
            prompts = [prompts]
        elif isinstance(prompts, Iterable):
            prompts = list(prompts)
        if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
            raise TypeError("generate() takes a prompt string or a list of prompt strings, "
                            f"got {prompts!r:.80}")
        if output not in OUTPUTS:
            choices = ", ".join(map(repr, OUTPUTS))
            raise GlidectlError(f"generate(): output must be one of {choices}, got "
                                f"{output!r:.60}.")
        _check_types({"n": n, "batch_size": batch_size}, int)
        if not prompts or n < 1 or batch_size < 1:
            raise GlidectlError("Nothing to generate: give at least one prompt, n >= 1 and "
                                "batch size >= 1.")
        if low_res is not None and self.upsampler is None:
            raise GlidectlError("A low-res input image needs an upsampler model.")
        if low_res is None and self.base is None:
            raise GlidectlError("Without a base model, pass a low-res image to upsample.")
        check_inpaint_pair(inpaint_image, inpaint_mask)
        if inpaint_image is not None and self.upsampler is not None and (
                not self.upsampler.options.inpaint):
            raise GlidectlError(
                "Inpainting with an upsampler needs an upsample-inpaint model, but this is "
                f"{a_or_an(repr(self.upsampler.options.kind))} model, which would repaint the "
                "kept pixels; pass --upsampler openai:upsample-inpaint (or a model trained as "
                "upsample-inpaint)" + (", or --upsampler none." if low_res is None else
                                       ", or drop the inpaint flags to upsample all of it."))
        texts_all = [p for p in prompts for _ in range(n)]
        seeds = list(seeds) if seeds is not None else [seed + i for i in range(len(texts_all))]
        if len(seeds) != len(texts_all):
            raise ValueError(f"generate() needs one seed per image ({len(texts_all)}), "
                             f"got {len(seeds)}")
        _check_numbers(base_opts, up_opts, seeds)
        jobs = list(zip(texts_all, [int(s) for s in seeds], strict=True))
        precision = (pick_precision(precision, str(self.device)) if precision
                     else self.precision).autocast
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
        for stage, opts in (("base", base_opts), ("upsample", up_opts)):
            if not (opts.schedule and is_schedule_file(opts.schedule)):
                continue
            messages.append(schedule_file_warning(opts.schedule, opts.sampler))
            record = self.records.get(stage)
            if record is not None and self.stage_models().get(stage) is not None:
                messages.append(model_warning(opts.schedule, lambda r=record: r.sha256,
                                              record.spec))
        first = self.base if low_res is None else self.upsampler
        if first is not None and first.options.inpaint and inpaint_image is None:
            messages.append(f"{a_or_an(first.options.kind).capitalize()} model without an "
                            "inpaint image and mask draws the whole picture.")
        messages += input_messages({"low-res image": low_res, "inpaint image": inpaint_image,
                                    "inpaint mask": inpaint_mask},
                                   self.upsampler.options.low_res_size
                                   if self.upsampler is not None else None)
        messages = [m for m in messages if m]
        _warn(list(dict.fromkeys(messages)), warn)
        inpaint_image, inpaint_mask = opened(inpaint_image), opened(inpaint_mask)
        outputs: list[Any] = []
        per_batch = self.model_calls(1, 1, base_opts, up_opts, low_res is not None)
        given = None if low_res is None else as_image_tensor(
            low_res, self.upsampler.options.low_res_size, "low_res")
        if given is not None and given.shape[0] not in (1, len(jobs)):
            raise GlidectlError(f"low_res holds {given.shape[0]} images but the request makes "
                                f"{len(jobs)}; pass one image, or one per image.")
        for start in range(0, len(jobs), batch_size):
            batch = jobs[start:start + batch_size]
            texts, batch_seeds = [p for p, _ in batch], [s for _, s in batch]
            if given is not None:
                images = given if given.shape[0] == 1 else given[start:start + len(batch)]
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
                continue
            pil = to_pil(images)
            for image, (prompt, s) in zip(pil, batch, strict=True):
                image.info.update(prompt=prompt, seed=str(s), model_calls=str(per_batch))
            if keep_images or not on_images:
                outputs.extend(pil)
            if on_images:
                on_images(pil)
        if output == "pil":
            return outputs
        images = torch.cat(outputs)
        if output == "np":  # as diffusers' output_type="np"
            return ((images.float() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).numpy()
        return images

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


def load_pipeline(base: str | None = "openai:base", upsampler: str | None = "auto", *,
                  device: str = "auto", vocab_dir: str | None = None,
                  precision: str = "auto", loras: Loras = ()) -> GlidePipeline:
    """:meth:`GlidePipeline.from_specs` with the common arguments."""
    return GlidePipeline.from_specs(base, upsampler, device=device, vocab_dir=vocab_dir,
                                    precision=precision, loras=loras)


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
                _check_types({prefix + key: getattr(opts, key)}, float)
            check(prefix + key, getattr(opts, key), rng)
    _check_types({"upsample_temp": up.temperature}, float)
    check("upsample_temp", up.temperature, FLAGS["--upsample-temp"])
    for key, value in (("sampler", base.sampler), ("upsample_sampler", up.sampler),
                       ("schedule", base.schedule), ("upsample_schedule", up.schedule)):
        if not isinstance(value, str) and not (value is None and "schedule" in key):
            raise GlidectlError(f"generate(): {key} must be a name such as 'dpm++2m'"
                                f"{' or a schedule file' if 'schedule' in key else ''}, got "
                                f"{value!r:.60} ({type(value).__name__}).")
    for key, value in (("grey", base.grey), ("upsample_grey", up.grey)):
        if not isinstance(value, bool):
            raise GlidectlError(f"generate(): {key} must be True or False, got {value!r:.60} "
                                f"({type(value).__name__}).")
    interval = base.guidance_interval
    if interval is not None and (isinstance(interval, str) or not isinstance(
            interval, Sequence) or len(interval) != 2 or not all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) for v in interval)):
        raise GlidectlError("generate(): guidance_interval must be two σ values (lo, hi), "
                            f"got {interval!r:.60} ({type(interval).__name__}).")


def _check_types(values: dict[str, Any], kind: type) -> None:
    """The one-line error for a ``generate`` keyword that is not a whole number (``int``) or
    not a number (``float``: ints too); None stands for a stage's default."""
    wanted = numbers.Integral if kind is int else numbers.Real
    for key, value in values.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, wanted)):
            what = "a whole number" if kind is int else "a number"
            raise GlidectlError(f"generate(): {key} must be {what}, got {value!r:.60} "
                                f"({type(value).__name__}).")


@SAID_AS_KEYWORDS
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
