"""`bench_lora.py --write-data`: the concept folder examples/lora-zorblax.toml trains on."""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

from glidectl.config import load_config
from glidectl.data.folder import FolderSource

ROOT = Path(__file__).resolve().parents[1]


def test_write_data_writes_the_folder_the_zorblax_example_reads(tmp_path, monkeypatch, capsys):
    """The example's data.source was written only inside the benchmark's demo run, so a
    user following examples/lora-zorblax.toml had no folder to train on."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_lora

    monkeypatch.chdir(tmp_path)
    example = load_config(str(ROOT / "examples" / "lora-zorblax.toml"))
    monkeypatch.setattr(sys, "argv", ["bench_lora.py", "--write-data", example.data.source,
                                      "--concept-images", "3", "--prior-images", "2"])
    bench_lora.main()
    assert f"wrote 5 pictures with captions (12 px) to {example.data.source}" in \
        capsys.readouterr().out
    source = FolderSource.scan(tmp_path / example.data.source)
    assert source.num_samples == 5 and not source.notes()
    captions = sorted((tmp_path / example.data.source).glob("*.txt"))
    assert sum("a zorblax" in p.read_text() for p in captions) == 3
    with Image.open(next((tmp_path / example.data.source).glob("*.png"))) as im:
        assert im.size == (example.data.resolution,) * 2
    assert "bench_lora.py --write-data data/zorblax" in \
        (ROOT / "examples" / "lora-zorblax.toml").read_text()


def test_one_step_is_refused_before_the_runs(monkeypatch, capsys):
    """Step 1 warms up and is not timed: --steps 1 left no rate to take the median of (a
    StatisticsError traceback from the child run)."""
    import pytest

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_lora

    monkeypatch.setattr(sys, "argv", ["bench_lora.py", "--steps", "1", "--skip-demo"])
    with pytest.raises(SystemExit) as ended:
        bench_lora.main()
    assert ended.value.code == 2
    assert "--steps 1: at least 2" in capsys.readouterr().err.strip().splitlines()[-1]
