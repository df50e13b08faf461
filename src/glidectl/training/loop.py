"""The Trainer's loop: optimizer steps, metric records, and the previews and validation due."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch

from ..config import save_config
from ..glide.checkpoints import state_sha256
from ..greyscale import GREY_NOTE
from .guards import StopFlag
from .metrics import (
    MetricsFile,
    RunOutputs,
    Throughput,
    add_counts,
    data_counts,
    truncate_after,
)
from .run_dir import tidy_run
from .state import TrainResult
from .trackers import Trackers


class TrainingLoop:
    """The loop a :class:`~glidectl.training.engine.Trainer` runs (a mixin: the Trainer sets
    up the model, data, optimizer and outputs it uses)."""

    def _sync_grey(self) -> None:
        """Whether every training image any process has seen is grey (a collective): the
        previews then sample grey and the checkpoints recommend it."""
        seen = self.procs.gather(self.state.grey_data)
        self._grey = all(v is True for v in seen)
        if self.previewer is not None:
            self.previewer.grey = self._grey

    def _preview(self, trackers: Trackers) -> None:
        self._sync_grey()
        what = f"step {self.state.step}'s preview"
        if self.previewer is None or self.cfg.preview.every <= 0:
            self.procs.wait_for_main(what)
            return
        self.procs.busy(what)
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
        self.procs.wait_for_main(what)

    def _validate(self, step: int, out: RunOutputs) -> None:
        """val_loss (training weights) and FID/KID (EMA weights, like exports) on the held-out
        samples, on the main process; with checkpoint.keep_best a new lowest val_loss writes
        a checkpoint and points ``best`` at it (then prunes: the previous best may go)."""
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

        values = self.procs.on_main(measure, f"step {step}'s validation")
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
                self.checkpoints.prune()  # the previous best: kept only while best named it
                self.display.message(f"best val_loss {values['val_loss']:.5f}: step {step}")

    def _first_batch(self) -> None:
        """Take the run's first micro-batch now and look at its images, so the step-0
        preview already samples grey for grey data; :meth:`_next_batch` hands it to the
        first step. Training is unchanged: the same batches in the same order, and the
        preview forks the RNG it draws from, so no draw moves."""
        self._pending = self._take_batch()

    def _take_batch(self) -> dict[str, Any]:
        """The stream's next micro-batch, its images looked at (grey data) once."""
        batch = self.stream.next()
        note = self.state.see_images(batch["image"])
        if note:
            self.display.message(note)
        return batch

    def _next_batch(self) -> tuple[dict[str, Any], float]:
        """The next micro-batch and the seconds waited for it (0 for one taken before the
        throughput window began)."""
        if self._pending is not None:
            batch, self._pending = self._pending, None
            return batch, 0.0
        batch = self._take_batch()
        return batch, self.stream.last_wait

    def _optimizer_step(self) -> tuple[torch.Tensor, bool]:
        """``grad_accum`` micro-batches, then one optimizer step unless the loss was not
        finite: (loss terms averaged over processes, stepped)."""
        acc, tc = self.accelerator, self.cfg.train
        terms = torch.zeros(3, device=acc.device)
        wait, stepped = 0.0, False
        for _ in range(tc.grad_accum):
            with acc.accumulate(self.model):
                batch, waited = self._next_batch()
                wait += waited
                if hasattr(self.dataset, "warm_up"):  # kohya's token warm-up, at this step
                    self.dataset.warm_up(batch, self.state.step, self.total_steps)
                if self.main and (note := self._captions.see(batch.get("caption", ()))):
                    self.display.message(note)
                losses = self.objective.losses(self.net, batch, self.state.step,
                                                self.adapter, self.unwrapped)
                loss = self.objective.weighted(losses["loss"], batch).mean()
                acc.backward(loss)
                terms += torch.stack([
                    loss.detach(), losses["mse"].mean().detach(), losses["vb"].mean().detach(),
                ]) / tc.grad_accum
                if acc.sync_gradients:
                    terms = acc.reduce(terms, "mean")
                    value, what = terms[0].item(), "loss"
                    if math.isfinite(value):
                        self._grad_norm = float(acc.clip_grad_norm_(
                            self.params, tc.grad_clip if tc.grad_clip > 0 else math.inf))
                        # a finite loss can still give a NaN/inf gradient, which would make
                        # every weight and the EMA NaN; fp16's GradScaler skips those itself
                        if acc.scaler is None:
                            value, what = self._grad_norm, "gradient norm"
                    stepped = self.guard.check(value, self.state.step + 1, self._where(),
                                               what)
                    if stepped:
                        self.optimizer.step()
                        self.scheduler.step()
                    # CUDA graphs need each .grad kept (cuda_graphs.GraphedNetwork._record)
                    self.optimizer.zero_grad(
                        set_to_none=not getattr(self.net, "KEEPS_GRADS", False))
        self._meter.add(tc.batch_size * acc.num_processes * tc.grad_accum, wait)
        return terms, stepped

    def _data_totals(self) -> dict[str, Any]:
        """Samples accepted and rejected by every process since the run began (a collective:
        every process calls it)."""
        return add_counts(self.state.data_base, *self.procs.gather(self.stream.counts()))

    def _record(self, step: int, sums: torch.Tensor, n: int) -> dict[str, Any]:
        """The metrics record of a logging window of ``n`` steps (a collective). ``epoch``:
        the data epoch of the process furthest behind, as the checkpoint's
        (:func:`~glidectl.training.state.furthest_behind`)."""
        each = self.procs.gather((self.stream.counts(), self.stream.epoch))
        return {
            "step": step, "epoch": min(epoch for _, epoch in each),
            "loss": float(sums[0] / n), "mse": float(sums[1] / n), "vb": float(sums[2] / n),
            "lr": self.scheduler.get_last_lr()[0], "grad_norm": self._grad_norm,
            **self._meter.read(), "skipped_nonfinite": self.guard.total,
            **data_counts(add_counts(self.state.data_base, *(counts for counts, _ in each))),
            "preview_failures": self.previewer.failures if self.previewer else 0,
        }

    def _run(self, until: int | None) -> TrainResult:
        """The run from setup to end, watched throughout (several processes): the main
        process's run-folder checks, the loop, and the closing of the trackers, which the
        other processes wait for."""
        self._claim.begin(self.run_dir.root)
        out = RunOutputs(TrainResult(self.run_dir.root, self.state.step))
        try:
            with self.procs.watching(self._say_aside):
                try:
                    self._loop(until, out)
                finally:
                    self.procs.busy("the run's end")
                    out.close()
                    self.stream.close()
                self.procs.wait_for_main("the run's end (closing its trackers)")
        finally:
            self.procs.end_beats()
            if out.result.interrupted:  # run() again goes on: the folder stays this one's
                self._claim.pause()
            else:
                self._claim.release()
        if self._grey:
            self.display.message(GREY_NOTE)
        out.result.step = self.state.step
        return out.result

    def _loop(self, until: int | None, out: RunOutputs) -> None:
        """Train from ``self.state.step`` to the last step (or ``until``, or a stop), with
        previews, logs, validation and checkpoints."""
        cfg = self.cfg
        step = self.state.step
        idle = step >= self.total_steps  # nothing to train: the run's later steps stay
        if self.main:
            self.procs.busy("the run folder's checks")
            if not idle:
                truncate_after(self.run_dir.metrics, step)
            out.metrics = MetricsFile(self.run_dir.metrics)
            moved = tidy_run(self.run_dir, self.checkpoints, step, self.state.best_step,
                             beating=self.procs.count > 1, idle=idle)
            if moved:
                self.display.message(moved)
        self._meter, self._grad_norm, self._saved_step = Throughput(), float("nan"), -1
        self._grey = False  # set by each preview and checkpoint (_sync_grey)
        self._pending: dict[str, Any] | None = None  # a batch taken early (_first_batch)
        self._epoch_watch = cfg.train.epochs > 0 and self.stream.epoch == 0  # _short_epoch
        if idle:
            self.display.message(f"The run is already at step {step} of {self.total_steps}: "
                                 "nothing to train (pass a larger --steps to go on).")
        # the steps since the last record: a resumed run's window goes on from its checkpoint
        sums, logged = torch.tensor(self.state.window[0]), self.state.window[1]
        self.model.train()
        self.procs.busy("the trackers' start")
        if not idle:  # nothing to log: no empty tracker run (a W&B run, TensorBoard files)
            def start() -> None:  # the main process's (W&B without a login) stops them all
                out.trackers = Trackers(self.accelerator, cfg, self.run_dir,
                                        self.state.tracker_ids, say=self.display.message,
                                        step=step)

            if not self.main:
                start()  # none: the main process alone logs
            self.procs.on_main(start, "the trackers' start")
            self.state.tracker_ids = out.trackers.ids
        # once nothing can refuse the run: a refused (or idle) resume leaves it as it was; a
        # resume's settings once its first step trained (its data may give no batch)
        unsaved = step < self.total_steps
        if unsaved and step == 0:
            self._save_config()
            unsaved = False
        self.procs.wait_for_main("the trackers' start")
        with StopFlag() as stop, self.display:
            if step == 0:
                if self.total_steps > 0:
                    self._first_batch()
                self._preview(out.trackers)
            self._meter.reset()
            while step < self.total_steps:
                self.procs.step(step + 1)
                terms, stepped = self._optimizer_step()
                if not stepped:
                    continue
                if self.ema is not None:
                    self.ema.update()
                step = self.state.step = step + 1
                if unsaved:
                    self._save_config()
                    unsaved = False
                self._short_epoch(step)
                sums, logged = sums + terms.float().cpu(), logged + 1
                self.state.window = sums.tolist(), logged
                self.display.advance(step)
                out.result.last_loss = float(terms[0])
                # A record is written after its step's preview, so it counts that preview's
                # failure; previews, validation and checkpoints are left out of throughput.
                log_due = step % cfg.log.every == 0 or step == self.total_steps
                if log_due:
                    record = self._record(step, sums, logged)
                    sums, logged = torch.zeros(3), 0
                    self.state.window = sums.tolist(), logged
                    self._meter.reset()
                with self._meter.paused():
                    if cfg.preview.every > 0 and step % cfg.preview.every == 0:
                        self._preview(out.trackers)
                    if log_due:
                        if self.previewer is not None:
                            record["preview_failures"] = self.previewer.failures
                        out.result.logged(record)
                        out.write(record, step)
                        self.display.log(record)
                    self._validate(step, out)
                # Once the last step is trained a stop is no interruption: the final
                # checkpoint below ends the run as done.
                early = until is not None and step >= until
                if self.display.closed and not stop.requested:  # stdout's reader is gone
                    stop.requested, stop.signal_name = True, "stdout closed"
                if step < self.total_steps and (self.procs.stop_requested(stop) or early):
                    out.result.interrupted = True
                    break
                if step == self.total_steps or (
                        cfg.checkpoint.every > 0 and step % cfg.checkpoint.every == 0):
                    with self._meter.paused():
                        self._checkpoint(out.result)
            if out.result.interrupted:
                self.display.message(f"{stop.signal_name or 'stop'}: saving step {step}")
                self._checkpoint(out.result)
                if self.display.full is not None:  # a failure, not a stop: said as one
                    raise self.display.full

    def _save_config(self) -> None:
        """Write the run's config.toml (main process; the others share its error)."""
        self.procs.on_main(lambda: save_config(self.cfg, self.run_dir.config),
                           "the run's config.toml")

    def _short_epoch(self, step: int) -> None:
        """Once, as the first epoch ends: ``train.epochs`` counted its steps from the samples
        the data lists, rejected ones too, so a first epoch well short of its share means
        the run reads the usable samples more often than asked; say how often, and the
        ``train.steps`` that reads them ``train.epochs`` times."""
        if not self._epoch_watch or self.stream.epoch < 1:
            return
        self._epoch_watch = False
        epochs, done = self.cfg.train.epochs, step - 1  # this step read the next epoch
        # the whole steps one epoch holds (accumulation runs on across an epoch's end)
        whole = (self.total_steps / epochs if self.stream.span else
                 self.stream.steps_per_epoch(self.cfg.train.grad_accum) or 0)
        if not self.main or done < 1 or done >= 0.95 * whole:
            return
        listed = getattr(self.dataset, "num_samples", None)
        self.display.message(
            f"train.epochs = {epochs} came to {self.total_steps} steps from the {listed} "
            f"samples the data lists, but the first epoch ended after {done}: rejected "
            "samples (data_skipped in metrics.jsonl; glidectl dataset inspect names them) "
            f"leave fewer. The run goes on to step {self.total_steps}, about "
            f"{self.total_steps / done:.1f} passes over the usable samples; for {epochs} "
            f"epoch{'s' * (epochs != 1)}, set "
            f"train.steps = {epochs * done} and train.epochs = 0.")

    def _say_aside(self, text: str) -> None:
        """A line of the watchdog's: on the main process's display once it has one, else
        printed (the others' display shows nothing), unless quiet."""
        display = getattr(self, "display", None)  # none yet while the run is set up
        if self.main and display is not None:
            display.message(text)
        elif not self.quiet:
            print(text, flush=True)

    def _where(self) -> str:
        return f" (data epoch {self.stream.epoch}, position {self.stream.position})"
