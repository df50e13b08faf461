"""Held-out validation: ``val_loss`` on samples training never sees, at fixed timesteps and
with fixed noise, so values compare across a run (and across a resume).

The samples are ``validation.holdout`` samples of ``data.source`` (the first N that the data
pipeline accepts, read in evaluation mode: centre crops, no flips, no caption dropout; never
PRIOR_PREDICTION samples, whose target is no image; the training stream skips their keys) or
``validation.samples`` samples of ``validation.source`` (by default the VALIDATION concepts
of a OneTrainer concepts file: :func:`concept_validation`).
Each sample is scored at ``validation.timesteps`` timesteps spread evenly over the schedule
(bucket k at t = (k + ½)·T/K); ``val_loss`` is their mean and ``val_loss_t<k>`` each bucket's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import IterableDataset

from ..config import GlideConfig
from ..data.source_api import epoch_without
from ..errors import GlidectlError
from .objective import random_masks


def enabled(cfg: GlideConfig) -> bool:
    v = cfg.validation
    return (v.every > 0 or v.fid_every > 0) and (v.holdout > 0 or bool(v.source))


# what decides the val_loss numbers: another value of one measures another quantity
MEASURE_KEYS = (("validation", "holdout"), ("validation", "source"), ("validation", "samples"),
                ("validation", "timesteps"), ("validation", "seed"), ("train", "loss"))


def loss_settings(cfg: GlideConfig) -> dict[str, Any] | None:
    """The settings that decide ``val_loss`` (:data:`MEASURE_KEYS`, as ``section.key``:
    value), which a checkpoint keeps so that a resume can tell its values from the run's
    earlier ones; None without val_loss. A holdout validates on all its N samples, so
    ``validation.samples`` is left out then."""
    if not (enabled(cfg) and cfg.validation.every > 0):
        return None
    unused = ("validation", "samples") if cfg.validation.holdout > 0 else None
    return {f"{s}.{k}": getattr(getattr(cfg, s), k) for s, k in MEASURE_KEYS
            if (s, k) != unused}


def loss_settings_note(saved: Any, now: dict[str, Any] | None, keep_best: bool,
                       step_dir: Path) -> str | None:
    """The warning for a resume from ``step_dir`` whose val_loss is measured otherwise than
    its checkpoint's (``saved``: :func:`loss_settings` as the checkpoint kept it; None
    before it was kept)."""
    if not isinstance(saved, dict) or now is None or saved == now:
        return None
    changed = ", ".join(f"{k} {saved.get(k)!r} → {v!r}" for k, v in now.items()
                        if saved.get(k) != v)
    best = (", so checkpoints/best starts over from the next validation" if keep_best
            else "")
    return (f"Warning: val_loss is measured otherwise than when {str(step_dir)!r} was saved "
            f"({changed}): its values from here on do not compare with the run's earlier "
            f"ones{best}.")


def concept_validation(cfg: GlideConfig) -> tuple[GlideConfig, str | None]:
    """A ``data.source`` that is a OneTrainer concepts file with VALIDATION concepts: they
    are the run's ``validation.source`` (``onetrainer-validation:FILE``) unless the run has
    a ``validation.source`` or ``validation.holdout`` of its own, which wins. Returns the
    config and the one line that says which."""
    from ..data.onetrainer_source import validation_spec

    found = validation_spec(cfg.data.source)
    if found is None:
        return cfg, None
    spec, concepts = found
    v, many = cfg.validation, len(concepts) != 1
    named = f"VALIDATION {', '.join(concepts)} of data.source"
    if v.source not in ("", spec) or v.holdout > 0:
        own = "validation.source" if v.source else "validation.holdout"
        return cfg, (f"Note: the {named} {'are' if many else 'is'} not validated on: this "
                     f"run's {own} decides its validation data.")
    cfg = dataclasses.replace(cfg, validation=dataclasses.replace(v, source=spec))
    if v.every > 0 or v.fid_every > 0:
        return cfg, f"Validation: on the {named} (validation.source = {spec!r})."
    return cfg, (f"Note: the {named} {'are' if many else 'is'} this run's validation data, "
                 "but validation.every is 0; set it to compute val_loss on "
                 f"{'them' if many else 'it'}.")


def check(cfg: GlideConfig) -> None:
    """Config combinations the schema cannot check."""
    v = cfg.validation
    if v.holdout > 0 and v.source:
        raise GlidectlError(
            "validation.holdout and validation.source are both set; keep samples of "
            "data.source out (holdout) or validate on another source, not both."
        )
    if (v.every > 0 or v.fid_every > 0) and not (v.holdout > 0 or v.source):
        raise GlidectlError(
            "validation.every or fid_every is set but there is nothing to validate on; set "
            "validation.holdout (samples of data.source) or validation.source."
        )
    if cfg.checkpoint.keep_best and not (enabled(cfg) and v.every > 0):
        raise GlidectlError(
            "checkpoint.keep_best needs validation: set validation.every and "
            "validation.holdout or validation.source."
        )


def first_samples(dataset: Any, n: int, skip_prior: bool = False) -> list[dict[str, Any]]:
    """The first ``n`` samples a dataset yields (fewer if it runs out); with ``skip_prior``,
    not counting PRIOR_PREDICTION samples (trained towards the model's own prediction)."""
    out: list[dict[str, Any]] = []
    for sample in dataset:
        if skip_prior and sample.get("prior_prediction"):
            continue
        out.append(sample)
        if len(out) >= n:
            break
    return out


class WithoutKeys(IterableDataset):
    """The training stream minus the held-out samples (matched by their ``key``, so every
    repeat of a held-out image is left out: split by image, then repeat). A dataset that can
    leave keys out itself (a StreamDataset's ``without``: before decoding, so its data counts
    are training's alone) is read as such a copy; ``dataset`` is left as it is."""

    def __init__(self, dataset: Any, keys: set[str]):
        super().__init__()
        self.keys = frozenset(keys)
        without = getattr(dataset, "without", None)
        self.dataset = without(self.keys) if callable(without) else dataset

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for sample in self.dataset:
            if sample.get("key") not in self.keys:
                yield sample

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def set_resume(self, skip: list[int]) -> None:
        """Pass the resume cursor on (samples keep the inner stream's ``_cursor``)."""
        self.dataset.set_resume(skip)

    @property
    def num_samples(self) -> int | None:
        """The stream's samples per epoch less the held-out ones, each as often as an epoch
        reads it (a held-out image of a kohya folder leaves out all its repeats)."""
        n = getattr(self.dataset, "num_samples", None)
        reads = getattr(self.dataset, "reads_per_epoch", lambda key: 1)
        return None if not n else epoch_without(n, self.keys, reads)

    @property
    def resampled(self) -> bool:
        """An endless stream (``data.resampled``)."""
        return bool(getattr(self.dataset, "resampled", False))

    def stats(self) -> dict[str, Any]:
        return self.dataset.stats()

    def passed_counts(self) -> dict[str, Any]:
        """The inner stream's counts of its latest pass (held-out samples uncounted)."""
        passed = getattr(self.dataset, "passed_counts", None)
        return passed() if callable(passed) else {}


def load_samples(cfg: GlideConfig, data_args: dict[str, Any],
                 source: Any = None) -> list[dict[str, Any]]:
    """The validation samples (every process reads the same ones, in the same order);
    ``source``: the training data in place of ``data.source``, where the holdout comes from."""
    from ..data import build_dataset

    v = cfg.validation
    if v.holdout > 0:
        data_cfg, n, what = cfg.data, v.holdout, "validation.holdout"
    else:
        data_cfg = dataclasses.replace(cfg.data, source=v.source, reg_source="")
        n, what, source = v.samples, "validation.source", None
    try:
        dataset = build_dataset(data_cfg, train=False, source=source, **data_args)
        # one more than the holdout: a holdout of every sample leaves none to train on
        samples = first_samples(dataset, n + (v.holdout > 0), skip_prior=v.holdout > 0)
    except GlidectlError as exc:  # e.g. "Data source ... does not exist": say which one
        if v.holdout > 0:
            raise
        raise GlidectlError(f"validation.source: {exc}") from None
    has_prior = hasattr(dataset.source, "leave_out_prior_prediction")  # they train too
    if v.holdout > 0 and (len(samples) < n or len(samples) == n and not has_prior):
        prior = (" that are not PRIOR_PREDICTION (whose target is the model's own prediction, "
                 "not their image)" if has_prior else "")
        got = (f"but data.source gave only {len(samples)} samples{prior}" if len(samples) < n
               else f"takes every one of the {n} samples data.source gave, leaving none to "
               "train on")
        raise GlidectlError(f"validation.holdout = {n} {got}; lower validation.holdout.")
    samples = samples[:n]
    if not samples:
        raise GlidectlError(f"{what}: the source gave no samples; check {what}.")
    return samples


def fid_samples_at(cfg: GlideConfig, data_args: dict[str, Any], options: Any,
                   source: Any = None) -> list[dict[str, Any]] | None:
    """The held-out images FID samples for at the model's own size (``options.image_size``;
    an upsampler's input ``options.low_res_size`` px), as previews and ``glidectl sample``
    sample, where ``data.resolution`` trains it at another (an inpainting model's hidden
    rectangle is filled at that size); None when FID is off or the sizes agree
    (``samples`` serve)."""
    size = options.image_size
    if cfg.validation.fid_every <= 0 or data_args["image_size"] == size:
        return None
    at_size = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, resolution=size))
    args = {**data_args, "image_size": size,
            "low_res_size": options.low_res_size if options.super_res else None}
    return load_samples(at_size, args, source)


