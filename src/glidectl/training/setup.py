"""What a run is set up from: config checks the schema cannot make, the Accelerator, the
data (training stream, preview and validation samples) and the step count."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import torch

from ..config import GlideConfig
from ..devices import (
    LAUNCHER_DYNAMO_ENV,
    LAUNCHER_ENV,
    Precision,
    check_compile,
    launcher_dynamo,
    use_deterministic,
)
from ..errors import GlidectlError
from . import optimizers
from . import validation as val
from .cuda_graphs import check_cuda_graphs
from .data_stream import DataStream
from .model_setup import check_init_before_download
from .prior_prediction import leave_out_unless_possible
from .processes import timeout_handlers
from .trackers import tracker_names


def total_steps(cfg: GlideConfig, stream: DataStream) -> int:
    if cfg.train.epochs > 0:
        steps = stream.total_steps(cfg.train.epochs, cfg.train.grad_accum)
        if steps is None:
            raise GlidectlError(
                "train.epochs needs data of known length; these webdataset shards do not say "
                "how many samples they hold, so set train.steps instead."
            )
        return steps
    check_steps(cfg)
    return cfg.train.steps


def check_steps(cfg: GlideConfig) -> None:
    """One sentence unless the run has steps to train (or counts them from epochs)."""
    if cfg.train.epochs <= 0 and cfg.train.steps <= 0:
        raise GlidectlError("train.steps must be positive (or set train.epochs).")


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
    if cfg.train.lr == 0:  # the schema allows it (min=0): a run at 0 only copies its weights
        raise GlidectlError(
            "train.lr = 0 trains nothing (every step leaves the weights as they are); set "
            "train.lr above 0 (the default is 1e-4)."
        )
    check_steps(cfg)
    optimizers.check_available(cfg.train)
    check_cuda_graphs(cfg.train, processes=1)  # the process count is checked once known
    check_training_compile(cfg)
    val.check(cfg)
    tracker_names(cfg.log)
    check_names(cfg)
    check_init_before_download(cfg.model, cfg.data.resolution, kinds)


def check_training_compile(cfg: GlideConfig) -> None:
    """``train.compile``, or a launcher's ``--dynamo_backend inductor`` (Accelerate compiles
    the network in ``prepare``), has its compiler on the device the run trains on."""
    dynamo = launcher_dynamo()
    if cfg.train.compile:
        flag, off = "train.compile", "set train.compile = false"
    elif dynamo == "inductor":  # other backends (eager, aot_eager, ...) build no kernels
        flag = f"{LAUNCHER_DYNAMO_ENV}={dynamo} (accelerate launch --dynamo_backend {dynamo})"
        off = "launch with --dynamo_backend no"
    else:
        return
    if torch.cuda.is_available() or not has_accelerator_device():
        check_compile("cuda" if torch.cuda.is_available() else "cpu", flag, off)


def check_names(cfg: GlideConfig) -> None:
    """The sampler and dataset preset ``cfg`` names are registered (plugins' too), and the
    preview sampler takes ``preview.steps``; else one sentence. ``config show`` says it too."""
    from .. import plugins
    from ..samplers.spec import as_sampler

    # Checked even without previews: checkpoints record it as the model's sampler.
    samplers = plugins.samplers()
    if cfg.preview.sampler not in samplers:
        raise GlidectlError(f"preview.sampler: {samplers.unknown_message(cfg.preview.sampler)}")
    spec = as_sampler(samplers.get(cfg.preview.sampler))
    if spec.accepts("coefficients"):  # [preview] has no schedule file to hold them
        raise GlidectlError(
            f"preview.sampler = {cfg.preview.sampler!r} needs coefficients fitted to the "
            "trained model (glidectl fit-steps --method bespoke), which [preview] cannot "
            "pass; pick another preview.sampler, and sample with it once a checkpoint is "
            "fitted.")
    fewest = spec.min_steps  # not at a preview
    if cfg.preview.steps < fewest:  # mid-run, nor in glidectl sample of a checkpoint
        raise GlidectlError(f"preview.steps = {cfg.preview.steps}: the {cfg.preview.sampler} "
                            f"sampler needs at least {fewest} steps; raise preview.steps or "
                            "pick another preview.sampler.")
    presets = plugins.dataset_presets()  # before a model.init is loaded (or downloaded)
    if cfg.data.preset not in presets:
        raise GlidectlError(f"data.preset: {presets.unknown_message(cfg.data.preset)}")


def make_accelerator(cfg: GlideConfig, mixed_precision: str) -> Any:
    """A fresh Accelerator, seeded. Accelerate keeps process-wide singletons; a second run in
    the same process (a notebook, the tests) may use another precision or accumulation, so
    they start afresh (PartialState, the process group, is kept: its timeout,
    ``train.collective_timeout_minutes``, is the first run's)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import set_seed

    AcceleratorState._reset_state()
    GradientState._reset_state()
    acc = Accelerator(
        mixed_precision=mixed_precision, gradient_accumulation_steps=cfg.train.grad_accum,
        step_scheduler_with_optimizer=False, cpu=not has_accelerator_device(),
        kwargs_handlers=timeout_handlers(cfg.train.collective_timeout_minutes),
    )
    seed = cfg.train.seed
    set_seed(seed % 2**32)  # numpy's legacy seeding takes 0 to 2**32-1 only
    if seed >= 2**32:  # train.seed goes to 2**63-1: Python's and torch's generators take it
        random.seed(seed)
        torch.manual_seed(seed)
    use_deterministic(cfg.train.deterministic)
    return acc


def check_data_before_download(cfg: GlideConfig, adapter: Any = None) -> None:
    """Data faults found before the model is loaded: a full finetune (no
    ``adapter.prior_model``) of concepts that are all PRIOR_PREDICTION; and when model.init
    is still to be downloaded (OpenAI's 1.5 GB base), a data.source that is missing or
    empty, or whose only images a full finetune leaves out."""
    from ..data.dataset import open_data
    from ..data.onetrainer_source import check_full_finetune
    from ..glide.loading import resolve_spec

    full = not hasattr(adapter, "prior_model")
    if full:
        check_full_finetune(cfg.data.source)
    if cfg.model.init == "scratch":
        return
    try:
        resolve_spec(cfg.model.init, download=False)
    except GlidectlError:  # not on disk: it would be fetched
        source = open_data(cfg.data, cfg.data.resolution or 64, "data.source")
        if full and hasattr(source, "leave_out_prior_prediction"):
            source.leave_out_prior_prediction()  # raises when nothing else is left


@dataclasses.dataclass
class RunData:
    """The data a run reads."""

    dataset: Any  # the training data, whose counts and notes the run reports
    stream: DataStream  # its batches, sharded per process, resumable by cursor
    shown: Any  # the data previews read
    validator: val.Validator | None
    notes: list[str]


def build_data(cfg: GlideConfig, bundle: Any, acc: Any, dataset: Any = None,
               adapter: Any = None) -> RunData:
    """The training stream, the validation samples and the data previews read (``dataset``:
    a library caller's own training data instead of ``data.source``, a
    :class:`~glidectl.data.pairs.PairsSource` read as ``data.source`` is, or a dataset
    :func:`glidectl.data.build_dataset` made; without
    ``adapter.prior_model``, PRIOR_PREDICTION samples are left out with a warning)."""
    opts, tc = bundle.options, cfg.train
    preview_data, validator, notes = None, None, []
    size = cfg.data.resolution or opts.image_size
    data_args = dict(
        tokenizer=bundle.tokenizer, image_size=size, text_ctx=opts.text_ctx,
        low_res_size=(size // 4) if opts.super_res else None, seed=tc.seed,
    )
    from ..data.dataset import build_dataset
    from ..data.pairs import PairsSource

    source = None  # None: data.source; or a library caller's own (image, caption) pairs
    if isinstance(dataset, PairsSource):
        source, dataset = dataset, None
    if dataset is None:
        dataset = build_dataset(cfg.data, train=True, rank=acc.process_index,
                                world_size=acc.num_processes, source_name="data.source",
                                source=source, **data_args)
        if acc.is_main_process and cfg.preview.every > 0:
            # Previews read the data as for evaluation: no augmentation or caption dropout;
            # upsamplers' and inpainting models' images come at the sizes they sample at,
            # whatever data.resolution.
            preview_cfg, preview_args = cfg.data, data_args
            if opts.super_res or opts.inpaint:
                preview_cfg = dataclasses.replace(cfg.data, resolution=opts.image_size)
                preview_args = {**data_args, "image_size": opts.image_size,
                                "low_res_size": opts.low_res_size}
            preview_data = build_dataset(preview_cfg, train=False, source=source,
                                         **preview_args)
    notes += filter(None, [leave_out_unless_possible(dataset, adapter)])
    train_data = dataset
    if val.enabled(cfg):
        samples = val.load_samples(cfg, data_args, source)
        validator = val.Validator(cfg, samples, bundle.diffusion, opts, tc.batch_size,
                                  val.fid_samples_at(cfg, data_args, opts, source))
        notes += filter(None, [val.fid_samples_note(cfg, len(samples))])
        if cfg.validation.holdout > 0:
            train_data = val.WithoutKeys(dataset, {s["key"] for s in samples})
    stream = DataStream(
        train_data, batch_size=tc.batch_size, rank=acc.process_index,
        world=acc.num_processes, seed=tc.seed, workers=cfg.data.workers,
    )
    shown = preview_data if preview_data is not None else train_data
    return RunData(dataset, stream, shown, validator, notes)
