"""Golden diffusion tensors, loaded once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def dg(carried: Path) -> dict[str, torch.Tensor]:
    """``diffusion_golden.safetensors`` as a dict of tensors."""
    from safetensors.torch import load_file

    return load_file(str(carried / "diffusion_golden.safetensors"))


@pytest.fixture(scope="session")
def dg_json(carried: Path) -> dict:
    """``diffusion_golden.json``."""
    return json.loads((carried / "diffusion_golden.json").read_text())
