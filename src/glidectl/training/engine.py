"""The one training engine behind ``glidectl train``, ``upsample`` and ``lora``.

Accelerate owns devices, mixed precision, gradient accumulation and DDP; the loop below
reads top to bottom. A "step" is always a global optimizer step: intervals (log, preview,
checkpoint) count them and epochs never reset them.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any

import torch

from .. import runs
from ..config import GlideConfig, save_config, validate
from ..data.pairs import own_data
from ..data.source_api import source_notes
from ..devices import nondeterministic_op, torch_threads
from ..errors import ConfigError, GlidectlError, WriteError, keyword_errors, write_error
from ..glide.checkpoints import state_sha256
from ..greyscale import GREY_NOTE
from . import resume_state as rs
from .adapters import ModelAdapter, PartsAdapter
from .caption_check import CaptionLengthCheck
from .checkpoint_weights import load_weights, write_weights
from .checkpointing import CheckpointManager
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
from .objective import Objective
from .optimizers import make_optimizer
from .previews import Previewer
from .processes import Processes
from .run_dir import RunClaim, check_writable, resume_hint, tidy_run
from .setup import (
    build_data,
    check_config,
    check_data_before_download,
    make_accelerator,
    total_steps,
)
from .state import TrainResult, TrainState
from .trackers import Trackers
from .validation import concept_validation

# train()'s keywords and config fields for the flags of glidectl train that its errors name
SAID_AS_KEYWORDS = keyword_errors(
    {"--resume": "resume", "--name": "cfg.train.name", "--output-dir": "cfg.train.output_dir",
     "--steps": "cfg.train.steps"},
    {r" \(or --set train\.name=NAME\)": "", r"--set (\w+\.\w+)=": r"cfg.\1 = ",
     r"\(--resume RUN without --config reads RUN/config\.toml\)":
         "(load_config('RUN/config.toml') reads it)"})


class Trainer:
    """Sets up a run from a config, then :meth:`run` trains it."""

    @SAID_AS_KEYWORDS
    def __init__(
        self, cfg: GlideConfig, *, resume: str | None = None,
        adapter: ModelAdapter | None = None, live: bool | None = None,
        kinds: tuple[str, ...] | None = None, dataset: Any = None, quiet: bool = False,
    ):
        """Check ``cfg`` (:func:`glidectl.config.validate`), claim the run folder, build the
        model, data, optimizer and EMA, and read ``resume`` (``latest`` or a checkpoint
        folder). ``adapter``: what trains (LoRA; default: ``train.trainable``); ``live``: the
        progress display (None: when on a terminal); ``kinds``: the model kinds this command
        trains; ``dataset``: training data in place of ``data.source``: ``(image, caption)``
        pairs (a list, or a torch Dataset returning them; each image a PIL image or a
        file's path), read with ``[data]``'s resolution, crops, flips and caption rules as
        ``data.source`` is (:mod:`glidectl.data.pairs`), or what
        :func:`glidectl.data.build_dataset` makes; ``quiet``: print nothing. A user error
        or Ctrl-C here leaves no new run folder behind."""
        self._claim = RunClaim()
        try:
            with torch_threads(cfg.train.threads):
                self._init(cfg, resume=resume, adapter=adapter, live=live, kinds=kinds,
                           dataset=dataset, quiet=quiet)
        except (GlidectlError, KeyboardInterrupt):
            self._claim.undo()
            raise

    def _init(
        self, cfg: GlideConfig, *, resume: str | None = None,
        adapter: ModelAdapter | None = None, live: bool | None = None,
        kinds: tuple[str, ...] | None = None, dataset: Any = None, quiet: bool = False,
    ) -> None:
        validate(cfg)  # a library caller may have changed it in code
        dataset = own_data(dataset)
        cfg, validation_note = concept_validation(cfg)
        self.cfg = cfg
        from ..devices import training_precision

        self.precision, precision_note = training_precision(cfg.train.precision)
        self._notes = [n for n in (precision_note, validation_note) if n]  # shown once set up
        check_config(cfg, kinds, self.precision)
        self.accelerator = acc = make_accelerator(cfg, self.precision.autocast)
        self.procs = Processes(acc)
        self.main = self.procs.main
        self._setup_run_dir(resume)
        if dataset is None:
            check_data_before_download(cfg, adapter)
        # Network, tokenizer, diffusion; then what trains (the adapter hook: parts or LoRA).
        self.bundle: ModelBundle = build_model(cfg.model, cfg.data.resolution)
        self._notes += filter(None, [resolution_note(cfg.model, cfg.data.resolution,
                                                     self.bundle.options)])
        model = self._setup_model(adapter)
        data = build_data(cfg, self.bundle, acc, dataset, self.adapter)
        self.dataset, self.stream, self.validator = data.dataset, data.stream, data.validator
        self._notes += data.notes
        self.total_steps = total_steps(cfg, self.stream)
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
        self.objective = Objective(tc, self.bundle, self.stream, self.noise,
                                   world=acc.num_processes, device=acc.device,
                                   total_steps=self.total_steps)
        self.state = TrainState(self.stream, self.guard, self.precision.name)
        self.checkpoints = CheckpointManager(self.run_dir.checkpoints, cfg.checkpoint.keep_last)
        if self.resume_from is not None:
            self._load(self.resume_from)
        self._notes += self.stream.notes()  # after a resume: it keeps the run's workers
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
        self.previewer = Previewer(cfg, self.bundle, self.unwrapped, data.shown,
                                   precision=self.precision.name) if self.main else None
        for note in self.previewer.notes if self.previewer is not None else ():
            self.display.message(f"Warning: {note}")
        self._captions = CaptionLengthCheck(self.bundle.tokenizer, self.bundle.options.text_ctx)

    def _setup_run_dir(self, resume: str | None) -> None:
        """The main process picks (and checks) the run folder; everyone agrees on it."""
        def pick() -> tuple[str, str | None]:
            run, resume_from = self._claim.take(self.cfg, resume)
            return str(run.root), str(resume_from) if resume_from else None

        root, resume_from = self.procs.on_main(pick)
        self.run_dir = runs.RunDir(Path(root))
        self.resume_from = Path(resume_from) if resume_from else None
        if self.main:
            self.run_dir.create()
        self.accelerator.wait_for_everyone()

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
        self.procs.on_main(lambda: check_writable(self.run_dir.checkpoints,
                                                  4 * (2 * n_all + 3 * n_train)))
        return model

    # ------------------------------------------------------------------ helpers
    @property
    def unwrapped(self) -> torch.nn.Module:
        """The network being trained, without accelerate's wrappers."""
        return self.accelerator.unwrap_model(self.model)

    def _resumable(self) -> dict[str, Any]:
        """What the resume state holds besides the loop's own state and the RNGs."""
        return {rs.OPTIMIZER: self.optimizer, rs.SCHEDULER: self.scheduler, rs.EMA: self.ema,
                rs.SCALER: self.accelerator.scaler}

    def _load(self, step_dir: Path) -> None:
        """Resume: every state file is read and checked first, then weights, then applied."""
        def weights() -> None:
            load_weights(step_dir, self.unwrapped, self.adapter, self.bundle.options)

        changed = self.procs.on_all(lambda: rs.load_state(
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
        self._sync_grey()
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
                self.checkpoints.discard(step)
            raise exc if isinstance(exc, WriteError) else write_error(tmp, exc) from None
        acc.wait_for_everyone()
        return final

    def _write_weights(self, step: int, tmp: Path) -> None:
        """The weights (or adapters) of a checkpoint into its temp folder (main process)."""
        meta = {"step": str(step), "run": self.run_dir.name}
        if self.previewer is not None:  # the model's recommended sampling settings
            from ..pipeline import RECOMMENDED_KEY

            meta[RECOMMENDED_KEY] = self.previewer.recommended()
        write_weights(tmp, step, self.unwrapped, self.adapter, self.ema, self.bundle.options,
                      meta)

    def _sync_grey(self) -> None:
        """Whether every training image any process has seen is grey (a collective): the
        previews then sample grey and the checkpoints recommend it."""
        seen = self.procs.gather(self.state.grey_data)
        self._grey = all(v is True for v in seen)
        if self.previewer is not None:
            self.previewer.grey = self._grey

    def _preview(self, trackers: Trackers) -> None:
        self._sync_grey()
        if self.previewer is None or self.cfg.preview.every <= 0:
            self.procs.wait_for_main()
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
        self.procs.wait_for_main()

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

        values = self.procs.on_main(measure)
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
                self.state.see_images(batch["image"])
                if hasattr(self.dataset, "warm_up"):  # kohya's token warm-up, at this step
                    self.dataset.warm_up(batch, self.state.step, self.total_steps)
                if self.main and (note := self._captions.see(batch.get("caption", ()))):
                    self.display.message(note)
                losses = self.objective.losses(self.model, batch, self.state.step,
                                                self.adapter, self.unwrapped)
                loss = self.objective.weighted(losses["loss"], batch).mean()
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
        return add_counts(self.state.data_base, *self.procs.gather(dataset_counts(self.dataset)))

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
    @SAID_AS_KEYWORDS
    def run(self, until: int | None = None) -> TrainResult:
        """Train to ``train.steps`` (or stop early at step ``until``, checkpointed, as if
        interrupted: the LR schedule still spans all steps)."""
        try:
            with torch_threads(self.cfg.train.threads):
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
            if (op := nondeterministic_op(exc)) is not None:
                self._drop_half_written()
                raise ConfigError(
                    f"train.deterministic: {op.rstrip('.')} has no deterministic kernel in "
                    f"torch {torch.__version__} on this device; set train.deterministic = "
                    f"false (two runs may then differ); {self._saved()}.") from None
            if self.accelerator.num_processes == 1 or not peer_lost(exc):
                raise
            raise PeerLost(
                f"Another process of this run stopped near step {self.state.step} (the "
                f"launcher's report names it), so this one stops too; {self._saved()}."
            ) from None

    def _drop_half_written(self) -> None:
        """A checkpoint of this step left half-written by a stop: its space back now."""
        if self.main:
            self.checkpoints.discard(self.state.step)

    def _saved(self) -> str:
        """Where this run can be resumed from, as the end of an error sentence."""
        return resume_hint(self.run_dir)

    def _run(self, until: int | None) -> TrainResult:
        cfg = self.cfg
        step = self.state.step
        out = RunOutputs(TrainResult(self.run_dir.root, step))
        if self.main:
            truncate_after(self.run_dir.metrics, step)
            out.metrics = MetricsFile(self.run_dir.metrics)
            moved = tidy_run(self.run_dir, self.checkpoints, step, self.state.best_step)
            if moved:
                self.display.message(moved)
        self._meter, self._grad_norm, self._saved_step = Throughput(), float("nan"), -1
        self._grey = False  # set by each preview and checkpoint (_sync_grey)
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
                    # Once the last step is trained a stop is no interruption: the final
                    # checkpoint below ends the run as done.
                    early = until is not None and step >= until
                    if step < self.total_steps and (self.procs.stop_requested(stop) or early):
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
            self._claim.release()
        if self._grey and not self.bundle.options.super_res:  # an upsampler recommends none
            self.display.message(GREY_NOTE)
        out.result.step = step
        self.accelerator.wait_for_everyone()
        return out.result

    def _where(self) -> str:
        return f" (data epoch {self.stream.epoch}, position {self.stream.position})"


@SAID_AS_KEYWORDS
def train(cfg: GlideConfig, *, resume: str | None = None, adapter: ModelAdapter | None = None,
          live: bool | None = None, kinds: tuple[str, ...] | None = None, dataset: Any = None,
          quiet: bool = False) -> TrainResult:
    """Train (or resume) the run described by ``cfg``; the library entry point of the CLI.

    ``resume``: ``latest`` or a checkpoint folder, as ``--resume``; the other keywords as
    :class:`Trainer`'s. Returns the :class:`TrainResult` (run folder, step, checkpoint,
    losses logged)."""
    start = time.perf_counter()
    trainer = Trainer(cfg, resume=resume, adapter=adapter, live=live, kinds=kinds,
                      dataset=dataset, quiet=quiet)
    result = trainer.run()
    trainer.display.message(
        f"{'stopped' if result.interrupted else 'done'} at step {result.step} in "
        f"{time.perf_counter() - start:.0f}s; run: {result.run_dir}{skipped_note(result.history)}"
    )
    return result
