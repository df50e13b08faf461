"""Training throughput, memory and data-wait share of the engine on this machine.

    python benchmarks/bench_train.py            # tiny, small, official base; fp32 and bf16
    python benchmarks/bench_train.py --quick    # tiny and small only, fewer steps

Each case runs in its own process (the real engine on demo:shapes at 64 px, no previews or
checkpoints) and reports images/s over the timed optimizer steps, the share of wall time spent
waiting for data, and the process's peak RSS (with and without gradient checkpointing).
Goals: bf16 >= 1.8x fp32 images/s (needs bf16 hardware), data wait < 5 %.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from bench_args import nonnegative_int, positive_int

BATCH = {"tiny": 8, "small": 4, "official": 1}


def run_case(size: str, precision: str, checkpointing: bool, steps: int, warmup: int,
             workers: int, threads: int) -> dict:
    """One training run in this process; returns its figures."""
    import tempfile

    import torch

    from glidectl.config import GlideConfig
    from glidectl.training.engine import Trainer

    cfg = GlideConfig()
    cfg.model.size = size
    cfg.model.tokenizer = "byte"
    cfg.data.source = "demo:shapes"
    cfg.data.workers = workers
    scratch = tempfile.TemporaryDirectory(prefix="glidectl-bench-")  # removed at exit
    cfg.train.output_dir = scratch.name
    cfg.train.name = "bench"
    cfg.train.steps = warmup + steps
    cfg.train.batch_size = BATCH[size]
    cfg.train.precision = precision
    cfg.train.gradient_checkpointing = checkpointing
    cfg.preview.every = 0
    cfg.checkpoint.every = 0
    cfg.log.every = 1
    cfg.train.threads = threads
    trainer = Trainer(cfg, quiet=True)
    trainer.save_checkpoint = lambda: None  # type: ignore[method-assign]  # time training only
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0, c0 = time.perf_counter(), time.process_time()
    result = trainer.run()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    timed = result.history[warmup:] or result.history
    scratch.cleanup()
    return {
        "size": size, "precision": precision, "checkpointing": checkpointing,
        "batch": BATCH[size], "workers": workers,
        "params_M": sum(p.numel() for p in trainer.params) / 1e6,
        "images_per_s": statistics.median(r["images_per_s"] for r in timed),
        # CPU-seconds are what a loaded machine cannot distort much (with 1 thread).
        "images_per_cpu_s": cfg.train.steps * BATCH[size] / cpu,
        "data_wait": statistics.mean(r["data_wait"] for r in timed),
        "peak_rss_MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_training_MiB": rss_before / 1024, "wall_s": wall,
        "threads": torch.get_num_threads(),
    }


def spawn(size: str, precision: str, checkpointing: bool, steps: int, warmup: int,
          workers: int, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--case", size, precision, str(int(checkpointing)),
           "--steps", str(steps), "--warmup", str(warmup), "--workers", str(workers),
           "--threads", str(threads)]
    env = dict(os.environ, GLIDECTL_LOAD_PLUGINS="", WANDB_MODE="disabled")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"size": size, "precision": precision, "checkpointing": checkpointing,
                "error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--case", nargs=3, metavar=("SIZE", "PRECISION", "CKPT"),
                    help=f"run one case in this process: SIZE of {', '.join(BATCH)}, "
                    "PRECISION no or bf16, CKPT 1 for gradient checkpointing else 0")
    ap.add_argument("--steps", type=nonnegative_int, default=None,
                    help="timed steps of the --case")
    ap.add_argument("--warmup", type=nonnegative_int, default=None,
                    help="untimed steps of the --case")
    ap.add_argument("--workers", type=nonnegative_int, default=None,
                    help="DataLoader workers of the --case")
    ap.add_argument("--bf16-sizes", default="tiny,small",
                    help="sizes also timed in bf16 (comma-separated)")
    ap.add_argument("--threads", type=positive_int, default=1,
                    help="torch CPU threads (1 is robust when other jobs load the CPU)")
    args = ap.parse_args()
    if args.case:
        size, precision, ckpt = args.case
        if size not in BATCH or precision not in ("no", "bf16") or ckpt not in ("0", "1"):
            ap.error(f"--case {size} {precision} {ckpt}: SIZE is one of {', '.join(BATCH)}, "
                     "PRECISION no or bf16, CKPT 0 or 1")
        print(json.dumps(run_case(size, precision, ckpt == "1", args.steps or 0,
                                  1 if args.warmup is None else args.warmup,
                                  args.workers or 0, args.threads)))
        return 0
    given = [f for f in ("steps", "warmup", "workers") if getattr(args, f) is not None]
    if given:  # the full run picks each case's own; these were silently ignored
        ap.error(f"--{', --'.join(given)} {'apply' if len(given) > 1 else 'applies'} to one "
                 "--case only; the full run sets each case's own")

    sizes = ["tiny", "small"] if args.quick else ["tiny", "small", "official"]
    steps = {"tiny": 4 if args.quick else 8, "small": 2 if args.quick else 4, "official": 2}
    bf16_sizes = [s for s in args.bf16_sizes.split(",") if s]
    rows = []
    for size in sizes:
        rows.append(spawn(size, "no", False, steps[size], 1, 0, args.threads))
        print(json.dumps(rows[-1]), flush=True)
        if size in bf16_sizes:
            # CPUs without bf16 units emulate it (~25x slower here): one step is enough.
            rows.append(spawn(size, "bf16", False, 1, 0, 0, args.threads))
            print(json.dumps(rows[-1]), flush=True)
        if size != "tiny":
            rows.append(spawn(size, "no", True, steps[size], 1, 0, args.threads))
            print(json.dumps(rows[-1]), flush=True)
    rows.append(spawn("tiny", "no", False, steps["tiny"], 1, 1, args.threads))
    print(json.dumps(rows[-1]), flush=True)

    print("\nimages/s: median over the timed steps; img/CPU-s: every step, warm-up included, "
          "per CPU-second; data wait: mean share of wall time")
    print("size      precision  ckpt  workers  images/s  img/CPU-s  data wait  peak RSS MiB")
    for r in rows:
        if "error" in r:
            print(f"{r['size']:9} {r['precision']:10} error: {r['error']}")
            continue
        print(f"{r['size']:9} {r['precision']:10} {str(r['checkpointing']):5} "
              f"{r['workers']:7}  {r['images_per_s']:8.2f}  {r['images_per_cpu_s']:9.2f}  "
              f"{100 * r['data_wait']:8.1f}%  {r['peak_rss_MiB']:10.0f}")
    ok_rows = [r for r in rows if "error" not in r and not r["checkpointing"]
               and r["workers"] == 0]
    for size in sizes:
        fp32 = next((r for r in ok_rows if r["size"] == size and r["precision"] == "no"), None)
        bf16 = next((r for r in ok_rows if r["size"] == size and r["precision"] == "bf16"), None)
        if fp32 and bf16:
            wall = bf16["images_per_s"] / fp32["images_per_s"]
            cpu = bf16["images_per_cpu_s"] / fp32["images_per_cpu_s"]
            print(f"{size}: bf16 / fp32 speed = {wall:.2f}x wall, {cpu:.2f}x per CPU-s "
                  "(goal >= 1.8x)")
        ck = next((r for r in rows if "error" not in r and r["size"] == size
                   and r["checkpointing"]), None)
        if fp32 and ck:
            print(f"{size}: peak RSS {fp32['peak_rss_MiB']:.0f} MiB -> {ck['peak_rss_MiB']:.0f} "
                  f"MiB with gradient checkpointing (training part: "
                  f"{fp32['peak_rss_MiB'] - fp32['rss_before_training_MiB']:.0f} -> "
                  f"{ck['peak_rss_MiB'] - ck['rss_before_training_MiB']:.0f} MiB)")
    waits = [r["data_wait"] for r in rows if "error" not in r]
    if waits:
        print(f"data wait share: max {100 * max(waits):.1f}% (goal < 5%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
