"""benchmarks/bench_gpu.py's logic on the CPU with tiny models (the figures need a GPU)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "benchmarks" /
                                                  "bench_gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_every_section_runs_and_writes_its_figures(tmp_path, capsys):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        report = load_bench().main([
            "--device", "cpu", "--tiny", "--steps", "1", "--warmup", "1", "--engine-steps", "4",
            "--no-compile", "--sample-steps", "2", "--upsample-steps", "2",
            "--out", str(tmp_path / "gpu.json")])
    finally:
        torch.set_num_threads(threads)
    written = json.loads((tmp_path / "gpu.json").read_text())
    assert written["goals_met"] == report["goals_met"]
    cases = written["training"]
    assert {(c["kind"], c["checkpointing"], c["channels_last"]) for c in cases} == {
        (k, ckpt, nhwc) for k in ("base", "upsample") for ckpt, nhwc in
        ((False, False), (True, False), (False, True))}
    assert all(c["images_per_s"] > 0 and c["finite"] for c in cases)
    biggest = next(c for c in cases if c["kind"] == "upsample" and c["checkpointing"])
    assert biggest["batch"] == 2  # the largest tried batch that fits
    sampling = written["sampling"]
    assert sampling["images"] == sampling["batch"] == 4 and sampling["finite"]
    engine = written["engine"]
    assert engine["all_finite"] and engine["identical_weights"]
    out = capsys.readouterr().out
    assert "upsampled images/s" in out and "images/s" in out and "identical weights" in out


def test_goals_are_judged_on_the_best_figure():
    bench = load_bench()
    report = {"training": [{"kind": "base", "images_per_s": 390.0},
                           {"kind": "base", "images_per_s": 410.0},
                           {"kind": "upsample", "error": "out of memory"}],
              "sampling": {"upsampled_images_per_s": 12.0}}
    assert bench.goals_met(report) == {"base_images_per_s": True,
                                       "upsample_images_per_s": None,
                                       "sampling_upsampled_images_per_s": False}


def test_without_a_gpu_it_says_how_to_check_the_logic(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="--device cpu --tiny"):
        load_bench().main(["--device", "cuda"])
