"""``glidectl lora``: the training engine with a LoRA model hook.

Checkpoints of a LoRA run hold ``lora/`` (and ``lora-ema/`` with EMA) adapter directories
instead of full weights, beside the engine's resume ``state/``. A scratch base network is
written once as ``<run>/base.safetensors`` so its adapters can be loaded later.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import runs
from ..config import GlideConfig, LoraConfig
from ..errors import GlidectlError
from ..training.engine import SAID_AS_KEYWORDS, Trainer, check_call
from ..unused_keys import warn_unused
from .files import latest_adapter, read_adapter, save_adapter, weights_sha256
from .inject import (
    ADAPTER_NAME,
    LoraSummary,
    adapters_off,
    check_lora_config,
    effective_scale,
    inject_lora,
    lora_parameters,
    lora_summary,
)

ADAPTER_DIR = runs.ADAPTER_DIR
EMA_ADAPTER_DIR = runs.EMA_ADAPTER_DIR


OUTPUT_LAYER = "out.2"  # the network's last conv, zero-initialised in a scratch network
FROZEN_OUTPUT_NOTE = (
    "Warning: the base network's output layer (out.2) is all zero, as a scratch network's "
    "is, and these adapters leave it frozen, so no gradient reaches them and the run trains "
    "nothing (lora_B stays 0); adapt it too (lora.patterns = ['out\\.2']) or start from "
    "trained weights (model.init).")


def output_is_zero(model: nn.Module) -> bool:
    """The network's output conv (:data:`OUTPUT_LAYER`) holds only zeros: frozen, it passes
    no gradient back to anything before it."""
    weight = dict(model.named_parameters()).get(f"{OUTPUT_LAYER}.weight")
    return weight is not None and not bool(weight.detach().any())


def base_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The frozen base weights of a LoRA-injected model, under their original names."""
    return {k.replace(".base_layer.", "."): v for k, v in model.state_dict().items()
            if ".lora_" not in k}


