"""Fixtures for sampler tests: the golden tiny base model and its guided denoiser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module")
def dg(golden: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(golden / "diffusion_golden.safetensors"))


@pytest.fixture(scope="module")
def golden_base(golden: Path) -> torch.nn.Module:
    """The tiny random-weight base model the golden samples were drawn with."""
    from safetensors.torch import load_file

    from glidectl.glide import ModelOptions, create_model

    options = json.loads((golden / "tiny_base_options.json").read_text())["options"]
    model = create_model(ModelOptions.from_dict(options))
    state = load_file(str(golden / "tiny_base_state_dict.safetensors"))
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.eval()

