"""The one training engine behind ``glidectl train``, ``upsample`` and ``lora``.

Accelerate owns devices, mixed precision, gradient accumulation and DDP; the loop
(:mod:`.loop`) reads top to bottom, and checkpoints are :mod:`.trainer_checkpoints`'. A "step"
is always a global optimizer step: intervals (log, preview, checkpoint) count them and epochs
never reset them.
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path
from typing import Any

import torch

from .. import runs
from ..config import GlideConfig, validate
from ..data.pairs import own_data
from ..data.source_api import data_listing, source_notes
from ..devices import (
    deterministic_state,
    nondeterministic_op,
    set_deterministic_state,
    torch_threads,
)
from ..errors import ConfigError, GlidectlError, WriteError, keyword_errors, takes
from ..unused_keys import warn_unused
from .adapters import ModelAdapter, PartsAdapter
from .caption_check import CaptionLengthCheck
from .checkpoint_weights import NETWORK_KEYS, check_resume_kind, check_scratch_network
from .checkpointing import CheckpointManager
from .cuda_graphs import graphed_network
from .display import Display
from .ema import EMA, ema_note
from .guards import (
    Diverged,
    NonFiniteGuard,
    PeerLost,
    StoppedAgain,
    WorkerLost,
    peer_lost,
    peer_silent,
    worker_lost,
)
from .loop import TrainingLoop
from .lr_schedule import make_scheduler, warmup_note
from .metrics import skipped_note
from .model_setup import ModelBundle, build_model, resolution_note
from .objective import Objective
from .optimizers import make_optimizer
from .previews import Previewer
from .processes import Processes, collective_timeout
from .resume_state import capture_rng, restore_rng
from .run_dir import (
    RunClaim,
    check_resume_init,
    check_resume_seed,
    check_resume_trainable,
    check_writable,
    trained_run_config,
)
from .setup import (
    build_data,
    check_config,
    check_data_before_download,
    make_accelerator,
    total_steps,
)
from .state import TrainResult, TrainState
from .trainer_checkpoints import TrainerCheckpoints
from .validation import concept_validation, loss_settings
from .watchdog import TIMEOUT_KEY

# train()'s keywords and config fields for the flags of glidectl train that its errors name
SAID_AS_KEYWORDS = keyword_errors(
    {"--resume": "resume", "--name": "cfg.train.name", "--output-dir": "cfg.train.output_dir",
     "--steps": "cfg.train.steps"},
    {r" \(or --set train\.name=NAME\)": "", r"--set (\w+\.\w+)=": r"cfg.\1 = ",
     r"\(--resume RUN without --config reads RUN/config\.toml\)":
         "(load_config('RUN/config.toml') reads it)"})


def check_call(call: str, cfg: Any, resume: Any) -> str | None:
    """``resume`` as text (a Path too), or one sentence for a training call given no
    :class:`GlideConfig` (or one whose values a file could not hold, :func:`validate`), or a
    ``resume`` that is neither ``latest`` nor a path."""
    if not isinstance(cfg, GlideConfig):
        raise GlidectlError(f"{call}() takes a GlideConfig (glidectl.config.load_config(path)), "
                            f"got {cfg!r:.60} ({type(cfg).__name__}).")
    validate(cfg)  # a library caller may have changed it in code
    if resume is not None and not isinstance(resume, str | os.PathLike):
        raise GlidectlError("resume= takes 'latest' or a checkpoint folder's path, got "
                            f"{resume!r:.60} ({type(resume).__name__}).")
    return None if resume is None else os.fspath(resume)


def check_hooks(adapter: Any, live: Any, quiet: Any) -> None:
    """One sentence for a training call's ``adapter``, ``live`` or ``quiet`` of the wrong kind."""
    if adapter is not None and not all(callable(getattr(adapter, m, None)) for m in (
            "prepare", "trainable", "export_state")):
        raise takes("adapter=", "a ModelAdapter (glidectl.training.adapters: prepare, "
                    "trainable, export_state) or None", adapter)
    if live is not None and not isinstance(live, bool):
        raise takes("live=", "True, False or None (on a terminal)", live)
    if not isinstance(quiet, bool):
        raise takes("quiet=", "True or False", quiet)