class LoraTrainingAdapter:
    """The engine's model hook for LoRA: inject adapters, train only them, save adapter dirs."""

    def __init__(self, cfg: LoraConfig, base_spec: str = "scratch"):
        check_lora_config(cfg)  # before the engine creates a run directory
        self.cfg = cfg
        self.base_spec = base_spec
        self.name = "lora"
        self.target_names: list[str] = []
        self.base_sha256 = ""
        self.summary: LoraSummary | None = None
        self.frozen_output_note: str | None = None

    # --- the engine's ModelAdapter protocol
    def prepare(self, model: nn.Module) -> nn.Module:
        if not self.target_names:
            self.base_sha256 = weights_sha256(model)
            zero_output = output_is_zero(model)  # before injection renames its weight
            self.target_names = inject_lora(model, self.cfg)
            if zero_output and OUTPUT_LAYER not in self.target_names:
                self.frozen_output_note = FROZEN_OUTPUT_NOTE
            self.summary = lora_summary(model, self.cfg, len(self.target_names))
        return model

    def trainable(self, model: nn.Module) -> list[tuple[str, nn.Parameter]]:
        return lora_parameters(model)

    def prior_model(self, model: nn.Module) -> Any:
        """A context in which ``model`` predicts as the base model (adapters off): the target
        of OneTrainer's PRIOR_PREDICTION concepts."""
        return adapters_off(model)

    def export_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The adapter weights in peft's key format (no adapter name)."""
        from peft import get_peft_model_state_dict

        state = get_peft_model_state_dict(model, adapter_name=ADAPTER_NAME)
        return {k: v.detach().cpu().contiguous() for k, v in state.items()}

    # --- checkpoints (called by the engine instead of writing full weights)
    def save_checkpoint(self, model: nn.Module, step_dir: Path, step: int, ema: Any = None,
                        meta: dict[str, str] | None = None) -> None:
        """Write ``lora/`` (and ``lora-ema/``) into a step dir (main process only); ``meta``:
        the checkpoint's, whose recommended ``grey`` (greyscale training data) the adapters
        record, so whatever samples them draws grey as the run's previews did, and an
        upsampler's low-res filter, which eval downscales references with."""
        from ..eval_upsampler_inputs import RESAMPLE_KEY
        from ..sampling_defaults import RECOMMENDED_KEY, recommended_object

        step_dir = Path(step_dir)
        grey = recommended_object((meta or {}).get(RECOMMENDED_KEY)).get("grey") is True
        resample = (meta or {}).get(RESAMPLE_KEY)
        self._write_scratch_base(model, runs.RunDir(step_dir.parent.parent))
        self.save(model, step_dir / ADAPTER_DIR, step, grey, resample)
        if ema is not None:
            with ema.swapped():
                self.save(model, step_dir / EMA_ADAPTER_DIR, step, grey, resample)

    def load_checkpoint(self, model: nn.Module, step_dir: Path) -> None:
        """Load the raw adapter of a step dir into the injected model (resume)."""
        from peft import set_peft_model_state_dict

        adapter = read_adapter(Path(step_dir) / ADAPTER_DIR)
        want = adapter.meta.get("base_sha256")
        if want and want != self.base_sha256:
            base = Path(self.base_spec)
            seed = runs.run_setting(runs.run_of_step_dir(step_dir), "train", "seed")
            fix = ("put back the weights it started on, or start a new LoRA run" if not (
                base.is_dir() and runs.step_weights(base) is None) else
                f"model.init {self.base_spec!r} is a training run whose latest checkpoint has "
                "moved on since; set model.init to the step folder this LoRA run started from "
                f"({str(base / 'checkpoints' / 'step-N')!r}) and resume again")
            if self.base_spec in ("", "scratch"):  # rebuilt from train.seed and model.*
                fix = ("its scratch network is built again from train.seed and the [model] "
                       "settings, so resume with the run's own"
                       + (f" (train.seed = {seed})" if isinstance(seed, int) else "")
                       + ", or start a new LoRA run")
            raise GlidectlError(
                f"Cannot resume from {str(step_dir)!r}: the base model's weights differ from the "
                f"ones this LoRA run started on ({adapter.meta.get('base_model')!r}); {fix}."
            )
        try:
            result = set_peft_model_state_dict(model, adapter.state, adapter_name=ADAPTER_NAME)
        except RuntimeError:  # other shapes: another lora.rank
            raise GlidectlError(
                f"Cannot resume from {str(step_dir)!r}: its adapter has rank "
                f"{adapter.config.r} but the [lora] config says {self.cfg.rank}; resume with "
                "the run's own config."
            ) from None
        missing = [k for k in result.missing_keys if ".lora_" in k]
        if missing or result.unexpected_keys:
            raise GlidectlError(
                f"Cannot resume from {str(step_dir)!r}: its adapter has other modules than "
                "the [lora] config selects; resume with the run's own config."
            )
        self._check_scale(adapter, step_dir)

    def _check_scale(self, adapter: Any, step_dir: Path) -> None:
        """Refuse a resume whose lora.alpha or lora.rslora would rescale the trained adapters."""
        alpha, rslora = float(adapter.config.lora_alpha), bool(adapter.config.use_rslora)
        for key, was, now in (("alpha", f"{alpha:g}", f"{self.cfg.alpha:g}"),
                              ("rslora", str(rslora).lower(), str(self.cfg.rslora).lower())):
            if was != now:
                there = effective_scale(adapter.config.r, alpha, rslora)
                here = effective_scale(self.cfg.rank, self.cfg.alpha, self.cfg.rslora)
                raise GlidectlError(
                    f"Cannot resume from {str(step_dir)!r}: its adapter was trained with "
                    f"lora.{key} = {was} but the config says {now} (effective scale "
                    f"{there:g} there, {here:g} here); resume with the run's own config.")

    def save(self, model: nn.Module, directory: Path, step: int | None = None,
             grey: bool = False, low_res_resample: str | None = None) -> Path:
        return save_adapter(
            model, directory, cfg=self.cfg, target_names=self.target_names,
            base_spec=self.base_spec, base_sha256=self.base_sha256, step=step,
            state=self.export_state(model), grey=grey, low_res_resample=low_res_resample,
        )

    def _write_scratch_base(self, model: nn.Module, run: runs.RunDir) -> None:
        if self.base_spec not in ("", "scratch"):
            return
        from ..glide import save_weights

        path = run.base
        if _base_hash(path) != self.base_sha256:  # absent, or left by an earlier start
            save_weights(base_state(model), path, model.options,
                         {"lora_base_sha256": self.base_sha256})
        self.base_spec = str(path)


