"""Preview grids: images in [-1, 1] → one captioned PNG per preview step."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..config import GlideConfig, PreviewConfig
from ..errors import GlidectlError, NonFiniteSample, PluginError, cause, in_keywords
from ..images import captioned_grid, save_png, to_pil
from ..prompt_files import read_prompt_file


def preview_path(directory: Path, step: int) -> Path:
    return Path(directory) / f"step-{step:06d}.png"


def side_by_side(columns: list[torch.Tensor]) -> list[Image.Image]:
    """Per sample, one row of ``columns`` ([N,3,h,w] each), smaller ones nearest-upscaled
    to the last column's size: [low-res | masked input | output | reference]."""
    size = columns[-1].shape[-1]
    cols = [torch.nn.functional.interpolate(c.float().cpu(), size=(size, size), mode="nearest")
            if c.shape[-1] != size else c.float().cpu() for c in columns]
    return to_pil(torch.cat([torch.cat([c[i:i + 1] for c in cols], dim=3)
                             for i in range(cols[0].shape[0])]))


# the [preview] keys for the flags of glidectl sample that sampling errors name
PREVIEW_KEYS = {f"--{f.name.replace('_', '-')}": f"preview.{f.name}"
                for f in dataclasses.fields(PreviewConfig)
                if f.name in ("sampler", "steps", "schedule", "guidance", "eta", "sigma_max")}


def preview_sampling(cfg: PreviewConfig, upsampler: bool = False) -> dict[str, Any]:
    """The sampling settings of ``[preview]``: sampler, steps, guidance and any other
    sampling field the section holds (schedule, eta, ...), as ``sample_stage`` options.

    An upsampler samples as ``glidectl sample`` upsamples (fast27 DDPM, no guidance) in each
    of sampler, steps and guidance that ``[preview]`` leaves at its default."""
    from ..pipeline import RECOMMENDED_FIELDS, UPSAMPLE_DEFAULTS

    settings = {k: getattr(cfg, k) for k in RECOMMENDED_FIELDS if hasattr(cfg, k)}
    if upsampler:
        default, up = PreviewConfig(), UPSAMPLE_DEFAULTS
        for key in ("sampler", "steps", "guidance"):
            if getattr(cfg, key) == getattr(default, key):
                settings[key] = getattr(up, key)
        if settings["sampler"] != up.sampler and settings["steps"] == up.steps:
            settings["steps"] = default.steps  # fast27 is a DDPM respacing
    return settings


@dataclass
class PreviewOutput:
    path: Path
    images: list[Image.Image]
    captions: list[str]


def _read_prompts(cfg: PreviewConfig) -> list[str]:
    prompts = list(cfg.prompts)
    if cfg.prompt_file:
        prompts += read_prompt_file(cfg.prompt_file, "preview.prompt_file", empty_ok=True)
    return prompts


def _dataset_samples(dataset: Any, n: int) -> list[dict[str, Any]]:
    """The first ``n`` samples of a map-style or iterable dataset."""
    if hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):
        return [dataset[i] for i in range(min(n, len(dataset)))]
    out = []
    for item in dataset:
        out.append(item)
        if len(out) >= n:
            break
    return out


def _load_low_res(paths: list[str], size: int, notes: list[str] | None = None,
                  resample: str = "bicubic") -> torch.Tensor:
    """``preview.low_res`` files → [N,3,size,size] in [-1, 1], the centre square of each
    (as ``glidectl sample --low-res`` reads them: one of another size shrunk with
    ``resample``, the run's ``data.low_res_resample``); a bad file is one sentence.
    ``notes`` gets one line per file of another size (it is resized to the upsampler's
    input)."""
    from ..data.images import apply_orientation
    from ..sampling import as_low_res_tensor

    images = []
    for p in paths:
        p = str(Path(p).expanduser())  # ~: the home folder, as data.source reads it
        if not Path(p).is_file():
            what = "is a folder" if Path(p).is_dir() else "does not exist"
            raise GlidectlError(f"preview.low_res image {p!r} {what}; fix the path.")
        try:
            with Image.open(p) as im:
                if notes is not None and min(im.size) != size:
                    notes.append(f"preview.low_res image {p!r} is {min(im.size)} px across, "
                                 f"but this upsampler takes {size} px input: it is resized "
                                 f"to {size}×{size} ({resample}) for the previews.")
                images.append(as_low_res_tensor(apply_orientation(im), size, resample))
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise GlidectlError(f"Cannot read preview.low_res image {p!r} ({cause(exc)}); "
                                "pass a PNG or JPEG.") from None
    return torch.cat(images)


