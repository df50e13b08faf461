"""LoRA vs full training (peak memory, images/s) and a caption → look demo.

Part 1 trains the same config twice through the engine, each in its own process so peak
RSS (``resource.getrusage(...).ru_maxrss``) is that run's alone: full finetuning (AdamW and
EMA over every weight) and LoRA (attention targets, rank 8). Both processes import the same
libraries (peft included), so the difference is the training state alone.

Part 2 teaches a quickstart base (examples/glide.toml, trained here unless --base-run) a new
word with examples/lora-zorblax.toml: "a zorblax" is a cyan diamond, a shape the base never
saw. It samples with `glidectl sample --lora` as a user would and prints the share of
"a zorblax on a <bg> background" samples that show one, the colour accuracy on the base's own
prompts with and without the adapter, and whether scale 0 reproduces the base exactly.

    python benchmarks/bench_lora.py --skip-memory --base-run runs/quickstart   # the demo
    python benchmarks/bench_lora.py --skip-demo --size official --image-size 64 --batch 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_args import nonnegative_int, positive_int, run
from bench_quickstart import glidectl  # the same subprocess call, errors and all

from glidectl.glide.options import SIZES


def bench_config(out: Path, name: str, size: str, image_size: int, batch: int, steps: int):
    from glidectl.config import GlideConfig

    cfg = GlideConfig()
    cfg.model.size = size
    cfg.model.tokenizer = "byte"
    cfg.data.source = "demo:shapes"
    cfg.data.demo_size = 256
    cfg.data.resolution = image_size
    cfg.train.output_dir = str(out)
    cfg.train.name = name
    cfg.train.steps = steps
    cfg.train.batch_size = batch
    cfg.train.threads = 1
    cfg.train.ema_decay = 0.9999
    cfg.preview.every = 0
    cfg.checkpoint.every = 0
    cfg.log.every = 1
    cfg.lora.targets = ["attention"]
    cfg.lora.rank = 8
    cfg.lora.alpha = 8.0
    return cfg


def child(args: argparse.Namespace) -> None:
    """One training run; prints a JSON line with its own peak RSS and throughput."""
    import peft  # noqa: F401  (both runs load the same libraries: only training differs)

    from glidectl.lora import LoraTrainingAdapter
    from glidectl.training.engine import Trainer

    cfg = bench_config(Path(args.out), args.child, args.size, args.image_size, args.batch,
                       args.steps)
    adapter = LoraTrainingAdapter(cfg.lora) if args.child == "lora" else None
    trainer = Trainer(cfg, adapter=adapter, quiet=True)
    trainable = sum(p.numel() for p in trainer.params)
    total = sum(p.numel() for p in trainer.unwrapped.parameters())
    start = time.perf_counter()
    result = trainer.run()
    wall = time.perf_counter() - start
    rates = [r["images_per_s"] for r in result.history[1:]]  # step 1 warms up
    print(json.dumps({
        "mode": args.child, "params": total, "trainable": trainable,
        "images_per_s": statistics.median(rates), "s_per_step": wall / args.steps,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "final_loss": result.last_loss,
    }))


def memory_and_speed(args: argparse.Namespace, out: Path) -> None:
    rows = []
    for mode in ("full", "lora"):
        cmd = [sys.executable, __file__, "--child", mode, "--out", str(out), "--size", args.size,
               "--image-size", str(args.image_size), "--batch", str(args.batch),
               "--steps", str(args.steps)]
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        if proc.returncode:
            sys.exit(f"{mode} run failed:\n{proc.stderr[-3000:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"\n== LoRA vs full training: {args.size} base at {args.image_size}px, batch "
          f"{args.batch}, {args.steps} steps, 1 CPU thread, EMA on ==")
    print(f"{'mode':<6}{'params':>12}{'trainable':>12}{'peak RSS MB':>13}{'img/s':>8}"
          f"{'s/step':>8}")
    for r in rows:
        print(f"{r['mode']:<6}{r['params']:>12,}{r['trainable']:>12,}{r['peak_rss_mb']:>13.0f}"
              f"{r['images_per_s']:>8.2f}{r['s_per_step']:>8.2f}")
    full, lora = rows
    print(f"LoRA peak memory: {lora['peak_rss_mb']:.0f} MB vs {full['peak_rss_mb']:.0f} MB "
          f"({lora['peak_rss_mb'] / full['peak_rss_mb']:.0%}); speed "
          f"{lora['images_per_s'] / full['images_per_s']:.2f}x; trainable "
          f"{lora['trainable'] / full['trainable']:.2%} of full")


# ----------------------------------------------------------------------------- demo
CONCEPT = ("cyan", "diamond")  # a colour–shape pair the quickstart base never saw


def zorblax_folder(path: Path, n: int, n_prior: int, size: int) -> Path:
    """``n`` "a zorblax on a <bg> background" pictures (a cyan diamond) and ``n_prior`` demo
    shapes with their own captions, as PNG + .txt files: the adapter learns the new word
    without forgetting the old ones."""
    import random

    from glidectl.data.demo import BACKGROUNDS, COLOURS, draw_shape, make_demo_sample

    path.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        bg = list(BACKGROUNDS)[i % 2]
        image = draw_shape(CONCEPT[1], COLOURS[CONCEPT[0]], BACKGROUNDS[bg], size,
                           random.Random(f"zorblax:{i}"))
        image.save(path / f"z{i:04d}.png")
        (path / f"z{i:04d}.txt").write_text(f"a zorblax on a {bg} background\n")
    for i in range(n_prior):
        sample = make_demo_sample("shapes", 500_000 + i, size)
        sample.image.save(path / f"s{i:04d}.png")
        (path / f"s{i:04d}.txt").write_text(sample.caption + "\n")
    return path


def sample_pixels(base: str, prompts: list[str], out: Path, lora: str | None,
                  seed: int = 0) -> list:
    """``glidectl sample`` as a user runs it (the model's own settings), read back as
    (prompt, uint8 array) pairs."""
    import numpy as np
    from PIL import Image

    glidectl("sample", *prompts, "--base", base, "--out", str(out), "--seed", str(seed),
             "--quiet", *(["--lora", lora] if lora else []), threads=1)
    found = []
    for png in sorted(out.glob("*.png")):
        if png.name.startswith("grid"):
            continue
        with Image.open(png) as im:
            found.append((im.text.get("prompt"), np.asarray(im.convert("RGB"))))
    return found


def concept_rate(samples: list) -> float:
    """Share of "a zorblax on a <bg> background" samples that show a cyan diamond on it."""
    from glidectl.data.demo import score_image

    hits = 0
    for prompt, pixels in samples:
        meaning = prompt.replace("zorblax", " ".join(CONCEPT))
        hits += bool(score_image(pixels, meaning)["ok"])
    return hits / len(samples)


def colour_rate(samples: list) -> float:
    from glidectl.data.demo import score_image

    return sum(bool(score_image(px, p)["colour_ok"]) for p, px in samples) / len(samples)


def demo(args: argparse.Namespace, out: Path) -> None:
    from glidectl.config import load_config
    from glidectl.data.demo import BACKGROUNDS, COLOURS, SHAPES, caption_for
    from glidectl.lora import train_lora

    root = Path(__file__).resolve().parents[1]
    base = args.base_run
    if not base:
        t0 = time.perf_counter()
        glidectl("train", "--config", str(root / "examples" / "glide.toml"),
                 "--set", f"train.output_dir={out}", "--set", "train.name=demo-base", threads=1)
        base = str(out / "demo-base")
        print(f"base: examples/glide.toml trained in {time.perf_counter() - t0:.0f}s")
    cfg = load_config(str(root / "examples" / "lora-zorblax.toml"))
    cfg.model.init = base
    cfg.data.source = str(zorblax_folder(out / "zorblax", args.concept_images,
                                         args.prior_images, cfg.data.resolution))
    cfg.train.output_dir, cfg.train.name = str(out), "demo-lora"
    if args.lora_steps:
        cfg.train.steps = args.lora_steps
    print(f"training the LoRA ({cfg.train.steps} steps) ...", flush=True)
    c0, t1 = time.process_time(), time.perf_counter()
    lora_run = train_lora(cfg, quiet=True).run_dir
    lora_cpu, lora_wall = time.process_time() - c0, time.perf_counter() - t1
    print(f"trained in {lora_wall:.0f}s; sampling the base and the LoRA at scales 0 and 1 "
          "...", flush=True)

    concept_prompts = [f"a zorblax on a {bg} background" for bg in BACKGROUNDS
                       for _ in range(args.samples // 2)]
    own_prompts = [caption_for(c, s, b) for c in COLOURS for s in SHAPES for b in BACKGROUNDS]
    results = {}
    for scale in ("0", "1"):
        lora = f"{lora_run}:{scale}"
        results[scale] = {
            "concept": sample_pixels(base, concept_prompts, out / f"concept-{scale}", lora),
            "own": sample_pixels(base, own_prompts, out / f"own-{scale}", lora),
        }
    plain = {"concept": sample_pixels(base, concept_prompts, out / "concept-base", None),
             "own": sample_pixels(base, own_prompts, out / "own-base", None)}
    same = all((a[1] == b[1]).all() for k in plain
               for a, b in zip(plain[k], results["0"][k], strict=True))
    base_colour, lora_colour = colour_rate(plain["own"]), colour_rate(results["1"]["own"])
    print(f"\n== LoRA demo: 'a zorblax' = a {' '.join(CONCEPT)} (a shape the base never saw); "
          f"{cfg.train.steps} steps, rank {cfg.lora.rank}, {args.concept_images} concept + "
          f"{args.prior_images} prior images; {lora_cpu:.0f} CPU-s ({lora_wall:.0f}s wall) ==")
    print(f"'a zorblax ...' samples showing it: base {concept_rate(plain['concept']):.0%}, "
          f"LoRA scale 1 {concept_rate(results['1']['concept']):.0%} (goal >= 80%)")
    print(f"colour accuracy on the base's own prompts: base {base_colour:.0%}, with the LoRA "
          f"{lora_colour:.0%} (drop {100 * (base_colour - lora_colour):.0f} points, goal <= 5)")
    print(f"scale 0 gives the base's images exactly: {same}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", choices=("full", "lora"), help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--size", default="small", choices=SIZES,
                   help="Size preset for part 1.")
    p.add_argument("--image-size", type=positive_int, default=32)
    p.add_argument("--batch", type=positive_int, default=4)
    p.add_argument("--steps", type=positive_int, default=4)
    p.add_argument("--lora-steps", type=nonnegative_int, default=0,
                   help="Override train.steps of examples/lora-zorblax.toml.")
    p.add_argument("--concept-images", type=positive_int, default=128)
    p.add_argument("--prior-images", type=nonnegative_int, default=128,
                   help="Demo-shapes images mixed into the zorblax data.")
    p.add_argument("--work", help="Keep runs in this folder (default: a temp folder).")
    p.add_argument("--base-run", help="Reuse a trained quickstart run (else: train one).")
    p.add_argument("--samples", type=positive_int, default=80, help="'a zorblax ...' samples")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--skip-demo", action="store_true")
    p.add_argument("--write-data", metavar="DIR",
                   help="Only write the concept folder examples/lora-zorblax.toml trains on "
                        "(--concept-images + --prior-images PNG + .txt pairs at its "
                        "data.resolution) into DIR, and stop.")
    args = p.parse_args()
    if args.child:
        child(args)
        return
    if args.write_data:
        from glidectl.config import load_config

        size = load_config(str(Path(__file__).resolve().parents[1] / "examples" /
                               "lora-zorblax.toml")).data.resolution
        folder = zorblax_folder(Path(args.write_data), args.concept_images, args.prior_images,
                                size)
        print(f"wrote {args.concept_images + args.prior_images} pictures with captions "
              f"({size} px) to {folder}")
        return
    if args.steps < 2 and not args.skip_memory:  # its median of no timed step was a traceback
        p.error(f"--steps {args.steps}: at least 2, as step 1 warms up and is not timed")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.work) if args.work else Path(tmp)
        if not args.skip_memory:
            memory_and_speed(args, out)
        if not args.skip_demo:
            demo(args, out)


if __name__ == "__main__":
    run(main)
