"""The models a pipeline chains: their records, pair checks, default upsampler and precision."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .devices import Precision, check_precision, pick_precision
from .errors import GlidectlError, a_or_an
from .file_hashes import file_sha256
from .glide.options import UPSAMPLE_FACTOR
from .sampling import model_device


def check_pair(base: Any, upsampler: Any, names: dict[str, str] | None = None,
               alone: bool = False) -> None:
    """Refuse a base and an upsampler (their ModelOptions, either may be None) that cannot
    be chained: each of the right kind, the upsampler's input the base's output size.
    ``names``: the specs by stage ("base", "upsample"), to name them in the message;
    ``alone``: the upsampler runs on its own (``--low-res``), with no base to pass."""
    names = names or {}
    up, b = (f" {names[s]!r}" if s in names else "" for s in ("upsample", "base"))
    if upsampler is not None and not upsampler.super_res and alone:
        raise GlidectlError(f"The upsampler{up} is {a_or_an(repr(upsampler.kind))} model, and "
                            "--low-res upsamples with an upsample model; pass one (a glidectl "
                            "upsample run or openai:upsample) as --upsampler, or drop --low-res "
                            "to sample this model as the base (--base).")
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
               {stage: r.spec for stage, r in records.items()}, alone=base is None)


def loaded_record(stage: str, model: torch.nn.Module) -> ModelRecord | None:
    """The record of a model :func:`~glidectl.glide.loading.load_model` read, while its
    weights are as read and its file is there (its spec, file and recommended settings, as
    ``from_specs`` records them); None for a model built, trained or changed in memory."""
    from .glide.loading import weights_versions
    from .sampling_defaults import recommended_settings

    source = getattr(model, "glidectl_source", None)
    if source is None:
        return None
    spec, path, versions = source
    if versions != weights_versions(model) or not Path(path).is_file():
        return None
    return ModelRecord(stage, spec, Path(path), recommended=recommended_settings(path),
                       low_res_resample=upsampler_resample(stage, path))


def upsampler_resample(stage: str, path: Path) -> str | None:
    """The ``data.low_res_resample`` the upsampler in ``path`` trained with (None for a base
    stage), read when it loads: a run folder's latest file may go later."""
    from .eval_upsampler_inputs import training_resample

    return training_resample(path) if stage == "upsample" else None


@dataclass
class ModelRecord:
    """Where one loaded network came from: spec, file, LoRAs, recommended sampling."""

    stage: str
    spec: str
    path: Path | None = None
    loras: list[dict[str, Any]] = field(default_factory=list)
    recommended: dict[str, Any] = field(default_factory=dict)
    _sha: str | None = None
    # an upsampler's data.low_res_resample: the filter that shrinks a low-res input
    low_res_resample: str | None = None

    @property
    def sha256(self) -> str | None:
        """The weights file's sha256 (read once, when first asked); None for no file."""
        if self._sha is None and self.path is not None and self.path.is_file():
            self._sha = file_sha256(self.path)  # gone since (a pruned step): none
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
