"""A checkpoint's resume state without pickles: tensors in safetensors, everything else JSON.

A run folder is data people share and download; reading it must never run code, so nothing
here is unpickled (``torch.load`` is not used at all). Files in ``<step>/state/``:

- ``train.json``: loop position (step, data cursor, guard counts, tracker run ids, data counts,
  the precision trained in, the accelerator's micro-step counter); the data cursor holds each
  process's position (``ranks``, what a resume reads), and its ``epoch``/``position`` are
  those of the process furthest behind (:func:`glidectl.training.state.furthest_behind`)
- ``optimizer.safetensors``: the optimizer's state_dict (moments as tensors, the rest in
  the header as JSON)
- ``scheduler.json``: the LR scheduler's state_dict; ``scaler.json``: fp16's GradScaler
- ``ema.safetensors``: EMA shadows and counters (with EMA)
- ``rng-<rank>.safetensors``: each process's python/numpy/torch(/cuda) RNG states and its
  training-noise generator

Nested state_dicts are stored as a JSON tree in which tensors are references into the
safetensors file, so dict keys keep their types (the optimizer's are ints) and tuples stay
tuples: a resumed run is bitwise the uninterrupted one.
"""

from __future__ import annotations

import json
import math
import random
import reprlib
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import runs
from ..atomic import save_safetensors, write_json
from ..errors import GlidectlError
from ..ranges import is_finite_number
from . import optimizers

TREE_KEY = "glidectl.state"
TRAIN, OPTIMIZER, SCHEDULER, SCALER, EMA = (
    "train.json", "optimizer.safetensors", "scheduler.json", "scaler.json", "ema.safetensors")
LEGACY_SUFFIXES = (".pkl", ".bin", ".pt", ".pth")


def rng_file(rank: int | str) -> str:
    return f"rng-{rank}.safetensors"


class StateFormatError(ValueError):
    """A resume file that is not what glidectl writes."""


NONFINITE = ("nan", "inf", "-inf")  # the floats a ``$float`` entry holds, as repr writes them


