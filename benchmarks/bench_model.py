"""GLIDE network speed and memory on CPU.

Speed: OpenAI's official base model (385M params), batch 1, 64 px, text_ctx 128, 2 threads:
forward (eval, no_grad) and forward+backward (train, dropout 0.1, loss = out².mean()), in
float32 and under bfloat16 autocast, measured like ``reference_speed.json`` (2 warm-ups, 7
timed runs, median) and printed next to the reference figures, with achieved GFLOP/s.

Memory: peak resident memory of one training step of the mid-size model with and without
gradient checkpointing, each in a fresh subprocess (ru_maxrss), since torch's CPU allocator is
invisible to tracemalloc (VmHWM, reset right before the step).

    python benchmarks/bench_model.py            # full run (a few minutes on 2 cores)
    python benchmarks/bench_model.py --quick    # fewer repetitions, smaller memory batch
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from bench_args import positive_int
from torch.utils.flop_counter import FlopCounterMode

from glidectl.devices import cpu_has_native_bf16
from glidectl.glide import create_model, official_options

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(os.environ.get("GLIDECTL_GOLDEN", ROOT.parent / "shared" / "golden"))
MID = dict(num_channels=128, xf_width=256, xf_layers=4)  # reference_speed.json "mid"


def inputs(options, batch: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.full((batch, options.text_ctx), options.n_vocab - 1)
    mask = torch.zeros(batch, options.text_ctx, dtype=torch.bool)
    tokens[0, :6] = torch.randint(0, options.n_vocab - 1, (6,), generator=g)
    mask[0, :6] = True  # row 0 a short prompt, further rows the empty caption
    s = options.image_size
    return dict(
        x=torch.randn(batch, 3, s, s, generator=g),
        timesteps=torch.randint(0, 1000, (batch,), generator=g),
        tokens=tokens,
        mask=mask,
    )


def autocast(dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=dtype)


def forward(model, kw, dtype=None) -> None:
    model.eval()
    with torch.no_grad(), autocast(dtype):
        model(**kw)


def forward_backward(model, kw, dtype=None) -> None:
    model.train()
    model.zero_grad(set_to_none=True)
    with autocast(dtype):
        out = model(**kw)
    out.float().pow(2).mean().backward()


def median_ms(fn, warmup: int, reps: int) -> tuple[float, list[float]]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), times


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def reference() -> dict:
    path = GOLDEN / "reference_speed.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def conv_probe(dtype: torch.dtype, reps: int = 2) -> float:
    """Seconds for one 3x3 conv, 192 -> 192 channels at 64x64 (the base model's first level)."""
    x = torch.randn(1, 192, 64, 64, dtype=dtype)
    w = torch.randn(192, 192, 3, 3, dtype=dtype)
    torch.nn.functional.conv2d(x, w, padding=1)
    t0 = time.perf_counter()
    for _ in range(reps):
        torch.nn.functional.conv2d(x, w, padding=1)
    return (time.perf_counter() - t0) / reps


def time_config(
    name: str, options, batch: int, warmup: int, reps: int, ref: dict, bf16: bool,
    layouts: tuple[str, ...] = ("NCHW",),
) -> None:
    torch.manual_seed(0)
    model = create_model(options)
    kw = inputs(options, batch)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"\n{name}: {n_params:,} params, batch {batch}, {options.image_size} px, "
          f"text_ctx {options.text_ctx}")
    flops = {
        "forward": count_flops(lambda: forward(model, kw)),
        "forward_backward": count_flops(lambda: forward_backward(model, kw)),
    }
    results = {}
    precisions = [("fp32", None)] + ([("bf16 autocast", torch.bfloat16)] if bf16 else [])
    for layout in layouts:  # NHWC: weights and input channels_last, as train.channels_last
        fmt = torch.channels_last if layout == "NHWC" else torch.contiguous_format
        model.to(memory_format=fmt)
        kw["x"] = kw["x"].contiguous(memory_format=fmt)
        for label, dtype in precisions:
            for mode, fn in (("forward", forward), ("forward_backward", forward_backward)):
                med, times = median_ms(lambda f=fn, d=dtype: f(model, kw, d), warmup, reps)
                results[(label, layout, mode)] = med
                gflops = flops[mode] / (med / 1e3) / 1e9
                ref_ms = ref.get(name, {}).get(mode, {}).get("median_ms")
                vs = f"  reference fp32 {ref_ms:.1f} ms (x{med / ref_ms:.2f})" if ref_ms else ""
                print(f"  {label:14s} {layout} {mode:17s} {med:8.1f} ms  {gflops:6.1f} GFLOP/s "
                      f"({flops[mode] / 1e9:.1f} GFLOP){vs}   runs: "
                      + " ".join(f"{t:.0f}" for t in times), flush=True)
    for mode in ("forward", "forward_backward"):
        base = results[("fp32", "NCHW", mode)] if "NCHW" in layouts else None
        for (label, layout, m), med in results.items():
            if m == mode and base and (label, layout) != ("fp32", "NCHW"):
                print(f"  {label} {layout} / fp32 NCHW, {mode}: {med / base:.2f}")


