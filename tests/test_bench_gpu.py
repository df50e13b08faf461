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
            "--device", "cpu", "--tiny", "--steps", "1", "--warmup", "1", "--engine-steps", "2",
            "--no-compile", "--sample-steps", "2", "--upsample-steps", "2",
            "--trainer-log", "1", "--out", str(tmp_path / "gpu.json")])
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
    trainer = written["trainer"]  # the Trainer eagerly, and with train.cuda_graphs
    assert [(c["kind"], c["batch"], c["cuda_graphs"]) for c in trainer] == [
        (kind, 2, graphs) for kind in ("base", "upsample") for graphs in (False, True)]
    assert all(c["images_per_s"] > 0 for c in trainer)
    gpu = torch.cuda.is_available()  # the engine trains there whatever --device says
    assert [c["graphs_recorded"] for c in trainer] == [0, 1 if gpu else 0] * 2  # no GPU: eager
    engine = written["engine"]
    assert engine["all_finite"] and engine["identical_weights"]
    assert engine["deterministic"] == gpu  # train.deterministic is for GPUs
    assert [(c["kind"], c["batch"], c["gpu_busy"]) for c in written["busy"]] == [
        ("base", 1, None), ("base", 2, None), ("upsample", 1, None), ("upsample", 2, None)]
    for case in written["busy"]:  # no GPU to be busy; events are counted, phases timed
        assert case["ops_per_step"] > 100 and case["optimizer"] == "AdamW (fused)"
        assert all(case["host_ms"][p] > 0 for p in ("forward", "backward", "optimizer"))
        assert case["top_host_ops"] and all(ms > 0 for _, _, ms in case["top_host_ops"])
    out = capsys.readouterr().out
    assert "upsampled images/s" in out and "images/s" in out and "identical weights" in out
    assert "Note: a logic check on cpu with tiny models: it cannot measure GPU speed" in out
    assert "2. training (fp32, fused AdamW)" in out
    assert ("4-5. engine: fp16 + GradScaler" if gpu else
            "4-5. engine: fp32 (fp16 needs a GPU)") in out
    assert "max RSS so far" in out and " peak " not in out
    assert set(written["goals_met"].values()) == {None}


def test_goals_are_judged_on_the_best_figure():
    bench = load_bench()
    report = {"training": [{"kind": "base", "images_per_s": 390.0},
                           {"kind": "base", "images_per_s": 410.0},
                           {"kind": "upsample", "error": "out of memory"}],
              "sampling": {"upsampled_images_per_s": 12.0}}
    assert bench.goals_met(report) == {"base_images_per_s": True,
                                       "upsample_images_per_s": None,
                                       "sampling_upsampled_images_per_s": False}


def test_a_check_run_says_what_it_cannot_measure_and_stays_out_of_gpu_json():
    """On a CPU (or with tiny models) the run checks logic only: it says so, judges no goal
    and writes beside gpu.json. Before, its headers said bf16 and fp16 while it ran fp32,
    tiny CPU figures "failed" the H200 goals, and they replaced gpu.json by default."""
    bench = load_bench()
    note = bench.check_only("cpu", tiny=False)
    assert note.startswith("a logic check on cpu with no GPU: it cannot measure GPU speed")
    assert "bf16 autocast" in note and "GradScaler" in note and "CUDA-only tests" in note
    assert "official models" in bench.check_only("cuda", tiny=True)
    assert bench.check_only("cuda:1", tiny=False) is None
    assert bench.default_out("cpu", tiny=True).name == "gpu-check.json"
    assert bench.default_out("cuda", tiny=True).name == "gpu-check.json"
    assert bench.default_out("cuda", tiny=False).name == "gpu.json"
    report = {"check_only": note, "training": [{"kind": "base", "images_per_s": 1e9}],
              "sampling": {"upsampled_images_per_s": 1e9}}
    assert set(bench.goals_met(report).values()) == {None}
    assert bench.memory_word("cpu") == "max RSS so far" and bench.memory_word("cuda") == "peak"


def test_memory_and_sync_are_those_of_the_asked_gpu(monkeypatch):
    """``--device cuda:1`` read cuda:0's counters (torch.cuda's default is the current
    device), so every peak was the idle GPU's."""
    import contextlib

    import torch

    seen: list[tuple[str, object]] = []

    @contextlib.contextmanager
    def on(device):
        seen.append(("device", device))
        yield

    monkeypatch.setattr(torch.cuda, "device", on)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: seen.append(("empty", None)))
    for name in ("reset_peak_memory_stats", "synchronize"):
        monkeypatch.setattr(torch.cuda, name, lambda device=None, name=name:
                            seen.append((name, device)))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated",
                        lambda device=None: seen.append(("peak", device)) or 2**30)
    bench = load_bench()
    bench._reset_peak("cuda:1")
    bench._sync("cuda:1")
    assert bench._peak_gib("cuda:1") == 1.0
    assert seen == [("device", "cuda:1"), ("empty", None),
                    ("reset_peak_memory_stats", "cuda:1"), ("synchronize", "cuda:1"),
                    ("peak", "cuda:1")]


