"""Data pipeline throughput: webdataset shards of 512 px JPEGs → 64 px training tensors.

Writes shards with webdataset's TarWriter in a temp dir, then times one process (= one
DataLoader worker) reading tar → JPEG decode (draft mode) → crop/resize → tensor → tokens.
Target: >= 300 images/s per worker. Then the cost of resuming 90 % into an epoch: the
resumed stream skips the samples it already trained on before decoding, against decoding
them (what a replaying resume costs). Usage: python benchmarks/bench_data.py [--images N]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_args import positive_int
from PIL import Image, ImageDraw


def photo_like(size: int, seed: int) -> Image.Image:
    """A 512 px picture with smooth gradients, texture and shapes (JPEG-realistic)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack([np.sin(x * rng.uniform(1, 6) + rng.uniform(0, 6)) * 0.5 + 0.5
                     for _ in range(3)], -1) * 200
    base += rng.normal(0, 12, (size, size, 3))
    img = Image.fromarray(base.clip(0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = rng.integers(0, size - 64, 2)
        w, h = rng.integers(32, size // 2, 2)
        draw.ellipse((x0, y0, x0 + w, y0 + h), fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    return img


def write_shards(folder: Path, images: int, per_shard: int, size: int) -> int:
    import webdataset as wds

    total_bytes = 0
    for start in range(0, images, per_shard):
        with wds.TarWriter(str(folder / f"shard-{start // per_shard:05d}.tar")) as sink:
            for i in range(start, min(start + per_shard, images)):
                buf = io.BytesIO()
                photo_like(size, i).save(buf, "JPEG", quality=90)
                total_bytes += buf.tell()
                sink.write({"__key__": f"{i:06d}", "jpg": buf.getvalue(),
                            "txt": f"a photo number {i} with some shapes",
                            "json": json.dumps({"similarity": 0.3}).encode()})
    return total_bytes


def run(folder: Path, resolution: int, passes: int) -> tuple[float, float, int]:
    """(images/s by wall clock, images per CPU-second, images) for one process."""
    from glidectl.config import DataConfig
    from glidectl.data import build_dataset
    from glidectl.tokenizer import get_tokenizer

    cfg = DataConfig(source=str(folder), shuffle_buffer=100, uncond_p=0.2, flip=True)
    ds = build_dataset(cfg, tokenizer=get_tokenizer("byte"), image_size=resolution,
                       text_ctx=128)
    for _ in ds:  # warm-up pass (page cache, imports)
        pass
    count, start, cpu = 0, time.perf_counter(), time.process_time()
    for _ in range(passes):
        for sample in ds:
            assert sample["image"].shape == (3, resolution, resolution)
            count += 1
    return count / (time.perf_counter() - start), count / (time.process_time() - cpu), count


def resume_cost(folder: Path, resolution: int, images: int,
                share: float = 0.9) -> tuple[float, float, int]:
    """(seconds to the first batch of a stream resumed at ``share`` of the epoch, seconds to
    decode the samples it skips, samples skipped) for one process."""
    from glidectl.config import DataConfig
    from glidectl.data import build_dataset
    from glidectl.tokenizer import get_tokenizer
    from glidectl.training.data_stream import DataStream

    cfg = DataConfig(source=str(folder), shuffle_buffer=100, flip=True)
    ds = build_dataset(cfg, tokenizer=get_tokenizer("byte"), image_size=resolution,
                       text_ctx=128)
    skip = int(share * images)
    ds.set_epoch(0)
    start = time.perf_counter()
    for n, _ in enumerate(ds, start=1):  # every sample decoded, as a replay would
        if n >= skip:
            break
    replay = time.perf_counter() - start
    stream = DataStream(ds, batch_size=8)
    stream.load_state_dict({"epoch": 0, "position": skip // 8,
                            "ranks": [[0, skip // 8, 0, 1, skip, 0]]})
    start = time.perf_counter()
    stream.next()
    return time.perf_counter() - start, replay, skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=positive_int, default=256)
    parser.add_argument("--size", type=positive_int, default=512,
                        help="JPEG size in the shards (at least 66)")
    parser.add_argument("--resolution", type=positive_int, default=64,
                        help="training image size")
    parser.add_argument("--passes", type=positive_int, default=3)
    args = parser.parse_args()
    if args.size < 66:  # photo_like's shapes: up to size/2 wide, placed within size - 64
        parser.error(f"--size {args.size} is below 66 px, the least the drawn shapes fit in")
    import torch

    torch.set_num_threads(1)  # one DataLoader worker = one core
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t = time.perf_counter()
        nbytes = write_shards(folder, args.images, 64, args.size)
        shards = len(list(folder.glob("*.tar")))
        print(f"wrote {args.images} {args.size}px JPEGs ({nbytes / args.images / 1024:.0f} KiB "
              f"avg) in {shards} shards in {time.perf_counter() - t:.1f} s")
        rate, cpu_rate, count = run(folder, args.resolution, args.passes)
        print(f"data pipeline (tar -> decode -> {args.resolution}px tensor + tokens), "
              f"{count} images, one process:")
        print(f"  {rate:.0f} images/s per worker (wall clock; target >= 300)")
        print(f"  {cpu_rate:.0f} images per CPU-second (the rate of a worker with a free core; "
              "differs from wall clock when other processes compete for the CPU)")
        resumed, replay, skipped = resume_cost(folder, args.resolution, args.images)
        print(f"resume at 90 % of the epoch ({skipped} samples skipped, undecoded): first "
              f"batch after {resumed:.2f} s; decoding those samples would take {replay:.2f} s")
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"  machine: {os.cpu_count()} cores, load average {load:.1f} during the run")


if __name__ == "__main__":
    main()