def speed(args) -> None:
    torch.set_num_threads(args.threads)
    ref = reference()
    warmup, reps = (1, 3) if args.quick else (2, 7)
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{warmup} warm-up + {reps} timed runs, median; load average {load} "
          f"on {os.cpu_count()} CPUs (other processes slow these figures down)")
    native = cpu_has_native_bf16()
    fp32_conv, bf16_conv = conv_probe(torch.float32), conv_probe(torch.bfloat16, reps=1)
    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}; native bf16 kernels: "
          f"{native}; probe conv 192ch@64x64: fp32 {fp32_conv * 1e3:.0f} ms, "
          f"bf16 {bf16_conv * 1e3:.0f} ms (x{bf16_conv / fp32_conv:.1f})")
    run_bf16 = native or args.force_bf16
    if not run_bf16:
        print("bf16 autocast on the full model skipped: without native bf16 kernels it would "
              "take minutes per step (use --force-bf16 to time it anyway).")
    layouts = ("NCHW", "NHWC") if args.channels_last else ("NCHW",)
    time_config("base_official_b1_64", official_options("base"), 1, warmup, reps, ref, run_bf16,
                layouts)
    if args.mid:
        mid = official_options("base").replace(**MID)
        time_config("mid_b2_64", mid, 2, warmup, reps, ref, run_bf16, layouts)


def _status_mib(field: str) -> float:
    """A memory figure (VmRSS, VmHWM) of this process from /proc, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux: write 5 to clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def memory_child(checkpointing: bool, batch: int, threads: int) -> None:
    """One training step of the mid model; prints RSS before and peak RSS during it (MiB).

    ru_maxrss survives fork+exec on Linux (a child starts with its parent's high-water mark),
    so the per-process VmHWM is read instead, reset just before the step.
    """
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    options = official_options("base").replace(**MID)
    model = create_model(options).train()
    model.set_gradient_checkpointing(checkpointing)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    kw = inputs(options, batch)
    before = _status_mib("VmRSS")
    reset = _reset_peak()
    t0 = time.perf_counter()
    out = model(**kw)
    out.float().pow(2).mean().backward()
    step = time.perf_counter() - t0
    after = _status_mib("VmHWM") if reset else resource.getrusage(
        resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"before_mib": before, "peak_mib": after, "step_s": step}))


def memory(args) -> None:
    batch = 2 if args.quick else 4
    print(f"\nPeak memory, one training step of the mid model (num_channels 128, xf_width 256, "
          f"xf_layers 4), batch {batch}, 64 px, fresh process each (VmHWM):")
    rows = {}
    for flag in (False, True):
        cmd = [sys.executable, __file__, "--memory-child", str(int(flag)), "--batch", str(batch),
               "--threads", str(args.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows[flag] = json.loads(out.stdout.strip().splitlines()[-1])
        r = rows[flag]
        print(f"  checkpointing={'on ' if flag else 'off'}  peak {r['peak_mib']:8.0f} MiB  "
              f"step adds {r['peak_mib'] - r['before_mib']:7.0f} MiB over weights+grads "
              f"({r['before_mib']:.0f} MiB)  step {r['step_s']:.1f} s")
    off, on = rows[False], rows[True]
    saved = (off["peak_mib"] - off["before_mib"]) - (on["peak_mib"] - on["before_mib"])
    print(f"  activation memory saved by checkpointing: {saved:.0f} MiB "
          f"({saved / max(1.0, off['peak_mib'] - off['before_mib']):.0%}), "
          f"step time x{on['step_s'] / off['step_s']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--mid", action="store_true", help="also time the mid-size model")
    parser.add_argument("--force-bf16", action="store_true",
                        help="time bf16 autocast even without native bf16 kernels")
    parser.add_argument("--channels-last", action="store_true",
                        help="also time each precision with channels_last (NHWC) weights and "
                        "input, as train.channels_last runs")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child is not None:
        memory_child(bool(args.memory_child), args.batch, args.threads)
        return
    if not args.skip_speed:
        speed(args)
    if not args.skip_memory:
        memory(args)


if __name__ == "__main__":
    main()
