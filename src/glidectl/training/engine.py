"""The one training engine behind ``glidectl train``, ``upsample`` and ``lora``.

Accelerate owns devices, mixed precision, gradient accumulation and DDP; the loop below
reads top to bottom. A "step" is always a global optimizer step: intervals (log, preview,
checkpoint) count them and epochs never reset them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import shlex
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from .. import runs
from ..atomic import remove_stale_temps
from ..config import GlideConfig, save_config
from ..data.source_api import source_notes
from ..errors import GlidectlError, WriteError, write_error
from ..glide.checkpoints import state_sha256
from . import resume_state as rs
from . import validation as val
from .adapters import ModelAdapter, PartsAdapter
from .caption_check import CaptionLengthCheck
from .checkpointing import CheckpointManager, set_aside_after
from .data_stream import DataStream
from .display import Display
from .ema import EMA, ema_note
from .guards import (
    NonFiniteGuard,
    PeerLost,
    StopFlag,
    StoppedAgain,
    WorkerLost,
    peer_lost,
    worker_lost,
)
from .lr_schedule import make_scheduler, warmup_note
from .metrics import (
    MetricsFile,
    RunOutputs,
    Throughput,
    add_counts,
    data_counts,
    dataset_counts,
    skipped_note,
    truncate_after,
)
from .model_setup import ModelBundle, build_model, resolution_note
from .optimizers import make_optimizer
from .previews import Previewer
from .run_dir import check_writable, lock_run, next_run_name, pick_run, resume_point
from .setup import check_config, main_work_group, make_accelerator, total_steps
from .state import TrainResult, TrainState
from .trackers import Trackers


class Trainer:
    """Sets up a run from a config, then :meth:`run` trains it."""

    def __init__(self, cfg: GlideConfig, **kwargs: Any):
        """See :meth:`_init`. A user error or Ctrl-C there leaves no new run folder behind."""
        self._new_folders: list[Path] = []
        self._lock: Any = None
        try:
            self._init(cfg, **kwargs)
        except (GlidectlError, KeyboardInterrupt):
            for folder in self._new_folders:  # created by this call: nothing half-written
                shutil.rmtree(folder, ignore_errors=True)
            self._unlock()
            raise

    def _unlock(self) -> None:
        """Let another process train this run folder (main process)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _init(
        self, cfg: GlideConfig, *, resume: str | None = None,
        adapter: ModelAdapter | None = None, live: bool | None = None,
        kinds: tuple[str, ...] | None = None, dataset: Any = None, quiet: bool = False,
    ) -> None:
        self.cfg = cfg
        from ..devices import training_precision

        self.precision, precision_note = training_precision(cfg.train.precision)
        self._notes = [precision_note] if precision_note else []  # shown once set up
        check_config(cfg, kinds, self.precision)
        if cfg.train.threads > 0:
            torch.set_num_threads(cfg.train.threads)
        self.accelerator = acc = make_accelerator(cfg, self.precision.autocast)
        self.main = acc.is_main_process
        self._main_group = main_work_group(acc)
        self._setup_run_dir(resume)
        if dataset is None:
            self._check_data_before_download()
        # Network, tokenizer, diffusion; then what trains (the adapter hook: parts or LoRA).
        self.bundle: ModelBundle = build_model(cfg.model, cfg.data.resolution)
        self._notes += filter(None, [resolution_note(cfg.model, cfg.data.resolution,
                                                     self.bundle.options)])
        model = self._setup_model(adapter)
        shown = self._setup_data(dataset)
        optimizer = make_optimizer(cfg.train, self._named)
        scheduler = make_scheduler(optimizer, cfg.train.lr_schedule, cfg.train.warmup_steps,
                                   self.total_steps)
        self._notes += filter(None, [
            warmup_note(cfg.train.lr_schedule, cfg.train.warmup_steps, self.total_steps),
            ema_note(cfg.train.ema_decay, cfg.train.ema_warmup, self.total_steps)])
        if cfg.train.channels_last:
            model.to(memory_format=torch.channels_last)
        if cfg.train.compile:
            model.compile()
        self.model, self.optimizer, self.scheduler = acc.prepare(model, optimizer, scheduler)
        # After prepare, so the fp32 shadows live on the training device.
        tc = cfg.train
        self.ema = EMA(self.params, tc.ema_decay, tc.ema_warmup) if tc.ema_decay > 0 else None
        self.guard = NonFiniteGuard(tc.max_nonfinite)
        self.noise = torch.Generator().manual_seed(tc.seed + 1)
        self.state = TrainState(self.stream, self.guard, self.precision.name)
        self.checkpoints = CheckpointManager(self.run_dir.checkpoints, cfg.checkpoint.keep_last)
        if self.resume_from is not None:
            self._load(self.resume_from)
        if self.main:  # after the resume state is read: a refused resume leaves the run as it was
            save_config(cfg, self.run_dir.config)
        self.display = Display(
            self.total_steps, self.state.step, live=live, enabled=self.main and not quiet
        )
        if cfg.train.precision == "auto":
            self.display.message(self.precision.line())
        for note in self._notes:
            self.display.message(note)
        for note in source_notes(getattr(self.dataset, "source", None)):
            self.display.message(f"Warning: {note}")
        features = self.validator.features if self.validator is not None else None
        if features is not None and not features.available:  # said now, not at the first FID
            self.display.message(f"Warning: FID/KID will be absent: {features.reason}")
        self.previewer = Previewer(cfg, self.bundle, self.unwrapped, shown,
                                   precision=self.precision.name) if self.main else None
        self._captions = CaptionLengthCheck(self.bundle.tokenizer, self.bundle.options.text_ctx)

    def _setup_run_dir(self, resume: str | None) -> None:
        """The main process picks (and checks) the run folder; everyone agrees on it."""
        def pick() -> tuple[str, str | None]:
            run = pick_run(self.cfg, resume)
            unnamed = not (resume or self.cfg.train.name)
            for _ in range(100):
                self._new_folders = [p for p in (run.root.parent, run.root)
                                     if not p.exists()][:1]
                check_writable(run.root)
                try:
                    self._lock = lock_run(run)
                    break
                except GlidectlError:
                    self._new_folders = []  # another process's run: not ours to remove
                    if not unnamed:
                        raise
                # started at the same instant as another unnamed run: take the next name
                run = runs.RunDir(run.root.parent / next_run_name(run.root.parent))
            resume_from = resume_point(run, resume)
            return str(run.root), str(resume_from) if resume_from else None

        root, resume_from = self._on_main(pick)
        self.run_dir = runs.RunDir(Path(root))
        self.resume_from = Path(resume_from) if resume_from else None
        if self.main:
            self.run_dir.create()
        self.accelerator.wait_for_everyone()

    def _check_data_before_download(self) -> None:
        """A run whose model.init is still to be downloaded (OpenAI's 1.5 GB base) finds out
        that its data.source is missing or empty first."""
        from ..data.dataset import open_data
        from ..glide.loading import resolve_spec

        init = self.cfg.model.init
        if init == "scratch":
            return
        try:
            resolve_spec(init, download=False)
        except GlidectlError:  # not on disk: it would be fetched
            open_data(self.cfg.data, self.cfg.data.resolution or 64, "data.source")

    def _setup_model(self, adapter: ModelAdapter | None) -> torch.nn.Module:
        """Wrap the network for training; checks there is something to train and room for it."""
        tc = self.cfg.train
        self.adapter = adapter or PartsAdapter(tc.trainable)
        model = self.adapter.prepare(self.bundle.model)
        if tc.gradient_checkpointing:
            model.set_gradient_checkpointing(True)
        named = self.adapter.trainable(model)
        if not named:
            raise GlidectlError(f"train.trainable = {tc.trainable!r} leaves nothing to train.")
        self._named = named
        self.params = [p for _, p in named]
        # Weights + EMA + Adam's two moments, in fp32, must fit on the disk.
        n_all = sum(p.numel() for p in model.parameters())
        n_train = sum(p.numel() for p in self.params)
        self._on_main(lambda: check_writable(self.run_dir.checkpoints,
                                             4 * (2 * n_all + 3 * n_train)))
        return model

    def _setup_data(self, dataset: Any) -> Any:
        """The training stream (sharded per process, resumable by cursor), the validation
        samples; returns the data upsampler previews read."""
        cfg, acc, opts = self.cfg, self.accelerator, self.bundle.options
        tc = cfg.train
        preview_data, self.validator = None, None
        size = cfg.data.resolution or opts.image_size
        data_args = dict(
            tokenizer=self.bundle.tokenizer, image_size=size, text_ctx=opts.text_ctx,
            low_res_size=(size // 4) if opts.super_res else None, seed=tc.seed,
        )
        if dataset is None:
            from ..data import build_dataset

            dataset = build_dataset(cfg.data, train=True, rank=acc.process_index,
                                    world_size=acc.num_processes, source_name="data.source",
                                    **data_args)
            if self.main and cfg.preview.every > 0:
                # Previews read the data as for evaluation: no augmentation or caption dropout;
                # upsamplers' and inpainting models' images come at the sizes they sample at,
                # whatever data.resolution.
                preview_cfg, preview_args = cfg.data, data_args
                if opts.super_res or opts.inpaint:
                    preview_cfg = dataclasses.replace(cfg.data, resolution=opts.image_size)
                    preview_args = {**data_args, "image_size": opts.image_size,
                                    "low_res_size": opts.low_res_size}
                preview_data = build_dataset(preview_cfg, train=False, **preview_args)
        self.dataset = dataset
        if val.enabled(cfg):
            samples = val.load_samples(cfg, data_args)
            self.validator = val.Validator(cfg, samples, self.bundle.diffusion, opts,
                                           tc.batch_size)
            self._notes += filter(None, [val.fid_samples_note(cfg, len(samples))])
            if cfg.validation.holdout > 0:
                dataset = val.WithoutKeys(dataset, {s["key"] for s in samples})
        train_data, shown = dataset, preview_data if preview_data is not None else dataset
        self.stream = DataStream(
            train_data, batch_size=tc.batch_size, rank=acc.process_index,
            world=acc.num_processes, seed=tc.seed, workers=cfg.data.workers,
        )
        self.total_steps = total_steps(cfg, self.stream)
        return shown

    # ------------------------------------------------------------------ helpers
    def _on_main(self, fn: Any) -> Any:
        """Run ``fn`` on the main process and share its result (or its user error) with
        every process, so a failed check stops all ranks instead of leaving them waiting.
        The others wait in the main-work group: an FID may outlast the process group's
        timeout."""
        box: list[Any] = [None]
        if self.main:
            try:
                box = [("ok", fn())]
            except GlidectlError as exc:
                box = [("error", str(exc))]
        if self._main_group is not None:
            torch.distributed.broadcast_object_list(box, src=0, group=self._main_group)
        status, value = box[0]
        if status == "error":
            raise GlidectlError(value)
        return value

    def _wait_for_main(self) -> None:
        """Wait for the main process's preview (see :data:`setup.MAIN_WORK_TIMEOUT`)."""
        if self._main_group is not None:
            torch.distributed.barrier(group=self._main_group)

    def _on_all(self, fn: Any) -> Any:
        """Run ``fn`` on every process; a user error on any one (a file only it reads) stops
        them all with that error, instead of leaving the others in a collective."""
        error = None
        try:
            value = fn()
        except GlidectlError as exc:
            error = str(exc)
        if self.accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            error = next((e for e in gather_object([error]) if e), None)
        if error is not None:
            raise GlidectlError(error)
        return value

    @property
    def unwrapped(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)

    def _resumable(self) -> dict[str, Any]:
        """What the resume state holds besides the loop's own state and the RNGs."""
        return {rs.OPTIMIZER: self.optimizer, rs.SCHEDULER: self.scheduler, rs.EMA: self.ema,
                rs.SCALER: self.accelerator.scaler}

    def _load(self, step_dir: Path) -> None:
        """Resume: every state file is read and checked first, then weights, then applied."""
        def weights() -> None:
            loader = getattr(self.adapter, "load_checkpoint", None)
            if loader is not None:
                loader(self.unwrapped, step_dir)
                return
            from ..glide import read_weights

            try:
                state_dict, saved = read_weights(step_dir / runs.MODEL_FILE)
            except GlidectlError as exc:  # damaged, truncated: an earlier checkpoint may do
                raise GlidectlError(f"{str(exc).rstrip('.')}; resume from another checkpoint "
                                    "or start a new run.") from None
            want = self.bundle.options.time_embed_max_freq
            if saved.time_embed_max_freq != want:
                raise GlidectlError(
                    f"Checkpoint {str(step_dir)!r} was trained with model.time_embed_max_freq = "
                    f"{saved.time_embed_max_freq} but the config says {want}; set "
                    f"model.time_embed_max_freq = {saved.time_embed_max_freq} to resume it."
                )
            try:
                self.unwrapped.load_state_dict(state_dict)
            except RuntimeError:  # other shapes: the config builds another network
                raise GlidectlError(
                    f"Cannot resume from {str(step_dir)!r}: its weights do not fit the model "
                    f"this config builds ({_options_diff(saved, self.bundle.options)}); resume "
                    "with the run's own config (--resume RUN without --config reads "
                    "RUN/config.toml)."
                ) from None

        changed = self._on_all(lambda: rs.load_state(
            runs.state_dir(step_dir), self.accelerator, self.state, self._resumable(),
            self.noise, weights))
        self._notes.append(f"Continuing from {str(step_dir)!r} at step {self.state.step}.")
        was, now = self.state.saved_precision, self.precision.name
        if was is not None and was != now:
            self._notes.append(f"Resuming {str(step_dir)!r}, trained in {was}, in {now}: the run "
                               f"goes on, but not as it would have in {was} (set "
                               f"train.precision = \"{was}\" to keep it).")
        scaler_note = rs.fresh_scaler_note(runs.state_dir(step_dir), self.accelerator.scaler)
        if scaler_note:
            self._notes.append(scaler_note)
        if changed:
            self._notes.append("Optimizer settings changed since the checkpoint; the config's "
                               f"apply from here on: {', '.join(changed)}.")

    def save_checkpoint(self) -> Path:
        """Every process calls this; the main one writes weights, all write their RNGs. A
        failed write removes the temp folder, so a full disk gets that space back."""
        acc, step = self.accelerator, self.state.step
        acc.wait_for_everyone()
        self.stream.gather_ranks(lambda t: acc.gather(t.to(acc.device)).cpu())
        self.state.data_total = self._data_totals()
        tmp = self.checkpoints.tmp_dir(step)
        try:
            if self.main:
                self.checkpoints.begin(step)
                self._write_weights(step, tmp)
            rs.save_state(runs.state_dir(tmp), acc, self.state.state_dict(),
                          self._resumable(), self.noise)
            acc.wait_for_everyone()
            final = self.checkpoints.final_dir(step)
            if self.main:
                final = self.checkpoints.commit(step)
                self.display.message(f"checkpoint: {final}")
        except (OSError, WriteError) as exc:
            if self.main:
                shutil.rmtree(tmp, ignore_errors=True)
            raise exc if isinstance(exc, WriteError) else write_error(tmp, exc) from None
        acc.wait_for_everyone()
        return final

    def _write_weights(self, step: int, tmp: Path) -> None:
        """The weights (or adapters) of a checkpoint into its temp folder (main process)."""
        from ..glide import save_weights

        model = self.unwrapped
        writer = getattr(self.adapter, "save_checkpoint", None)
        if writer is not None:  # e.g. LoRA: adapter folders instead of full weights
            writer(model, tmp, step, self.ema)
            return
        meta = {"step": str(step), "run": self.run_dir.name}
        if self.previewer is not None:  # the model's recommended sampling settings
            from ..pipeline import RECOMMENDED_KEY

            meta[RECOMMENDED_KEY] = self.previewer.recommended()
        opts = self.bundle.options
        save_weights(self.adapter.export_state(model), tmp / runs.MODEL_FILE, opts, meta)
        if self.ema is not None:
            with self.ema.swapped():
                save_weights(self.adapter.export_state(model), tmp / runs.EMA_FILE, opts, meta)

    def _batch_noise(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """Timesteps, noise (and inpaint masks) for the GLOBAL batch, sliced to this rank, so
        N processes draw exactly what one process with the whole batch would."""
        acc, x0 = self.accelerator, batch["image"]
        b, world = x0.shape[0], acc.num_processes
        gen, T = self.noise, self.bundle.diffusion.num_timesteps
        t = torch.randint(self._t_low(), T, (b * world,), generator=gen)
        noise = torch.randn((b * world, *x0.shape[1:]), generator=gen)
        masks = None
        if self.bundle.options.inpaint:
            masks = val.random_masks(b * world, x0.shape[-1], gen)
        mine = torch.tensor(self.stream.global_positions(b))
        dev = acc.device
        return t[mine].to(dev), noise[mine].to(dev), None if masks is None else \
            masks[mine].to(dev)

    def _t_low(self) -> int:
        """``train.t_curriculum`` f: over the first f of training t is drawn from the top
        10 % of noise levels for the first half, then from a range whose lowest timestep
        falls linearly to 0; after that t is uniform. High noise, where the caption decides
        colour, layout and background, is learned first (Kim et al. 2024)."""
        f, T = self.cfg.train.t_curriculum, self.bundle.diffusion.num_timesteps
        if f <= 0:
            return 0
        progress = self.state.step / max(1.0, f * self.total_steps)
        return int(0.9 * T * min(1.0, max(0.0, 2.0 * (1.0 - progress))))

    def _losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        dev = self.accelerator.device
        x0 = batch["image"].to(dev)
        if self.cfg.train.channels_last:
            x0 = x0.contiguous(memory_format=torch.channels_last)
        tokens, mask = batch["tokens"].to(dev), batch["mask"].to(dev)
        t, noise, inpaint_mask = self._batch_noise(batch)
        noise, q_noise = self._shaped_noise(noise)
        extra: dict[str, Any] = {}
        if "low_res" in batch and self.bundle.options.super_res:
            extra["low_res"] = batch["low_res"].to(dev)
        if inpaint_mask is not None:
            extra["inpaint_image"], extra["inpaint_mask"] = x0, inpaint_mask

        def model_fn(x_t: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
            return self.model(x_t, ts, tokens, mask, **extra)

        diffusion, tc = self.bundle.diffusion, self.cfg.train
        weights = None
        if tc.min_snr_gamma > 0 or tc.snr_floor > 0:
            weights = diffusion.snr_weights(t, gamma=tc.min_snr_gamma, floor=tc.snr_floor)
        return diffusion.training_losses(
            model_fn, x0, t, noise, loss_type=self.cfg.train.loss, weights=weights,
            q_noise=q_noise,
        )

    def _sample_weighted(self, loss: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """The per-sample ``loss`` with each regularisation sample's times
        ``train.prior_loss_weight`` (kohya's ``loss_weights``) and each sample's times its
        own ``loss_weight`` (OneTrainer's per-concept one), before the batch mean (a batch
        with no regularisation sample and every own weight 1 is returned untouched)."""
        reg = batch.get("is_reg") or [False] * len(loss)
        own = batch.get("loss_weight") or [1.0] * len(loss)
        if not any(reg) and all(w == 1 for w in own):
            return loss
        prior = self.cfg.train.prior_loss_weight
        weights = [(prior if r else 1.0) * float(w) for r, w in zip(reg, own, strict=True)]
        return loss * torch.tensor(weights, dtype=loss.dtype, device=loss.device)

    def _shaped_noise(self, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``train.noise_offset`` (a per-image, per-channel constant added to the noise, for
        both x_t and the target) and ``train.input_perturbation`` (extra noise in x_t only):
        (target noise, noise for q_sample or None = the same). Drawn for the global batch,
        like :meth:`_batch_noise`, and only when on, so runs without them are unchanged."""
        tc = self.cfg.train
        if tc.noise_offset <= 0 and tc.input_perturbation <= 0:
            return noise, None
        b, world = noise.shape[0], self.accelerator.num_processes
        mine = torch.tensor(self.stream.global_positions(b))
        if tc.noise_offset > 0:
            offset = torch.randn((b * world, noise.shape[1], 1, 1), generator=self.noise)
            noise = noise + tc.noise_offset * offset[mine].to(noise.device)
        if tc.input_perturbation <= 0:
            return noise, None
        extra = torch.randn((b * world, *noise.shape[1:]), generator=self.noise)
        return noise, noise + tc.input_perturbation * extra[mine].to(noise.device)

    def _stop_everywhere(self, flag: StopFlag) -> bool:
        if self.accelerator.num_processes == 1:
            return flag.requested
        if not flag.requested and os.getppid() != self._launcher:
            # The launcher (torchrun, accelerate) was killed: nobody would stop these
            # processes (each has its own session, out of Ctrl-C's reach), so stop as on Ctrl-C.
            flag.requested, flag.signal_name = True, "launcher gone"
        wanted = torch.tensor([float(flag.requested)], device=self.accelerator.device)
        return bool(self.accelerator.reduce(wanted, "sum").item() > 0)

    def _preview(self, trackers: Trackers) -> None:
        if self.previewer is None or self.cfg.preview.every <= 0:
            self._wait_for_main()
            return
        self.unwrapped.eval()
        try:
            with self.ema.swapped() if self.ema is not None else contextlib.nullcontext():
                # what this step's checkpoint saves of these weights, so a remake checks it
                sha = state_sha256(self.adapter.export_state(self.unwrapped)) \
                    if self.previewer.prompts else None
                out = self.previewer.run(self.state.step, self.run_dir.previews, sha)
        finally:
            self.unwrapped.train()
        if self.previewer.error:
            self.display.message(f"Warning: {self.previewer.error}")
        if out is not None:
            from PIL import Image

            self.display.message(f"preview: {out.path}")
            with Image.open(out.path) as grid:
                trackers.log_image("preview", grid, self.state.step, "; ".join(out.captions))
        self._wait_for_main()

    def _validate(self, step: int, out: RunOutputs) -> None:
        """val_loss (training weights) and FID/KID (EMA weights, like exports) on the held-out
        samples, on the main process; with checkpoint.keep_best a new lowest val_loss writes
        a checkpoint and points ``best`` at it."""
        if self.validator is None:
            return
        loss_due, fid_due = self.validator.due(step, step == self.total_steps)
        if not (loss_due or fid_due):
            return

        def measure() -> dict[str, Any]:
            values = self.validator.run(self.unwrapped, self.accelerator.device) \
                if loss_due else {}
            if fid_due:
                with self.ema.swapped() if self.ema is not None else contextlib.nullcontext():
                    values.update(self.validator.fid(self.unwrapped, self.bundle))
            return values

        values = self._on_main(measure)
        record = {"step": step, **values}
        out.result.validated(record)
        out.write(record, step)
        self.display.validation(record)
        if (self.cfg.checkpoint.keep_best and "val_loss" in values
                and values["val_loss"] < self.state.best_val_loss):
            self.state.best_val_loss, self.state.best_step = values["val_loss"], step
            self._checkpoint(out.result)
            if self.main:
                self.checkpoints.mark_best(step)
                self.display.message(f"best val_loss {values['val_loss']:.5f}: step {step}")

    def _checkpoint(self, result: TrainResult) -> None:
        """Write this step's checkpoint unless it was just written."""
        if self._saved_step != self.state.step:
            result.checkpoint = self.save_checkpoint()
            self._saved_step = self.state.step

    def _optimizer_step(self) -> tuple[torch.Tensor, bool]:
        """``grad_accum`` micro-batches, then one optimizer step unless the loss was not
        finite: (loss terms averaged over processes, stepped)."""
        acc, tc = self.accelerator, self.cfg.train
        terms = torch.zeros(3, device=acc.device)
        wait, stepped = 0.0, False
        for _ in range(tc.grad_accum):
            with acc.accumulate(self.model):
                batch = self.stream.next()
                wait += self.stream.last_wait
                if self.main and (note := self._captions.see(batch.get("caption", ()))):
                    self.display.message(note)
                losses = self._losses(batch)
                loss = self._sample_weighted(losses["loss"], batch).mean()
                acc.backward(loss)
                terms += torch.stack([
                    loss.detach(), losses["mse"].mean().detach(), losses["vb"].mean().detach(),
                ]) / tc.grad_accum
                if acc.sync_gradients:
                    terms = acc.reduce(terms, "mean")
                    stepped = self.guard.check(terms[0].item(), self.state.step, self._where())
                    if stepped:
                        self._grad_norm = float(acc.clip_grad_norm_(
                            self.params, tc.grad_clip if tc.grad_clip > 0 else math.inf))
                        self.optimizer.step()
                        self.scheduler.step()
                    self.optimizer.zero_grad(set_to_none=True)
        self._meter.add(tc.batch_size * acc.num_processes * tc.grad_accum, wait)
        return terms, stepped

    def _data_totals(self) -> dict[str, Any]:
        """Samples accepted and rejected by every process since the run began (a collective:
        every process calls it)."""
        mine = dataset_counts(self.dataset)
        everyone = [mine]
        if self.accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            everyone = gather_object([mine])
        return add_counts(self.state.data_base, *everyone)

    def _record(self, step: int, sums: torch.Tensor, n: int) -> dict[str, Any]:
        """The metrics record of a logging window of ``n`` steps."""
        return {
            "step": step, "epoch": self.stream.epoch,
            "loss": float(sums[0] / n), "mse": float(sums[1] / n), "vb": float(sums[2] / n),
            "lr": self.scheduler.get_last_lr()[0], "grad_norm": self._grad_norm,
            **self._meter.read(), "skipped_nonfinite": self.guard.total,
            **data_counts(self._data_totals()),
            "preview_failures": self.previewer.failures if self.previewer else 0,
        }

    # ------------------------------------------------------------------ the loop
    def run(self, until: int | None = None) -> TrainResult:
        """Train to ``train.steps`` (or stop early at step ``until``, checkpointed, as if
        interrupted: the LR schedule still spans all steps)."""
        try:
            return self._run(until)
        except WriteError as exc:  # a full disk: say where the run can go on from
            raise WriteError(f"{str(exc).rstrip('.')}; {self._saved()}.") from None
        except KeyboardInterrupt:  # a second Ctrl-C/SIGTERM, while saving too
            step = self.state.step
            self._drop_half_written()
            last = runs.latest_step_dir(self.run_dir.checkpoints)
            unsaved = "" if last is not None and runs.step_of(last) == step else \
                ", which was not saved"
            raise StoppedAgain(f"Interrupted at step {step}{unsaved}; {self._saved()}.") \
                from None
        except RuntimeError as exc:
            if (died := worker_lost(exc)) is not None:  # raised wherever SIGCHLD lands
                self._drop_half_written()
                oom = " (most often by the system's out-of-memory killer; lower " \
                      "data.workers or train.batch_size)" if died.endswith("Killed") else ""
                raise WorkerLost(f"Training stopped near step {self.state.step}: {died}"
                                 f"{oom}; {self._saved()}.") from None
            if self.accelerator.num_processes == 1 or not peer_lost(exc):
                raise
            raise PeerLost(
                f"Another process of this run stopped near step {self.state.step} (the "
                f"launcher's report names it), so this one stops too; {self._saved()}."
            ) from None

    def _set_aside_later(self, step: int) -> None:
        """A resume from an earlier checkpoint: the later ones go aside, said in one line."""
        moved = set_aside_after(self.run_dir.checkpoints, step) if step else None
        if moved:
            folder, names = moved
            self.display.message(
                f"Resumed from step {step}: the later checkpoints ({', '.join(names)}) are from "
                f"the run before this resume and were moved, whole, to {str(folder)!r}.")

    def _drop_half_written(self) -> None:
        """A checkpoint of this step left half-written by a stop: its space back now."""
        if self.main:
            shutil.rmtree(self.checkpoints.tmp_dir(self.state.step), ignore_errors=True)

    def _repoint_best(self) -> None:
        """Point ``best`` at the best checkpoint the resumed state knows: a kill between a
        best checkpoint and its pointer, or a resume from before later checkpoints set
        aside, would leave it naming another step (or none) and pruning would delete it."""
        best = self.state.best_step
        if best is not None and self.run_dir.step_dir(best).is_dir() \
                and self.checkpoints.best() != self.run_dir.step_dir(best):
            self.checkpoints.mark_best(best)

    def _tidy(self) -> None:
        """What a ``kill -9`` left in the run folder goes before training into it (main
        process, run lock held): temp files of writers that are gone, and, through pruning,
        checkpoints past ``keep_last`` and temp step folders (a kill between the final
        checkpoint and its pruning left them, and a finished run writes no checkpoint again)."""
        for folder in self.run_dir.written_folders():
            remove_stale_temps(folder)
        self.checkpoints.prune()

    def _saved(self) -> str:
        """Where this run can be resumed from, as the end of an error sentence."""
        last = runs.latest_step_dir(self.run_dir.checkpoints)
        if last is None:  # --resume would refuse the folder: there is nothing to resume
            return "it has no checkpoint yet: run the same command again to start it over"
        return (f"its last checkpoint is {str(last)!r}: resume with --resume "
                f"{shlex.quote(str(self.run_dir.root))}")

    def _run(self, until: int | None) -> TrainResult:
        cfg = self.cfg
        step = self.state.step
        out = RunOutputs(TrainResult(self.run_dir.root, step))
        if self.main:
            truncate_after(self.run_dir.metrics, step)
            out.metrics = MetricsFile(self.run_dir.metrics)
            self._set_aside_later(step)
            self._repoint_best()
            self._tidy()
        self._meter, self._grad_norm, self._saved_step = Throughput(), float("nan"), -1
        self._launcher = os.getppid()
        if step >= self.total_steps:
            self.display.message(f"The run is already at step {step} of {self.total_steps}: "
                                 "nothing to train (pass a larger --steps to go on).")
        sums, logged = torch.zeros(3), 0
        self.model.train()
        try:
            out.trackers = Trackers(self.accelerator, cfg, self.run_dir, self.state.tracker_ids)
            self.state.tracker_ids = out.trackers.ids
            with StopFlag() as stop, self.display:
                if step == 0:
                    self._preview(out.trackers)
                self._meter.reset()
                while step < self.total_steps:
                    terms, stepped = self._optimizer_step()
                    if not stepped:
                        continue
                    if self.ema is not None:
                        self.ema.update()
                    step = self.state.step = step + 1
                    sums, logged = sums + terms.float().cpu(), logged + 1
                    self.display.advance(step)
                    out.result.last_loss = float(terms[0])
                    if step % cfg.log.every == 0 or step == self.total_steps:
                        record = self._record(step, sums, logged)
                        sums, logged = torch.zeros(3), 0
                        self._meter.reset()
                        out.result.logged(record)
                        out.write(record, step)
                        self.display.log(record)
                    if cfg.preview.every > 0 and step % cfg.preview.every == 0:
                        self._preview(out.trackers)
                    self._validate(step, out)
                    if self._stop_everywhere(stop) or (until is not None and step >= until):
                        out.result.interrupted = True
                        break
                    if step == self.total_steps or (
                            cfg.checkpoint.every > 0 and step % cfg.checkpoint.every == 0):
                        self._checkpoint(out.result)
                if out.result.interrupted:
                    self.display.message(f"{stop.signal_name or 'stop'}: saving step {step}")
                    self._checkpoint(out.result)
        finally:
            out.close()
            self.stream.close()
            self._unlock()
        out.result.step = step
        self.accelerator.wait_for_everyone()
        return out.result

    def _where(self) -> str:
        return f" (data epoch {self.stream.epoch}, position {self.stream.position})"


def _options_diff(saved: Any, built: Any) -> str:
    """The model options two networks differ in, as ``name saved (config: built)``."""
    pairs = [(f.name, getattr(saved, f.name), getattr(built, f.name))
             for f in dataclasses.fields(saved)]
    differ = [f"{name} {a!r} (config: {b!r})" for name, a, b in pairs if a != b]
    return ", ".join(differ[:3]) or "other shapes"


def train(cfg: GlideConfig, *, resume: str | None = None, adapter: ModelAdapter | None = None,
          live: bool | None = None, kinds: tuple[str, ...] | None = None,
          quiet: bool = False) -> TrainResult:
    """Train (or resume) the run described by ``cfg``; the library entry point of the CLI."""
    start = time.perf_counter()
    trainer = Trainer(cfg, resume=resume, adapter=adapter, live=live, kinds=kinds, quiet=quiet)
    result = trainer.run()
    trainer.display.message(
        f"{'stopped' if result.interrupted else 'done'} at step {result.step} in "
        f"{time.perf_counter() - start:.0f}s; run: {result.run_dir}{skipped_note(result.history)}"
    )
    return result