def fid_samples_note(cfg: GlideConfig, available: int) -> str | None:
    """A warning when validation.fid_samples asks for more images than there are samples;
    GlidectlError when there are fewer than the 2 FID/KID need (else the run would stop at
    its first FID, steps after the last checkpoint)."""
    v = cfg.validation
    if v.fid_every <= 0 or available >= v.fid_samples:
        return None
    more = "validation.holdout" if v.holdout > 0 else "validation.samples"
    if available < 2:
        fix = (f"raise {more}" if v.holdout > 0 or v.samples < 2
               else "give validation.source more images")
        raise GlidectlError(
            f"validation.fid_every needs at least 2 validation images (FID/KID compare two "
            f"sets), but there {'is' if available == 1 else 'are'} {available}; {fix} or set "
            "validation.fid_every = 0.")
    return (f"Warning: validation.fid_samples = {v.fid_samples} but there are {available} "
            f"validation samples, so FID/KID use {available} images; raise {more} or lower "
            "validation.fid_samples.")


class Validator:
    """Scores a model on fixed samples, timesteps and noise."""

    def __init__(self, cfg: GlideConfig, samples: list[dict[str, Any]], diffusion: Any,
                 options: Any, batch_size: int,
                 fid_samples: list[dict[str, Any]] | None = None):
        """``fid_samples``: the held-out images FID samples for, where they come at another
        size than ``samples`` (at the model's own size: :func:`fid_samples_at`)."""
        v = cfg.validation
        self.cfg, self.diffusion, self.options = cfg, diffusion, options
        self.samples, self.batch_size = samples, max(1, batch_size)
        T, K = diffusion.num_timesteps, v.timesteps
        self.timesteps = [min(T - 1, int((k + 0.5) * T / K)) for k in range(K)]
        gen = torch.Generator().manual_seed(v.seed)
        shape = torch.as_tensor(samples[0]["image"]).shape
        self.noise = torch.randn((len(samples), K, *shape), generator=gen)
        self.masks = None
        if options.inpaint:
            self.masks = random_masks(len(samples), shape[-1], gen)
        self.fid_samples, self.fid_masks = fid_samples or samples, self.masks
        if fid_samples and options.inpaint:
            size = torch.as_tensor(fid_samples[0]["image"]).shape[-1]
            self.fid_masks = random_masks(len(fid_samples), size, gen)
        self.features = None
        if v.fid_every > 0:
            from ..fid import inception_features

            self.features = inception_features(v.fid_weights)

    def due(self, step: int, last: bool) -> tuple[bool, bool]:
        """(loss, FID) due at ``step``; both run at the last step."""
        v = self.cfg.validation
        return (v.every > 0 and (last or step % v.every == 0),
                v.fid_every > 0 and (last or step % v.fid_every == 0))

    @torch.no_grad()
    def fid(self, model: torch.nn.Module, bundle: Any) -> dict[str, Any]:
        """FID/KID of images generated for the held-out captions (the previews' sampling
        settings, fixed seed; inpainting models fill a hidden rectangle of each image)
        against the held-out images; ``fid_missing`` says why when absent."""
        from .. import pipeline
        from ..fid import fid_kid

        assert self.features is not None
        if not self.features.available:
            return {"fid_missing": self.features.reason}
        from .previews import preview_sampling

        n = min(self.cfg.validation.fid_samples, len(self.fid_samples))
        settings = preview_sampling(self.cfg.preview, bool(self.options.super_res))
        chosen = self.fid_samples[:n]
        real, fake = [], []
        for lo in range(0, n, self.batch_size):
            chunk = chosen[lo:lo + self.batch_size]
            prompts = [s.get("caption", "") for s in chunk]
            args = dict(settings, seed=self.cfg.validation.seed + lo)
            images = torch.stack([torch.as_tensor(s["image"]) for s in chunk])
            if self.fid_masks is not None:  # each image with the rectangle val_loss hides
                args.update(inpaint_image=images,
                            inpaint_mask=self.fid_masks[lo:lo + len(chunk)])
            if self.options.super_res:
                low = torch.stack([torch.as_tensor(s["low_res"]) for s in chunk])
                out = pipeline.sample_upsample(model, bundle.diffusion, prompts,
                                               bundle.tokenizer, low, **args)
            else:
                out = pipeline.sample_base(model, bundle.diffusion, prompts, bundle.tokenizer,
                                           **args)
            fake.append(out.float().cpu())
            real.append(images)
        return fid_kid(real, fake, self.features)

    @torch.no_grad()
    def run(self, model: torch.nn.Module, device: torch.device) -> dict[str, float]:
        """``val_loss`` and ``val_loss_t<k>`` (mean over samples) for ``model``."""
        K = len(self.timesteps)
        totals = torch.zeros(K, dtype=torch.float64)
        was_training = model.training
        model.eval()
        try:
            for lo in range(0, len(self.samples), self.batch_size):
                chunk = self.samples[lo:lo + self.batch_size]
                totals += self._batch(model, device, chunk, lo)
        finally:
            model.train(was_training)
        per_bucket = (totals / len(self.samples)).tolist()
        out = {"val_loss": float(sum(per_bucket) / K)}
        out.update({f"val_loss_t{k}": float(v) for k, v in enumerate(per_bucket)})
        return out

    def _batch(self, model: torch.nn.Module, device: torch.device,
               chunk: list[dict[str, Any]], lo: int) -> torch.Tensor:
        x0 = torch.stack([torch.as_tensor(s["image"]) for s in chunk]).to(device)
        tokens = torch.stack([torch.as_tensor(s["tokens"]) for s in chunk]).to(device)
        mask = torch.stack([torch.as_tensor(s["mask"]) for s in chunk]).to(device)
        extra: dict[str, Any] = {}
        if self.options.super_res and "low_res" in chunk[0]:
            low = [torch.as_tensor(s["low_res"]) for s in chunk]
            extra["low_res"] = torch.stack(low).to(device)
        if self.masks is not None:
            extra["inpaint_image"] = x0
            extra["inpaint_mask"] = self.masks[lo:lo + len(chunk)].to(device)

        def model_fn(x_t: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
            return model(x_t, ts, tokens, mask, **extra)

        sums = torch.zeros(len(self.timesteps), dtype=torch.float64)
        for k, step in enumerate(self.timesteps):
            t = torch.full((len(chunk),), step, dtype=torch.long, device=device)
            noise = self.noise[lo:lo + len(chunk), k].to(device)
            losses = self.diffusion.training_losses(
                model_fn, x0, t, noise, loss_type=self.cfg.train.loss
            )
            sums[k] = losses["loss"].double().sum().cpu()
        return sums
