"""One device picker and one precision picker: auto = bf16 only where it is native."""

from __future__ import annotations

import pytest
import torch

from glidectl import devices
from glidectl.devices import check_precision, cpu_flags, pick_device, pick_precision
from glidectl.errors import GlidectlError

AVX2_ONLY = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
SAPPHIRE_RAPIDS = "processor\t: 0\nflags\t\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
ZEN4 = "processor\t: 0\nflags\t\t: avx2 avx512f avx512_bf16\n"


@pytest.fixture
def cpuinfo(tmp_path, monkeypatch):
    """Point the CPU probe at a crafted /proc/cpuinfo."""
    path = tmp_path / "cpuinfo"
    monkeypatch.setattr(devices, "cpu_flags", lambda cpuinfo=path: cpu_flags(cpuinfo))
    return path


def test_the_cpu_probe_reads_the_kernels_flags(tmp_path):
    (tmp_path / "c").write_text(SAPPHIRE_RAPIDS)
    assert {"avx512_bf16", "amx_bf16"} <= cpu_flags(tmp_path / "c")
    assert cpu_flags(tmp_path / "missing") == set()


@pytest.mark.parametrize("text", [SAPPHIRE_RAPIDS, ZEN4])
def test_auto_picks_bf16_on_a_cpu_with_native_bf16(cpuinfo, text):
    cpuinfo.write_text(text)
    chosen = pick_precision("auto", "cpu")
    assert chosen.name == "bf16" and chosen.autocast == "bf16"
    assert chosen.line() == "Precision: bf16 (auto: this CPU has AVX-512-BF16/AMX)."


def test_auto_never_picks_bf16_on_an_avx2_only_cpu(cpuinfo):
    cpuinfo.write_text(AVX2_ONLY)
    chosen = pick_precision("auto", "cpu")
    assert chosen.name == "fp32" and chosen.autocast == "no"
    assert "no AVX-512-BF16/AMX" in chosen.line()


def test_auto_on_cuda_follows_the_gpus_bf16_support(monkeypatch):
    monkeypatch.setattr(devices, "cuda_has_bf16", lambda device: True)
    assert pick_precision("auto", "cuda:1").name == "bf16"
    monkeypatch.setattr(devices, "cuda_has_bf16", lambda device: False)
    assert pick_precision("auto", "cuda").name == "fp32"
    assert pick_precision("auto", "mps").name == "fp32"


def test_explicit_words_are_kept_and_no_means_fp32():
    assert pick_precision("bf16", "cpu").name == "bf16"
    assert pick_precision("fp16", "cpu").autocast == "fp16"
    assert check_precision("no") == "fp32"
    with pytest.raises(GlidectlError, match="Unknown --precision 'fp8'; use auto, fp32"):
        check_precision("fp8")


