"""Start-up cost of the command line: median wall time of `glidectl --help` (goal ≤ 0.3 s)."""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

from bench_args import positive_int, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=positive_int, default=15)
    args = parser.parse_args()
    exe = shutil.which("glidectl")
    cmd = [exe, "--help"] if exe else [sys.executable, "-m", "glidectl", "--help"]
    subprocess.run(cmd, capture_output=True, check=True)  # warm the file cache
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    check = subprocess.run(
        [sys.executable, "-c",
         "import sys; from glidectl.cli.app import build_app; build_app(); "
         "print('torch' in sys.modules)"],
        capture_output=True, text=True, check=True,
    )
    print(f"glidectl --help: median {statistics.median(times):.3f} s, "
          f"min {min(times):.3f} s over {args.runs} runs (goal ≤ 0.300 s)")
    print(f"torch imported while building the CLI: {check.stdout.strip()}")


if __name__ == "__main__":
    run(main)
