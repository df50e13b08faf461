"""Per-noise-level diagnosis of trained models on held-out demo pictures.

For each timestep bucket: the ε-MSE, the x0-prediction error split into its low-frequency part
(|per-image channel-mean error|, 0..255) and the rest (RMS), and how much the caption moves the
x0 prediction (conditional − unconditional, RMS and channel means); how much swapping
"white" and "black" in the captions moves x0's channel means (0 when the text encoder has
dropped the background word), and how much changing the shape word (circle → square →
triangle → circle) moves the rest of x0 (small when the shape word is barely used: the
quickstart's shape accuracy rose with it). Models are compared on the same noisy inputs.

    python benchmarks/diagnose.py runs/quickstart /tmp/baseline.safetensors [--n 288] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys

from bench_args import nonnegative_int, positive_int, run


def held_out_demo(name: str, n: int, size: int, offset: int = 1_000_000):
    """``n`` demo pictures the training never saw (indices past any demo_size), balanced."""
    import torch

    from glidectl.data.demo import make_demo_sample
    from glidectl.data.transforms import to_tensor

    samples = [make_demo_sample(name, offset + i, size) for i in range(n)]
    images = torch.stack([to_tensor(s.image) for s in samples])
    return images, [s.caption for s in samples]


def diagnose(spec: str, n: int, demo: str, seed: int) -> tuple[list, dict, dict]:
    from glidectl.diagnostics import x0_report
    from glidectl.diffusion import create_diffusion
    from glidectl.glide import load_model
    from glidectl.pipeline import tokenizer_for

    model = load_model(spec).eval()
    opts = model.options
    diffusion = create_diffusion(opts.noise_schedule, opts.diffusion_steps)
    images, captions = held_out_demo(demo, n, opts.image_size)
    reports = x0_report(model, diffusion, images, captions, tokenizer_for(model), seed=seed)
    return (reports, background_swap(model, diffusion, images, captions, seed),
            shape_swap(model, diffusion, images, captions, seed))


def swap_words(caption: str, a: str, b: str) -> str:
    return " ".join(b if w == a else a if w == b else w for w in caption.split(" "))


def background_swap(model, diffusion, images, captions, seed: int) -> dict[int, float]:
    """How much "white" ↔ "black" in the caption moves x0's channel means, per timestep."""
    from glidectl.diagnostics import swap_gap
    from glidectl.pipeline import tokenizer_for

    swapped = [swap_words(c, "white", "black") for c in captions]
    return swap_gap(model, diffusion, images, captions, swapped, tokenizer_for(model),
                    seed=seed)


SHAPE_CYCLE = {"circle": "square", "square": "triangle", "triangle": "circle"}


def shape_swap(model, diffusion, images, captions, seed: int) -> dict[int, float]:
    """How much changing the shape word moves the rest of x0 (RMS, 0..255), per timestep."""
    from glidectl.diagnostics import swap_gap
    from glidectl.pipeline import tokenizer_for

    swapped = [" ".join(SHAPE_CYCLE.get(w, w) for w in c.split(" ")) for c in captions]
    return swap_gap(model, diffusion, images, captions, swapped, tokenizer_for(model),
                    timesteps=(300, 500, 650, 800, 900), seed=seed, part="rest")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="model specs: run folders or weight files")
    ap.add_argument("--n", type=positive_int, default=288,
                    help="held-out pictures (a multiple of 72)")
    ap.add_argument("--demo", default="shapes")
    ap.add_argument("--seed", type=nonnegative_int, default=0)
    ap.add_argument("--threads", type=positive_int, default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    import torch

    from glidectl.diagnostics import format_report

    if args.threads:
        torch.set_num_threads(args.threads)
    results = {}
    for spec in args.models:
        reports, swap, shape = diagnose(spec, args.n, args.demo, args.seed)
        results[spec] = {"buckets": [r.as_dict() for r in reports], "background_swap": swap,
                         "shape_swap": shape}
        if not args.json:
            print(format_report(reports, title=spec))
            print("white <-> black background in the caption moves x0 channel means by: "
                  + ", ".join(f"{v:.1f} at t={t}" for t, v in swap.items()))
            print("circle -> square -> triangle in the caption moves the rest of x0 by (RMS): "
                  + ", ".join(f"{v:.1f} at t={t}" for t, v in shape.items()))
            print()
    if args.json:
        json.dump(results, sys.stdout, indent=1)
        print()
    return 0


if __name__ == "__main__":
    run(main)
