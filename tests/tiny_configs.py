"""Tiny training configs for tests: the tiny preset at 32 px on demo data, a few steps."""

from __future__ import annotations

from pathlib import Path

import torch

from glidectl.config import GlideConfig

TINY = {
    "model": {"size": "tiny"},
    "data": {"source": "demo:shapes", "demo_size": 24, "resolution": 32},
    "train": {"name": "t", "steps": 4, "batch_size": 2, "lr": 1e-3, "ema_decay": 0.9,
              "threads": 1},
    "preview": {"every": 0},
    "checkpoint": {"every": 2},
    "log": {"every": 1},
}


def tiny_config(tmp_path: Path, **sections: dict) -> GlideConfig:
    """A config that trains in about a second per step on a CPU; ``sections`` override it."""
    cfg = GlideConfig()
    cfg.train.output_dir = str(tmp_path / "runs")
    for layer in (TINY, sections):
        for name, values in layer.items():
            for key, value in values.items():
                setattr(getattr(cfg, name), key, value)
    return cfg


def fill_zero_layers(model: torch.nn.Module, std: float = 0.02) -> torch.nn.Module:
    """Give GLIDE's zero-initialised layers (output convs, ...) random weights, like a
    pretrained model's, so that the network's output depends on its input."""
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(0.0, std)
    return model


def tiny_base_weights(path: Path, metadata: dict[str, str] | None = None) -> Path:
    """A seeded tiny 16 px base model with live output layers, saved as safetensors."""
    from glidectl.glide import create_model, preset_options, save_weights

    torch.manual_seed(0)
    model = fill_zero_layers(create_model(preset_options("base", "tiny").replace(image_size=16)))
    return save_weights(model, path, metadata=metadata)


def random_attention_adapter(folder: Path, base_name: str, std: float) -> Path:
    """``folder/my-lora``: a rank-2 attention LoRA adapter for the model ``folder/base_name``
    with random ``lora_B`` weights (std ``std``), recording ``base_name`` as its base."""
    from glidectl.config import LoraConfig
    from glidectl.glide import load_model
    from glidectl.lora import inject_lora, save_adapter, weights_sha256

    model = load_model(folder / base_name)
    sha = weights_sha256(model)
    cfg = LoraConfig(targets=["attention"], rank=2, alpha=2.0)
    names = inject_lora(model, cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_B." in name:
                p.normal_(0.0, std)
    return save_adapter(model, folder / "my-lora", cfg=cfg, target_names=names,
                        base_spec=base_name, base_sha256=sha)
