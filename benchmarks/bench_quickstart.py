"""Quickstart check, as a user runs it: `glidectl train --config examples/glide.toml` for each
training seed and torch thread count, then `glidectl sample` with its defaults (the model's
recommended settings) on every demo colour × shape × background, scored separately for
colour, shape and background by ``glidectl.data.demo.score_image`` (144 images by default).
Prints each run and the worst case first.

    python benchmarks/bench_quickstart.py                          # seeds 0-4 x threads 1,2
    python benchmarks/bench_quickstart.py --seeds 0 --threads 2    # one run
    python benchmarks/bench_quickstart.py --run runs/quickstart    # score existing runs
    python benchmarks/bench_quickstart.py --grey --seeds 0 --threads 2  # greyscale data

``--grey`` trains on a greyscale copy of the demo pictures (an image folder with .txt
captions) and adds two colour figures on 0-255 levels that grey data should keep at 0:
``cast``, the largest gap between an image's channel means and their average (a tint), and
``chroma``, the mean over pixels of max(R, G, B) - min(R, G, B) (coloured grain). A run
trained on grey data recommends grey sampling (x0 projected onto grey), which ``sample``
then uses; ``--sample-args=--no-grey`` scores the same runs without it:

    python benchmarks/bench_quickstart.py --grey --run RUN --sample-args=--no-grey
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench_args import nonnegative_ints, positive_int, positive_ints, run

ROOT = Path(__file__).resolve().parents[1]
GOALS = {"colour": 0.95, "background": 0.90, "shape": 0.85}
WALL_GOAL_S = 300


def glidectl(*args: str, threads: int | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.run([sys.executable, "-m", "glidectl", *args], env=env,
                          capture_output=True, text=True)
    if proc.returncode:  # glidectl's own one-line error (and exit code), not a traceback
        print(f"glidectl {args[0]} failed: {(proc.stderr.strip() or '?').splitlines()[-1]}",
              file=sys.stderr)
        sys.exit(proc.returncode)
    return proc


def train_run(config: str, out_dir: Path, seed: int, threads: int,
              extra: tuple[str, ...] = (), command: str = "train") -> dict:
    """Train one run in a subprocess (``glidectl COMMAND``); its wall and CPU seconds."""
    name = f"seed{seed}-threads{threads}"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    glidectl(command, "--config", config, "--set", f"train.output_dir={out_dir}",
             "--set", f"train.name={name}", "--set", f"train.seed={seed}",
             "--set", f"train.threads={threads}", *extra, threads=threads)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"run": str(out_dir / name), "seed": seed, "threads": threads,
            "train_wall_s": round(wall, 1), "train_cpu_s": round(cpu, 1)}


def demo_prompts(per_class: int) -> list[str]:
    from glidectl.data.demo import BACKGROUNDS, COLOURS, SHAPES, caption_for

    return [caption_for(c, s, b) for c in COLOURS for s in SHAPES for b in BACKGROUNDS
            for _ in range(per_class)]


def grey_data(config: str, folder: Path) -> Path:
    """The config's demo pictures in greyscale (luma, as PIL's "L"), with their captions."""
    from glidectl.config import load_config
    from glidectl.data.demo import make_demo_sample

    data = load_config(config).data
    name = data.source.removeprefix("demo:")
    folder = folder / f"grey-{name}-{data.demo_size}-{data.resolution}"
    if not (folder / "done").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(data.demo_size):
            sample = make_demo_sample(name, i, data.resolution)
            sample.image.convert("L").convert("RGB").save(folder / f"{i:06d}.png")
            (folder / f"{i:06d}.txt").write_text(sample.caption, encoding="utf-8")
        (folder / "done").write_text("")
    return folder


def colour_figures(image) -> tuple[float, float]:
    """(cast, chroma) of an RGB image on 0-255 levels; both 0 for a grey image."""
    import numpy as np

    rgb = np.asarray(image, dtype=np.float64)
    means = rgb.mean((0, 1))
    return float(np.abs(means - means.mean()).max()), float(np.ptp(rgb, axis=2).mean())


def score_folder(folder: Path) -> dict:
    """Score every PNG in ``folder`` against the prompt in its own text chunk."""
    from PIL import Image

    from glidectl.data.demo import score_image

    scores, colours = [], []
    for png in sorted(folder.glob("*.png")):
        if png.name.startswith("grid"):
            continue
        with Image.open(png) as im:
            prompt = im.text.get("prompt") or im.text.get("Prompt")
            scores.append(score_image(im.convert("RGB"), prompt))
            colours.append(colour_figures(im.convert("RGB")))
    n = len(scores)
    out = {"images": n}
    for key in ("colour", "shape", "background"):
        out[key] = sum(bool(s[f"{key}_ok"]) for s in scores) / n
    out["all"] = sum(bool(s["ok"]) for s in scores) / n
    out["cast_mean"] = round(sum(c for c, _ in colours) / n, 2)
    out["cast_worst"] = round(max(c for c, _ in colours), 2)
    out["chroma_mean"] = round(sum(c for _, c in colours) / n, 2)
    out["chroma_worst"] = round(max(c for _, c in colours), 2)
    return out


def sample_and_score(run: str, per_class: int, seed: int, extra: list[str]) -> dict:
    out = Path(run) / "bench-samples" if Path(run).is_dir() else Path(f"{run}-samples")
    shutil.rmtree(out, ignore_errors=True)  # this benchmark's own folder: score this call only
    t0 = time.perf_counter()
    glidectl("sample", *demo_prompts(per_class), "--base", run, "--out", str(out),
             "--seed", str(seed), "--quiet", *extra)
    figures = score_folder(out)
    figures["sample_wall_s"] = round(time.perf_counter() - t0, 1)
    return figures


def passes(r: dict, goals: dict[str, float]) -> bool:
    return all(r[k] >= v for k, v in goals.items()) and r.get("train_wall_s", 0) <= WALL_GOAL_S


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "examples" / "glide.toml"))
    ap.add_argument("--seeds", type=nonnegative_ints, default="0,1,2,3,4",
                    help="training seeds")
    ap.add_argument("--threads", type=positive_ints, default="1,2",
                    help="torch thread counts")
    ap.add_argument("--run", action="append",
                    help="score this existing run or weights file (repeatable)")
    ap.add_argument("--output-dir", default="/tmp/glidectl-bench-quickstart")
    ap.add_argument("--per-class", type=positive_int, default=4,
                    help="samples per (colour, shape, bg): 4 = 144 images (±3 points at 85 %%)")
    ap.add_argument("--sample-seed", type=int, default=0)
    ap.add_argument("--sample-args", default="", help="extra `glidectl sample` flags")
    ap.add_argument("--grey", action="store_true",
                    help="train on a greyscale copy of the demo data; colour is not scored")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    goals = {k: v for k, v in GOALS.items() if not (args.grey and k == "colour")}

    if args.run:
        runs = [{"run": r} for r in args.run]
    else:
        out_dir = Path(args.output_dir) / time.strftime("%Y%m%d-%H%M%S")
        extra = (("--set", f"data.source={grey_data(args.config, Path(args.output_dir))}")
                 if args.grey else ())
        runs = [train_run(args.config, out_dir, s, t, extra)
                for t in args.threads for s in args.seeds]
    results = []
    for r in runs:
        r.update(sample_and_score(r["run"], args.per_class, args.sample_seed,
                                  args.sample_args.split()))
        results.append(r)
        if not args.json:
            print(" ".join(f"{k}={v:.0%}" if k in (*GOALS, "all") else f"{k}={v}"
                           for k, v in r.items()), flush=True)
    worst = {k: min(r[k] for r in results) for k in (*goals, *("all",) * (not args.grey))}
    worst.update({k: max(r[k] for r in results) for k in ("cast_worst", "chroma_mean")})
    if "train_wall_s" in results[0]:
        worst["train_wall_s"] = max(r["train_wall_s"] for r in results)
        worst["train_cpu_s"] = max(r["train_cpu_s"] for r in results)
    ok = all(passes(r, goals) for r in results)
    if args.json:
        json.dump({"runs": results, "worst": worst, "pass": ok}, sys.stdout, indent=1)
        print()
    else:
        print("worst case over", len(results), "runs:",
              ", ".join(f"{k} {v:.2f}" if "cast" in k or "chroma" in k else
                        f"{k} {v:.0%}" if v <= 1 else f"{k} {v:.0f}" for k, v in worst.items()))
        print("PASS" if ok else "FAIL", "(goals:", ", ".join(
            f"{k} >= {v:.0%}" for k, v in goals.items()), "on every run; training <= 300 s "
            "wall; cast and chroma are reported, 0-255 levels)")
    return 0 if ok else 1


if __name__ == "__main__":
    run(main)
