"""Model options: OpenAI's names, presets, validation and the dict/JSON round trip."""

from __future__ import annotations

import pytest
import torch

from glidectl.errors import GlidectlError
from glidectl.glide import KINDS, ModelOptions, create_model, official_options, preset_options


def test_options_round_trip_through_json():
    opts = preset_options("upsample-inpaint", "tiny")
    assert ModelOptions.from_json(opts.to_json()) == opts


def test_openai_option_dict_is_accepted_and_kind_is_derived():
    openai = {**official_options("upsample").to_dict(), "timestep_respacing": ""}
    openai["cache_text_emb"] = False
    del openai["kind"], openai["tokenizer"], openai["n_vocab"]
    assert ModelOptions.from_dict(openai).kind == "upsample"


def test_unknown_option_is_named():
    with pytest.raises(GlidectlError, match="num_chanels"):
        ModelOptions.from_dict({"num_chanels": 3})


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"kind": "base", "super_res": True}, "disagree"),
        ({"tokenizer": "byte", "n_vocab": 50257}, "257"),
        ({"num_channels": 48}, "multiple of 32"),
        ({"kind": "upscale"}, "Unknown model kind"),
        ({"xf_heads": 3}, "divisible"),
    ],
)
def test_invalid_options_raise_one_clear_error(changes, message):
    with pytest.raises(GlidectlError, match=message):
        official_options("base").replace(**changes)


@pytest.mark.parametrize("kind", KINDS)
def test_tokenizer_and_vocab_follow_presets(kind):
    assert preset_options(kind, "official").tokenizer == "gpt2"
    tiny = preset_options(kind, "tiny")
    assert (tiny.tokenizer, tiny.n_vocab) == ("byte", 257)
    assert preset_options(kind, "tiny", tokenizer="gpt2").n_vocab == 50257
    assert preset_options(kind, "small").n_vocab == 50257
    assert preset_options(kind, "official") == official_options(kind)


def test_upsamplers_take_a_quarter_size_low_res():
    assert official_options("upsample").low_res_size == 64
    assert preset_options("upsample", "tiny").low_res_size == 64
    assert official_options("base").low_res_size is None


def test_quickstart_preset_has_two_channels_per_group_and_a_40_token_context():
    from glidectl.data.demo import BACKGROUNDS, COLOURS, SHAPES, caption_for

    quick = preset_options("base", "quickstart")
    assert quick.text_ctx == 40 and (quick.tokenizer, quick.n_vocab) == ("byte", 257)
    assert quick.image_size == 12 and quick.attention_ds == (2, 4)
    assert quick.num_res_blocks == 0
    # GroupNorm has 32 groups: every level needs at least two channels per group, or the
    # norms erase each channel's per-image mean (the colour of the picture): the upsampler's
    # too, which with one drew washed-out colours on grey backgrounds.
    for net in (quick, preset_options("upsample", "quickstart"),
                preset_options("upsample-inpaint", "quickstart")):
        assert min(net.channel_mults) * net.num_channels >= 64, net.kind
    longest = max(len(caption_for(c, s, b).encode()) for c in COLOURS for s in SHAPES
                  for b in BACKGROUNDS)
    assert longest <= quick.text_ctx  # every demo:shapes caption fits, nothing truncated


def test_unknown_size_is_an_error():
    with pytest.raises(GlidectlError, match="tiny, quickstart, small, official"):
        preset_options("base", "huge")


@pytest.mark.parametrize("size, max_params", [("tiny", 5_000_000), ("small", 60_000_000)])
def test_scratch_presets_build_with_modest_size(size, max_params):
    for kind in ("base", "upsample"):
        with torch.device("meta"):
            model = create_model(preset_options(kind, size))
        assert sum(p.numel() for p in model.parameters()) < max_params


def test_tiny_preset_runs_forward_and_backward():
    opts = preset_options("base", "tiny")
    model = create_model(opts)
    x = torch.randn(2, 3, 64, 64)
    tokens = torch.randint(0, 256, (2, opts.text_ctx))
    out = model(x, torch.tensor([3, 700]), tokens, tokens > 10)
    assert out.shape == (2, 6, 64, 64)
    out.square().mean().backward()
    assert model.token_embedding.weight.grad is not None
