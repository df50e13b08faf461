"""Quickstart check: train examples/glide.toml from scratch, then test that samples follow
their prompts (demo colour and shape scored by ``glidectl.data.demo.score_image``).

    python benchmarks/bench_quickstart.py                 # train + score (goal: ≤ 300 s, ≥ 80 %)
    python benchmarks/bench_quickstart.py --run runs/quickstart   # score an existing run
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def score_run(run: Path, per_class: int, sampler: str, steps: int, guidance: float,
              seed: int = 1234) -> dict[str, float]:
    """Sample every demo colour × shape × background ``per_class`` times with the EMA weights."""
    import torch

    from glidectl import pipeline
    from glidectl.data.demo import BACKGROUNDS, COLOURS, SHAPES, caption_for, score_image
    from glidectl.glide import load_model

    model = load_model(str(run))
    prompts = [caption_for(c, s, b) for c in COLOURS for s in SHAPES for b in BACKGROUNDS
               for _ in range(per_class)]
    with torch.no_grad():
        images = pipeline.sample_base(model, None, prompts, None, sampler=sampler, steps=steps,
                                      guidance=guidance, seed=seed)
    scores = [score_image(im, p) for im, p in zip(images, prompts, strict=True)]
    colour = sum(bool(s["colour_ok"]) for s in scores) / len(scores)
    shape = sum(bool(s["shape_ok"]) for s in scores) / len(scores)
    both = sum(bool(s["ok"]) for s in scores) / len(scores)
    by_colour = {c: sum(bool(s["colour_ok"]) for s, p in zip(scores, prompts, strict=True)
                        if f" {c} " in p) / (len(SHAPES) * len(BACKGROUNDS) * per_class)
                 for c in COLOURS}
    return {"images": len(prompts), "colour_ok": colour, "shape_ok": shape, "both_ok": both,
            **{f"colour_ok[{c}]": v for c, v in by_colour.items()}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "examples" / "glide.toml"))
    ap.add_argument("--run", help="score this existing run instead of training")
    ap.add_argument("--output-dir", default="/tmp/glidectl-bench-quickstart")
    ap.add_argument("--per-class", type=int, default=2, help="samples per (colour, shape, bg)")
    ap.add_argument("--threads", type=int, default=None,
                    help="override train.threads (1 is robust when other jobs load the CPU)")
    args = ap.parse_args()

    from glidectl.config import load_config

    cfg = load_config(args.config)
    if args.threads is not None:
        cfg.train.threads = args.threads
    elapsed = None
    if args.run:
        run = Path(args.run)
    else:
        from glidectl.training import train

        cfg.train.output_dir = args.output_dir
        cfg.train.name = f"quickstart-{int(time.time())}"
        t0, c0 = time.perf_counter(), time.process_time()
        result = train(cfg, live=False)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        run = result.run_dir
        if result.interrupted:
            print(f"training was interrupted at step {result.step}; not scored")
            return 1
    t0 = time.perf_counter()
    figures = score_run(run, args.per_class, cfg.preview.sampler, cfg.preview.steps,
                        cfg.preview.guidance)
    score_time = time.perf_counter() - t0
    if elapsed is not None:
        print(f"train wall time: {elapsed:.0f} s (goal <= 300 s), CPU time {cpu:.0f} s "
              "(on a loaded machine CPU time / threads approximates the wall time alone)")
    print(f"scored {figures['images']} samples in {score_time:.0f} s from {run}")
    for key, value in figures.items():
        if key != "images":
            print(f"{key}: {100 * value:.0f}%")
    ok = figures["colour_ok"] >= 0.8 and (elapsed is None or elapsed <= 300)
    print("PASS" if ok else "FAIL", "(goal: colour follows the prompt for >= 80% of images)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