class Trainer(TrainingLoop, TrainerCheckpoints):
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
        resume = check_call("Trainer", cfg, resume)
        check_hooks(adapter, live, quiet)
        self._claim = RunClaim()
        outside = _global_state()  # the caller's: seeding the run's leaves them as they were
        try:
            with torch_threads(cfg.train.threads):
                self._init(cfg, resume=resume, adapter=adapter, live=live, kinds=kinds,
                           dataset=dataset, quiet=quiet)
            self._claim.confirm()
        except (GlidectlError, KeyboardInterrupt):
            self._claim.undo()
            raise
        except RuntimeError as exc:  # another process died in a collective of the setup
            if (lost := self._peer_lost(exc, "while the run was being set up")) is None:
                raise
            self._claim.undo()
            raise lost from None
        finally:
            self._own_state = _global_state()  # the run's, seeded (or read from its resume)
            _set_global_state(outside)

    def _init(
        self, cfg: GlideConfig, *, resume: str | None = None,
        adapter: ModelAdapter | None = None, live: bool | None = None,
        kinds: tuple[str, ...] | None = None, dataset: Any = None, quiet: bool = False,
    ) -> None:
        dataset = own_data(dataset)
        cfg, validation_note = concept_validation(cfg)
        self.cfg = cfg
        from ..devices import training_precision

        self.precision, precision_note = training_precision(cfg.train.precision)
        self._notes = [n for n in (precision_note, validation_note) if n]  # shown once set up
        check_config(cfg, kinds, self.precision)
        self.kinds = kinds
        self.accelerator = acc = make_accelerator(cfg, self.precision.autocast)
        self.procs = Processes(acc, collective_timeout(cfg.train.collective_timeout_minutes,
                                                       acc.state.backend))
        self.main, self.quiet = self.procs.main, quiet
        with self.procs.setting_up(self._say_aside):
            self._set_up(resume=resume, adapter=adapter, live=live, dataset=dataset)

    def _set_up(self, *, resume: str | None, adapter: ModelAdapter | None,
                live: bool | None, dataset: Any) -> None:
        """The run folder, model, data, optimizer, EMA and resume state (the watchdog
        watches the waits for the main process)."""
        self._setup_run_dir(resume)
        self.cfg, note = trained_run_config(self.cfg, self.run_dir.root, resume)
        self._notes += filter(None, [note])
        cfg, acc = self.cfg, self.accelerator
        if self.resume_from is not None:
            check_resume_kind(self.resume_from, adapter)
            check_resume_seed(cfg, self.run_dir.root)
            check_scratch_network(cfg, self.resume_from, NETWORK_KEYS)
            if getattr(adapter, "load_checkpoint", None) is None:  # full weights, not LoRA's
                check_resume_init(cfg, self.run_dir.root)
            if adapter is None:  # train.trainable picks what trains
                check_resume_trainable(cfg, self.run_dir.root, self.resume_from)
        self._check_trainable(adapter)
        if dataset is None:
            check_data_before_download(cfg, adapter)
        # Network, tokenizer, diffusion; then what trains (the adapter hook: parts or LoRA).
        self.bundle: ModelBundle = build_model(
            cfg.model, cfg.data.resolution, self.resume_from, self.kinds,
            whole=getattr(adapter, "load_checkpoint", None) is None)
        freq = self.bundle.options.time_embed_max_freq
        if cfg.model.init == "scratch" and freq != cfg.model.time_embed_max_freq:
            # a run written before the key: its config.toml now names the checkpoint's
            self.cfg = cfg = copy.deepcopy(cfg)
            cfg.model.time_embed_max_freq = freq
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
        # The main process read its preview data too: the others wait for it here, not in
        # prepare's broadcast, which the process group's timeout bounds.
        self.procs.wait_for_main("the setup")
        if cfg.train.compile:
            model.compile()
        self.model, self.optimizer, self.scheduler = acc.prepare(model, optimizer, scheduler)
        # What a step calls: the prepared model, or CUDA graphs of it (train.cuda_graphs).
        self.net, graphs_note = graphed_network(cfg.train, acc, self.model, self.unwrapped,
                                                self.precision.autocast)
        self._notes += filter(None, [graphs_note])
        # After prepare, so the fp32 shadows live on the training device.
        tc = cfg.train
        self.ema = EMA(self.params, tc.ema_decay, tc.ema_warmup) if tc.ema_decay > 0 else None
        self.guard = NonFiniteGuard(tc.max_nonfinite)
        self.noise = torch.Generator().manual_seed(tc.seed + 1)
        self.objective = Objective(tc, self.bundle, self.stream, self.noise,
                                   world=acc.num_processes, device=acc.device,
                                   total_steps=self.total_steps)
        self.state = TrainState(self.stream, self.guard, self.precision.name,
                                (tc.batch_size, tc.grad_accum))
        self.state.schedule = (tc.lr_schedule, tc.warmup_steps, self.total_steps)
        self.state.validation = loss_settings(cfg)
        self.state.data_listing = data_listing(
            getattr(self.dataset, "source", None),
            shuffle_buffer=getattr(self.dataset, "shuffle_buffer", 0),
            resampled=getattr(self.dataset, "resampled", False))
        self.checkpoints = CheckpointManager(self.run_dir.checkpoints, cfg.checkpoint.keep_last)
        if self.resume_from is not None:
            self._load(self.resume_from)
        self._notes += self.stream.notes()  # after a resume: it keeps the run's workers
        self.display = Display(
            self.total_steps, self.state.step, live=live, enabled=self.main and not self.quiet
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
        self.previewer: Previewer | None = None

        def read_previews() -> None:  # a bad preview file stops every process in its line
            self.previewer = Previewer(cfg, self.bundle, self.unwrapped, data.shown,
                                       precision=self.precision.name)

        self.procs.on_main(read_previews, "the preview inputs")
        for note in self.previewer.notes if self.previewer is not None else ():
            self.display.message(f"Warning: {note}")
        self._captions = CaptionLengthCheck(self.bundle.tokenizer, self.bundle.options.text_ctx)

    def _setup_run_dir(self, resume: str | None) -> None:
        """The main process picks (and checks) the run folder; everyone agrees on it."""
        def pick() -> tuple[str, str | None]:
            run, resume_from = self._claim.take(self.cfg, resume)
            return str(run.root), str(resume_from) if resume_from else None

        root, resume_from = self.procs.on_main(pick, "the choice of the run folder")
        self.run_dir = runs.RunDir(Path(root))
        self.resume_from = Path(resume_from) if resume_from else None
        if self.main:
            self._claim.create(self.run_dir)
            self.procs.beat_in(self.run_dir.heartbeats)
        self.procs.wait_for_main("the run folder's creation")
        if not self.main:
            self.procs.beat_in(self.run_dir.heartbeats)

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
        # Weights + EMA + Adam's two moments, in fp32, must fit on the disk: the whole
        # network's twice, or only what trains where the adapter writes its own files
        # (LoRA's adapter folders hold no base weights).
        n_train = sum(p.numel() for p in self.params)
        n_saved = n_train if hasattr(self.adapter, "save_checkpoint") \
            else sum(p.numel() for p in model.parameters())
        self.procs.on_main(lambda: check_writable(self.run_dir.checkpoints,
                                                  4 * (2 * n_saved + 3 * n_train)),
                           "the check for free disk space")
        return model

    def _check_trainable(self, adapter: ModelAdapter | None) -> None:
        """What trains, as far as the config tells before the model is built."""
        if adapter is None and self.cfg.train.trainable == "text" \
                and self.cfg.model.init == "scratch" and self.resume_from is None:
            raise GlidectlError(
                "train.trainable = \"text\" trains nothing from model.init = \"scratch\": a new "
                "network's output layers start at zero and the frozen UNet keeps them there, "
                "so no gradient reaches the weights that train; start from trained weights "
                "(model.init) or set train.trainable = \"all\"."
            )

    @property
    def unwrapped(self) -> torch.nn.Module:
        """The network being trained, without accelerate's wrappers."""
        return self.accelerator.unwrap_model(self.model)

    # ------------------------------------------------------------------ the loop
    @SAID_AS_KEYWORDS
    def run(self, until: int | None = None) -> TrainResult:
        """Train to ``train.steps`` (or stop early at step ``until``, checkpointed, as if
        interrupted: the LR schedule still spans all steps)."""
        outside = _global_state()
        _set_global_state(self._own_state)
        try:
            with torch_threads(self.cfg.train.threads):
                return self._run(until)
        except WriteError as exc:  # a full disk: say where the run can go on from
            raise WriteError(f"{str(exc).rstrip('.')}; {self._saved()}.") from None
        except Diverged as exc:  # the steps since the last checkpoint are not saved
            self._drop_if_untrained()
            if runs.latest_step_dir(self.run_dir.checkpoints) is None:
                raise
            raise Diverged(f"{str(exc).rstrip('.')}; {self._saved()}.") from None
        except GlidectlError:  # e.g. no valid sample
            self._drop_if_untrained()
            raise
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
            if (lost := self._peer_lost(exc, f"near step {self.state.step}")) is None:
                raise
            self._drop_half_written()  # the checkpoint the main process was writing
            self._drop_if_untrained()  # e.g. another process's data gave no batch
            raise PeerLost(f"{str(lost).rstrip('.')}; {self._saved()}.") from None
        finally:  # the caller's RNGs and switches again; the run's kept for another run()
            self._own_state = _global_state()
            _set_global_state(outside)

    def _drop_if_untrained(self) -> None:
        """A new run that stopped before its first step goes (main process)."""
        if self.main and self.state.step == 0 and self.resume_from is None \
                and not self._claim.superseded:  # else the folder is a later Trainer's
            self._claim.drop_untrained(self.run_dir)

    def _peer_lost(self, exc: RuntimeError, when: str) -> PeerLost | None:
        """The error to stop with when ``exc`` is a collective failed by another process's
        death or silence (``when``: where this one was), else None."""
        procs = getattr(self, "procs", None)
        if procs is None or procs.count == 1:
            return None
        if (waited := peer_silent(exc)) is not None:
            return PeerLost(f"Another process of this run did not answer for {waited:g} s "
                            f"{when} (stuck, or its machine cut off; {TIMEOUT_KEY} sets "
                            "how long to wait), so this one stops.")
        if not peer_lost(exc):
            return None
        return PeerLost(f"Another process of this run stopped {when} (the launcher's report "
                        "names it), so this one stops too.")


def _global_state() -> tuple[dict[str, Any], tuple[Any, ...]]:
    """The process's random generators and torch's deterministic switches, which a run
    seeds and sets (``train.seed``, ``train.deterministic``)."""
    return capture_rng(), deterministic_state()


def _set_global_state(state: tuple[dict[str, Any], tuple[Any, ...]]) -> None:
    restore_rng(state[0])
    set_deterministic_state(state[1])


@SAID_AS_KEYWORDS
def train(cfg: GlideConfig, *, resume: str | None = None, adapter: ModelAdapter | None = None,
          live: bool | None = None, kinds: tuple[str, ...] | None = None, dataset: Any = None,
          quiet: bool = False) -> TrainResult:
    """Train (or resume) the run described by ``cfg``; the library entry point of the CLI.

    ``resume``: ``latest`` or a checkpoint folder, as ``--resume``; the other keywords as
    :class:`Trainer`'s. Returns the :class:`TrainResult` (run folder, step, checkpoint,
    losses logged). Keys ``cfg`` sets that the run ignores are named in warnings first, as
    ``glidectl train`` names them."""
    resume = check_call("train", cfg, resume)
    warn_unused(cfg, lora=False, quiet=quiet)
    start = time.perf_counter()
    trainer = Trainer(cfg, resume=resume, adapter=adapter, live=live, kinds=kinds,
                      dataset=dataset, quiet=quiet)
    result = trainer.run()
    trainer.display.message(
        f"{'stopped' if result.interrupted else 'done'} at step {result.step} in "
        f"{time.perf_counter() - start:.0f}s; run: {result.run_dir}{skipped_note(result.history)}"
    )
    return result
