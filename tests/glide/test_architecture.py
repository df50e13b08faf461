"""The four official networks match OpenAI's checkpoints key for key (built on meta: fast)."""

from __future__ import annotations

import json

import pytest
import torch

from glidectl.glide import KINDS, create_model, official_options

PARAMS = {
    "base": 385_030_726,
    "upsample": 398_361_286,
    "base-inpaint": 385_037_638,
    "upsample-inpaint": 398_368_198,
}


@pytest.fixture(scope="module")
def manifest(carried):
    return json.loads((carried / "state_dict_manifest.json").read_text())["models"]


def _meta_model(kind: str):
    with torch.device("meta"):
        return create_model(official_options(kind))


@pytest.mark.parametrize("kind", KINDS)
def test_official_state_dict_keys_order_and_shapes_match_manifest(kind, manifest):
    model = _meta_model(kind)
    ours = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    assert ours == manifest[kind]["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == PARAMS[kind]
    assert manifest[kind]["total_params"] == PARAMS[kind]


@pytest.mark.parametrize("kind", KINDS)
def test_official_options_match_openai_defaults(kind, manifest):
    openai = manifest[kind]["options"]
    ours = official_options(kind).to_dict()
    for key, value in openai.items():
        if key in ("timestep_respacing", "cache_text_emb"):
            continue
        assert ours[key] == value, key
    assert official_options(kind).in_channels == manifest[kind]["derived"]["in_channels"]


@pytest.mark.parametrize("kind", ["base", "upsample"])
def test_convert_to_fp16_casts_exactly_openais_keys(kind, manifest):
    model = _meta_model(kind)
    model.convert_to_fp16()
    cast = [k for k, v in model.state_dict().items() if v.dtype == torch.float16]
    assert cast == manifest[kind]["fp16_cast_keys"]
    assert model.torso_dtype == torch.float16