def test_device_auto_is_cpu_without_accelerators(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    if getattr(torch.backends, "mps", None):
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device("auto") == "cpu"
    with pytest.raises(GlidectlError, match="'cuda:1': CUDA is not available here"):
        pick_device("cuda:1")
    with pytest.raises(GlidectlError, match="Unknown device 'gpu0'; use auto, cpu, cuda"):
        pick_device("gpu0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert pick_device("auto") == "cuda" and pick_device("cuda:1") == "cuda:1"


def test_a_device_this_machine_lacks_is_one_sentence(monkeypatch):
    """mps without Metal, a GPU index past the last one, and devices torch knows but nothing
    computes on were tracebacks ("PyTorch is not linked with support for mps devices",
    "invalid device ordinal") once a model was read."""
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(GlidectlError, match=r"^Device 'mps': Apple's MPS is not available "
                                            r"here; use cpu or auto\.$"):
        pick_device("mps")
    for name in ("meta", "xla", "hpu:0"):
        with pytest.raises(GlidectlError, match=f"^Device '{name}' is not one glidectl "
                                                "computes on; use auto, cpu, cuda"):
            pick_device(name)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for count, names in ((1, "only cuda:0"), (2, "cuda:0 to cuda:1")):
        monkeypatch.setattr(torch.cuda, "device_count", lambda count=count: count)
        with pytest.raises(GlidectlError, match=f"^Device 'cuda:2': this machine has {names}; "
                                                "pick one of them\\.$"):
            pick_device("cuda:2")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert pick_device("mps") == "mps" and pick_device("cpu") == "cpu"


def test_load_model_takes_auto_and_refuses_a_missing_device_before_reading(tmp_path,
                                                                          monkeypatch):
    from tiny_configs import tiny_base_weights

    from glidectl import load_model

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    path = tiny_base_weights(tmp_path / "tiny.safetensors")
    assert next(load_model(path, device="auto").parameters()).device.type == "cpu"
    with pytest.raises(GlidectlError, match="^Device 'cuda': CUDA is not available"):
        load_model(tmp_path / "missing.safetensors", device="cuda")


def test_training_accepts_auto(cpuinfo):
    from glidectl.config import load_config
    from glidectl.devices import training_precision

    cpuinfo.write_text(AVX2_ONLY)
    cfg = load_config(None, [])
    assert cfg.train.precision == "auto"
    assert training_precision(cfg.train.precision)[0].autocast == "no"
    cpuinfo.write_text(ZEN4)
    assert training_precision("auto")[0].autocast == "bf16"
    with pytest.raises(GlidectlError, match="train.precision"):
        training_precision("fp8")


@pytest.fixture
def no_cxx():
    """torch.compile's C++ compiler search pointed at a compiler that does not exist."""
    from torch._inductor import config
    from torch._inductor.cpp_builder import cpp_compiler_search

    with config.patch({"cpp.cxx": (None, "/nonexistent/g++")}):
        cpp_compiler_search.cache_clear()
        yield
    cpp_compiler_search.cache_clear()


def test_compile_without_a_cpp_compiler_is_one_sentence_before_anything_runs(tmp_path, no_cxx,
                                                                             capsys):
    """torch.compile on a CPU with no C++ compiler was an InductorError traceback (exit 1) at
    the first forward: after the models loaded, and in training after the run folder was
    made."""
    from cli_helpers import exit_code
    from tiny_configs import tiny_base_weights, tiny_config

    from glidectl.devices import Precision
    from glidectl.training.setup import check_config

    base = tiny_base_weights(tmp_path / "tiny.safetensors")
    assert exit_code("sample", "a cat", "--base", base, "--device", "cpu", "--compile",
                     "--steps", "1", "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert ("--compile needs a C++ compiler on the CPU (torch.compile builds its kernels with "
            "one) and /nonexistent/g++ does not run here; install g++") in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()
    cfg = tiny_config(tmp_path, train=dict(compile=True))
    with pytest.raises(GlidectlError, match=r"^train.compile needs a C\+\+ compiler .* or set "
                                            r"train.compile = false\.$"):
        check_config(cfg, None, Precision("fp32", "as asked"))  # before the run's folder


def test_compile_on_a_gpu_without_triton_is_one_sentence(monkeypatch):
    import torch.utils._triton

    monkeypatch.setattr(torch.utils._triton, "has_triton", lambda: False)
    with pytest.raises(GlidectlError, match=r"^--compile needs Triton on a GPU .*; pip install "
                                            r"triton, or go on without --compile\.$"):
        devices.check_compile("cuda:0", "--compile", "go on without --compile")


def test_a_launchers_inductor_backend_without_a_cpp_compiler_is_one_sentence(tmp_path, no_cxx,
                                                                            monkeypatch):
    """``accelerate launch --dynamo_backend inductor`` (or an accelerate config saying so)
    has Accelerate compile the network in prepare: without a C++ compiler that was torch's
    traceback at the first step, the run folder made."""
    from tiny_configs import tiny_config

    from glidectl.devices import Precision
    from glidectl.training.setup import check_config

    cfg = tiny_config(tmp_path)
    monkeypatch.setenv("ACCELERATE_DYNAMO_BACKEND", "INDUCTOR")  # as the launcher writes it
    with pytest.raises(GlidectlError, match=r"^ACCELERATE_DYNAMO_BACKEND=inductor \(accelerate "
                                            r"launch --dynamo_backend inductor\) needs a C\+\+ "
                                            r"compiler .* or launch with --dynamo_backend no\.$"):
        check_config(cfg, None, Precision("fp32", "as asked"))
    for backend in ("NO", "EAGER"):  # no kernels to build
        monkeypatch.setenv("ACCELERATE_DYNAMO_BACKEND", backend)
        check_config(cfg, None, Precision("fp32", "as asked"))
