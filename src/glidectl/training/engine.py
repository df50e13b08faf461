"""The one training engine behind ``glidectl train``, ``upsample`` and ``lora``.

Accelerate owns devices, mixed precision, gradient accumulation and DDP; the loop below
reads top to bottom. A "step" is always a global optimizer step: intervals (log, preview,
checkpoint) count them and epochs never reset them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import runs
from ..config import GlideConfig, save_config, to_dict
from ..errors import GlidectlError
from . import resume_state as rs
from .adapters import ModelAdapter, PartsAdapter
from .checkpointing import CheckpointManager, resolve_checkpoint
from .data_stream import DataStream
from .display import Display
from .ema import EMA
from .guards import NonFiniteGuard, StopFlag
from .lr_schedule import make_scheduler
from .metrics import MetricsFile, Throughput, truncate_after
from .model_setup import ModelBundle, build_model
from .previews import Previewer
from .run_dir import check_writable, next_run_name


@dataclass
class TrainResult:
    """What a finished (or interrupted) run left behind."""

    run_dir: Path
    step: int
    interrupted: bool = False
    checkpoint: Path | None = None
    last_loss: float = float("nan")
    history: list[dict[str, Any]] = field(default_factory=list)


class TrainState:
    """The loop's own resume state (``state/train.json``; the noise generator's state goes
    with the other RNGs)."""

    def __init__(self, stream: DataStream, guard: NonFiniteGuard):
        self.step = 0
        self.stream, self.guard = stream, guard
        self.wandb_id: str | None = None

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step, "data": self.stream.state_dict(),
            "guard": self.guard.state_dict(), "wandb_id": self.wandb_id,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.stream.load_state_dict(state["data"])
        self.guard.load_state_dict(state["guard"])
        self.wandb_id = state.get("wandb_id")


def _pick_run_dir(cfg: GlideConfig, resume: str | None) -> tuple[runs.RunDir, Path | None]:
    """(run dir, checkpoint to resume from) from the config and --resume."""
    output = Path(cfg.train.output_dir)
    if resume and resume != "latest":
        step_dir = resolve_checkpoint(resume)
        return runs.RunDir(runs.run_of_step_dir(step_dir)), step_dir
    if resume == "latest":
        if cfg.train.name:
            run = runs.RunDir(output / cfg.train.name)
        else:
            found = list(output.glob(f"*/{runs.CHECKPOINTS_DIR}/{runs.LATEST}")) \
                if output.is_dir() else []
            if not found:
                raise GlidectlError(
                    f"--resume latest: no run with checkpoints under {str(output)!r}; "
                    "pass --name or a checkpoint path."
                )
            run = runs.RunDir(max(found, key=lambda p: p.stat().st_mtime).parent.parent)
        return run, resolve_checkpoint("latest", run.checkpoints)
    name = cfg.train.name or next_run_name(output)
    run = runs.RunDir(output / name)
    if CheckpointManager(run.checkpoints).latest() is not None:
        raise GlidectlError(
            f"Run {str(run.root)!r} already has checkpoints; pass --resume latest to go on, "
            "or pick another --name."
        )
    return run, None


def _total_steps(cfg: GlideConfig, stream: DataStream) -> int:
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


def _has_accelerator_device() -> bool:
    """A GPU-like device; without one, torchrun/accelerate processes use gloo on the CPU."""
    if torch.cuda.is_available():
        return True
    xpu = getattr(torch, "xpu", None)
    mps = getattr(torch.backends, "mps", None)
    return bool((xpu is not None and xpu.is_available())
                or (mps is not None and mps.is_available()))


def _random_masks(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """Inpainting masks (1 = keep): a random rectangle hidden per sample."""
    masks = torch.ones(n, 1, size, size)
    lo = torch.randint(0, size // 2, (n, 2), generator=gen)
    extent = torch.randint(size // 4, size // 2 + 1, (n, 2), generator=gen)
    for i in range(n):
        y, x = lo[i].tolist()
        h, w = extent[i].tolist()
        masks[i, :, y:y + h, x:x + w] = 0
    return masks


def _split_holdout(cfg: GlideConfig, opts: Any, dataset: Any, global_batch: int,
                   k: int = 8) -> tuple[Any, Any]:
    """(training data, preview data). Upsampler previews hold out the last ``k`` samples of a
    map-style dataset; base previews use prompts, so nothing is held out."""
    from torch.utils.data import IterableDataset, Subset

    if (not opts.super_res or cfg.preview.low_res or cfg.preview.every <= 0
            or isinstance(dataset, IterableDataset)):
        return dataset, dataset
    n = len(dataset)
    k = min(k, n - global_batch)
    if k <= 0:
        return dataset, dataset
    return Subset(dataset, range(n - k)), Subset(dataset, range(n - k, n))


class Trainer:
    """Sets up a run from a config, then :meth:`run` trains it."""

    def __init__(
        self, cfg: GlideConfig, *, resume: str | None = None,
        adapter: ModelAdapter | None = None, live: bool | None = None,
        kinds: tuple[str, ...] | None = None, dataset: Any = None, quiet: bool = False,
    ):
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        self.cfg = cfg
        tc = cfg.train
        if kinds is not None and cfg.model.kind not in kinds:
            raise GlidectlError(
                f"model.kind is {cfg.model.kind!r}, but this command trains "
                f"{' or '.join(kinds)} models; set model.kind or use the other command "
                "(train: base models, upsample: upsamplers)."
            )
        from ..devices import training_precision

        self.precision = training_precision(tc.precision)
        if self.precision.name == "fp16" and not _has_accelerator_device():
            raise GlidectlError(
                "train.precision = \"fp16\" needs a GPU (it uses a GradScaler on CUDA); on a "
                "CPU use \"bf16\" or \"no\"."
            )
        if tc.threads > 0:
            torch.set_num_threads(tc.threads)
        # Accelerate keeps process-wide singletons; a second run in the same process (a
        # notebook, the tests) may use another precision or accumulation, so start them afresh.
        # PartialState (the process group) is kept.
        from accelerate.state import AcceleratorState, GradientState

        AcceleratorState._reset_state()
        GradientState._reset_state()
        self.accelerator = acc = Accelerator(
            mixed_precision=self.precision.autocast, gradient_accumulation_steps=tc.grad_accum,
            step_scheduler_with_optimizer=False, cpu=not _has_accelerator_device(),
        )
        self.main = acc.is_main_process
        set_seed(tc.seed)

        # Run directory: the main process decides (and checks), everyone agrees.
        def pick() -> tuple[str, str | None]:
            run, resume_from = _pick_run_dir(cfg, resume)
            check_writable(run.root)
            return str(run.root), str(resume_from) if resume_from else None

        root, resume_from = self._on_main(pick)
        self.run_dir = runs.RunDir(Path(root))
        self.resume_from = Path(resume_from) if resume_from else None
        if self.main:
            self.run_dir.create()
            save_config(cfg, self.run_dir.config)
        acc.wait_for_everyone()

        # Network, tokenizer, diffusion; then what trains (the adapter hook: parts or LoRA).
        self.bundle: ModelBundle = build_model(cfg.model, cfg.data.resolution)
        opts = self.bundle.options
        self.adapter = adapter or PartsAdapter(tc.trainable)
        model = self.adapter.prepare(self.bundle.model)
        if tc.gradient_checkpointing:
            model.set_gradient_checkpointing(True)
        named = self.adapter.trainable(model)
        if not named:
            raise GlidectlError(f"train.trainable = {tc.trainable!r} leaves nothing to train.")
        self.params = [p for _, p in named]
        # Weights + EMA + Adam's two moments, in fp32, must fit on the disk.
        n_all = sum(p.numel() for p in model.parameters())
        n_train = sum(p.numel() for p in self.params)
        self._on_main(lambda: check_writable(self.run_dir.checkpoints,
                                             4 * (2 * n_all + 3 * n_train)))

        # Data: sharded per process, resumable by cursor.
        preview_data = None
        if dataset is None:
            from ..data import build_dataset

            size = cfg.data.resolution or opts.image_size
            data_args = dict(
                tokenizer=self.bundle.tokenizer, image_size=size, text_ctx=opts.text_ctx,
                low_res_size=(size // 4) if opts.super_res else None, seed=tc.seed,
            )
            dataset = build_dataset(cfg.data, train=True, rank=acc.process_index,
                                    world_size=acc.num_processes, **data_args)
            if self.main and cfg.preview.every > 0:
                # Previews read the data as for evaluation: no augmentation or caption dropout.
                preview_data = build_dataset(cfg.data, train=False, **data_args)
        self.dataset = dataset
        train_data, holdout = _split_holdout(cfg, opts, dataset, tc.batch_size * acc.num_processes)
        if preview_data is not None and holdout is dataset:
            holdout = preview_data
        self.stream = DataStream(
            train_data, batch_size=tc.batch_size, rank=acc.process_index,
            world=acc.num_processes, seed=tc.seed, workers=cfg.data.workers,
        )
        self.total_steps = _total_steps(cfg, self.stream)

        optimizer = torch.optim.AdamW(
            self.params, lr=tc.lr, betas=(tc.adam_beta1, tc.adam_beta2), eps=tc.adam_eps,
            weight_decay=tc.weight_decay,
        )
        scheduler = make_scheduler(optimizer, tc.lr_schedule, tc.warmup_steps, self.total_steps)
        if tc.compile:
            model.compile()
        self.model, self.optimizer, self.scheduler = acc.prepare(model, optimizer, scheduler)
        # After prepare, so the fp32 shadows live on the training device.
        self.ema = EMA(self.params, tc.ema_decay, tc.ema_warmup) if tc.ema_decay > 0 else None
        self.guard = NonFiniteGuard(tc.max_nonfinite)
        self.noise = torch.Generator().manual_seed(tc.seed + 1)
        self.state = TrainState(self.stream, self.guard)
        self.checkpoints = CheckpointManager(self.run_dir.checkpoints, cfg.checkpoint.keep_last)
        if self.resume_from is not None:
            self._load(self.resume_from)
        self.display = Display(
            self.total_steps, self.state.step, live=live, enabled=self.main and not quiet
        )
        if tc.precision == "auto":
            self.display.message(self.precision.line())
        self.previewer = Previewer(cfg, self.bundle, self.unwrapped, holdout) if self.main else None

    # ------------------------------------------------------------------ helpers
    def _on_main(self, fn: Any) -> Any:
        """Run ``fn`` on the main process and share its result (or its user error) with
        every process, so a failed check stops all ranks instead of leaving them waiting."""
        from accelerate.utils import broadcast_object_list

        box: list[Any] = [None]
        if self.main:
            try:
                box = [("ok", fn())]
            except GlidectlError as exc:
                box = [("error", str(exc))]
        if self.accelerator.num_processes > 1:
            broadcast_object_list(box)
        status, value = box[0]
        if status == "error":
            raise GlidectlError(value)
        return value

    @property
    def unwrapped(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)

    def _load(self, step_dir: Path) -> None:
        """Resume: read and check every state file first, then weights, then apply."""
        acc = self.accelerator
        parts = rs.read_resume_state(
            runs.state_dir(step_dir), acc.process_index, ema=self.ema is not None,
            scaler=acc.scaler is not None,
        )
        loader = getattr(self.adapter, "load_checkpoint", None)
        if loader is not None:
            loader(self.unwrapped, step_dir)
        else:
            from ..glide import read_weights

            state_dict, _ = read_weights(step_dir / runs.MODEL_FILE)
            self.unwrapped.load_state_dict(state_dict)
        targets: list[tuple[str, Any, str]] = [
            ("optimizer", self.optimizer, rs.OPTIMIZER),
            ("scheduler", self.scheduler, rs.SCHEDULER),
            ("ema", self.ema, rs.EMA), ("scaler", acc.scaler, rs.SCALER),
        ]
        try:
            train = dict(parts["train"])
            acc.step = int(train.pop("micro_step", 0))
            self.state.load_state_dict(train)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise rs.apply_failure(step_dir, rs.TRAIN, exc) from None
        for key, target, name in targets:
            if key in parts:
                try:
                    target.load_state_dict(parts[key])
                except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
                    raise rs.apply_failure(step_dir, name, exc) from None
        try:
            rs.restore_rng(parts["rng"], self.noise)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise rs.apply_failure(step_dir, rs.rng_file(acc.process_index), exc) from None

    def _save_state(self, state_dir: Path) -> None:
        """Write the resume state (no pickles): shared parts on the main process, then every
        process its own RNGs."""
        acc = self.accelerator
        if self.main:
            state_dir.mkdir(parents=True, exist_ok=True)
            rs.write_state_file(state_dir / rs.TRAIN,
                                {**self.state.state_dict(), "micro_step": acc.step})
            rs.write_state_file(state_dir / rs.OPTIMIZER, self.optimizer.state_dict())
            rs.write_state_file(state_dir / rs.SCHEDULER, self.scheduler.state_dict())
            if acc.scaler is not None:
                rs.write_state_file(state_dir / rs.SCALER, acc.scaler.state_dict())
            if self.ema is not None:
                rs.write_state_file(state_dir / rs.EMA, self.ema.state_dict())
        acc.wait_for_everyone()
        rs.write_state_file(state_dir / rs.rng_file(acc.process_index),
                            rs.capture_rng(self.noise))

    def save_checkpoint(self) -> Path:
        """Every process calls this; the main one writes weights, all write their RNGs."""
        from ..glide import save_weights

        acc, step = self.accelerator, self.state.step
        acc.wait_for_everyone()
        self.stream.gather_ranks(lambda t: acc.gather(t.to(acc.device)).cpu())
        tmp = self.checkpoints.tmp_dir(step)
        if self.main:
            self.checkpoints.begin(step)
            model = self.unwrapped
            writer = getattr(self.adapter, "save_checkpoint", None)
            if writer is not None:  # e.g. LoRA: adapter folders instead of full weights
                writer(model, tmp, step, self.ema)
            else:
                meta = {"step": str(step), "run": self.run_dir.name}
                opts = self.bundle.options
                save_weights(self.adapter.export_state(model), tmp / runs.MODEL_FILE,
                             opts, meta)
                if self.ema is not None:
                    with self.ema.swapped():
                        save_weights(self.adapter.export_state(model), tmp / runs.EMA_FILE,
                                     opts, meta)
        self._save_state(runs.state_dir(tmp))
        acc.wait_for_everyone()
        final = self.checkpoints.final_dir(step)
        if self.main:
            final = self.checkpoints.commit(step)
            self.display.message(f"checkpoint: {final}")
        acc.wait_for_everyone()
        return final

    def _batch_noise(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """Timesteps, noise (and inpaint masks) for the GLOBAL batch, sliced to this rank, so
        N processes draw exactly what one process with the whole batch would."""
        acc, x0 = self.accelerator, batch["image"]
        b, world = x0.shape[0], acc.num_processes
        gen, T = self.noise, self.bundle.diffusion.num_timesteps
        t = torch.randint(0, T, (b * world,), generator=gen)
        noise = torch.randn((b * world, *x0.shape[1:]), generator=gen)
        masks = None
        if self.bundle.options.inpaint:
            masks = _random_masks(b * world, x0.shape[-1], gen)
        mine = torch.tensor(self.stream.global_positions(b))
        dev = acc.device
        return t[mine].to(dev), noise[mine].to(dev), None if masks is None else \
            masks[mine].to(dev)

    def _losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        dev = self.accelerator.device
        x0 = batch["image"].to(dev)
        tokens, mask = batch["tokens"].to(dev), batch["mask"].to(dev)
        t, noise, inpaint_mask = self._batch_noise(batch)
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
            model_fn, x0, t, noise, loss_type=self.cfg.train.loss, weights=weights
        )

    def _stop_everywhere(self, flag: StopFlag) -> bool:
        if self.accelerator.num_processes == 1:
            return flag.requested
        wanted = torch.tensor([float(flag.requested)], device=self.accelerator.device)
        return bool(self.accelerator.reduce(wanted, "sum").item() > 0)

    def _preview(self, wandb: Any) -> None:
        if self.previewer is None or self.cfg.preview.every <= 0:
            self.accelerator.wait_for_everyone()
            return
        self.unwrapped.eval()
        try:
            if self.ema is not None:
                with self.ema.swapped():
                    out = self.previewer.run(self.state.step, self.run_dir.previews)
            else:
                out = self.previewer.run(self.state.step, self.run_dir.previews)
        finally:
            self.unwrapped.train()
        if self.previewer.error:
            self.display.message(f"Warning: {self.previewer.error}")
        if out is not None:
            self.display.message(f"preview: {out.path}")
            if wandb is not None:
                wandb.log_images(self.state.step, "preview", out.images, out.captions)
        self.accelerator.wait_for_everyone()

    # ------------------------------------------------------------------ the loop
    def run(self, until: int | None = None) -> TrainResult:
        """Train to ``train.steps`` (or stop early at step ``until``, checkpointed, as if
        interrupted: the LR schedule still spans all steps)."""
        acc, cfg, tc = self.accelerator, self.cfg, self.cfg.train
        step = self.state.step
        wandb = None
        metrics = None
        if self.main:
            truncate_after(self.run_dir.metrics, step)
            metrics = MetricsFile(self.run_dir.metrics)
            if cfg.log.wandb_project:
                from .wandb_log import WandbLogger

                wandb = WandbLogger(
                    cfg.log.wandb_project, cfg.log.wandb_entity, cfg.log.wandb_mode,
                    self.run_dir.name, to_dict(cfg), self.run_dir.root, self.state.wandb_id,
                )
                self.state.wandb_id = wandb.id
        result = TrainResult(self.run_dir.root, step)
        meter = Throughput()
        sums = torch.zeros(3)
        logged_steps = 0
        grad_norm = float("nan")
        global_batch = tc.batch_size * acc.num_processes * tc.grad_accum
        self.model.train()
        try:
            with StopFlag() as stop, self.display:
                if step == 0:
                    self._preview(wandb)
                meter.reset()
                stepped = False
                while step < self.total_steps:
                    terms = torch.zeros(3, device=acc.device)
                    wait = 0.0
                    for _ in range(tc.grad_accum):
                        with acc.accumulate(self.model):
                            batch = self.stream.next()
                            wait += self.stream.last_wait
                            losses = self._losses(batch)
                            loss = losses["loss"].mean()
                            acc.backward(loss)
                            terms += torch.stack([
                                loss.detach(), losses["mse"].mean().detach(),
                                losses["vb"].mean().detach(),
                            ]) / tc.grad_accum
                            if acc.sync_gradients:
                                terms = acc.reduce(terms, "mean")
                                if self.guard.check(terms[0].item(), step, self._where()):
                                    grad_norm = float(acc.clip_grad_norm_(
                                        self.params, tc.grad_clip if tc.grad_clip > 0
                                        else math.inf))
                                    self.optimizer.step()
                                    self.scheduler.step()
                                    stepped = True
                                else:
                                    stepped = False
                                self.optimizer.zero_grad(set_to_none=True)
                    meter.add(global_batch, wait)
                    if not stepped:
                        continue
                    if self.ema is not None:
                        self.ema.update()
                    step = self.state.step = step + 1
                    sums += terms.float().cpu()
                    logged_steps += 1
                    self.display.advance(step)
                    result.last_loss = float(terms[0])

                    if step % cfg.log.every == 0 or step == self.total_steps:
                        record = {
                            "step": step, "epoch": self.stream.epoch,
                            "loss": float(sums[0] / logged_steps),
                            "mse": float(sums[1] / logged_steps),
                            "vb": float(sums[2] / logged_steps),
                            "lr": self.scheduler.get_last_lr()[0], "grad_norm": grad_norm,
                            **meter.read(), "skipped_nonfinite": self.guard.total,
                            **self._data_counts(),
                            "preview_failures": self.previewer.failures if self.previewer else 0,
                        }
                        sums.zero_()
                        logged_steps = 0
                        meter.reset()
                        result.history.append(record)
                        if self.main:
                            metrics.write(record)
                            self.display.log(record)
                            if wandb is not None:
                                wandb.log_scalars(record)
                    if cfg.preview.every > 0 and step % cfg.preview.every == 0:
                        self._preview(wandb)
                    is_last = step == self.total_steps
                    if self._stop_everywhere(stop) or (until is not None and step >= until):
                        result.interrupted = True
                        break
                    if is_last or (cfg.checkpoint.every > 0 and step % cfg.checkpoint.every == 0):
                        result.checkpoint = self.save_checkpoint()
                if result.interrupted:
                    self.display.message(f"{stop.signal_name or 'stop'}: saving step {step}")
                    result.checkpoint = self.save_checkpoint()
        finally:
            if metrics is not None:
                metrics.close()
            if wandb is not None:
                wandb.finish()
        result.step = step
        acc.wait_for_everyone()
        return result

    def _where(self) -> str:
        return f" (data epoch {self.stream.epoch}, position {self.stream.position})"

    def _data_counts(self) -> dict[str, int]:
        """Accepted and skipped (rejected) sample counts from the dataset, by reason."""
        stats = getattr(self.dataset, "stats", None)
        counts = stats() if callable(stats) else stats
        if not isinstance(counts, dict):
            return {}
        out = {"data_accepted": int(counts.get("accepted", 0))}
        rejected = counts.get("rejected") or {}
        out["data_skipped"] = int(sum(rejected.values()))
        out.update({f"data_skipped_{k}": int(v) for k, v in rejected.items()})
        return out


def train(cfg: GlideConfig, *, resume: str | None = None, adapter: ModelAdapter | None = None,
          live: bool | None = None, kinds: tuple[str, ...] | None = None,
          quiet: bool = False) -> TrainResult:
    """Train (or resume) the run described by ``cfg``; the library entry point of the CLI."""
    start = time.perf_counter()
    trainer = Trainer(cfg, resume=resume, adapter=adapter, live=live, kinds=kinds, quiet=quiet)
    result = trainer.run()
    trainer.display.message(
        f"{'stopped' if result.interrupted else 'done'} at step {result.step} in "
        f"{time.perf_counter() - start:.0f}s; run: {result.run_dir}"
    )
    return result
