"""One training step of the quickstart network (forward, backward, AdamW) by batch size,
memory layout (NCHW / channels_last) and AdamW kernel (per-tensor loop / fused).

    python benchmarks/bench_train_step.py [--threads 2] [--batches 16,32,64] [--steps 8]

Prints ms per step and images/s for each case: what `examples/glide.toml`'s batch size,
`train.channels_last` and the fused AdamW were chosen from.
"""

from __future__ import annotations

import argparse
import time

from bench_args import positive_int, positive_ints, run


def time_step(batch: int, channels_last: bool, fused: bool, steps: int) -> float:
    """Seconds per optimizer step (after two warm-up steps) on random inputs."""
    import torch

    from glidectl.glide import create_model, preset_options

    torch.manual_seed(0)
    opts = preset_options("base", "quickstart", "byte")
    model = create_model(opts).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3, fused=fused)
    size = opts.image_size
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=fmt)
    t = torch.randint(0, 1000, (batch,)).float()
    tokens = torch.randint(0, 256, (batch, opts.text_ctx))
    mask = torch.ones(batch, opts.text_ctx, dtype=torch.bool)
    for i in range(steps + 2):
        if i == 2:
            start = time.perf_counter()
        loss = model(x, t, tokens, mask).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=positive_int, default=2)
    ap.add_argument("--batches", type=positive_ints, default="16,32,64")
    ap.add_argument("--steps", type=positive_int, default=8)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    print(f"quickstart network, {args.threads} thread(s), {args.steps} timed steps")
    for batch in args.batches:
        for channels_last in (False, True):
            for fused in (False, True):
                s = time_step(batch, channels_last, fused, args.steps)
                layout = "channels_last" if channels_last else "NCHW"
                kernel = "fused" if fused else "per-tensor"
                print(f"batch {batch:3d} {layout:13s} AdamW {kernel:10s} "
                      f"{s * 1000:7.0f} ms/step {batch / s:6.0f} images/s", flush=True)


if __name__ == "__main__":
    run(main)
