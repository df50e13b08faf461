"""What a run is set up from: config checks the schema cannot make, the Accelerator, the
step count, and the upsampler's preview samples."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import torch

from ..config import GlideConfig
from ..devices import LAUNCHER_ENV, Precision
from ..errors import GlidectlError
from . import validation as val
from .data_stream import DataStream
from .trackers import tracker_names


def total_steps(cfg: GlideConfig, stream: DataStream) -> int:
    if cfg.train.epochs > 0:
        per_epoch = stream.steps_per_epoch(cfg.train.grad_accum)
        if per_epoch is None:
            raise GlidectlError(
                "train.epochs needs data of known length; these webdataset shards do not say "
                "how many samples they hold, so set train.steps instead."
            )
        return cfg.train.epochs * per_epoch
    if cfg.train.steps <= 0:
        raise GlidectlError("train.steps must be positive (or set train.epochs).")
    return cfg.train.steps


def has_accelerator_device() -> bool:
    """A GPU-like device; without one, torchrun/accelerate processes use gloo on the CPU."""
    if torch.cuda.is_available():
        return True
    xpu = getattr(torch, "xpu", None)
    mps = getattr(torch.backends, "mps", None)
    return bool((xpu is not None and xpu.is_available())
                or (mps is not None and mps.is_available()))


def check_config(cfg: GlideConfig, kinds: tuple[str, ...] | None,
                 precision: Precision) -> None:
    """What the schema cannot check, before anything is created."""
    if kinds is not None and cfg.model.kind not in kinds:
        raise GlidectlError(
            f"model.kind is {cfg.model.kind!r}, but this command trains "
            f"{' or '.join(kinds)} models; set model.kind or use the other command "
            "(train: base models, upsample: upsamplers)."
        )
    if precision.name == "fp16" and not has_accelerator_device():
        if cfg.train.precision == "auto":  # the launcher's
            raise GlidectlError(
                f"{LAUNCHER_ENV}=fp16 (accelerate launch --mixed_precision fp16) needs a GPU "
                "(it uses a GradScaler on CUDA); on a CPU launch with --mixed_precision bf16 "
                "or no."
            )
        raise GlidectlError(
            "train.precision = \"fp16\" needs a GPU (it uses a GradScaler on CUDA); on a "
            "CPU use \"bf16\" or \"fp32\"."
        )
    val.check(cfg)
    tracker_names(cfg.log)
    from .. import plugins

    # Checked even without previews: checkpoints record it as the model's sampler.
    samplers = plugins.samplers()
    if cfg.preview.sampler not in samplers:
        raise GlidectlError(f"preview.sampler: {samplers.unknown_message(cfg.preview.sampler)}")
    presets = plugins.dataset_presets()  # before a model.init is loaded (or downloaded)
    if cfg.data.preset not in presets:
        raise GlidectlError(f"data.preset: {presets.unknown_message(cfg.data.preset)}")


def make_accelerator(cfg: GlideConfig, mixed_precision: str) -> Any:
    """A fresh Accelerator, seeded. Accelerate keeps process-wide singletons; a second run in
    the same process (a notebook, the tests) may use another precision or accumulation, so
    they start afresh (PartialState, the process group, is kept)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import set_seed

    AcceleratorState._reset_state()
    GradientState._reset_state()
    acc = Accelerator(
        mixed_precision=mixed_precision, gradient_accumulation_steps=cfg.train.grad_accum,
        step_scheduler_with_optimizer=False, cpu=not has_accelerator_device(),
    )
    set_seed(cfg.train.seed)
    return acc


# How long the other processes wait for what only the main process does (previews, validation
# FID/KID, run-folder checks): far past the process group's own timeout (NCCL 10 min, gloo
# 30 min), which ended the whole run when a preview or an FID took longer.
MAIN_WORK_TIMEOUT = timedelta(hours=24)


def main_work_group(acc: Any) -> Any:
    """A gloo group, with :data:`MAIN_WORK_TIMEOUT`, for waiting on the main process (None
    with one process). A process that dies still fails its peers' waits at once."""
    if acc.num_processes == 1:
        return None
    import torch.distributed as dist

    return dist.new_group(backend="gloo", timeout=MAIN_WORK_TIMEOUT)
