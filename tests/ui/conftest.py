"""Fixtures for the web UI tests: a models folder holding one tiny random base model."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and do not fight other test processes)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    """``tiny.safetensors`` (a 32 px base model with random weights) in a fresh folder."""
    import torch

    from glidectl.glide import create_model, preset_options, save_weights

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ui-models")
    save_weights(create_model(preset_options("base", "tiny").replace(image_size=32)),
                 folder / "tiny.safetensors")
    return folder
