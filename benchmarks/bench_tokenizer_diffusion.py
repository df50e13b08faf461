"""Tokenizer and diffusion-core costs: vocabulary load, prompt encoding, loss overhead.

Run: python benchmarks/bench_tokenizer_diffusion.py [--vocab path/to/gpt2_vocab_dir]
(default: tests/golden/gpt2, which ships with the repository). The loss figure excludes the
network (a fixed output).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from glidectl import tokenizer as tok
from glidectl.diffusion import create_diffusion
from glidectl.errors import GlidectlError, one_line

ROOT = Path(__file__).resolve().parents[1]


def timed(fn, repeat: int = 5) -> float:
    """Median seconds of ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=Path, default=ROOT / "tests" / "golden" / "gpt2",
                    help="folder with GPT-2's encoder.json and vocab.bpe")
    args = ap.parse_args()
    vocab = args.vocab
    torch.set_num_threads(2)

    tok.clear_cache()
    start = time.perf_counter()
    try:
        gpt2 = tok.get_tokenizer("gpt2", vocab_dir=vocab)
    except GlidectlError as exc:
        print(f"Error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    cold = time.perf_counter() - start
    warm = timed(lambda: tok.get_tokenizer("gpt2", vocab_dir=vocab), 20)
    print(f"gpt2 vocab load: cold {cold * 1e3:.0f} ms, cached {warm * 1e6:.1f} µs")

    prompts = [f"A photograph of {i} corgis riding a red bicycle on the beach" for i in range(1024)]
    for name, t in [("gpt2", gpt2), ("byte", tok.get_tokenizer("byte"))]:
        s = timed(lambda t=t: t.encode_batch(prompts, 128))
        print(f"{name} encode_batch(1024 prompts, ctx 128): {s * 1e3:.1f} ms "
              f"({len(prompts) / s:,.0f} prompts/s)")

    diffusion = create_diffusion("squaredcos_cap_v2", 1000)
    gen = torch.Generator().manual_seed(0)
    for batch, size in [(8, 64), (32, 64)]:
        x0 = torch.rand(batch, 3, size, size, generator=gen) * 2 - 1
        out = torch.randn(batch, 6, size, size, generator=gen)
        t = torch.randint(0, 1000, (batch,), generator=gen)
        s = timed(lambda x0=x0, out=out, t=t: diffusion.training_losses(lambda x, ts: out, x0, t))
        print(f"hybrid training_losses overhead, batch {batch} × 3×{size}×{size}: {s * 1e3:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