def test_without_a_gpu_it_says_how_to_check_the_logic(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="--device cpu --tiny"):
        load_bench().main(["--device", "cuda"])


def test_merge_keeps_what_the_new_run_did_not_measure():
    """A report built by runs that each fit a time limit (--kinds, --merge): the other
    kind's cases, the busy shares it did not profile, sections it skipped."""
    bench = load_bench()
    old = {"device": "H", "tiny": False, "torch": "2.11", "total_s": 331.0,
           "training": [{"kind": "base", "images_per_s": 230.0},
                        {"kind": "upsample", "skipped": "time budget"}],
           "sampling": {"skipped": "budget"}, "engine": {"identical_weights": False}}
    new = {"device": "H", "tiny": False, "torch": "2.11",
           "training": [{"kind": "upsample", "images_per_s": 40.0}],
           "busy": [{"kind": "base", "gpu_busy": 0.3}, {"kind": "upsample", "gpu_busy": 0.9}],
           "sampling": {"upsampled_images_per_s": 25.0}, "engine": {"skipped": "budget"},
           "runs": [{"torch": "2.11", "kinds": ["upsample"], "total_s": 200.0}]}
    out = bench.merged(old, new)
    assert out["training"] == [{"kind": "base", "images_per_s": 230.0},
                               {"kind": "upsample", "images_per_s": 40.0}]
    assert out["sampling"] == new["sampling"] and out["engine"] == old["engine"]
    assert out["busy"] == new["busy"] and out["total_s"] == 531.0
    assert [r["kinds"] for r in out["runs"]] == [["base", "upsample"], ["upsample"]]
    assert bench.goals_met(out) == {"base_images_per_s": False,
                                    "upsample_images_per_s": False,
                                    "sampling_upsampled_images_per_s": True}
    compiled = {"kind": "base", "batch": 16, "compile": True, "images_per_s": 82.8}
    again = {**new, "training": [{"kind": "base", "batch": 16, "asked": 16, "compile": True,
                                  "skipped": "time budget"}]}
    kept = bench.merged({**old, "training": [compiled]}, again)["training"]
    assert kept == [compiled]  # a case the new run skipped keeps its old figure
    busy_only = {k: v for k, v in new.items() if k not in ("training", "sampling", "engine")}
    out = bench.merged(old, busy_only)  # a run of --sections busy keeps every other figure
    assert out["training"] == old["training"] and out["engine"] == old["engine"]
    trainer_old = {**old, "trainer": [{"batch": 16, "cuda_graphs": True, "images_per_s": 150.7}]}
    up = {"kind": "upsample", "batch": 16, "cuda_graphs": True, "images_per_s": 40.0}
    trainer = bench.merged(trainer_old, {**new, "trainer": [
        up, {"kind": "base", "batch": 64, "cuda_graphs": True, "skipped": "budget"}]})["trainer"]
    assert trainer == [trainer_old["trainer"][0], up]  # a base case from before --kinds upsample
    with pytest.raises(SystemExit, match="--merge: the report holds H figures"):
        bench.merged(old, {**new, "device": "cpu"})


@pytest.mark.parametrize("kind", ["base", "upsample"])
def test_the_graphed_step_gives_the_network_what_the_eager_one_does(monkeypatch, kind):
    """The CUDA-graph case captures the network on the arguments the training loss gives it
    (the upsampler's low-res image by position): checked on the CPU with capture replaced by
    the module itself, a step gives the eager step's loss."""
    import torch

    captured = []

    def capture(module, args, **kwargs):
        captured.append([tuple(a.shape) for a in args])
        return module

    monkeypatch.setattr(torch.cuda, "make_graphed_callables", capture)
    bench = load_bench()
    losses = [bench.make_step(kind, 2, device="cpu", tiny=True, compile=False,
                              checkpointing=False, graphs=graphs)() for graphs in (False, True)]
    assert len(captured) == 1 and captured[0][0][0] == 2
    assert len(captured[0]) == (5 if kind == "upsample" else 4)
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_a_failing_section_leaves_the_report_of_the_others(tmp_path, capsys):
    """A GPU run once stopped at sampling (no GPT-2 vocabulary on the machine) with a
    traceback, and the busy and CUDA-graph figures it had measured were never written."""
    bench = load_bench()

    def no_vocabulary(args):
        raise RuntimeError("The GPT-2 vocabulary is not available\nsecond line")

    bench.sampling_section = no_vocabulary
    out = tmp_path / "gpu.json"
    bench.main(["--device", "cpu", "--tiny", "--sections", "sampling", "--out", str(out)])
    written = json.loads(out.read_text())
    assert written["sampling"] == {"error": "RuntimeError: The GPT-2 vocabulary is not available"}
    assert "failed: RuntimeError: The GPT-2 vocabulary" in capsys.readouterr().out
    old = {"device": "cpu", "tiny": True, "sampling": {"upsampled_images_per_s": 3.0}}
    assert bench.merged(old, written)["sampling"] == old["sampling"]  # the error keeps them
