"""What glidectl tells users to run for a missing optional extra."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import pytest

from glidectl.extras import install_hint

ROOT = Path(__file__).resolve().parents[1]


def test_the_hint_pins_the_installed_torch_and_installs_from_this_checkout() -> None:
    """'glidectl[clip]' would fetch another package from the index, and without the pin pip
    swaps torch for the newest CUDA build to fit the newest torchvision."""
    direct = json.loads(metadata.distribution("glidectl").read_text("direct_url.json") or "{}")
    if not direct.get("dir_info", {}).get("editable"):
        pytest.skip("glidectl is not an editable install here")
    torch_version = metadata.version("torch").split("+")[0]
    hint = install_hint("ui")
    assert hint.startswith(f"pip install torch=={torch_version} -e ")
    installed = Path(hint.split('-e "', 1)[1].removesuffix('[ui]"'))
    assert installed.resolve() == ROOT


def test_beside_a_cpu_torch_clip_and_fid_take_torchvision_from_the_cpu_index(monkeypatch):
    """PyPI's torchvision 0.28.0 is built for PyPI's CUDA torch 2.13.0 and fails to load
    beside the CPU build ("operator torchvision::nms does not exist")."""
    from glidectl import extras

    versions = {"torch": "2.13.0+cpu"}
    monkeypatch.setattr(metadata, "version", lambda name: versions[name])
    fid = install_hint("fid")
    assert fid.startswith("pip install torch==2.13.0 torchvision==0.28.0 --index-url "
                          "https://download.pytorch.org/whl/cpu, then pip install torch==2.13.0 ")
    assert not install_hint("hf").count("torchvision")  # hf needs no torchvision
    versions["torch"] = "2.13.0"  # PyPI's own build: its torchvision comes with the extra
    assert "torchvision" not in install_hint("clip")
    assert extras.torchvision_for("2.14.1") == "0.29.1" and extras.torchvision_for("1.13") is None


def test_clip_absent_says_the_same_command(monkeypatch) -> None:
    import sys

    from glidectl.eval_metrics import ClipScorer, ClipUnavailable

    monkeypatch.setitem(sys.modules, "open_clip", None)  # import open_clip fails
    with pytest.raises(ClipUnavailable, match="not installed \\(pip install torch=="):
        ClipScorer.load()
