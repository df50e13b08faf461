"""GLIDE model options: OpenAI's option names, the four official sets and scratch-size presets.

No torch import here: options travel in checkpoint metadata and the CLI reads them at start-up.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from ..errors import GlidectlError

KINDS: tuple[str, ...] = ("base", "upsample", "base-inpaint", "upsample-inpaint")
SIZES: tuple[str, ...] = ("tiny", "quickstart", "small", "official")
TOKENIZER_VOCAB: dict[str, int] = {"gpt2": 50257, "byte": 257}
# OpenAI option names that only matter to their own code (cache, sampler-side respacing).
_IGNORED_OPENAI_KEYS = frozenset({"timestep_respacing", "cache_text_emb"})
# The upsamplers see a 4x smaller image, as OpenAI's 64 -> 256 model does.
UPSAMPLE_FACTOR = 4

#: OpenAI's channel multipliers by image size, for options whose channel_mult is "".
DEFAULT_CHANNEL_MULTS = {256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}


@dataclass
class ModelOptions:
    """Everything needed to build a GLIDE network; saved with every checkpoint."""

    image_size: int = 64
    num_channels: int = 192
    num_res_blocks: int = 3
    channel_mult: str = ""
    num_heads: int = 1
    num_head_channels: int = 64
    num_heads_upsample: int = -1
    attention_resolutions: str = "32,16,8"
    dropout: float = 0.1
    text_ctx: int = 128
    xf_width: int = 512
    xf_layers: int = 16
    xf_heads: int = 8
    xf_final_ln: bool = True
    xf_padding: bool = True
    diffusion_steps: int = 1000
    noise_schedule: str = "squaredcos_cap_v2"
    use_scale_shift_norm: bool = True
    resblock_updown: bool = True
    use_fp16: bool = False
    inpaint: bool = False
    super_res: bool = False
    kind: str = "base"
    tokenizer: str = "gpt2"
    n_vocab: int = 50257
    # glidectl's own (0 = OpenAI's): the network reads only the timestep-embedding features of
    # at most this frequency (radians per timestep), so its output is smooth in t.
    time_embed_max_freq: float = 0.0

    def __post_init__(self) -> None:
        self.validate()

    # ----------------------------------------------------------------- derived values
    @property
    def in_channels(self) -> int:
        """Input channels: x_t, then [inpaint image, inpaint mask], then [upsampled low-res]."""
        return 3 + (4 if self.inpaint else 0) + (3 if self.super_res else 0)

    @property
    def out_channels(self) -> int:
        """Six: the ε prediction and the learned-range variance values."""
        return 6

    @property
    def low_res_size(self) -> int | None:
        """Side of the low-resolution conditioning image (upsamplers only)."""
        return self.image_size // UPSAMPLE_FACTOR if self.super_res else None

    @property
    def channel_mults(self) -> tuple[int, ...]:
        """``channel_mult`` parsed; "" picks OpenAI's default for the image size."""
        if self.channel_mult == "":
            if self.image_size not in DEFAULT_CHANNEL_MULTS:
                raise GlidectlError(
                    f"Model option channel_mult is empty but image_size={self.image_size} has no "
                    "default; set channel_mult, e.g. \"1,2,2\"."
                )
            return DEFAULT_CHANNEL_MULTS[self.image_size]
        return tuple(int(m) for m in str(self.channel_mult).split(","))

    @property
    def attention_ds(self) -> tuple[int, ...]:
        """Downsample rates (image_size // resolution) that get attention blocks."""
        if not str(self.attention_resolutions).strip():
            return ()
        return tuple(self.image_size // int(r) for r in str(self.attention_resolutions).split(","))

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.num_channels

    # ----------------------------------------------------------------- checks and IO
    def validate(self) -> None:
        """Raise GlidectlError for options no network can be built from."""
        if self.kind not in KINDS:
            raise GlidectlError(f"Unknown model kind {self.kind!r}; use one of {', '.join(KINDS)}.")
        want_inpaint, want_super = "inpaint" in self.kind, self.kind.startswith("upsample")
        if (self.inpaint, self.super_res) != (want_inpaint, want_super):
            raise GlidectlError(
                f"Model options disagree: kind={self.kind!r} but inpaint={self.inpaint} and "
                f"super_res={self.super_res}; fix one of them."
            )
        if self.tokenizer not in TOKENIZER_VOCAB:
            raise GlidectlError(
                f"Unknown tokenizer {self.tokenizer!r} in model options; use 'gpt2' or 'byte'."
            )
        if self.n_vocab != TOKENIZER_VOCAB[self.tokenizer]:
            raise GlidectlError(
                f"Model options say tokenizer={self.tokenizer!r} with n_vocab={self.n_vocab}, but "
                f"that tokenizer has {TOKENIZER_VOCAB[self.tokenizer]} tokens."
            )
        try:
            mults = self.channel_mults
            ds = self.attention_ds
        except ValueError as exc:
            raise GlidectlError(
                f"Model options channel_mult={self.channel_mult!r} / attention_resolutions="
                f"{self.attention_resolutions!r} must be comma-separated integers."
            ) from exc
        for m in mults:
            if (m * self.num_channels) % 32:
                raise GlidectlError(
                    f"Model option num_channels={self.num_channels} times channel_mult {m} is not "
                    "a multiple of 32 (GroupNorm uses 32 groups)."
                )
        if self.image_size % (2 ** (len(mults) - 1)):
            raise GlidectlError(
                f"Model option image_size={self.image_size} is not divisible by "
                f"2**{len(mults) - 1} (one halving per channel_mult level)."
            )
        if any(d < 1 for d in ds):
            raise GlidectlError(
                f"attention_resolutions={self.attention_resolutions!r} has a resolution larger "
                f"than image_size={self.image_size}."
            )
        heads_ok = self.num_head_channels > 0 or self.num_heads > 0
        if not heads_ok or self.xf_heads < 1 or self.xf_width % self.xf_heads:
            raise GlidectlError(
                f"Model options need num_heads or num_head_channels > 0 and xf_width "
                f"({self.xf_width}) divisible by xf_heads ({self.xf_heads})."
            )
        if self.num_head_channels > 0:
            for m in mults:
                if (m * self.num_channels) % self.num_head_channels:
                    raise GlidectlError(
                        f"Model option num_head_channels={self.num_head_channels} does not divide "
                        f"the {m * self.num_channels} channels of a UNet level."
                    )
        if self.xf_width < 1 or self.text_ctx < 1:
            raise GlidectlError("Model options xf_width and text_ctx must be positive.")
        if not self.time_embed_max_freq >= 0:
            raise GlidectlError(
                f"Model option time_embed_max_freq={self.time_embed_max_freq} must be >= 0 "
                "(0 reads every frequency, as OpenAI's models do)."
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelOptions:
        """Options from a dict: glidectl's own, or OpenAI's ``model_and_diffusion_defaults()``."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names - _IGNORED_OPENAI_KEYS)
        if unknown:
            raise GlidectlError(
                f"Unknown model option(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}."
            )
        values = {k: v for k, v in data.items() if k in names}
        if "kind" not in values:
            values["kind"] = kind_from_flags(
                bool(values.get("inpaint", False)), bool(values.get("super_res", False))
            )
        elif values["kind"] in KINDS:
            values.setdefault("inpaint", "inpaint" in values["kind"])
            values.setdefault("super_res", values["kind"].startswith("upsample"))
        if "tokenizer" in values and "n_vocab" not in values:
            values["n_vocab"] = TOKENIZER_VOCAB.get(values["tokenizer"], 0)
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> ModelOptions:
        return cls.from_dict(json.loads(text))

    def replace(self, **changes: Any) -> ModelOptions:
        """A copy with some options changed (validated again)."""
        return dataclasses.replace(self, **changes)


def kind_from_flags(inpaint: bool, super_res: bool) -> str:
    """The kind name for OpenAI's ``inpaint`` / ``super_res`` flags."""
    return ("upsample" if super_res else "base") + ("-inpaint" if inpaint else "")


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise GlidectlError(f"Unknown model kind {kind!r}; use one of {', '.join(KINDS)}.")


def official_options(kind: str) -> ModelOptions:
    """The options of OpenAI's released checkpoint of this kind (use_fp16=False)."""
    _check_kind(kind)
    flags = {"kind": kind, "inpaint": "inpaint" in kind, "super_res": kind.startswith("upsample")}
    if kind.startswith("upsample"):
        return ModelOptions(
            image_size=256, num_res_blocks=2, noise_schedule="linear", **flags
        )
    return ModelOptions(**flags)


def preset_options(kind: str, size: str, tokenizer: str | None = None) -> ModelOptions:
    """Options for a model of ``kind`` at a size preset: tiny, quickstart, small or official.

    ``tiny`` trains on a laptop CPU in minutes (byte tokenizer by default); ``quickstart``
    (examples/glide.toml) is a 12 px base with two channels per GroupNorm group (64), no
    residual block before each downsample, text attention at 6 and 3 px and a 40-token
    context, which holds every ``demo:shapes`` caption
    (at most 39 bytes): with one channel per group (``tiny``) the norms erase per-image channel
    means and the colour of a picture cannot follow its caption; ``small`` is a
    reasonable from-scratch model for one GPU; ``official`` is OpenAI's architecture.
    """
    _check_kind(kind)
    base = official_options(kind)
    upsample = kind.startswith("upsample")
    if size == "official":
        changes: dict[str, Any] = {}
        default_tok = "gpt2"
    elif size in ("tiny", "quickstart"):
        changes = dict(
            num_channels=32,
            num_res_blocks=1,
            channel_mult="1,1,2,2,4" if upsample else "1,2,2",
            attention_resolutions="16",
            num_head_channels=32,
            text_ctx=64,
            xf_width=128,
            xf_layers=2,
            xf_heads=4,
            dropout=0.0,
        )
        if size == "quickstart" and not upsample:
            # Two channels per GroupNorm group at every level: with one (32 channels, 32
            # groups) each norm erases every channel's per-image mean, so the output cannot
            # carry the noise's channel means and x0's colour is off by σ times that error.
            # 12 px native with no residual block before each downsample (GLIDE's
            # num_res_blocks = 0): half the time a step of the 16 px, one-block network took.
            # Text attention at 6 and 3 px, where colour and layout are decided.
            changes.update(image_size=12, channel_mult="2,2,2", attention_resolutions="6,3",
                           num_res_blocks=0, text_ctx=40)
        elif size == "quickstart":
            # The upsampler too needs two channels per GroupNorm group (64 of them at every
            # level): with one, each norm erases every channel's per-image mean, and the
            # upsampler drew washed-out colours and grey backgrounds (eval --low-res on 36
            # held-out demo pictures at 8 → 32 px after 300 steps: 10.2-11.1 dB PSNR against
            # bicubic's 21.6; 18.9-24.2 dB with two, training seeds 0-4). Three levels:
            # 1,1,2,2,4 widened to 2,2,2,2,4 scored 17.8 dB (one seed).
            changes.update(text_ctx=40, channel_mult="2,2,2")
        default_tok = "byte"
    elif size == "small":
        changes = dict(
            num_channels=64,
            num_res_blocks=2,
            channel_mult="1,1,2,2,4" if upsample else "1,2,3,4",
            attention_resolutions="32,16" if upsample else "32,16,8",
            num_head_channels=32,
            text_ctx=128,
            xf_width=256,
            xf_layers=4,
            xf_heads=4,
            dropout=0.1,
        )
        default_tok = "gpt2"
    else:
        raise GlidectlError(f"Unknown model size {size!r}; use one of {', '.join(SIZES)}.")
    tok = tokenizer or default_tok
    if tok not in TOKENIZER_VOCAB:
        raise GlidectlError(f"Unknown tokenizer {tok!r}; use 'gpt2' or 'byte'.")
    return base.replace(**changes, tokenizer=tok, n_vocab=TOKENIZER_VOCAB[tok])
