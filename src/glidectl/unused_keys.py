"""Config keys a training run would not use: each group set away from its default is named
in one warning, so no setting is dropped without a word."""

from __future__ import annotations

import os
import sys
from typing import Any

from .config import GlideConfig
from .errors import a_or_an

UPSAMPLER_KEYS = ("data.low_res_resample", "data.degrade_blur", "data.degrade_jpeg",
                  "data.degrade_noise", "preview.low_res")
PREVIEW_PROMPT_KEYS = ("preview.prompts", "preview.prompt_file")
SCRATCH_KEYS = ("model.size", "model.time_embed_max_freq")
ADAM_KEYS = ("train.adam_beta1", "train.adam_beta2", "train.adam_eps")
WANDB_KEYS = ("log.wandb_entity", "log.wandb_mode")
# what each built-in data source type reads of [data] beyond the keys every source uses
SOURCE_KEYS = {"webdataset": ("data.image_key", "data.caption_key", "data.metadata_key",
                              "data.caption_column", "data.shuffle_buffer"),
               "parquet": ("data.image_column", "data.caption_column", "data.shuffle_buffer"),
               "hf": ("data.image_column", "data.caption_column", "data.split",
                      "data.shuffle_buffer"),
               "demo": ("data.demo_size",), "folder": ("data.kohya_folders", "data.reg_source",
                                                        "data.caption_column"),
               "kohya": (), "onetrainer": (), "onetrainer-validation": ()}
# what each built-in preset reads of the metadata filters
FILTER_KEYS = ("data.min_size", "data.aspect_range", "data.similarity_range",
               "data.max_punsafe", "data.max_pwatermark", "data.nsfw_allowed")
PRESET_KEYS = {"laion": FILTER_KEYS, "datacomp": ("data.similarity_range",), "simple": (),
               "alamy": (), "synthetic": ()}
VALIDATION_KEYS = ("validation.holdout", "validation.source", "validation.samples",
                   "validation.timesteps", "validation.seed", "validation.fid_weights",
                   "validation.fid_samples")


def _changed(cfg: GlideConfig, keys: tuple[str, ...]) -> list[str]:
    """The ``keys`` (``section.key``) whose values differ from the defaults."""
    default = GlideConfig()

    def value(c: Any, key: str) -> Any:
        section, name = key.split(".")
        return getattr(getattr(c, section), name)

    return [k for k in keys if value(cfg, k) != value(default, k)]


def _scratch_tokenizer(cfg: GlideConfig) -> str | None:
    """The tokenizer a scratch model gets (None: model.init brings its own)."""
    from .glide.options import preset_options

    if cfg.model.init != "scratch":
        return None
    m = cfg.model
    return preset_options(m.kind, m.size, None if m.tokenizer == "auto" else m.tokenizer).tokenizer


def _are(keys: list[str], after: str = "") -> str:
    """'a is' / 'a, b are', with ``after`` before the verb."""
    return f"{', '.join(keys)}{after} {'is' if len(keys) == 1 else 'are'}"


def _it(keys: list[str]) -> str:
    return "it" if len(keys) == 1 else "them"


def _source_kinds(cfg: GlideConfig, validation: bool) -> list[str] | None:
    """The built-in source types the run reads (data.source, and validation.source when
    ``validation`` and validation runs); None when one is a plugin's or none claims it (it
    may read any key)."""
    from .data.sources import source_type
    from .errors import GlidectlError

    v = cfg.validation
    validated = validation and v.source and (v.every or v.fid_every)
    specs = [cfg.data.source, *([v.source] if validated else [])]
    try:
        kinds = [source_type(spec)[0] for spec in specs]
    except (GlidectlError, OSError):
        return None
    names = [getattr(kind, "name", None) for kind in kinds]
    return names if all(name in SOURCE_KEYS for name in names) else None


def unused_data_keys(cfg: GlideConfig, *, validation: bool = True) -> list[str]:
    """One sentence per group of source-specific and preset-specific [data] keys the source
    and preset ignore (``validation``: validation.source's type reads too, when validation
    runs; ``glidectl dataset inspect`` reads data.source only)."""
    notes = []
    kinds = _source_kinds(cfg, validation)
    if kinds is not None:
        read = {k for kind in kinds for k in SOURCE_KEYS[kind]}
        others = tuple(dict.fromkeys(k for keys in SOURCE_KEYS.values() for k in keys))
        if keys := [k for k in _changed(cfg, others) if k not in read]:
            used = " and ".join(dict.fromkeys(kinds))
            notes.append(f"{_are(keys)} ignored: this run reads {used} data, which does not "
                         f"read {_it(keys)}.")
    preset = cfg.data.preset.lower()
    if preset in PRESET_KEYS and (keys := [k for k in _changed(cfg, FILTER_KEYS)
                                           if k not in PRESET_KEYS[preset]]):
        notes.append(f"{_are(keys)} ignored: data.preset {preset!r} does not filter on "
                     f"{_it(keys)} (\"laion\" does).")
    return notes


