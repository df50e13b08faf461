"""``time_embed_max_freq``: scratch networks that read only the slow timestep features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glidectl.config import ModelConfig
from glidectl.errors import GlidectlError
from glidectl.glide import ModelOptions, create_model
from glidectl.glide.layers import kept_timestep_features, timestep_embedding
from glidectl.training.model_setup import build_model


def _dropped(options) -> torch.Tensor:
    return ~kept_timestep_features(options.num_channels, options.time_embed_max_freq)


def test_dropped_inputs_weigh_zero_and_openais_forward_agrees(kit):
    options = kit.tiny("base", time_embed_max_freq=0.05)
    model = create_model(options).eval()
    weight = model.time_embed[0].weight
    dropped = _dropped(options)
    assert 0 < int(dropped.sum()) < dropped.numel()
    assert weight[:, dropped].abs().sum() == 0 and weight[:, ~dropped].abs().sum() > 0
    plain = create_model(options.replace(time_embed_max_freq=0.0)).eval()
    plain.load_state_dict(model.state_dict())  # OpenAI's forward reads every feature
    inputs = kit.inputs(options)
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs), plain(**inputs), atol=0, rtol=0)


def test_training_keeps_the_dropped_weights_at_zero(kit):
    options = kit.tiny("base", time_embed_max_freq=0.05)
    model = create_model(options).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    start = model.time_embed[0].weight.detach().clone()
    for seed in range(3):
        opt.zero_grad()
        model(**kit.inputs(options, seed=seed)).square().mean().backward()
        opt.step()
    weight, dropped = model.time_embed[0].weight.detach(), _dropped(options)
    assert weight[:, dropped].abs().sum() == 0
    assert not torch.equal(weight[:, ~dropped], start[:, ~dropped])


def _roughness(model, inputs) -> float:
    """Cubic-fit residual of the output over t in 440..520 (step 1), relative to its change."""
    ts = np.arange(440.0, 520.01, 1.0)
    with torch.no_grad():
        out = torch.stack([
            model(**{**inputs, "timesteps": torch.full((2,), t)}).flatten() for t in ts
        ]).double()
    basis = torch.tensor(np.vander((ts - 480) / 40, 4))
    residual = out - basis @ torch.linalg.lstsq(basis, out).solution
    return float(residual.pow(2).mean().sqrt() / (out[-1] - out[0]).pow(2).mean().sqrt())


def test_the_output_is_smooth_in_t(kit):
    options = kit.tiny("base")
    rough = kit.randomize(create_model(options)).eval()
    smooth = create_model(options.replace(time_embed_max_freq=0.05)).eval()
    smooth.load_state_dict(rough.state_dict(), strict=True)
    with torch.no_grad():  # the same network but for the dropped inputs
        smooth.time_embed[0].weight[:, _dropped(smooth.options)] = 0
    inputs = kit.inputs(options)
    assert _roughness(rough, inputs) > 0.1  # measured 0.47
    assert _roughness(smooth, inputs) < 0.02  # 0.0066: harmonics of the slow features


def test_options_config_and_old_checkpoints():
    assert ModelOptions.from_dict({"kind": "base"}).time_embed_max_freq == 0.0  # OpenAI's
    with pytest.raises(GlidectlError, match="time_embed_max_freq"):
        ModelOptions(time_embed_max_freq=-1.0)
    bundle = build_model(ModelConfig(size="tiny", time_embed_max_freq=0.1))
    assert bundle.options.time_embed_max_freq == 0.1
    assert ModelConfig().time_embed_max_freq == 0.01


@pytest.mark.parametrize("dim", [16, 64, 128, 192])
def test_a_frequency_at_the_cut_off_is_kept_whatever_its_last_bit(dim):
    half = dim // 2  # feature half/2 has frequency 10000^(-1/2) = 0.01, the default cut-off
    kept = kept_timestep_features(dim, 0.01)
    assert kept[half // 2] and kept[dim // 2 + half // 2]  # its cos and sin
    assert not kept[half // 2 - 1]
    assert kept_timestep_features(dim, 0.01 * (1 - 1e-5))[half // 2].item() is False


def test_the_kept_features_follow_the_embeddings_max_period():
    t = torch.tensor([0.0, 37.5, 500.0])
    full = timestep_embedding(t, 32, max_period=100.0)
    cut = timestep_embedding(t, 32, max_period=100.0, max_freq=0.1)
    kept = kept_timestep_features(32, 0.1, max_period=100.0)
    assert 0 < int(kept.sum()) < 32 and not kept.equal(kept_timestep_features(32, 0.1))
    assert torch.equal(cut, full * kept)
