"""What kohya's folder repeats cost when a training epoch starts: a real image folder in
kohya's layout (one `R_class` folder of N empty .png files, which the scan lists but
nothing here decodes) is scanned, then one process (= one DataLoader worker) builds its
epoch: every unit repeated R times, shuffled with webdataset's SimpleShardList and split,
up to its first raw sample. Prints, per repeat count, the units per epoch, the seconds to
the first sample and this process's peak memory so far (it only grows, so the counts run
in ascending order).

Usage: python benchmarks/bench_kohya_epoch.py [--images N] [--repeats R ...]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from bench_args import positive_int, run


def epoch_start(root: Path) -> float:
    """Seconds from a scanned folder to the first raw sample of a training epoch."""
    from glidectl.data.folder import FolderSource
    from glidectl.data.stages import Slot, raw_stream
    from glidectl.data.stats import RejectionCounter

    source = FolderSource.scan(root)
    start = time.perf_counter()
    next(raw_stream(source, RejectionCounter(), seed=0, epoch=0, slot=Slot(), train=True))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--images", type=positive_int, default=10_000, help="Images in the folder.")
    parser.add_argument("--repeats", type=positive_int, nargs="+", default=[1, 10, 100, 1000],
                        help="Repeat counts to time, ascending.")
    args = parser.parse_args()
    import webdataset  # noqa: F401  (imported before timing: its import is not the epoch's)

    with tempfile.TemporaryDirectory(prefix="glidectl-kohya-") as tmp:
        folder = Path(tmp) / "train" / "1_class"
        folder.mkdir(parents=True)
        for i in range(args.images):
            (folder / f"{i:07d}.png").touch()
        for repeats in sorted(args.repeats):
            renamed = folder.with_name(f"{repeats}_class")
            folder = folder.rename(renamed)
            seconds = epoch_start(folder.parent)
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"{args.images} images x {repeats} repeats = {args.images * repeats} units "
                  f"per epoch: first sample after {seconds:.2f} s, peak memory {peak:.0f} MiB")


if __name__ == "__main__":
    run(main)
