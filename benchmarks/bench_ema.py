"""The EMA update after each optimizer step: one foreach call against one call per tensor.

    python benchmarks/bench_ema.py [--threads 2] [--repeats 9] [--device cpu]

Prints, for the tiny, quickstart and official base networks, the tensors averaged and the
median ms per update each way, and whether both give the same shadow weights (they must).
On a CPU the foreach call loops over the tensors inside torch; on a GPU it launches a few
fused kernels instead of one per tensor.
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench_args import nonnegative_int, positive_int, run


def median_ms(update, device: str, repeats: int) -> float:
    import torch

    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        update()
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=nonnegative_int, default=0,
                    help="torch threads (0: its default)")
    ap.add_argument("--repeats", type=positive_int, default=9)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    import torch

    from glidectl.devices import pick_device
    from glidectl.glide import create_model, official_options, preset_options
    from glidectl.training.ema import EMA

    args.device = pick_device(args.device)  # one sentence for a device that is not here
    if args.threads:
        torch.set_num_threads(args.threads)
    cases = [("tiny", preset_options("base", "tiny")),
             ("quickstart", preset_options("base", "quickstart", "byte")),
             ("official base", official_options("base"))]
    for name, opts in cases:
        params = list(create_model(opts).to(args.device).parameters())
        fused, each = EMA(params, 0.9999), EMA(params, 0.9999)

        def one_each(ema: EMA = each, params: list = params) -> None:
            ema.update_each(ema.current_decay(), [p.detach() for p in params])
            ema.num_updates += 1

        with torch.no_grad():
            for p in params:
                p.add_(0.01)
        ms_fused = median_ms(fused.update, args.device, args.repeats)
        ms_each = median_ms(one_each, args.device, args.repeats)
        same = all(torch.equal(a, b) for a, b in zip(fused.shadow, each.shadow, strict=True))
        print(f"{name:14s} {len(params):4d} tensors: foreach {ms_fused:8.2f} ms, per tensor "
              f"{ms_each:8.2f} ms ({ms_each / ms_fused:.2f}x); same weights: {same}",
              flush=True)
        del params, fused, each


if __name__ == "__main__":
    run(main)
