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

    from tiny_configs import random_attention_adapter

    folder = tmp_path_factory.mktemp("ui-lora-models")
    shutil.copy(models_dir / "tiny.safetensors", folder / "tiny.safetensors")
    random_attention_adapter(folder, "tiny.safetensors", 0.05)
    return folder


@pytest.fixture(scope="module")
def fitted_models_dir(tmp_path_factory, models_dir) -> Path:
    """A models folder with ``my-run/`` (the tiny model as its step checkpoint) and its
    ``schedule.json``: a 3-step bespoke file fitted grey, at guidance 3, to other weights."""
    import json

    from test_bench_limits import bespoke_file

    folder = tmp_path_factory.mktemp("ui-fitted-models")
    step = folder / "my-run" / "checkpoints" / "step-000010"
    step.mkdir(parents=True)
    (step / "model.safetensors").write_bytes((models_dir / "tiny.safetensors").read_bytes())
    path = bespoke_file(step / "model.safetensors", folder / "my-run" / "schedule.json", 3)
    path.write_text(json.dumps({**json.loads(path.read_text()), "model_sha256": "ab" * 32,
                                "grey": True, "guidance": 3}))
    return folder
