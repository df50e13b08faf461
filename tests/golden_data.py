"""The golden cases carried in tests/golden, and the tiny reference networks redrawn from
their seeds (the stored weights stay in the full, external golden set)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

CARRIED = Path(__file__).resolve().parent / "golden"


def tiny_options(kind: str) -> dict:
    """The reference's options file of the tiny ``kind`` network."""
    return json.loads((CARRIED / f"tiny_{kind}_options.json").read_text())


def tiny_reference_state(kind: str) -> dict[str, torch.Tensor]:
    """The tiny ``kind`` network's reference weights, redrawn as the reference drew them."""
    from glidectl.glide import ModelOptions, create_model

    meta = tiny_options(kind)
    shapes = create_model(ModelOptions.from_dict(meta["options"])).state_dict()
    g = torch.Generator().manual_seed(meta["init"]["seed"])
    state = {}
    for key, like in shapes.items():
        z = torch.randn(like.shape, generator=g, dtype=torch.float32)
        if key.endswith("token_embedding.weight") or key in ("positional_embedding",
                                                             "padding_embedding"):
            w = z * 0.5
        elif like.ndim >= 2:
            w = z / math.prod(like.shape[1:]) ** 0.5
        elif key.endswith(".weight"):
            w = 1 + 0.1 * z
        else:
            w = 0.1 * z
        state[key] = w.half().float()
    return state


def tiny_reference_model(kind: str) -> torch.nn.Module:
    """The tiny ``kind`` network with its reference weights, in eval mode."""
    from glidectl.glide import ModelOptions, create_model

    model = create_model(ModelOptions.from_dict(tiny_options(kind)["options"]))
    model.load_state_dict(tiny_reference_state(kind))
    return model.eval()
