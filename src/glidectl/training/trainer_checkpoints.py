"""The Trainer's checkpoints: saved by every process (weights, state, RNGs), read to resume."""

from __future__ import annotations

import math
import shlex
from pathlib import Path
from typing import Any

from .. import runs
from ..data.source_api import listing_change
from ..errors import WriteError, write_error
from . import resume_state as rs
from .checkpoint_weights import load_weights, write_weights
from .lr_schedule import lr_factor
from .run_dir import resume_hint
from .state import TrainResult
from .validation import loss_settings_note


class TrainerCheckpoints:
    """Saving and resuming for :class:`~glidectl.training.engine.Trainer` (a mixin: the
    Trainer sets up the model, optimizer, state and run folder it saves)."""

    def _resumable(self) -> dict[str, Any]:
        """What the resume state holds besides the loop's own state and the RNGs."""
        return {rs.OPTIMIZER: self.optimizer, rs.SCHEDULER: self.scheduler, rs.EMA: self.ema,
                rs.SCALER: self.accelerator.scaler}

    def _load(self, step_dir: Path) -> None:
        """Resume: every state file is read and checked first, then weights, then applied."""
        def weights() -> None:
            load_weights(step_dir, self.unwrapped, self.adapter, self.bundle.options,
                         self.cfg)

        changed = self.procs.on_all(lambda: rs.load_state(
            runs.state_dir(step_dir), self.accelerator, self.state, self._resumable(),
            self.noise, weights))
        self._notes.append(f"Continuing from {str(step_dir)!r} at step {self.state.step}.")
        if self.ema is None and (runs.state_dir(step_dir) / rs.EMA).is_file():
            self._notes.append("Warning: train.ema_decay = 0 drops the run's EMA weights: its "
                               "checkpoints from here on hold the training weights alone (keep "
                               "the run's train.ema_decay to go on with them).")
        was, now = self.state.saved_precision, self.precision.name
        if was is not None and was != now:
            self._notes.append(f"Resuming {str(step_dir)!r}, trained in {was}, in {now}: the run "
                               f"goes on, but not as it would have in {was} (set "
                               f"train.precision = \"{was}\" to keep it).")
        if (batch := self._batch_note(step_dir)) is not None:
            self._notes.append(batch)
        if (schedule := self._schedule_note(step_dir)) is not None:
            self._notes.append(schedule)
        if (data := self._data_note(step_dir)) is not None:
            self._notes.append(data)
        measured = loss_settings_note(self.state.saved_validation, self.state.validation,
                                      self.cfg.checkpoint.keep_best, step_dir)
        if measured is not None:  # a best of the earlier values would never be beaten
            self.state.best_val_loss = math.inf
            self._notes.append(measured)
        elif self.state.validation is None and isinstance(self.state.saved_validation, dict):
            self.state.validation = self.state.saved_validation  # val_loss off for a while
        scaler_note = rs.fresh_scaler_note(runs.state_dir(step_dir), self.accelerator.scaler)
        if scaler_note:
            self._notes.append(scaler_note)
        if changed:
            self._notes.append("Optimizer settings changed since the checkpoint; the config's "
                               f"apply from here on: {', '.join(changed)}.")

    def _batch_note(self, step_dir: Path) -> str | None:
        """A line when the run is resumed with another batch or gradient accumulation than
        its checkpoint trained with: allowed (the data go on from the same image), but the
        steps from here are not the ones the run would have taken."""
        was, now = self.state.saved_batch, self.state.batch
        if was is None or now is None or tuple(was) == tuple(now):
            return None
        keys = ("train.batch_size", "train.grad_accum")
        changed = [f"{k} {a} → {b}" for k, a, b in zip(keys, was, now, strict=True) if a != b]
        kept = " and ".join(f"{k} = {a}" for k, a in zip(keys, was, strict=True))
        return (f"Resuming {str(step_dir)!r} with {', '.join(changed)}: the run goes on from "
                f"the same image, but not as it would have (set {kept} to keep it)."
                + self._epochs_note(now))

    def _schedule_note(self, step_dir: Path) -> str | None:
        """A line when the LR from the resumed step on is not the checkpoint's schedule's
        (another ``train.lr_schedule`` or ``train.warmup_steps``, or a cosine or linear
        decay stretched over more steps): allowed, but the LR jumps where it goes on."""
        was, now, step = self.state.saved_schedule, self.state.schedule, self.state.step
        if was is None or now is None or tuple(was) == tuple(now):
            return None
        before, after = lr_factor(*was), lr_factor(*now)
        end = max(was[2], now[2], step + 1)
        if all(math.isclose(before(s), after(s)) for s in
               {*range(step, end, max(1, (end - step) // 64)), end - 1}):
            return None  # the same LR from here on (a constant one over more steps)
        keys = ("train.lr_schedule", "train.warmup_steps", "steps")
        changed = [f"{k} {a!r} → {b!r}" if isinstance(a, str) else f"{k} {a} → {b}"
                   for k, a, b in zip(keys, was, now, strict=True) if a != b]
        return (f"Resuming {str(step_dir)!r} with another LR schedule ({', '.join(changed)}): "
                f"the LR goes on at {after(step):.3g}× train.lr from step {step}, where the "
                f"checkpoint's schedule gave {before(step):.3g}×.")

    def _data_note(self, step_dir: Path) -> str | None:
        """A warning when ``data.source`` lists other samples than when the checkpoint was
        saved (files added, removed or renamed), or reads them in another order
        (``data.shuffle_buffer``, ``data.resampled``): the resume cursor counts samples of
        the epoch's shuffle, which is another one now."""
        name = getattr(self.dataset, "name", self.cfg.data.source)
        changes = listing_change(self.state.saved_listing, self.state.data_listing, name)
        if not changes:
            return None
        return (f"Warning: the data or their order changed since {str(step_dir)!r} was saved "
                f"({'; '.join(changes)}): the run goes on with the data as they are, but not "
                "as it would have, as the samples under way are shuffled anew and may be "
                "read again or left out (undo the change to resume exactly).")

    def _epochs_note(self, batch: tuple[int, int]) -> str:
        """' …' when ``train.epochs`` counts the run's steps: they are counted at the new
        ``batch`` from the run's start, so the run would read more or fewer epochs than asked;
        the ``train.steps`` that reads them (else '')."""
        epochs, step, read = self.cfg.train.epochs, self.state.step, self.stream.epochs_read()
        if epochs <= 0 or read is None or self.stream.per_process is None:
            return ""
        left = max(0.0, epochs - read) * self.stream.per_process
        steps = step + math.ceil(round(left / (batch[0] * batch[1]), 6))
        if steps == self.total_steps:
            return ""
        return (f" train.epochs = {epochs} counts {self.total_steps} steps at the new batch, "
                f"as if the run had used it from its start, but {read:.2f} epochs were read "
                f"by step {step}: for {epochs} epoch{'s' * (epochs != 1)} in all, set "
                f"train.steps = {steps} and train.epochs = 0.")

    def save_checkpoint(self) -> Path:
        """Every process calls this; the main one writes weights, all write their RNGs. A
        failed write removes the temp folder, so a full disk gets that space back."""
        acc, step = self.accelerator, self.state.step
        acc.wait_for_everyone()
        self._sync_grey()
        self.stream.gather_ranks(lambda t: acc.gather(t.to(acc.device)).cpu())
        self.state.data_total = self._data_totals()
        tmp = self.checkpoints.tmp_dir(step)
        # The others wait for the main process's files for as long as a preview: writing
        # gigabytes to a slow disk may outlast the process group's timeout.
        what = f"step {step}'s checkpoint"
        try:
            if self.main:
                self.procs.busy(what)
                self.checkpoints.begin(step)
                self._write_weights(step, tmp)
            rs.save_state(runs.state_dir(tmp), acc, self.state.state_dict(),
                          self._resumable(), self.noise, lambda: self.procs.wait_for_main(what))
            self.procs.wait_for_main(what)
            final = self.checkpoints.final_dir(step)
            if self.main:
                self.procs.busy(what)
                final = self.checkpoints.commit(step)
                self.display.message(f"checkpoint: {final}")
        except (OSError, WriteError) as exc:
            if self.main:
                self.checkpoints.discard(step)
            raise exc if isinstance(exc, WriteError) else write_error(tmp, exc) from None
        self.procs.wait_for_main(what)
        return final

    def _write_weights(self, step: int, tmp: Path) -> None:
        """The weights (or adapters) of a checkpoint into its temp folder (main process)."""
        meta = {"step": str(step), "run": self.run_dir.name}
        if self.previewer is not None:  # the model's recommended sampling settings
            from ..pipeline import RECOMMENDED_KEY

            meta[RECOMMENDED_KEY] = self.previewer.recommended()
        if self.bundle.options.super_res:  # its inputs' filter: a resume may change it
            from ..eval_upsampler_inputs import RESAMPLE_KEY

            meta[RESAMPLE_KEY] = self.cfg.data.low_res_resample
        write_weights(tmp, step, self.unwrapped, self.adapter, self.ema, self.bundle.options,
                      meta)

    def _checkpoint(self, result: TrainResult) -> None:
        """Write this step's checkpoint unless it was just written."""
        if self._saved_step != self.state.step:
            result.checkpoint = self.save_checkpoint()
            self._saved_step = self.state.step

    def _drop_half_written(self) -> None:
        """A checkpoint of this step left half-written by a stop: its space back now."""
        if self.main:
            self.checkpoints.discard(self.state.step)

    def _saved(self) -> str:
        """Where this run can be resumed from, as the end of an error sentence. An unnamed
        run with no checkpoint is started over by its own name: the same command would
        begin the next ``run-NNN`` beside it."""
        if self.cfg.train.name or runs.latest_step_dir(self.run_dir.checkpoints) is not None:
            return resume_hint(self.run_dir)
        return ("it has no checkpoint yet: run the same command again with --name "
                f"{shlex.quote(self.run_dir.name)} to start it over in its folder")
