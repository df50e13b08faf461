"""Fixtures for sampler tests: the golden tiny base model and its guided denoiser."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module")
def dg(carried: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(carried / "diffusion_golden.safetensors"))


@pytest.fixture(scope="module")
def golden_base() -> torch.nn.Module:
    """The tiny random-weight base model the golden samples were drawn with."""
    from golden_data import tiny_reference_model

    return tiny_reference_model("base")

