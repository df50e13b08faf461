"""From the [model] config to a network, its tokenizer and its diffusion chain."""

from __future__ import annotations

import dataclasses
import math
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import ModelConfig
from ..errors import GlidectlError, a_or_an


@dataclass
class ModelBundle:
    model: Any  # GlideUNet
    options: Any  # ModelOptions
    tokenizer: Any
    diffusion: Any  # GaussianDiffusion


# what a scratch preset's changes have moved (its levels, blocks and attention), where no
# config key reaches: a run begun before keeps its own (widths, text context: another size)
PRESET_LAYOUT = frozenset({"channel_mult", "num_res_blocks", "attention_resolutions"})


def build_model(cfg: ModelConfig, resolution: int = 0,
                resume_from: Path | None = None,
                kinds: tuple[str, ...] | None = None, *, whole: bool = False) -> ModelBundle:
    """A scratch network at ``cfg.size`` or pretrained weights from ``cfg.init``.

    A scratch model trained at ``resolution`` (data.resolution) records it as its
    image_size, so previews and later sampling use the size it learned. ``resume_from``: the
    step checkpoint a scratch run resumes (one begun with an earlier preset keeps its
    network: :func:`earlier_preset`). ``kinds``: the model kinds the command trains.
    ``whole``: the resume loads the whole network from ``resume_from`` (not LoRA adapters),
    so a finetune's model.init is not read, nor downloaded, again: :func:`resumed_network`.
    """
    from ..diffusion import create_diffusion
    from ..glide import create_model, preset_options
    from ..tokenizer import CONFIG_VOCAB, get_tokenizer, vocab_named

    tok_name = None if cfg.tokenizer == "auto" else cfg.tokenizer
    if cfg.init == "scratch":
        options = preset_options(cfg.kind, cfg.size, tok_name)
        if resolution and resolution != options.image_size:
            options = _at_resolution(options, resolution, cfg.size)
        options = options.replace(time_embed_max_freq=cfg.time_embed_max_freq)
        options = earlier_preset(options, cfg, resume_from)
        model = create_model(options)
    else:
        from ..glide import load_model
        from ..glide.loading import LoraRunError

        try:
            model = resumed_network(resume_from) if whole else None
            if model is None:
                model = load_model(cfg.init)
            model.__dict__.pop("glidectl_source", None)  # it trains: its file is not it
        except LoraRunError:  # training has no --lora: merge first, or continue the LoRA run
            run = shlex.quote(cfg.init)
            raise GlidectlError(
                f"model.init {cfg.init!r} is a LoRA run: its checkpoints hold adapters, not a "
                f"model; merge it into its base first (glidectl lora merge {run} -o "
                "merged.safetensors) and set model.init to the merged file, or continue it "
                f"with glidectl lora --resume {run}."
            ) from None
        options = model.options
        check_init_options(cfg, options, resolution, kinds)
        if options.use_fp16:  # train fp32 master weights; precision is Accelerate's job
            model.float()
            options = options.replace(use_fp16=False)
            model.options = options
        model.train()
    with vocab_named(*CONFIG_VOCAB):
        tokenizer = get_tokenizer(options.tokenizer, cfg.vocab_dir or None)
    diffusion = create_diffusion(options.noise_schedule, options.diffusion_steps)
    return ModelBundle(model, options, tokenizer, diffusion)


def resumed_network(step_dir: Path | None) -> Any:
    """The network a full run's checkpoint ``step_dir`` holds (its model.safetensors), which
    the resume loads over whatever model.init gave: a finetune resumes without its
    model.init's file (moved, or openai:base out of the cache). None when that file is
    missing or unreadable: model.init is loaded, and the resume says what is wrong."""
    from ..glide import read_weights
    from ..glide.loading import build_from_state
    from ..runs import MODEL_FILE

    weights = None if step_dir is None else Path(step_dir) / MODEL_FILE
    if weights is None or not weights.is_file():
        return None
    try:
        state, options = read_weights(weights)
    except (GlidectlError, OSError):
        return None
    return build_from_state(state, options)


def earlier_preset(options: Any, cfg: ModelConfig, resume_from: Path | None) -> Any:
    """``options``, or the network the checkpoint ``resume_from`` holds when its run began
    with an earlier version of the same scratch preset (the ``model.kind`` and
    ``model.size`` its config.toml names): a run begun before a preset changed goes on as it
    began. Only :data:`PRESET_LAYOUT` may differ (what the presets' changes moved; another
    width or text context is another size: refused as such); a ``time_embed_max_freq`` the
    run's config.toml does not name (written before the key existed) is the checkpoint's."""
    from ..glide.checkpoints import metadata_options
    from ..runs import MODEL_FILE, run_setting

    weights = None if resume_from is None else Path(resume_from) / MODEL_FILE
    if weights is None or not weights.is_file():
        return options
    try:
        saved = metadata_options(weights)
    except GlidectlError:  # damaged: the resume says so
        return options
    run = Path(resume_from).parent.parent
    default = ModelConfig()
    if (run_setting(run, "model", "kind") or default.kind,
            run_setting(run, "model", "size") or default.size) != (cfg.kind, cfg.size):
        return options
    if run_setting(run, "model", "time_embed_max_freq") is None \
            and cfg.time_embed_max_freq == default.time_embed_max_freq:
        options = options.replace(time_embed_max_freq=saved.time_embed_max_freq)
    differ = {f.name for f in dataclasses.fields(saved)
              if getattr(saved, f.name) != getattr(options, f.name)}
    return saved if differ and differ <= PRESET_LAYOUT else options


