"""LoRA vs full training (peak memory, images/s) and a caption → look demo.

Part 1 trains the same config twice through the engine, each in its own process so peak
RSS (``resource.getrusage(...).ru_maxrss``) is that run's alone: full finetuning (AdamW and
EMA over every weight) and LoRA (attention targets, rank 8). Both processes import the same
libraries (peft included), so the difference is the training state alone.

Part 2 trains a tiny base on demo:shapes, teaches a LoRA that "a zorblax" is a solid magenta
image, and prints the mean colour of samples before and after, for that caption and for a
control caption.

    python benchmarks/bench_lora.py                 # both parts (~30 min on 2 busy cores)
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
def zorblax_folder(path: Path, n: int = 32, n_shapes: int = 96, size: int = 32) -> Path:
    """``n`` solid magenta "a zorblax" images, plus demo shapes with their own captions so
    the adapter learns the new word rather than "everything is magenta"."""
    from PIL import Image

    from glidectl.data.demo import make_demo_sample

    path.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (size, size), (255, 0, 255)).save(path / f"z{i:03d}.png")
        (path / f"z{i:03d}.txt").write_text("a zorblax\n")
    for i in range(n_shapes):
        sample = make_demo_sample("shapes", i, size)
        sample.image.save(path / f"s{i:03d}.png")
        (path / f"s{i:03d}.txt").write_text(sample.caption + "\n")
    return path


def mean_rgb(images) -> list[float]:
    x = (images.clamp(-1, 1) + 1) * 127.5
    return [round(float(v), 1) for v in x.mean(dim=(0, 2, 3))]


def demo(args: argparse.Namespace, out: Path) -> None:
    import torch

    from glidectl.config import GlideConfig
    from glidectl.data.demo import make_demo_sample
    from glidectl.glide import load_model
    from glidectl.lora import apply_loras, train_lora
    from glidectl.pipeline import sample_base, tokenizer_for
    from glidectl.training.engine import Trainer

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    cfg = GlideConfig()
    cfg.model.size = "tiny"
    cfg.data.source = "demo:shapes"
    cfg.data.demo_size = 2048
    cfg.data.resolution = 32
    cfg.train.output_dir = str(out)
    cfg.train.name = "demo-base"
    cfg.train.steps = args.base_steps
    cfg.train.batch_size = 8
    cfg.train.lr = 2e-3
    cfg.train.ema_decay = 0.0
    cfg.train.threads = 1
    cfg.preview.every = 0
    cfg.checkpoint.every = 0
    cfg.log.every = 50
    if args.base_run:
        base_dir = Path(args.base_run)
    else:
        base_dir = Trainer(cfg, quiet=True).run().run_dir
    t_base = time.perf_counter() - t0

    lcfg = GlideConfig()
    lcfg.model.init = str(base_dir)
    lcfg.data.source = str(zorblax_folder(out / "zorblax", n_shapes=args.shapes))
    lcfg.data.resolution = 32
    lcfg.data.uncond_p = 0.1
    lcfg.train.output_dir = str(out)
    lcfg.train.name = "demo-lora"
    lcfg.train.steps = args.lora_steps
    lcfg.train.batch_size = 8
    lcfg.train.lr = args.lora_lr
    lcfg.train.ema_decay = 0.0
    lcfg.train.threads = 1
    lcfg.preview.every = 0
    lcfg.checkpoint.every = 0
    lcfg.log.every = 50
    lcfg.lora.targets = ["all"]
    lcfg.lora.rank = 8
    lcfg.lora.alpha = 8.0
    t1 = time.perf_counter()
    lora_run = train_lora(lcfg, quiet=True)
    t_lora = time.perf_counter() - t1

    before = load_model(str(base_dir)).eval()
    tok = tokenizer_for(before)
    where = f"reused {base_dir}" if args.base_run else \
        f"{args.base_steps} steps on demo:shapes ({t_base:.0f}s)"
    print(f"\n== demo: tiny base {where}; LoRA 'a zorblax' -> magenta, {args.lora_steps} steps "
          f"({t_lora:.0f}s); ddim 25 steps, guidance 3, {args.samples} samples ==")
    print(f"{'caption':<16}{'scale':>6}{'before mean RGB':>24}{'after mean RGB':>24}"
          f"{'shift':>22}{'dist to magenta':>18}")

    def dist(c: list[float]) -> float:
        return sum((u - v) ** 2 for u, v in zip(c, (255, 0, 255), strict=True)) ** 0.5

    control = make_demo_sample("shapes", 0, 32).caption
    kw = dict(sampler="ddim", steps=25, guidance=3.0, seed=0)
    for scale in (1.0, 2.0):
        after = apply_loras(load_model(str(base_dir)).eval(),
                            [f"{lora_run.run_dir}:{scale}"])
        for prompt in ("a zorblax", control):
            prompts = [prompt] * args.samples
            with torch.no_grad():
                b = mean_rgb(sample_base(before, None, prompts, tok, **kw))
                a = mean_rgb(sample_base(after, None, prompts, tok, **kw))
            shift = [round(y - x, 1) for x, y in zip(b, a, strict=True)]
            print(f"{prompt[:15]:<16}{scale:>6g}{str(b):>24}{str(a):>24}{str(shift):>22}"
                  f"{dist(b):>8.0f} -> {dist(a):.0f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", choices=("full", "lora"), help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--size", default="small", help="Size preset for part 1 (tiny/small/official).")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--base-steps", type=int, default=1000)
    p.add_argument("--lora-steps", type=int, default=300)
    p.add_argument("--lora-lr", type=float, default=5e-3)
    p.add_argument("--shapes", type=int, default=0,
                   help="Demo-shapes images mixed into the zorblax data (0 = none).")
    p.add_argument("--work", help="Keep runs in this folder (default: a temp folder).")
    p.add_argument("--base-run", help="Reuse a trained base run folder for the demo.")
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--skip-demo", action="store_true")
    args = p.parse_args()
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.work) if args.work else Path(tmp)
        if not args.skip_memory:
            memory_and_speed(args, out)
        if not args.skip_demo:
            demo(args, out)


if __name__ == "__main__":
    main()
