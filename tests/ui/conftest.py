"""Fixtures for the web UI tests: a models folder holding one tiny random base model."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def temp_in_tmp_path(monkeypatch, tmp_path):
    """Temp folders a UI makes (its default output folder) land in the test's tmp_path."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


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


@pytest.fixture(scope="module")
def lora_models_dir(tmp_path_factory, models_dir) -> Path:
    """A models folder with the tiny model and ``my-lora/``, an adapter for it."""
    import shutil

    import torch

    from glidectl.config import LoraConfig
    from glidectl.glide import load_model
    from glidectl.lora import inject_lora, save_adapter, weights_sha256

    folder = tmp_path_factory.mktemp("ui-lora-models")
    shutil.copy(models_dir / "tiny.safetensors", folder / "tiny.safetensors")
    model = load_model(folder / "tiny.safetensors")
    sha = weights_sha256(model)
    cfg = LoraConfig(targets=["attention"], rank=2, alpha=2.0)
    names = inject_lora(model, cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_B." in name:
                p.normal_(0.0, 0.05)
    save_adapter(model, folder / "my-lora", cfg=cfg, target_names=names,
                 base_spec="tiny.safetensors", base_sha256=sha)
    return folder