def resolution_note(cfg: ModelConfig, resolution: int, options: Any) -> str | None:
    """A line when loaded weights train at another data.resolution than they sample at (a
    scratch model takes data.resolution as its size instead), else None."""
    if cfg.init == "scratch" or not resolution or resolution == options.image_size:
        return None
    size = options.image_size
    return (f"data.resolution = {resolution}: {cfg.init} trains on {resolution} px images but "
            f"stays a {size} px model, and its checkpoints, previews and glidectl sample make "
            f"{size} px images (data.resolution = 0 trains at {size} px).")


def check_init_options(cfg: ModelConfig, options: Any, resolution: int,
                       kinds: tuple[str, ...] | None = None) -> None:
    """One sentence when the weights of ``cfg.init`` (their ``options``) do not fit the
    config: another model.kind or model.tokenizer, or a data.resolution they cannot take.
    ``kinds``: the model kinds the command trains (weights of another kind name the command
    that trains them: setting model.kind here would be refused)."""
    if kinds is not None and options.kind not in kinds:
        other = "upsample" if options.kind.startswith("upsample") else "train"
        raise GlidectlError(
            f"model.init {cfg.init!r} is {a_or_an(repr(options.kind))} model, which this "
            f"command does not train; pick {' or '.join(kinds)} weights, or train it with "
            f"glidectl {other} (model.kind = \"{options.kind}\")."
        )
    if options.kind != cfg.kind:
        raise GlidectlError(
            f"model.init {cfg.init!r} is {a_or_an(repr(options.kind))} model but model.kind is "
            f"{cfg.kind!r}; set model.kind = \"{options.kind}\" or pick other weights."
        )
    if cfg.tokenizer != "auto" and cfg.tokenizer != options.tokenizer:
        raise GlidectlError(
            f"model.tokenizer is {cfg.tokenizer!r} but {cfg.init!r} was trained with "
            f"{options.tokenizer!r}; set model.tokenizer = \"auto\"."
        )
    _check_loaded_resolution(cfg.init, options, resolution)


def check_init_before_download(cfg: ModelConfig, resolution: int,
                               kinds: tuple[str, ...] | None = None) -> None:
    """:func:`check_init_options` for an ``openai:NAME`` model.init, from OpenAI's published
    architecture: a config its weights cannot train is refused before they are downloaded
    (1.5 GB for base), not after."""
    from ..glide.options import KINDS, official_options

    source, _, name = cfg.init.partition(":")
    if source == "openai" and name in KINDS and not Path(cfg.init).exists():
        check_init_options(cfg, official_options(name), resolution, kinds)


def _check_loaded_resolution(init: str, options: Any, resolution: int) -> None:
    """One sentence when loaded weights cannot train at ``resolution`` (data.resolution):
    their network halves its input once per level but the last, so the side must divide by
    that many twos (an upsampler's low-res side too), else a shape mismatch mid-step."""
    if not resolution or resolution == options.image_size:
        return
    step = 2 ** (len(options.channel_mults) - 1)
    if options.super_res:  # its low-res input's side is the side / UPSAMPLE_FACTOR
        from ..glide.options import UPSAMPLE_FACTOR

        step = math.lcm(step, UPSAMPLE_FACTOR)
    if resolution % step:
        raise GlidectlError(
            f"data.resolution = {resolution} does not fit {init}'s {options.image_size} px "
            f"{options.kind} network, which takes sides that are multiples of {step}; set "
            f"data.resolution to one (e.g. {max(step, resolution // step * step)}), or 0 for "
            f"its own {options.image_size} px.")


def _fits(options: Any, resolution: int) -> bool:
    """Whether ``options`` build a network at ``resolution`` px."""
    try:
        options.replace(image_size=resolution)
    except GlidectlError:
        return False
    return True


def _at_resolution(options: Any, resolution: int, size: str) -> Any:
    """A scratch preset's options at ``data.resolution``; one that its network cannot take
    is an error naming data.resolution and the sizes that fit."""
    try:
        return options.replace(image_size=resolution)  # validates
    except GlidectlError as exc:
        if options.channel_mult == "":  # OpenAI's layout, fixed per size
            from ..glide.options import DEFAULT_CHANNEL_MULTS

            fit = [str(px) for px in sorted(DEFAULT_CHANNEL_MULTS) if _fits(options, px)]
            raise GlidectlError(
                f"data.resolution = {resolution} does not fit a scratch {size!r} "
                f"{options.kind} network, whose layout OpenAI set for {', '.join(fit)} px "
                f"only; set data.resolution to one of those, or 0 for its own "
                f"{options.image_size} px (other model.size presets take other sizes)."
            ) from None
        step = 2 ** (len(options.channel_mults) - 1)
        least = max([step] + [int(r) for r in str(options.attention_resolutions).split(",")
                              if r.strip()])
        least = -(-least // step) * step
        raise GlidectlError(
            f"data.resolution = {resolution} does not fit a scratch {size!r} {options.kind} "
            f"network ({str(exc).rstrip('.')}); set data.resolution to a multiple of {step} "
            f"of at least {least} px, or 0 for its own {options.image_size} px."
        ) from None

