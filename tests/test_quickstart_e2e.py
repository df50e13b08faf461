"""End to end, as a user: train examples/glide.toml, sample with `glidectl sample`'s defaults,
score colour, shape and background. Minutes of CPU: runs only with GLIDECTL_SLOW_TESTS=1."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.environ.get("GLIDECTL_SLOW_TESTS"),
                       reason="trains the quickstart (minutes); set GLIDECTL_SLOW_TESTS=1"),
]


def load_bench():
    spec = importlib.util.spec_from_file_location(
        "bench_quickstart", ROOT / "benchmarks" / "bench_quickstart.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quickstart_follows_its_prompts_seed_0(tmp_path):
    bench = load_bench()
    run = bench.train_run(str(ROOT / "examples" / "glide.toml"), tmp_path, seed=0, threads=2)
    figures = bench.sample_and_score(run["run"], per_class=2, seed=0, extra=[])
    assert figures["images"] == 72
    assert figures["colour"] >= bench.GOALS["colour"], figures
    assert figures["background"] >= bench.GOALS["background"], figures
    assert figures["shape"] >= bench.GOALS["shape"], figures
