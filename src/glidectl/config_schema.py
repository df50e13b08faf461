"""The glide.toml schema: its typed sections, each key with a default, a one-line doc and
its allowed values (:func:`opt`); :mod:`glidectl.config` loads, checks and saves them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import GlidectlError
from .lora.targets import PRESETS, check_patterns, check_presets
from .ranges import SEED_MAX, Range

#: W&B modes, the same in ``log.wandb_mode`` and ``eval --wandb-mode``; ``auto`` leaves the
#: choice to W&B (``WANDB_MODE`` or ``wandb offline`` when set, else online).
WANDB_MODES = ("auto", "online", "offline", "disabled")


#: The trackers ``log.trackers`` may name (accelerate's).
TRACKERS = ("tensorboard", "wandb", "mlflow", "aim", "comet_ml", "clearml", "dvclive",
            "swanlab", "trackio")


def check_trackers(names: list[str] | tuple[str, ...]) -> None:
    """One sentence for a ``log.trackers`` entry that is no tracker (also at config load)."""
    for name in names:
        if name not in TRACKERS:
            raise GlidectlError(
                f"log.trackers: unknown tracker {name!r}; use any of {', '.join(TRACKERS)}."
            )


def check_output_dir(folder: str) -> None:
    """One sentence for an empty ``train.output_dir`` (an unset shell variable in ``--set``):
    ``Path('')`` is the current folder, where ``--output-dir ''`` is refused as empty."""
    if not folder.strip():
        raise GlidectlError(f"'train.output_dir' is empty ({folder!r}); set it to a folder's "
                            "path ('.' for the current folder).")


def wandb_init_mode(mode: str) -> str | None:
    """The ``mode`` wandb.init takes for one of :data:`WANDB_MODES` (auto: None, W&B's own)."""
    return None if mode == "auto" else mode


def opt(
    default: Any, doc: str, choices: tuple[Any, ...] | None = None, *,
    min: float | None = None, max: float | None = None, below: float | None = None,
    above: float | None = None, pair: bool = False, name_like: bool = False,
    check: Callable[[Any], None] | None = None, words: tuple[str, ...] | None = None,
) -> Any:
    """A config field with its default, a one-line doc, optional allowed values and, for
    numbers (and lists of numbers), the allowed range ``min..max`` (or ``< below``, ``>
    above``);
    ``pair``: a list of exactly two numbers ``[min, max]`` with min <= max; ``name_like``: a
    name or folder name, which may hold no control character; ``check``: raises a
    GlidectlError for a value the command that reads the key would refuse; ``words``: the
    closed set a list's entries are words of (read in any case, kept lower-case)."""
    numeric = min is not None or max is not None or below is not None or above is not None
    meta = {"doc": doc, "choices": choices,
            "range": Range(min, max, below, above) if numeric else None, "pair": pair,
            "name_like": name_like, "check": check, "words": words}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    """Which GLIDE network to train and where its weights start."""

    kind: str = opt(
        "base",
        "Network kind.",
        ("base", "upsample", "base-inpaint", "upsample-inpaint"),
    )
    init: str = opt(
        "scratch",
        "Starting weights: 'scratch', 'openai:<kind>', a .pt/.safetensors file or a run dir.",
    )
    size: str = opt(
        "tiny", "Size preset for scratch models: tiny, quickstart, small or official.",
        ("tiny", "quickstart", "small", "official"),  # glidectl.glide.options.SIZES
    )
    tokenizer: str = opt(
        "auto", "Text tokenizer: 'auto' (byte for scratch tiny and quickstart models, gpt2 "
        "for scratch small and official ones and model.init's own), 'gpt2' or 'byte'.",
        ("auto", "gpt2", "byte"),
    )
    vocab_dir: str = opt(
        "", "Folder with GPT-2 encoder.json and vocab.bpe ('' = tiktoken's cache)."
    )
    time_embed_max_freq: float = opt(
        0.01, "Scratch models read only timestep-embedding frequencies up to this (radians per "
        "step; 0.01 = periods of 628+ steps), so the denoiser is smooth in sigma and fast "
        "samplers converge; 0 = all, as OpenAI's models.", min=0.0, max=1.0,
    )


@dataclass
class DataConfig:
    """Where training images and captions come from and how they are prepared."""

    source: str = opt(
        "demo:shapes", "A folder, a kohya dataset config (.toml), a OneTrainer concepts file "
        "(.json), webdataset shards (dir, glob, brace pattern), Parquet files (file, glob, "
        "folder), hf:NAME_OR_PATH or demo:<name>."
    )
    preset: str = opt("simple", "Dataset preset (filters and caption rules), for every source.")
    image_key: str = opt("jpg;png;jpeg;webp", "Webdataset image key(s), ';'-separated.")
    caption_key: str = opt("txt", "Webdataset caption key.")
    resolution: int = opt(
        0, "Training image size in pixels (0 = the model's own size).",
        min=0, max=4096,
    )
    uncond_p: float = opt(
        0.2, "Probability of replacing a caption by the empty caption.",
        min=0, max=1,
    )
    random_crop: bool = opt(True, "Random crop after resizing the short side (else centre).")
    crop_scale: list = opt(
        [1.0, 1.0], "Random-resized-crop area range [min, max]; [1, 1] disables it.",
        min=0.01, max=1, pair=True,
    )
    flip: bool = opt(False, "Random horizontal flips.")
    workers: int = opt(0, "DataLoader worker processes.", min=0, max=256)
    shuffle_buffer: int = opt(1000, "Sample shuffle buffer of webdataset, parquet and Hugging "
                              "Face sources (folders and dataset configs shuffle each epoch "
                              "whole).", min=0, max=10_000_000)
    resampled: bool = opt(False, "Resample shards forever instead of finite epochs.")
    low_res_resample: str = opt(
        "bicubic", "Upsampler low-res downscale filter.", ("box", "bicubic")
    )
    degrade_blur: float = opt(
        0.0, "Upsampler: max Gaussian blur radius on low-res inputs.",
        min=0, max=100,
    )
    degrade_jpeg: int = opt(
        0, "Upsampler: min JPEG quality for low-res inputs (0 = off).",
        min=0, max=95,
    )
    degrade_noise: float = opt(
        0.0, "Upsampler: max Gaussian noise std on low-res inputs.",
        min=0, max=10,
    )
    demo_size: int = opt(4096, "Number of samples in a demo:<name> dataset.", min=1, max=10_000_000)
    metadata_key: str = opt("json", "Webdataset metadata (JSON) key read by presets.")
    image_column: str = opt(
        "", "Parquet/Hugging Face image column, bytes or path ('' = the first of image, jpg, "
        "png, jpeg, webp)."
    )
    caption_column: str = opt(
        "", "Caption column of an image folder's metadata.jsonl/.csv ('' = text, else caption), "
        "field of a webdataset sample's JSON without a caption file ('' = the preset's), and "
        "column of Parquet/Hugging Face tables ('' = the first of text, caption, txt)."
    )
    split: str = opt("train", "Hugging Face dataset split (hf: sources).")
    kohya_folders: bool = opt(
        True, "Image folders in kohya's layout (only N_words folders at the top): each image "
        "read N times per epoch, captioned 'words' when it has no caption of its own, 0_ "
        "folders left out (false: every image once, as in any folder)."
    )
    reg_source: str = opt(
        "", "kohya's reg_data_dir for an image-folder data.source: a folder of N_class "
        "folders of regularisation (prior-preservation) images, read per epoch as often as "
        "the training images with repeats ('' = none; a kohya dataset config marks such "
        "subsets is_reg = true)."
    )
    min_size: int = opt(0, "laion: min original width and height (metadata), in pixels.", min=0)
    aspect_range: list = opt([0.25, 4.0], "laion: allowed original width/height [min, max].",
                             min=0, pair=True)
    similarity_range: list = opt(
        [-1.0, 1.0], "laion/datacomp: allowed CLIP similarity [lower, upper].",
        min=-1, max=1, pair=True,
    )
    nsfw_allowed: list[str] = opt(
        ["UNLIKELY", "UNSURE"], "laion: NSFW tags accepted (samples without a tag pass)."
    )
    max_punsafe: float = opt(
        0.5, "laion: reject samples whose punsafe (NSFW probability) exceeds this (1 = off).",
        min=0, max=1,
    )
    max_pwatermark: float = opt(
        0.5, "laion: reject samples whose pwatermark (watermark probability) exceeds this "
        "(1 = off).", min=0, max=1,
    )
    skip_words: list[str] = opt([], "Reject captions containing any of these words (any preset).")
    min_image_size: int = opt(16, "Reject decoded images whose short side is below this.", min=1)
    max_pixels: int = opt(
        89_478_485, "Reject images with more pixels (decompression bombs).",
        min=1,
    )
    max_rejects: int = opt(
        1000, "Stop with an error after this many rejections in a row before any success.",
        min=1
    )


@dataclass
class TrainConfig:
    """The optimisation: steps, batch, optimiser, schedule, precision."""

    output_dir: str = opt("runs", "Folder that holds run directories.", name_like=True,
                          check=check_output_dir)
    name: str = opt("", "Run name: a folder inside output_dir ('' = a new numbered name).",
                    name_like=True)
    steps: int = opt(1000, "Optimizer steps to train (global, across epochs).", min=0, max=10**9)
    epochs: int = opt(0, "Train this many epochs instead (0 = use steps): the steps are counted "
                      "from the samples the data lists, rejected ones too (a first epoch that "
                      "ends short says so), as the epochs' batches over train.grad_accum, "
                      "rounded up (accumulation runs on across an epoch's end).",
                      min=0, max=10**6)
    batch_size: int = opt(8, "Images per process per micro-batch.", min=1, max=65536)
    grad_accum: int = opt(1, "Micro-batches per optimizer step.", min=1, max=65536)
    lr: float = opt(1e-4, "Peak learning rate.", min=0, max=1)
    lr_schedule: str = opt(
        "constant", "Learning-rate schedule after warmup.", ("constant", "cosine", "linear")
    )
    warmup_steps: int = opt(0, "Linear warmup steps.", min=0)
    adam_beta1: float = opt(0.9, "AdamW beta1.", min=0, below=1)
    adam_beta2: float = opt(0.999, "AdamW beta2.", min=0, below=1)
    adam_eps: float = opt(1e-8, "AdamW epsilon (above 0: at 0 a weight with no gradient "
                          "divides 0 by 0).", above=0, max=1)
    weight_decay: float = opt(0.0, "AdamW weight decay.", min=0, max=10)
    grad_clip: float = opt(1.0, "Max gradient norm (0 = off).", min=0)
    loss: str = opt("hybrid", "Training loss: hybrid (MSE + L_vb) or eps (MSE only).",
                    ("hybrid", "eps"))
    min_snr_gamma: float = opt(0.0, "Min-SNR-γ loss weighting: x0 errors at SNR above γ "
                               "count as at γ (0 = off).", min=0, max=1000)
    snr_floor: float = opt(0.0, "Truncated-SNR weighting: x0 errors at SNR below this count "
                           "as at this SNR, so high noise (colour, layout) learns (0 = off).",
                           min=0, max=1000)
    t_curriculum: float = opt(
        0.0, "Share of training that learns high noise first: its first half draws t from "
        "the top 10 % of noise levels, its second widens the range linearly to all of them "
        "(captions set colour, layout and background there; 0 = off: t uniform throughout).",
        min=0, max=1,
    )
    trainable: str = opt("all", "Which parts train.", ("all", "unet", "text"))
    text_lr_scale: float = opt(
        1.0, "Learning-rate multiplier for the text transformer (embeddings, layers, final "
        "norm, projection): below 1 keeps words apart that a high LR merges early on.",
        min=0, max=100,
    )
    ema_decay: float = opt(0.9999, "EMA decay (0 = no EMA).", min=0, below=1)
    ema_warmup: bool = opt(False, "EMA warmup: decay grows as (1+n)/(10+n) up to ema_decay.")
    precision: str = opt(
        "auto", "Mixed precision: auto (accelerate launch's --mixed_precision bf16/fp16 if "
        "given, else bf16 where the device computes it natively, else fp32), "
        "fp32 (also 'no'), bf16 or fp16.", ("auto", "no", "fp32", "fp16", "bf16"))
    gradient_checkpointing: bool = opt(False, "Recompute activations per block to save memory.")
    compile: bool = opt(False, "torch.compile the network.")
    channels_last: bool = opt(
        False, "Train in channels-last (NHWC) memory layout: usually faster on tensor cores; "
        "on CPUs it depends on the model and chip (benchmarks/bench_train_step.py); same "
        "results up to float rounding.")
    cuda_graphs: bool = opt(
        False, "Replay the network's forward and backward as CUDA graphs (one process on a "
        "CUDA GPU; not with compile or gradient_checkpointing): an eager step waits on "
        "Python launching ~6,000 kernels, which a graph replays at once "
        "(benchmarks/bench_gpu.py --sections graphs). Ignored with a warning elsewhere.")
    seed: int = opt(0, "Random seed.", min=0, max=SEED_MAX)
    deterministic: bool = opt(
        False, "Deterministic GPU kernels (torch.use_deterministic_algorithms, cuDNN's "
        "deterministic algorithms, cuBLAS workspace :4096:8): two runs of one config, and a "
        "resume, give the same weights on one GPU, at some speed. CPU runs are deterministic "
        "without it.")
    max_nonfinite: int = opt(10, "Stop after this many non-finite losses in a row.", min=1)
    threads: int = opt(0, "CPU threads for torch (0 = torch's default).", min=0, max=1024)
    collective_timeout_minutes: float = opt(
        0.0, "Several processes (torchrun, accelerate launch): how long one waits for the "
        "others in a step before the run stops, naming its last checkpoint (0 = the process "
        "group's own: 10 with NCCL, 30 with gloo). Previews, validation and checkpoint "
        "writing, done by the main process, are waited for up to 24 hours whatever this is.",
        min=0, max=10_080,
    )
    optimizer: str = opt(
        "adamw", "adamw; adamw8bit (8-bit moments, bitsandbytes on CUDA: ~75% less optimizer "
        "memory); adafactor (factored moments: the least memory).",
        ("adamw", "adamw8bit", "adafactor"),
    )
    noise_offset: float = opt(
        0.0, "Add offset·N(0,1) per image and channel to the training noise, so the model "
        "learns to change overall brightness and colour (0 = off; 0.05-0.1 is usual).",
        min=0, max=1,
    )
    prior_loss_weight: float = opt(
        1.0, "kohya's prior_loss_weight: the loss of each regularisation image "
        "(data.reg_source, is_reg subsets) is multiplied by this.", min=0, max=1000,
    )
    input_perturbation: float = opt(
        0.0, "Noise the image with noise + γ·N(0,1) but keep noise as the target; reduces "
        "the train/sample mismatch (exposure bias) and speeds convergence (0 = off; 0.1 usual).",
        min=0, max=1,
    )


@dataclass
class PreviewConfig:
    """Preview grids sampled during training."""

    prompts: list[str] = opt(
        [], "Preview prompts ([] = captions of the first data samples; upsamplers and "
        "inpainting models: each held-out image's own caption)."
    )
    prompt_file: str = opt("", "File with one preview prompt per line.")
    every: int = opt(500, "Preview every N optimizer steps (0 = never; step 0 is included).", min=0)
    sampler: str = opt("ddim", "Sampler for previews.")
    steps: int = opt(25, "Sampler steps for previews.", min=1, max=10_000)
    guidance: float = opt(3.0, "Classifier-free guidance scale.", min=0, max=100)
    low_res: list[str] = opt(
        [], "Low-res image files for upsampler previews ([] = the first data samples; "
        "upsample-inpaint previews held-out images and ignores them)."
    )
    seed: int = opt(0, "Seed for preview noise.", min=0, max=SEED_MAX)


@dataclass
class CheckpointConfig:
    """When checkpoints are written and how many are kept."""

    every: int = opt(500, "Checkpoint every N optimizer steps (0 = only at the end).", min=0)
    keep_last: int = opt(3, "Keep this many step checkpoints (0 = all).", min=0)
    keep_best: bool = opt(
        False, "Also keep the checkpoint with the lowest val_loss (checkpoints/best; needs "
        "[validation]); it is never pruned."
    )


@dataclass
class ValidationConfig:
    """Held-out validation: a loss on data training never sees, comparable across a run."""

    holdout: int = opt(
        0, "Keep the first N samples of data.source out of training and validate on them.",
        min=0, max=10**7,
    )
    source: str = opt("", "Validate on another data source instead (a folder, shards, ...).")
    every: int = opt(0, "Validate every N optimizer steps (0 = never; also at the end).", min=0)
    samples: int = opt(
        64, "Validation samples read from validation.source (holdout: all N).", min=1, max=10**6
    )
    timesteps: int = opt(
        4, "Fixed timesteps per sample, evenly spread; each is a val_loss_tK bucket.",
        min=1, max=100,
    )
    seed: int = opt(0, "Seed of the fixed validation noise.", min=0, max=SEED_MAX)
    fid_every: int = opt(
        0, "FID/KID of images generated for held-out captions vs the held-out images every N "
        "steps (0 = never; also at the end; features from validation.fid_weights).", min=0,
    )
    fid_weights: str = opt(
        "", "Feature-extractor weights for FID/KID (a local Inception .pth; see README)."
    )
    fid_samples: int = opt(16, "Images generated per FID/KID evaluation.", min=2, max=100_000)


@dataclass
class LogConfig:
    """Metrics, the terminal display and experiment trackers (W&B, TensorBoard, ...)."""

    every: int = opt(10, "Log metrics every N optimizer steps.", min=1)
    trackers: list[str] = opt(
        [], f"Trackers through accelerate: {', '.join(TRACKERS)}; files go in "
        "runs/<name>/trackers/ ([] = metrics.jsonl only).",
        check=check_trackers, words=TRACKERS,
    )
    project: str = opt("glidectl", "Tracker project (W&B project, TensorBoard subfolder).",
                       name_like=True)
    wandb_project: str = opt("", "W&B project (the older spelling of log.project, which it "
                             "replaces for every tracker); setting it also turns on the wandb "
                             "tracker.", name_like=True)
    wandb_entity: str = opt("", "W&B entity.", name_like=True)
    wandb_mode: str = opt(
        "auto", "W&B mode; auto: WANDB_MODE (or `wandb offline`) when set, else online.",
        WANDB_MODES,
    )


@dataclass
class LoraConfig:
    """LoRA adapters trained by ``glidectl lora`` (everything else stays frozen)."""

    targets: list[str] = opt(
        ["attention"], "Target presets: attention, mlp, conv, all (combine freely; [] = none).",
        check=check_presets, words=tuple(PRESETS),
    )
    patterns: list[str] = opt([], "Extra module-name regexes (full match), e.g. 'out\\.2'.",
                              check=check_patterns)
    rank: int = opt(8, "LoRA rank r.", min=1, max=4096)
    alpha: float = opt(
        8.0, "LoRA alpha: updates scale by alpha/r (alpha/sqrt(r) with rslora).",
        above=0, max=100_000,
    )
    dropout: float = opt(0.0, "Dropout on the LoRA input.", min=0, below=1)
    rslora: bool = opt(False, "Rank-stabilised scaling alpha/sqrt(r) instead of alpha/r.")


@dataclass
class GlideConfig:
    """A whole glide.toml."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preview: PreviewConfig = field(default_factory=PreviewConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    log: LogConfig = field(default_factory=LogConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)


SECTIONS: dict[str, type] = {f.name: f.type for f in dataclasses.fields(GlideConfig)}  # type: ignore[misc]
