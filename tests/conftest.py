"""Shared fixtures: golden data (carried in tests/golden; the full set outside the repository)
and isolation from installed plugins."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never pick up whatever plugins happen to be installed; a test opts in explicitly.
os.environ["GLIDECTL_LOAD_PLUGINS"] = ""
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(os.environ.get("GLIDECTL_GOLDEN", ROOT.parent / "shared" / "golden"))
CARRIED = ROOT / "tests" / "golden"


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tiny test models run fastest on one thread, and parallel test runs do not fight."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def carried() -> Path:
    """The small golden cases carried in the repository (tests/golden, see its README)."""
    return CARRIED


@pytest.fixture(scope="session")
def golden() -> Path:
    """The full reference data (../shared/golden, ~25 MB, CI only): only the checks that the
    carried cases and redrawn tiny weights equal it use this, and skip without it."""
    if not (GOLDEN / "README.md").is_file():
        pytest.skip(f"full golden reference data not found at {GOLDEN} (CI only; set "
                    "GLIDECTL_GOLDEN); tests/golden holds the cases every clone runs")
    return GOLDEN


@pytest.fixture(scope="session")
def gpt2_vocab(carried: Path) -> Path:
    """The GPT-2 BPE vocabulary folder carried with the golden cases."""
    return carried / "gpt2"


@pytest.fixture
def register_plugin():
    """``register_plugin(obj, name)``: a throwaway plugin object registered for one test
    (unregistered afterwards)."""
    from glidectl import plugins

    added = []

    def add(obj, name):
        plugins.register_plugin(obj, name)
        added.append(name)
        return obj

    yield add
    for name in added:
        plugins.unregister_plugin(name)
