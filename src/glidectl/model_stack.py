"""A base model and optional upsampler loaded by spec, with LoRA, precision and compile:
what ``glidectl eval`` and ``glidectl ui`` sample from, one seed per image."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from .errors import GlidectlError
from .pipeline import (
    BASE_DEFAULTS,
    UPSAMPLE_DEFAULTS,
    UPSAMPLE_SEED_OFFSET,
    StageOptions,
    quantize_8bit,
    sample_stage,
    sigma_table,
    tokenizer_for,
)

# --precision names → the pipeline's autocast names
PRECISION_NAMES = {"fp32": "no", "no": "no", "fp16": "fp16", "bf16": "bf16"}
StepFn = Callable[[str, int, int], None]


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes (the model hash in metadata.json)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def pick_device(device: str = "auto") -> str:
    """``auto`` → cuda when available, else mps, else cpu."""
    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def stage_options(sampler: str, steps: int | str, guidance: float | None,
                  upsampler: bool = False) -> StageOptions:
    """The pipeline's stage defaults (upsampler: temperature 0.997) with these three set."""
    return replace(UPSAMPLE_DEFAULTS if upsampler else BASE_DEFAULTS, sampler=sampler,
                   steps=steps, guidance=guidance)


@dataclass
class LoadedModel:
    """One network and where it came from."""

    stage: str
    spec: str
    path: Path
    model: torch.nn.Module
    tokenizer: Any
    loras: list[dict[str, Any]] = field(default_factory=list)
    _sha: str | None = None

    @property
    def sha256(self) -> str:
        if self._sha is None:
            self._sha = file_sha256(self.path)
        return self._sha

    def info(self) -> dict[str, Any]:
        """spec, file, sha256, kind, size and LoRAs, as metadata.json records them."""
        opts = self.model.options
        return {
            "spec": self.spec, "path": str(self.path), "sha256": self.sha256,
            "kind": opts.kind, "image_size": opts.image_size, "tokenizer": opts.tokenizer,
            "loras": self.loras,
        }


class ModelStack:
    """Base (+ upsampler) ready to sample; ``generate`` takes one seed per image."""

    def __init__(self, base: LoadedModel, upsampler: LoadedModel | None, precision: str):
        self.base, self.upsampler = base, upsampler
        self.precision = PRECISION_NAMES[precision]

    @property
    def models(self) -> list[LoadedModel]:
        return [m for m in (self.base, self.upsampler) if m is not None]

    def calls_per_batch(self, stage: str, options: StageOptions) -> int:
        """Network forwards for one batch of ``stage`` (cond and uncond rows share one)."""
        model = self.base if stage == "base" else self.upsampler
        if model is None:
            return 0
        return options.model_calls(sigma_table(model.model))

    def generate(
        self, prompts: Sequence[str], seeds: Sequence[int], base: StageOptions,
        up: StageOptions | None = None, on_step: StepFn | None = None,
        timings: dict[str, float] | None = None,
    ) -> list[Any]:
        """One PIL image per (prompt, seed); the upsampler stage uses seed + 1000003."""
        from .images import to_pil

        stages: list[tuple[str, LoadedModel, StageOptions]] = [("base", self.base, base)]
        if self.upsampler is not None:
            stages.append(("upsample", self.upsampler, up or UPSAMPLE_DEFAULTS))
        images = None
        for name, loaded, options in stages:
            total, done = self.calls_per_batch(name, options), 0

            def on_call(name: str = name, total: int = total) -> None:
                nonlocal done
                done += 1
                if on_step is not None:
                    on_step(name, done, total)

            stage_seeds = list(seeds) if name == "base" else [
                int(s) + UPSAMPLE_SEED_OFFSET for s in seeds]
            t0 = time.perf_counter()
            images = sample_stage(
                loaded.model, list(prompts), loaded.tokenizer, stage_seeds, options,
                low_res=None if images is None else quantize_8bit(images),
                precision=self.precision, on_call=on_call,
            )
            if timings is not None:
                timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0
        assert images is not None
        return to_pil(images)

    def time_call(self, stage: str, batch: int, options: StageOptions) -> float:
        """Seconds of one network forward at this batch size (after one warm-up call)."""
        loaded = self.base if stage == "base" else self.upsampler
        assert loaded is not None
        one = replace(options, sampler="euler", steps=1, schedule="karras")
        low = None
        if loaded.model.options.super_res:
            size = loaded.model.options.low_res_size
            low = torch.zeros(batch, 3, size, size)
        seconds = []
        for _ in range(2):
            t0 = time.perf_counter()
            sample_stage(loaded.model, [""] * batch, loaded.tokenizer, list(range(batch)), one,
                         low_res=low, precision=self.precision)
            seconds.append(time.perf_counter() - t0)
        return seconds[-1]


def _load_one(stage: str, spec: str, kind: str, device: str) -> LoadedModel:
    from .glide.loading import load_model, resolve_spec

    path = resolve_spec(spec)
    model = load_model(path, device=device, kind=kind)
    return LoadedModel(stage, str(spec), path, model, tokenizer_for(model))


def _adapter_sha256(path: str) -> str:
    from .lora import read_adapter
    from .lora.files import WEIGHTS_FILE

    return file_sha256(read_adapter(path).path / WEIGHTS_FILE)


def load_stack(
    base: str, upsampler: str | None = None, *, loras: Sequence[str] = (),
    precision: str = "fp32", device: str = "auto", compile: bool = False,
) -> ModelStack:
    """Load the models named by specs; each ``PATH[:SCALE]`` LoRA is merged into the model
    of the kind it was trained for; then ``torch.compile`` when asked."""
    if precision not in PRECISION_NAMES:
        raise GlidectlError(f"Unknown precision {precision!r}; use fp32, fp16 or bf16.")
    device = pick_device(device)
    b = _load_one("base", base, "base", device)
    u = _load_one("upsample", upsampler, "upsample", device) if upsampler else None
    if u is not None and u.model.options.low_res_size != b.model.options.image_size:
        raise GlidectlError(
            f"The upsampler {upsampler!r} takes {u.model.options.low_res_size} px input but the "
            f"base model {base!r} makes {b.model.options.image_size} px images; pick a matching "
            "pair."
        )
    if loras:
        from .lora import apply_loras_by_kind

        by_kind = {m.model.options.kind: m for m in (b, u) if m is not None}
        for entry in apply_loras_by_kind([b.model, u.model if u else None], list(loras)):
            record = {k: entry[k] for k in ("path", "scale", "modules")}
            by_kind[entry["kind"]].loras.append(
                {**record, "sha256": _adapter_sha256(str(entry["path"]))})
    for loaded in (b, u):
        if loaded is not None:
            loaded.model.eval()
            if compile:
                loaded.model.compile()
    return ModelStack(b, u, precision)
