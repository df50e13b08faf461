"""Upsampler check, as the README's recipe behind the 12 px quickstart runs it: `glidectl
upsample --config examples/glide.toml --set model.kind=upsample --set data.resolution=48
--set data.min_image_size=8` for each training seed and torch thread count, then `glidectl
eval --upsampler RUN --low-res DIR` on held-out demo pictures (48 px references, their 12 px
inputs made as training makes them), with eval's defaults (fast27 DDPM). Prints each run's
mean PSNR (dB) and SSIM beside plain bicubic's on the same inputs, and the worst case first.

    python benchmarks/bench_upsampler.py                          # seeds 0-4 x threads 1,2
    python benchmarks/bench_upsampler.py --seeds 0 --threads 1    # one run
    python benchmarks/bench_upsampler.py --run runs/quickstart-up # score existing runs
    python benchmarks/bench_upsampler.py --run RUN --eval-args="--upsample-sampler unipc"
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from bench_args import nonnegative_ints, positive_int, positive_ints, run
from bench_quickstart import ROOT, glidectl, train_run

RECIPE = ("--set", "model.kind=upsample", "--set", "data.resolution=48",
          "--set", "data.min_image_size=8")
FIRST_HELD_OUT = 10_000  # demo seeds from here on: the training stream draws 0 .. demo_size


def held_out(folder: Path, images: int, size: int = 48) -> Path:
    """``images`` demo pictures training never sees, each with its caption in a .txt file."""
    from glidectl.data.demo import make_demo_sample

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(images):
        sample = make_demo_sample("shapes", FIRST_HELD_OUT + i, size)
        sample.image.save(folder / f"{i:03d}.png")
        (folder / f"{i:03d}.txt").write_text(sample.caption + "\n")
    return folder


def evaluate(run: str, low_res: Path, extra: list[str]) -> dict:
    """`glidectl eval --upsampler RUN --low-res DIR`'s mean figures."""
    out = Path(run) / "bench-eval" if Path(run).is_dir() else Path(f"{run}-eval")
    shutil.rmtree(out, ignore_errors=True)  # this benchmark's own folder: score this call only
    t0 = time.perf_counter()
    glidectl("eval", "--upsampler", run, "--low-res", str(low_res), "--out", str(out),
             *extra)
    meta = json.loads((out / "metadata.json").read_text())
    figures = {k: round(meta["metrics"][k]["mean"], 3 if "ssim" in k else 2)
               for k in ("psnr", "ssim", "bicubic_psnr", "bicubic_ssim")}
    figures["worst_psnr"] = round(min(r["metrics"]["psnr"] for r in meta["images"]), 2)
    figures["eval_wall_s"] = round(time.perf_counter() - t0, 1)
    return figures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "examples" / "glide.toml"))
    ap.add_argument("--seeds", type=nonnegative_ints, default="0,1,2,3,4",
                    help="training seeds")
    ap.add_argument("--threads", type=positive_ints, default="1,2",
                    help="torch thread counts")
    ap.add_argument("--run", action="append", help="score this upsampler run instead of "
                    "training (repeatable)")
    ap.add_argument("--output-dir", default="/tmp/glidectl-bench-upsampler")
    ap.add_argument("--images", type=positive_int, default=36, help="held-out demo pictures")
    ap.add_argument("--train-args", default="", help="extra `glidectl upsample` flags")
    ap.add_argument("--eval-args", default="", help="extra `glidectl eval` flags")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    root = Path(args.output_dir)
    low_res = held_out(root / f"held-out-{args.images}", args.images)
    if args.run:
        runs = [{"run": r} for r in args.run]
    else:
        out_dir = root / time.strftime("%Y%m%d-%H%M%S")
        runs = [train_run(args.config, out_dir, s, t,
                          (*RECIPE, *args.train_args.split()), command="upsample")
                for t in args.threads for s in args.seeds]
    results = []
    for r in runs:
        r.update(evaluate(r["run"], low_res, args.eval_args.split()))
        results.append(r)
        if not args.json:
            print(" ".join(f"{k}={v}" for k, v in r.items()), flush=True)
    worst = {k: min(r[k] for r in results) for k in ("psnr", "ssim", "worst_psnr")}
    worst["psnr_over_bicubic"] = round(min(r["psnr"] - r["bicubic_psnr"] for r in results), 2)
    worst["ssim_over_bicubic"] = round(min(r["ssim"] - r["bicubic_ssim"] for r in results), 3)
    if "train_wall_s" in results[0]:
        worst["train_wall_s"] = max(r["train_wall_s"] for r in results)
    if args.json:
        json.dump({"runs": results, "worst": worst}, sys.stdout, indent=1)
        print()
    else:
        print("worst case over", len(results), "runs:",
              ", ".join(f"{k} {v}" for k, v in worst.items()))
    return 0


if __name__ == "__main__":
    run(main)
