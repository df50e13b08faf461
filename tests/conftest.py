"""Shared fixtures: golden data location and isolation from installed plugins."""

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


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tiny test models run fastest on one thread, and parallel test runs do not fight."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def golden() -> Path:
    """The reference data folder (../shared/golden); tests using it skip when it is absent."""
    if not (GOLDEN / "README.md").is_file():
        pytest.skip(f"golden reference data not found at {GOLDEN} (set GLIDECTL_GOLDEN)")
    return GOLDEN


@pytest.fixture(scope="session")
def gpt2_vocab(golden: Path) -> Path:
    """The GPT-2 BPE vocabulary folder shipped with the golden data."""
    return golden / "gpt2"