def _base_hash(path: Path) -> str | None:
    """The base weights' sha256 a run's ``base.safetensors`` records (None: no such file):
    a start killed before its first checkpoint leaves one that a new start, on another
    train.seed or model, must not keep."""
    from ..glide.checkpoints import read_metadata

    try:
        return read_metadata(path).get("lora_base_sha256")
    except GlidectlError:
        return None


@SAID_AS_KEYWORDS
def train_lora(
    cfg: GlideConfig, *, resume: str | None = None, live: bool | None = None,
    dataset: Any = None, quiet: bool = False,
) -> Any:
    """Train (or resume) LoRA adapters on ``cfg.model`` with the shared engine (``dataset``:
    your own ``(image, caption)`` pairs, as :class:`~glidectl.training.engine.Trainer` takes).

    Returns the engine's TrainResult; adapters are in ``checkpoints/<step>/lora[-ema]``.
    Keys ``cfg`` sets that the run ignores are named in warnings first, as ``glidectl lora``
    names them.
    """
    resume = check_call("train_lora", cfg, resume)
    warn_unused(cfg, lora=True, quiet=quiet)
    start = time.perf_counter()
    cfg, pinned = _pin_base(cfg, resume)
    adapter = LoraTrainingAdapter(cfg.lora, cfg.model.init)
    trainer = Trainer(cfg, resume=resume, adapter=adapter, live=live, dataset=dataset,
                      quiet=quiet)
    if pinned:
        trainer.display.message(pinned)
    if adapter.summary is not None:
        trainer.display.message(adapter.summary.line())
    if adapter.frozen_output_note:
        trainer.display.message(adapter.frozen_output_note)
    result = trainer.run()
    trainer.display.message(
        f"{'stopped' if result.interrupted else 'done'} at step {result.step} in "
        f"{time.perf_counter() - start:.0f}s; adapter: {latest_adapter(result.run_dir)}"
    )
    return result


def _pin_base(cfg: GlideConfig, resume: str | None) -> tuple[GlideConfig, str]:
    """A new LoRA run on a training run folder trains on the checkpoint that is the run's
    latest now, named by its step folder in the LoRA run's config and adapters: the base
    run may train on (and prune) while the adapters are trained, resumed and used. A resume
    keeps that step folder when model.init names its run again (a --config written before the
    run began); a step folder that is gone: one sentence. Returns the config and a line."""
    from dataclasses import replace

    from ..glide.loading import follows_latest

    init = cfg.model.init
    if resume:
        pinned = _recorded_pin(cfg, resume)
        init = pinned or init
        path = Path(init).expanduser()
        if _is_step_path(path) and not path.exists():
            raise GlidectlError(_other_base(cfg, resume, path) or _base_step_gone(init, path))
        if not pinned:
            return cfg, ""
        line = (f"model.init {cfg.model.init!r} is a training run: this LoRA run goes on "
                f"training on the checkpoint it began on, {pinned!r}.")
        return replace(cfg, model=replace(cfg.model, init=pinned)), line
    if init in ("", "scratch") or not follows_latest(init):
        return cfg, ""
    step = runs.latest_under(Path(init).expanduser())
    if step is None or runs.step_weights(step) is None:
        return cfg, ""  # not a run of model weights: loading says why
    line = (f"model.init {init!r} is a training run: this LoRA run trains on its latest "
            f"checkpoint, {str(step)!r}, whatever that run does next (set model.init to "
            "another step folder for another).")
    return replace(cfg, model=replace(cfg.model, init=str(step))), line