class Previewer:
    """Samples the preview grid with whatever weights are in the model (EMA, by the engine).

    Base models: one image per preview prompt (default: the first captions of the data).
    Upsamplers: held-out low-res inputs (or ``preview.low_res`` files) shown as
    [input | output | reference] rows. Inpainting models: held-out images with a rectangle
    hidden (drawn as in training, seeded by ``preview.seed``), as [masked input | output |
    reference] rows. Both use the images' own captions. RNG state is forked, so previews
    never change the training trajectory.
    """

    def __init__(self, cfg: GlideConfig, bundle: Any, model: torch.nn.Module,
                 holdout: Any, max_items: int = 8, precision: str = "fp32"):
        self.cfg = cfg.preview
        self.vocab_dir = cfg.model.vocab_dir or None  # as given: the PNGs record it
        self.precision = precision  # training's: accelerate autocasts the model's forward
        self.bundle = bundle
        self.model = model
        self.super_res = bool(bundle.options.super_res)
        self.resample = cfg.data.low_res_resample  # how its low-res inputs are shrunk
        self.reference: torch.Tensor | None = None
        self.low_res: torch.Tensor | None = None
        self.masks: torch.Tensor | None = None  # inpainting: 1 = known
        self.failures = 0
        self.grey = False  # the training data are grey: sample grey, recommend it
        self.error: str | None = None
        self.notes: list[str] = []  # warnings for the run's display
        prompts = _read_prompts(self.cfg)
        if self.cfg.every <= 0:
            self.prompts = prompts
            return
        if self.super_res:
            size = bundle.options.image_size // 4
            # an inpainting upsampler previews held-out images with a rectangle hidden: a
            # low-res file holds no image to inpaint (unused_keys says preview.low_res goes)
            if self.cfg.low_res and not bundle.options.inpaint:
                self.low_res = _load_low_res(list(self.cfg.low_res), size, self.notes,
                                             self.resample)
                self.prompts = (prompts + [""] * len(self.cfg.low_res))[: len(self.cfg.low_res)]
            else:
                samples = _dataset_samples(holdout, max_items)
                self.low_res = torch.stack([s["low_res"] for s in samples])
                self.reference = torch.stack([s["image"] for s in samples])
                # held-out images are upsampled under their own captions
                self.prompts = [s.get("caption", "") for s in samples]
        elif bundle.options.inpaint:
            samples = _dataset_samples(holdout, max_items)
            self.reference = torch.stack([s["image"] for s in samples])
            self.prompts = [s.get("caption", "") for s in samples]
        else:
            self.prompts = prompts or [s.get("caption", "") for s in
                                       _dataset_samples(holdout, max_items)]
        if bundle.options.inpaint and self.reference is not None:
            from .objective import random_masks

            gen = torch.Generator().manual_seed(self.cfg.seed)
            self.masks = random_masks(len(self.reference), self.reference.shape[-1], gen)

    def sample(self) -> torch.Tensor:
        from .. import sampling

        c, b = self.cfg, self.bundle
        settings = {**preview_sampling(c, self.super_res), "precision": self.precision,
                    "grey": self.grey}
        if self.masks is not None:
            settings.update(inpaint_image=self.reference, inpaint_mask=self.masks)
        if self.super_res:
            return sampling.sample_upsample(
                self.model, b.diffusion, self.prompts, b.tokenizer, self.low_res,
                seed=c.seed, **settings,
            )
        return sampling.sample_base(self.model, b.diffusion, self.prompts, b.tokenizer,
                                    seed=c.seed, **settings)

    def picture_record(self) -> dict[str, str]:
        """What makes the preview images, as PNG text: sampler, steps, schedule (the
        sampler's own when ``[preview]`` names none), guidance, seed (image i: seed + i),
        precision (training's, which ``glidectl sample --precision auto`` may not pick),
        the device type, the GPT-2 vocabulary (as sample records it; ``vocab_dir`` only when
        given), glidectl's version and the plugins whose sampler or schedule ran."""
        from .. import __version__
        from ..eval_settings import own_schedule
        from ..plugins import plugins_used
        from ..tokenizer import vocab_record

        used = preview_sampling(self.cfg, self.super_res)
        schedule = used.get("schedule") or own_schedule(used["sampler"])
        text = {"sampler": used["sampler"], "steps": str(used["steps"]), "schedule": schedule,
                "guidance": str(used["guidance"]), "seed": str(self.cfg.seed),
                "precision": self.precision, "batch_size": str(len(self.prompts)),
                "device": next(self.model.parameters()).device.type, "glidectl": __version__,
                "grey": str(self.grey)}
        if self.super_res:  # the filter that shrank its inputs (preview.low_res's too)
            text["low_res_resample"] = self.resample
        vocab = vocab_record([self.bundle.tokenizer], self.vocab_dir)
        text.update({k: v for k, v in vocab.items() if v is not None})
        if plugins := plugins_used([used["sampler"]], [schedule]):
            text["plugins"] = json.dumps(plugins)
        return text

    def recommended(self) -> str:
        """The checkpoint metadata value of :data:`glidectl.pipeline.RECOMMENDED_KEY`: how
        this model is sampled by default (the preview settings) and its preview prompts.
        Grey training data add ``grey``. An upsampler records no sampler settings (every
        front end upsamples with GLIDE's fast27 DDPM unless told otherwise; issue-measured:
        nothing cheaper matches it), only prompts and ``grey``."""
        prompts = [p for p in dict.fromkeys(self.prompts) if p][:8]
        settings = {} if self.super_res else preview_sampling(self.cfg)
        if self.grey:
            settings["grey"] = True
        return json.dumps({**settings, "prompts": prompts})

    @torch.no_grad()
    def run(self, step: int, directory: Path,
            weights_sha256: str | None = None) -> PreviewOutput | None:
        """The preview grid; None without prompts or when a plugin's sampler fails (then
        ``failures`` counts it and ``error`` says why: a preview never stops training).
        ``weights_sha256``: :func:`~glidectl.glide.checkpoints.state_sha256` of what the
        step's checkpoint saves of the weights sampled (recorded, so a remake checks it)."""
        self.error = None
        if not self.prompts:
            return None
        try:
            with torch.random.fork_rng(devices=[]):
                out = self.sample()
        except (PluginError, NonFiniteSample) as exc:
            self.failures += 1
            self.error = f"preview at step {step} failed: {exc}"
            return None
        except GlidectlError as exc:  # say [preview]'s keys, not glidectl sample's flags
            exc.args = (in_keywords(str(exc), PREVIEW_KEYS),)
            raise
        columns = [self.low_res] if self.super_res else []
        if self.masks is not None:
            columns.append(self.reference * self.masks)  # what the model sees: hidden = 0
        columns += [out] + ([self.reference] if self.reference is not None else [])
        images = side_by_side(columns) if len(columns) > 1 else to_pil(out)
        cols = 1 if len(columns) > 1 else None
        grid = captioned_grid(images, self.prompts, cols=cols)
        text = {"step": str(step), "prompts": json.dumps(self.prompts),
                **self.picture_record()}
        if weights_sha256:
            text["weights_sha256"] = weights_sha256
        path = save_png(grid, preview_path(directory, step), text)
        return PreviewOutput(path, images, self.prompts)