# --------------------------------------------------------------------------- tree encoding
def encode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """A JSON-able tree for ``obj``; tensors (and numpy arrays) go into ``tensors``."""
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"$tensor": key}
    if isinstance(obj, np.ndarray):
        key = f"t{len(tensors)}"
        tensors[key] = torch.from_numpy(obj.astype(np.int64) if obj.dtype.kind in "iu"
                                        else np.ascontiguousarray(obj))
        return {"$ndarray": key, "dtype": str(obj.dtype)}
    if isinstance(obj, dict):
        for k in obj:
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise TypeError(f"cannot store a dict key of type {type(k).__name__}")
        return {"$dict": [[k, encode(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"$tuple": [encode(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [encode(v, tensors) for v in obj]
    if isinstance(obj, (np.integer, np.floating)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"$float": repr(obj)}  # JSON has no NaN or infinity (best_val_loss: inf)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} in the resume state")


def decode(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of :func:`encode`; anything else is a :class:`StateFormatError`."""
    if isinstance(tree, list):
        return [decode(v, tensors) for v in tree]
    if isinstance(tree, dict):
        if set(tree) == {"$tensor"}:
            return _tensor(tree["$tensor"], tensors)
        if set(tree) == {"$ndarray", "dtype"}:
            return _ndarray(tree["$ndarray"], tree["dtype"], tensors)
        if set(tree) == {"$float"} and tree["$float"] in NONFINITE:
            return float(tree["$float"])
        if set(tree) == {"$tuple"} and isinstance(tree["$tuple"], list):
            return tuple(decode(v, tensors) for v in tree["$tuple"])
        if set(tree) == {"$dict"} and isinstance(tree["$dict"], list):
            out = {}
            for pair in tree["$dict"]:
                if not (isinstance(pair, list) and len(pair) == 2
                        and isinstance(pair[0], (str, int))):
                    raise StateFormatError("a malformed dict entry")
                out[pair[0]] = decode(pair[1], tensors)
            return out
        raise StateFormatError(f"an unknown entry with keys {sorted(tree)[:3]}")
    if tree is None or isinstance(tree, (bool, int, float, str)):
        return tree
    raise StateFormatError(f"an unexpected {type(tree).__name__}")


def _tensor(key: Any, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    if not isinstance(key, str) or key not in tensors:
        raise StateFormatError(f"a reference to a missing tensor {key!r}")
    return tensors[key]


NDARRAY_KINDS = "biufc"  # numpy dtype kinds :func:`encode` stores: bools and numbers


def _ndarray(key: Any, dtype: Any, tensors: dict[str, torch.Tensor]) -> np.ndarray:
    """The numpy array a ``$ndarray`` entry names, as ``dtype`` (a numeric numpy dtype)."""
    try:
        wanted = np.dtype(dtype) if isinstance(dtype, str) else None
    except (TypeError, ValueError):
        wanted = None
    if wanted is None or wanted.kind not in NDARRAY_KINDS:
        raise StateFormatError(f"an array of unknown dtype {str(dtype)[:40]!r}")
    try:
        return _tensor(key, tensors).numpy().astype(wanted)
    except (TypeError, RuntimeError) as exc:  # a tensor numpy cannot hold (bfloat16)
        raise StateFormatError(f"an array numpy cannot read ({type(exc).__name__})") from None


# --------------------------------------------------------------------------- files
def write_state_file(path: Path, obj: Any) -> None:
    """``obj`` as ``.json`` (no tensors allowed) or ``.safetensors`` (tree in the header)."""
    tensors: dict[str, torch.Tensor] = {}
    tree = encode(obj, tensors)
    if path.suffix == ".json":
        if tensors:
            raise TypeError(f"{path.name} cannot hold tensors")
        write_json(path, tree)
        return
    save_safetensors(path, tensors, {TREE_KEY: json.dumps(tree)})


def read_state_file(path: Path) -> Any:
    """What :func:`write_state_file` wrote; raises :class:`StateFormatError` otherwise."""
    if not path.is_file():
        raise StateFormatError("it is missing")
    if path.suffix == ".json":
        try:
            tree = json.loads(path.read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StateFormatError(f"it is not JSON ({type(exc).__name__})") from None
        except RecursionError:
            raise StateFormatError(TOO_DEEP) from None
        return _decoded(tree, {})
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own types for bad headers
        raise StateFormatError(f"it is not a safetensors file ({type(exc).__name__})") from None
    if TREE_KEY not in meta:
        raise StateFormatError("it has no glidectl state header")
    try:
        tree = json.loads(meta[TREE_KEY])
    except json.JSONDecodeError:
        raise StateFormatError("its state header is not JSON") from None
    except RecursionError:
        raise StateFormatError(TOO_DEEP) from None
    return _decoded(tree, tensors)


TOO_DEEP = "its entries are nested too deeply"


def _decoded(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """:func:`decode`, with a tree nested past Python's recursion limit a
    :class:`StateFormatError` too."""
    try:
        return decode(tree, tensors)
    except RecursionError:
        raise StateFormatError(TOO_DEEP) from None


# --------------------------------------------------------------------------- RNGs
def capture_rng(noise: torch.Generator | None = None) -> dict[str, Any]:
    """This process's RNG states (what ``accelerate.set_seed`` seeds) and the noise generator."""
    state: dict[str, Any] = {
        "python": random.getstate(), "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if noise is not None:
        state["noise"] = noise.get_state()
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        state["xpu"] = xpu.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], noise: torch.Generator | None = None) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if noise is not None:
        noise.set_state(state["noise"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    xpu = getattr(torch, "xpu", None)
    if "xpu" in state and xpu is not None and xpu.is_available():
        xpu.set_rng_state_all(state["xpu"])


# --------------------------------------------------------------------------- contents
def check_scheduler_state(state: dict[str, Any]) -> None:
    """Raise :class:`StateFormatError` unless ``state`` holds the fields of a LambdaLR
    state_dict that resuming uses, with their types: ``load_state_dict`` takes any values and
    a wrong one only fails later, mid-training (``base_lrs = "zz"``: a TypeError at the first
    step)."""
    for key in ("base_lrs", "_last_lr"):
        value = state.get(key)
        if not (isinstance(value, list) and value
                and all(is_finite_number(v) and v >= 0 for v in value)):
            raise StateFormatError(f"{key} is not a list of learning rates")
    if len(state["_last_lr"]) != len(state["base_lrs"]):
        raise StateFormatError("_last_lr and base_lrs differ in length")
    for key in ("last_epoch", "_step_count"):
        value = state.get(key)
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= -1):
            raise StateFormatError(f"{key} is not a step count")
    lambdas = state.get("lr_lambdas", [None] * len(state["base_lrs"]))
    if not (isinstance(lambdas, list) and len(lambdas) == len(state["base_lrs"])
            and all(f is None or isinstance(f, dict) for f in lambdas)):
        raise StateFormatError("lr_lambdas does not match base_lrs")


# --------------------------------------------------------------------------- the whole state
def legacy_files(state_dir: Path) -> list[str]:
    """Pickle-era files (accelerate's save_state) that are never read."""
    if not state_dir.is_dir():
        return []
    return sorted(p.name for p in state_dir.iterdir() if p.suffix in LEGACY_SUFFIXES)


def _legacy_way_forward(step_dir: Path) -> str:
    """What keeps a pickle-era checkpoint's work: its weights seed a new run; a LoRA run's
    checkpoint holds adapters, not a model, so model.init cannot take it."""
    where = str(step_dir)
    if runs.step_adapter(step_dir) is not None:
        return (f"its adapter still works: use it with --lora {where!r}, or fold it into its "
                f"base with `glidectl lora merge {shlex.quote(where)} -o merged.safetensors` and "
                "start a new LoRA run with model.init = 'merged.safetensors'.")
    return f"start a new run with model.init = {where!r} to keep its weights."


def check_processes(state_dir: Path, processes: int) -> None:
    """A checkpoint resumes under as many processes as wrote it (one RNG file each): the
    global batch is train.batch_size × processes and each process's data cursor is its own.
    train.json's data cursors (one per process) say how many wrote it: a missing RNG file is
    named, not taken for a checkpoint of fewer processes."""
    found = {p.name for p in state_dir.glob(rng_file("*"))}
    saved = max(len(found), _recorded_processes(state_dir))
    missing = [rng_file(r) for r in range(saved) if rng_file(r) not in found]
    if found and missing:
        raise GlidectlError(
            f"Cannot resume from {str(state_dir.parent)!r}: state/{missing[0]} is missing "
            f"(the checkpoint was written by {saved} processes, one RNG file each); resume "
            "from another checkpoint or start a new run."
        )
    if saved and saved != processes:
        raise GlidectlError(
            f"Cannot resume from {str(state_dir.parent)!r}: it was written by {saved} "
            f"process{'es' if saved > 1 else ''} and this run has {processes}; resume it under "
            f"{saved} (the global batch and each process's data cursor depend on that number)."
        )


def _recorded_processes(state_dir: Path) -> int:
    """How many processes' data cursors train.json holds (0: unreadable or none; reading
    it again reports what is wrong)."""
    try:
        train = read_state_file(state_dir / TRAIN)
    except StateFormatError:
        return 0
    data = train.get("data") if isinstance(train, dict) else None
    rows = data.get("ranks") if isinstance(data, dict) else None
    return len(rows) if isinstance(rows, list) else 0


def read_resume_state(state_dir: Path, rank: int, *, ema: bool, scaler: bool) -> dict[str, Any]:
    """Every file this process needs, checked before anything is applied.

    Bad or foreign files are one-line GlidectlErrors; pickle-era checkpoints are refused.
    """
    step_dir = state_dir.parent
    if not (state_dir / TRAIN).is_file() and legacy_files(state_dir):
        raise GlidectlError(
            f"Cannot resume from {str(step_dir)!r}: its state/ is in the old pickle format "
            f"({', '.join(legacy_files(state_dir)[:3])}), which glidectl no longer loads "
            f"because a pickle can run code; {_legacy_way_forward(step_dir)}"
        )
    names = {"train": TRAIN, "optimizer": OPTIMIZER, "scheduler": SCHEDULER,
             "rng": rng_file(rank)}
    if ema:
        if not (state_dir / EMA).exists() and (state_dir / TRAIN).is_file():
            raise GlidectlError(
                f"Cannot resume from {str(step_dir)!r} with an EMA: the run was trained "
                "without one (train.ema_decay = 0) and this config sets train.ema_decay; "
                "resume with train.ema_decay = 0, or start a new run.")
        names["ema"] = EMA
    if scaler and (state_dir / SCALER).is_file():  # else fp16 starts from a fresh scaler
        names["scaler"] = SCALER
    out: dict[str, Any] = {}
    for key, name in names.items():
        try:
            out[key] = read_state_file(state_dir / name)
            if key == "scheduler" and isinstance(out[key], dict):
                check_scheduler_state(out[key])
        except StateFormatError as exc:
            raise GlidectlError(
                f"Cannot resume from {str(step_dir)!r}: state/{name} is not a glidectl resume "
                f"file ({exc}); resume from another checkpoint or start a new run."
            ) from None
        if not isinstance(out[key], dict):
            raise GlidectlError(
                f"Cannot resume from {str(step_dir)!r}: state/{name} does not hold a state "
                "table; resume from another checkpoint or start a new run."
            )
    check_step(step_dir, out["train"].get("step"))
    if (problem := train_problem(out["train"])) is not None:
        raise GlidectlError(
            f"Cannot resume from {str(step_dir)!r}: state/{TRAIN} records {problem}; the "
            "checkpoint is damaged: resume from another checkpoint or start a new run."
        )
    return out


def check_step(step_dir: Path, step: Any) -> None:
    """The step train.json records must be a step count, the one its folder is named for
    (a run resumed at a wrong step would overwrite its metrics, previews and checkpoints)."""
    folder = runs.step_of(step_dir)
    if isinstance(step, int) and not isinstance(step, bool) and step >= 0 \
            and folder in (None, step):
        return
    raise GlidectlError(
        f"Cannot resume from {str(step_dir)!r}: state/{TRAIN} records step {step!r}"
        + (f", not {folder}" if folder is not None else "")
        + "; the checkpoint is damaged: resume from another checkpoint or start a new run."
    )


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def train_problem(train: dict[str, Any]) -> str | None:
    """What in train.json glidectl cannot have written (None: nothing found): a negative or
    non-integer ``micro_step`` or guard count, or a data cursor out of its range. Entries of
    the wrong type altogether are left to ``load_state_dict`` (:func:`apply_failure`)."""
    if "micro_step" in train and not _is_count(train["micro_step"]):
        return f"micro_step {train['micro_step']!r}"
    guard = train.get("guard")
    for key in ("in_a_row", "total") if isinstance(guard, dict) else ():
        if key in guard and not _is_count(guard[key]):
            return f"the non-finite loss count {key} = {guard[key]!r}"
    data = train.get("data")
    if not isinstance(data, dict):
        return None
    for key in ("epoch", "position"):
        if key in data and not _is_count(data[key]):
            return f"data {key} {data[key]!r}"
    rows = data.get("ranks")
    for rank, row in enumerate(rows if isinstance(rows, list) else ()):
        if isinstance(row, list) and row and (why := cursor_problem(row)) is not None:
            return f"the data cursor {reprlib.repr(row)} of process {rank} ({why})"
    return None


def cursor_problem(row: list[Any]) -> str | None:
    """What is wrong with a data cursor, ``[epoch, position, next worker, workers, samples
    each worker read, each worker's end flag]``
    (:meth:`~glidectl.training.data_stream.DataStream.state_dict`); None if nothing."""
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in row):
        return "not all whole numbers"
    if len(row) < 4 or row[3] < 1 or len(row) != 4 + 2 * row[3]:
        return "its length does not fit its number of workers"
    epoch, position, next_worker, slots = row[:4]
    read, ended = row[4:4 + slots], row[4 + slots:]
    for name, value in (("epoch", epoch), ("position", position), *(
            (f"samples read by worker {w}", n) for w, n in enumerate(read))):
        if value < 0:
            return f"{name} {value}"
    if next_worker < 0 or next_worker >= slots:
        return f"next worker {next_worker} of {slots}"
    if any(flag not in (0, 1) for flag in ended):
        return "end flags other than 0 and 1"
    if position > sum(read):
        return f"position {position}: more batches than the {sum(read)} samples read this epoch"
    return None


def apply_failure(step_dir: Path, name: str, exc: Exception) -> GlidectlError:
    """The one-line error for a state file that reads but does not fit this run."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
    return GlidectlError(
        f"Cannot resume from {str(step_dir)!r}: state/{name} does not fit this run "
        f"({type(exc).__name__}: {first}); resume with the run's own config."
    )


def save_state(state_dir: Path, accelerator: Any, train: dict[str, Any],
               objects: dict[str, Any], noise: torch.Generator,
               wait_for_main: Callable[[], None] | None = None) -> None:
    """Write the resume state; every process calls it. ``objects`` maps a file name
    (OPTIMIZER, SCHEDULER, EMA, SCALER) to what has a state_dict (None: not used);
    ``wait_for_main``: how the others wait for the main process's files (default:
    ``accelerator.wait_for_everyone``)."""
    if accelerator.is_main_process:
        state_dir.mkdir(parents=True, exist_ok=True)
        write_state_file(state_dir / TRAIN, {**train, "micro_step": accelerator.step})
        for name, obj in objects.items():
            if obj is not None:
                write_state_file(state_dir / name, obj.state_dict())
    (wait_for_main or accelerator.wait_for_everyone)()
    write_state_file(state_dir / rng_file(accelerator.process_index), capture_rng(noise))


def _match_layouts(optimizer: Any) -> None:
    """Saved optimizer state is contiguous; give each tensor its parameter's memory layout
    (channels_last), as fused kernels walk a parameter and its state in one order."""
    inner = getattr(optimizer, "optimizer", optimizer)
    for param, state in inner.state.items():
        for key, value in state.items():
            if torch.is_tensor(value) and value.shape == param.shape \
                    and value.stride() != param.stride():
                state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def check_optimizer(step_dir: Path, saved: dict[str, Any], optimizer: Any) -> None:
    """An optimizer's state fits only the optimizer that wrote it: AdamW's moments loaded
    into Adafactor failed at the first step, with a traceback."""
    groups = saved.get("param_groups")
    if not (isinstance(groups, list) and all(isinstance(g, dict) for g in groups)):
        return  # load_state_dict says what is wrong
    was, now = optimizers.family(groups), optimizers.family(optimizer.param_groups)
    if was and now and was != now:
        raise GlidectlError(
            f"Cannot resume from {str(step_dir)!r}: it was trained with train.optimizer = "
            f"\"{was}\" and this config says \"{now}\"; resume with \"{was}\" (one "
            f"optimizer's state does not fit another) or start a new run with model.init = "
            f"{str(step_dir)!r}."
        )
    _check_text_group(step_dir, groups, optimizer.param_groups)


def _check_text_group(step_dir: Path, saved: list[dict[str, Any]], now: list[Any]) -> None:
    """``train.text_lr_scale`` at 1 keeps one parameter group, otherwise the text
    transformer has its own: a change to or from 1 cannot take the saved state."""
    n_saved = sum(len(g.get("params", ())) for g in saved)
    if {len(saved), len(now)} != {1, 2} or n_saved != sum(len(g["params"]) for g in now):
        return  # the same groups, or other parameters: load_state_dict says so
    was, want = optimizers.text_lr_scale(saved), optimizers.text_lr_scale(now)
    if was is None or want is None:
        return
    raise GlidectlError(
        f"Cannot resume from {str(step_dir)!r}: it was trained with train.text_lr_scale = "
        f"{was:.6g} and this config says {want:.6g}, and a change to or from 1 does not fit "
        f"the saved optimizer state; resume with train.text_lr_scale = {was:.6g}, or start a "
        f"new run with model.init = {str(step_dir)!r} to train at {want:.6g}."
    )


def fresh_scaler_note(state_dir: Path, scaler: Any) -> str | None:
    """The line to show when an fp16 run resumes a checkpoint trained in another precision:
    it has no GradScaler state, so the scaler starts at its initial scale (None otherwise)."""
    if scaler is None or (state_dir / SCALER).is_file():
        return None
    return (f"{str(state_dir.parent)!r} was not trained in fp16: the GradScaler starts afresh "
            "(its first steps may be skipped while it finds its scale).")


def window_start(micro_step: int, accelerator: Any) -> int:
    """The accelerator's micro-step count to resume at: a checkpoint is written after an
    optimizer step, so its count starts a gradient-accumulation window. Under another
    ``train.grad_accum`` it may not (8, saved under 4, resumed under 3), and accelerate
    would step the optimizer inside the loop's window: it is rounded down to a window's
    start."""
    window = max(int(getattr(accelerator, "gradient_accumulation_steps", 1)), 1)
    return micro_step - micro_step % window


def load_state(state_dir: Path, accelerator: Any, train: Any, objects: dict[str, Any],
               noise: torch.Generator, load_weights: Any) -> list[str]:
    """Read and check every file this process needs, then ``load_weights()``, then apply
    each state (``train`` and ``objects`` as for :func:`save_state`). The optimizer keeps the
    config's settings (LR, betas, eps, weight decay); returns the ones that changed since the
    checkpoint, as "name old → new"."""
    step_dir, rank = state_dir.parent, accelerator.process_index
    check_processes(state_dir, accelerator.num_processes)
    parts = read_resume_state(state_dir, rank, ema=objects.get(EMA) is not None,
                              scaler=objects.get(SCALER) is not None)
    optimizer = objects.get(OPTIMIZER)
    if optimizer is not None:
        check_optimizer(step_dir, parts["optimizer"], optimizer)
        fresh = optimizers.settings(optimizer)
    load_weights()
    targets = [(TRAIN, None, parts["train"])] + [
        (name, obj, parts[key]) for name, key in
        ((OPTIMIZER, "optimizer"), (SCHEDULER, "scheduler"), (EMA, "ema"), (SCALER, "scaler"))
        if (obj := objects.get(name)) is not None and key in parts
    ]
    for name, obj, state in targets:
        try:
            if obj is None:
                state = dict(state)
                accelerator.step = window_start(int(state.pop("micro_step", 0)), accelerator)
                train.load_state_dict(state)
            else:
                if name == SCHEDULER and (opt := objects.get(OPTIMIZER)) is not None \
                        and len(state["base_lrs"]) != len(opt.param_groups):
                    raise ValueError(f"{len(state['base_lrs'])} learning rates for "
                                     f"{len(opt.param_groups)} parameter groups")
                obj.load_state_dict(state)
                if name == OPTIMIZER:
                    _match_layouts(obj)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError,
                AttributeError) as exc:  # AttributeError: a list or string for a table
            raise apply_failure(step_dir, name, exc) from None
    try:
        restore_rng(parts["rng"], noise)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise apply_failure(step_dir, rng_file(rank), exc) from None
    if optimizer is None:
        return []
    return optimizers.reapply_settings(optimizer, objects.get(SCHEDULER), fresh)