def _base_step_gone(init: str, path: Path) -> str:
    """The sentence for the step folder ``path`` (``init`` as recorded) a resumed LoRA run
    trains on and that is not there: pruned by its run's keep_last while the run folder is
    still there, else moved or deleted with its run folder (a run moved: name its new place;
    the resume checks that its weights are the ones the adapters began on)."""
    run = path.parent.parent
    if run.is_dir():
        return (f"model.init {init!r}, the checkpoint this LoRA run trains on, is gone (its "
                "run's checkpoint.keep_last prunes older steps); put that step folder back to "
                "resume, or start a new LoRA run on another base.")
    return (f"model.init {init!r}, the checkpoint this LoRA run trains on, is gone with its "
            f"run folder {str(run)!r} (moved or deleted); if it moved, resume with --set "
            f"model.init=NEW_RUN_FOLDER/{runs.CHECKPOINTS_DIR}/{path.name}, else start a new "
            "LoRA run on another base.")


def _is_step_path(path: Path) -> bool:
    """Whether ``path`` names a step folder of a run (``RUN/checkpoints/step-N``), there or not."""
    return bool(runs.STEP_RE.fullmatch(path.name)) and path.parent.name == runs.CHECKPOINTS_DIR


def _recorded_pin(cfg: GlideConfig, resume: str) -> str | None:
    """The step folder a resumed LoRA run recorded as its base when ``cfg.model.init`` names
    that step's training run (as a --config written before the run began does); None when
    model.init is no run folder or is what the run recorded. A run folder other than the
    base the run recorded is one sentence naming both."""
    from ..glide.loading import follows_latest
    from ..training.run_dir import pick_run

    given = cfg.model.init
    if given in ("", "scratch") or not follows_latest(given):
        return None
    run = pick_run(cfg, resume)
    recorded = runs.run_setting(run.root, "model", "init")
    if not isinstance(recorded, str):
        return None  # no config.toml of its own yet: the engine says what is wrong
    given_path = Path(given).expanduser().resolve()
    base_run = given_path.parent if given_path.name == runs.CHECKPOINTS_DIR else given_path
    recorded_path = Path(recorded).expanduser()
    if recorded_path.resolve() == given_path:
        return None  # a LoRA run begun before runs were pinned: the resume check names the fix
    if _is_step_path(recorded_path) and runs.run_of_step_dir(recorded_path) == base_run:
        return recorded
    raise GlidectlError(_not_the_base(given, run.root, recorded))


def _not_the_base(given: str, root: Path, recorded: str, *, there: bool = True) -> str:
    """The sentence for a resume's model.init ``given`` that is not the base ``recorded``
    in the config.toml of the LoRA run in ``root`` (``there``: ``given`` exists, so a new
    LoRA run may train on it)."""
    new_run = f", or start a new LoRA run (another --name) on {given!r}" if there else ""
    return (f"model.init {given!r} is not the base LoRA run {str(root)!r} trains on: its "
            f"config.toml names {recorded!r}; resume with model.init = {recorded!r} (or "
            f"--resume RUN without --config){new_run}.")


def _other_base(cfg: GlideConfig, resume: str, path: Path) -> str | None:
    """The sentence for a resume whose model.init, the step folder ``path`` that is not
    there, is not the step folder the LoRA run's config.toml records (that one is its
    base, not a pruned one); None when it is, or the run records none."""
    from ..training.run_dir import pick_run

    run = pick_run(cfg, resume)
    recorded = runs.run_setting(run.root, "model", "init")
    if not isinstance(recorded, str) or \
            Path(recorded).expanduser().resolve() == path.resolve():
        return None
    return _not_the_base(cfg.model.init, run.root, recorded, there=False)
