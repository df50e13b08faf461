"""Which device and which precision to compute in: one picker for sample, eval, ui and train.

``auto`` precision means bf16 only where the hardware computes it natively (CUDA GPUs with
bf16 support; CPUs with AVX-512-BF16 or AMX), else fp32: on AVX2-only CPUs bf16 is emulated
and ~25x slower than fp32. fp16 is never picked automatically (it needs a GradScaler).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import GlidectlError, canonical_word

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# old spellings still accepted: "no" (Accelerate's word for fp32)
ALIASES = {"no": "fp32"}
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


DEVICE_HELP = "use auto, cpu, cuda, cuda:N or mps"
DEVICE_KINDS = ("auto", "cpu", "cuda", "mps")


def pick_device(device: str | None = "auto") -> str:
    """``auto`` → cuda when available, else mps, else cpu; a named device must exist here.
    Its kind is read in any case (``CUDA:1`` is ``cuda:1``)."""
    import torch

    if isinstance(device, str):
        kind, colon, index = device.partition(":")
        device = canonical_word(kind, DEVICE_KINDS) + colon + index
    if device in (None, "", "auto"):
        if torch.cuda.is_available():
            return "cuda"
        if _mps_available():
            return "mps"
        return "cpu"
    try:
        dev = torch.device(str(device))
    except (RuntimeError, ValueError):
        raise GlidectlError(f"Unknown device {device!r}; {DEVICE_HELP}.") from None
    if dev.type == "cpu":
        return str(device)
    if dev.type == "mps":
        if not _mps_available():
            raise GlidectlError(f"Device {device!r}: Apple's MPS is not available here; use "
                                "cpu or auto.")
        return str(device)
    if dev.type != "cuda":
        raise GlidectlError(f"Device {device!r} is not one glidectl computes on; {DEVICE_HELP}.")
    if not torch.cuda.is_available():
        raise GlidectlError(f"Device {device!r}: CUDA is not available here; use cpu or auto.")
    count = torch.cuda.device_count()
    if dev.index is not None and dev.index >= count:
        names = "only cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
        raise GlidectlError(f"Device {device!r}: this machine has {names}; pick one of them.")
    return str(device)


def check_compile(device: str, flag: str, off: str) -> None:
    """torch.compile on ``device`` has what it builds kernels with (a C++ compiler on the CPU,
    Triton on a CUDA GPU); else one sentence naming ``flag`` and ``off`` (how to turn it off).
    torch says so only at the first forward, as a traceback."""
    import torch

    kind = torch.device(device).type
    if kind == "cpu":
        from torch._inductor import config
        from torch._inductor.cpp_builder import get_cpp_compiler

        try:
            get_cpp_compiler()
        except (RuntimeError, OSError):
            tried = " or ".join(str(c) for c in config.cpp.cxx if c) or "g++"
            raise GlidectlError(
                f"{flag} needs a C++ compiler on the CPU (torch.compile builds its kernels "
                f"with one) and {tried} does not run here; install g++ (or set CXX to a "
                f"compiler), or {off}.") from None
    elif kind == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            raise GlidectlError(
                f"{flag} needs Triton on a GPU (torch.compile builds its kernels with it) "
                f"and it is not installed; pip install triton, or {off}.")


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The feature flags the kernel reports for this CPU (empty when it cannot be read)."""
    try:
        text = Path(cpuinfo).read_text(encoding="ascii", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bf16 matmuls in hardware (AVX-512-BF16 or AMX)."""
    return any(flag in cpu_flags() for flag in CPU_BF16_FLAGS)


def cuda_has_bf16(device: str) -> bool:
    import torch

    if not torch.cuda.is_available():
        return False
    with torch.cuda.device(torch.device(device)):
        return bool(torch.cuda.is_bf16_supported())


@dataclass(frozen=True)
class Precision:
    """The precision to compute in (fp32, bf16 or fp16) and why it was chosen."""

    name: str
    reason: str

    @property
    def autocast(self) -> str:
        """The pipeline's autocast word: no, bf16 or fp16."""
        return "no" if self.name == "fp32" else self.name

    def line(self) -> str:
        return f"Precision: {self.name} ({self.reason})."


def check_precision(name: str, flag: str = "--precision") -> str:
    """The canonical word for ``name`` (auto, fp32, bf16, fp16, in any case), or one clear
    error."""
    word = canonical_word(str(name), (*PRECISIONS, *ALIASES))
    word = ALIASES.get(word, word)
    if word not in PRECISIONS:
        raise GlidectlError(f"Unknown {flag} {name!r}; use {', '.join(PRECISIONS)}.")
    return word


def pick_precision(name: str, device: str, flag: str = "--precision") -> Precision:
    """Resolve ``name`` on ``device``: ``auto`` → bf16 where native, else fp32."""
    word = check_precision(name, flag)
    if word != "auto":
        return Precision(word, "as asked")
    kind = str(device).split(":")[0]
    if kind == "cuda":
        if cuda_has_bf16(device):
            return Precision("bf16", "auto: this GPU computes bf16 natively")
        return Precision("fp32", "auto: this GPU has no native bf16")
    if kind == "cpu":
        if cpu_has_native_bf16():
            return Precision("bf16", "auto: this CPU has AVX-512-BF16/AMX")
        return Precision("fp32", "auto: this CPU has no AVX-512-BF16/AMX, where bf16 would be "
                                 "emulated and slower")
    return Precision("fp32", f"auto: no native bf16 known for {kind}")


# What ``accelerate launch --mixed_precision X`` (or its config file) hands the processes.
LAUNCHER_ENV = "ACCELERATE_MIXED_PRECISION"


def launcher_precision() -> str | None:
    """The precision accelerate's launcher asks for, or None: nothing, or ``no``, which the
    launcher also sets when nothing was asked."""
    word = os.environ.get(LAUNCHER_ENV, "").strip().lower()
    return None if word in ("", "no") else word


# What ``accelerate launch --dynamo_backend X`` (or its config file) hands the processes:
# Accelerate then torch.compiles the network with backend X when the run prepares it.
LAUNCHER_DYNAMO_ENV = "ACCELERATE_DYNAMO_BACKEND"


def launcher_dynamo() -> str | None:
    """The torch.compile backend accelerate's launcher asks for (lower case), or None:
    nothing, or ``no``."""
    word = os.environ.get(LAUNCHER_DYNAMO_ENV, "").strip().lower()
    return None if word in ("", "no") else word


def training_precision(name: str) -> tuple[Precision, str | None]:
    """``train.precision`` resolved for the device Accelerate trains on (cuda if any); at
    ``auto`` a launcher's bf16 or fp16 is followed. Also a warning line when the launcher
    asked for another precision than the one used (None otherwise)."""
    import torch

    word = check_precision(name, "train.precision")
    asked = launcher_precision()
    if word == "auto" and asked in ("bf16", "fp16"):
        return Precision(asked, f"{LAUNCHER_ENV}={asked}, from accelerate launch"), None
    precision = pick_precision(word, "cuda" if torch.cuda.is_available() else "cpu",
                               "train.precision")
    if asked is None or asked == precision.name:
        return precision, None
    if asked not in ("bf16", "fp16"):
        return precision, (f"Warning: {LAUNCHER_ENV}={asked} is not a precision glidectl "
                           f"trains in; training in {precision.name} (train.precision = "
                           f"\"{word}\"); launch with --mixed_precision bf16, fp16 or no.")
    return precision, (f"Warning: training in {precision.name} as train.precision = "
                       f"\"{word}\" says, not in accelerate launch's {asked} ({LAUNCHER_ENV}"
                       f"={asked}); set train.precision = \"auto\" to follow the launcher.")


NONDETERMINISTIC = "does not have a deterministic implementation"  # torch's RuntimeError


def use_deterministic(on: bool) -> None:
    """``train.deterministic``: torch's process-wide switches for deterministic kernels, set
    for this run (off when the run does not ask for them). cuBLAS reads its workspace size
    when it starts, so the variable is set before the run's first matrix product."""
    import torch

    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    _deterministic_algorithms(on, warn_only=False)
    torch.backends.cudnn.deterministic = on


def _deterministic_algorithms(on: bool, warn_only: bool) -> None:
    """``torch.use_deterministic_algorithms`` where it changes something: each call imports
    ``torch._inductor`` (and sympy), seconds in which a Ctrl-C left a half-imported module
    that the restore in ``Trainer``'s ``finally`` then failed on (a traceback, not 'Aborted')."""
    import torch

    if (torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled()) != (on, warn_only):
        torch.use_deterministic_algorithms(on, warn_only=warn_only)


def deterministic_state() -> tuple[Any, ...]:
    """torch's process-wide switches :func:`use_deterministic` sets, to put back later."""
    import torch

    return (torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.backends.cudnn.deterministic, os.environ.get("CUBLAS_WORKSPACE_CONFIG"))


def set_deterministic_state(state: tuple[Any, ...]) -> None:
    """Put back what :func:`deterministic_state` read."""
    import torch

    on, warn_only, cudnn, cublas = state
    _deterministic_algorithms(on, warn_only)
    torch.backends.cudnn.deterministic = cudnn
    if cublas is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    else:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = cublas


def nondeterministic_op(exc: BaseException) -> str | None:
    """The operation torch refused under ``train.deterministic``, or None for any other
    error."""
    text = str(exc)
    if NONDETERMINISTIC not in text:
        return None
    return text.split(NONDETERMINISTIC)[0].strip() or "an operation"


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's CPU threads set to ``n`` (0: left as they are) while the block runs, then as
    they were: ``train.threads`` of one run is not the next run's, or a notebook's."""
    import torch

    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n > 0:
            torch.set_num_threads(before)