def _data_notes(cfg: GlideConfig) -> list[str]:
    """The [data] keys the run's sources and preset ignore, and train.steps under epochs."""
    notes = unused_data_keys(cfg)
    if cfg.train.epochs > 0 and _changed(cfg, ("train.steps",)):
        notes.append(f"train.steps is ignored: train.epochs = {cfg.train.epochs} decides "
                     "how long the run trains (set train.epochs = 0 to train by steps).")
    return notes


def _preview_prompt_notes(cfg: GlideConfig) -> list[str]:
    """Upsamplers and inpainting models preview held-out images under their own captions:
    preview prompts caption only a plain upsampler's ``preview.low_res`` images, one each
    (an inpainting upsampler ignores them: it inpaints held-out images)."""
    p, kind = cfg.preview, cfg.model.kind
    if p.every == 0 or not (kind.startswith("upsample") or kind.endswith("inpaint")):
        return []
    notes = []
    if kind == "upsample-inpaint" and _changed(cfg, ("preview.low_res",)):
        notes.append("preview.low_res is ignored: an 'upsample-inpaint' model previews "
                     "held-out images with a rectangle hidden, under their own captions (a "
                     "low-res file holds no image to inpaint).")
    elif p.low_res and kind == "upsample":
        n, m = len(p.prompts), len(p.low_res)
        if p.prompt_file or n in (0, m):  # none: every image under the empty caption
            return []
        return [f"preview.prompts holds {n} prompt{'' if n == 1 else 's'} for {m} "
                f"preview.low_res image{'' if m == 1 else 's'}: each image takes the prompt "
                "in its place, "
                + ("the extra prompts are ignored." if len(p.prompts) > len(p.low_res) else
                   "the images without one are upsampled under the empty caption.")]
    if keys := _changed(cfg, PREVIEW_PROMPT_KEYS):
        also = (" (set preview.low_res to images for them to caption)"
                if kind == "upsample" else "")
        notes.append(f"{_are(keys)} ignored: {a_or_an(repr(kind))} model previews held-out "
                     f"images under their own captions{also}.")
    return notes


def _upsampler_preview_notes(cfg: GlideConfig) -> list[str]:
    """An upsampler's previews sample as ``glidectl sample`` upsamples (fast27 DDPM, no
    guidance) but for the sampler, steps and guidance ``[preview]`` sets: say so."""
    p = cfg.preview
    if not cfg.model.kind.startswith("upsample") or p.every == 0 and \
            cfg.validation.fid_every == 0:
        return []
    keys = _changed(cfg, ("preview.sampler", "preview.steps", "preview.guidance"))
    if not keys:
        return []
    shown = ", ".join(f"{k.split('.')[1]} {getattr(p, k.split('.')[1])}" for k in keys)
    return [f"{', '.join(keys)} {'is' if len(keys) == 1 else 'are'} used: previews and "
            f"validation FID sample this upsampler with {shown}, where glidectl sample "
            "upsamples with fast27 DDPM and no guidance; remove "
            f"{'it' if len(keys) == 1 else 'them'} from [preview] to preview as sample does."]


def _same_data_notes(cfg: GlideConfig) -> list[str]:
    """validation.source naming the training data itself (a saved dataset's splits are
    read with data.split for both): its val_loss is a training loss."""
    import os

    v = cfg.validation
    if not v.source or (v.every == 0 and v.fid_every == 0):
        return []

    def where(spec: str) -> str:
        spec = spec.removeprefix("hf:")
        return spec if "://" in spec else os.path.abspath(os.path.expanduser(spec))

    if where(v.source) != where(cfg.data.source):
        return []
    return [f"validation.source {v.source!r} is the training data (data.source, split "
            f"{cfg.data.split!r}), so validation measures what the model trains on; point it "
            "at other data (a saved Hugging Face dataset's split by its own folder, e.g. "
            f"{v.source.removeprefix('hf:').rstrip('/')}/validation), or set "
            "validation.holdout to keep samples out of training."]


