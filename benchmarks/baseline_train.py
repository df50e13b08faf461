"""An independent baseline: the quickstart's network and data trained by a textbook loop.

No engine, no EMA, no loss weighting: ε-MSE, AdamW at a constant LR, t uniform over the
1000 steps, the same caption dropout, batch and steps as the config. What the engine trains
must do at least as well on benchmarks/bench_quickstart.py's metrics and on
benchmarks/diagnose.py's per-noise-level errors.

    python benchmarks/baseline_train.py -o /tmp/baseline.safetensors [--config FILE] [--seed 0]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from bench_args import nonnegative_int, positive_int, run

ROOT = Path(__file__).resolve().parents[1]


def train_baseline(config: str, out: str, seed: int, threads: int | None) -> Path:
    from glidectl.config import load_config
    from glidectl.data import build_dataset
    from glidectl.diffusion import create_diffusion
    from glidectl.glide import create_model, preset_options, save_weights
    from glidectl.tokenizer import get_tokenizer

    cfg = load_config(config)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    opts = preset_options(cfg.model.kind, cfg.model.size, cfg.model.tokenizer)
    opts = opts.replace(image_size=cfg.data.resolution or opts.image_size)
    model = create_model(opts).train()
    diffusion = create_diffusion(opts.noise_schedule, opts.diffusion_steps)
    tokenizer = get_tokenizer(opts.tokenizer)
    data = build_dataset(cfg.data, tokenizer=tokenizer, image_size=opts.image_size,
                         text_ctx=opts.text_ctx, seed=seed)
    loader = torch.utils.data.DataLoader(data, batch_size=cfg.train.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    gen = torch.Generator().manual_seed(seed + 1)
    step, start = 0, time.perf_counter()
    while step < cfg.train.steps:
        for batch in loader:
            x0 = batch["image"]
            t = torch.randint(0, diffusion.num_timesteps, (x0.shape[0],), generator=gen)
            noise = torch.randn(x0.shape, generator=gen)
            x_t = diffusion.q_sample(x0, t, noise)
            eps = model(x_t, t.float(), batch["tokens"], batch["mask"])[:, :3]
            loss = (eps - noise).pow(2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if step % 100 == 0:
                print(f"step {step} loss {loss.item():.4f} ({time.perf_counter() - start:.0f} s)")
            if step == cfg.train.steps:
                break
    return save_weights(model, out, opts, {"step": str(step), "run": "baseline"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "examples" / "glide.toml"))
    ap.add_argument("-o", "--out", default="/tmp/glidectl-baseline.safetensors")
    ap.add_argument("--seed", type=nonnegative_int, default=0)
    ap.add_argument("--threads", type=positive_int, default=None)
    args = ap.parse_args()
    print(f"wrote {train_baseline(args.config, args.out, args.seed, args.threads)}")


if __name__ == "__main__":
    run(main)