def unused_keys(cfg: GlideConfig, *, lora: bool) -> list[str]:
    """One sentence per group of set keys that a run of ``cfg`` ignores (``lora``: the run
    trains LoRA adapters, ``glidectl lora``; else every weight, ``train``/``upsample``)."""
    notes = []
    if not lora and (keys := _changed(cfg, tuple(f"lora.{k}" for k in vars(cfg.lora)))):
        notes.append(f"this command trains every weight and ignores {', '.join(keys)}; to "
                     "train LoRA adapters, run glidectl lora with this config.")
    if lora and _changed(cfg, ("train.trainable",)):
        notes.append("glidectl lora trains only its adapters and ignores train.trainable.")
    if cfg.model.init != "scratch" and (keys := _changed(cfg, SCRATCH_KEYS)):
        notes.append(f"model.init {cfg.model.init!r} brings its own network, so "
                     f"{_are(keys, ' (scratch models only)')} ignored.")
    if cfg.model.vocab_dir and _scratch_tokenizer(cfg) == "byte":
        notes.append("model.vocab_dir is ignored: this scratch model reads UTF-8 bytes "
                     "(model.tokenizer \"byte\"), not GPT-2's vocabulary.")
    if not cfg.model.kind.startswith("upsample") and (keys := _changed(cfg, UPSAMPLER_KEYS)):
        notes.append(f"model.kind {cfg.model.kind!r} is no upsampler, so "
                     f"{_are(keys, ' (upsamplers only)')} ignored.")
    notes += _preview_prompt_notes(cfg) + _upsampler_preview_notes(cfg) + _same_data_notes(cfg)
    if cfg.train.optimizer == "adafactor" and (keys := _changed(cfg, ADAM_KEYS)):
        notes.append(f"train.optimizer = \"adafactor\" ignores {', '.join(keys)} (AdamW's).")
    wandb = "wandb" in cfg.log.trackers or bool(cfg.log.wandb_project)
    # "online" was the default before "auto": every older run's config.toml holds it
    keys = [k for k in _changed(cfg, WANDB_KEYS)
            if k != "log.wandb_mode" or cfg.log.wandb_mode != "online"]
    if not wandb and keys:
        notes.append(f"{_are(keys)} ignored: W&B is off (add \"wandb\" to "
                     "log.trackers or set log.wandb_project).")
    if cfg.log.wandb_project and _changed(cfg, ("log.project",)) \
            and cfg.log.project != cfg.log.wandb_project:
        notes.append(f"log.project {cfg.log.project!r} is ignored: log.wandb_project "
                     f"{cfg.log.wandb_project!r} names the project of every tracker "
                     "(TensorBoard's folder too); set one of the two.")
    v = cfg.validation
    if v.every == 0 and v.fid_every == 0 and (keys := _changed(cfg, VALIDATION_KEYS)):
        notes.append(f"{_are(keys)} ignored: validation.every and "
                     "validation.fid_every are 0, so nothing is held out or validated.")
    elif v.fid_every == 0 and (keys := _changed(cfg, ("validation.fid_weights",
                                                      "validation.fid_samples"))):
        notes.append(f"{_are(keys)} ignored: validation.fid_every = 0, so no FID/KID is "
                     "measured.")
    if not lora and cfg.train.trainable == "unet" and _changed(cfg, ("train.text_lr_scale",)):
        notes.append("train.text_lr_scale is ignored: train.trainable = \"unet\" freezes the "
                     "text transformer.")
    if cfg.train.ema_decay == 0 and cfg.train.ema_warmup:
        notes.append("train.ema_warmup is ignored: train.ema_decay = 0 keeps no EMA.")
    if not cfg.data.random_crop and _changed(cfg, ("data.crop_scale",)):
        notes.append("data.crop_scale is ignored: data.random_crop = false takes the centre "
                     "crop.")
    return notes + _data_notes(cfg)


def warn(note: str) -> None:
    """One ``Warning:`` line on stderr, from the main process only (every process of a
    launched run reads the same config)."""
    if os.environ.get("RANK", "0") == "0":
        print(f"Warning: {note}", file=sys.stderr, flush=True)


def warn_unused(cfg: GlideConfig, *, lora: bool, quiet: bool = False) -> None:
    """One :func:`warn` line per group of :func:`unused_keys`, before a run is set up:
    :func:`glidectl.training.train` and :func:`glidectl.lora.train_lora` say them, and so
    the commands (nothing when ``quiet``)."""
    for note in [] if quiet else unused_keys(cfg, lora=lora):
        warn(note)
