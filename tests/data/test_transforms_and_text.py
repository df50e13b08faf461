"""Crops, flips, caption dropout, upsampler pairs and degradations."""

from __future__ import annotations

import random

import pytest
import torch
from PIL import Image

from glidectl.config import DataConfig
from glidectl.data import build_dataset
from glidectl.data.transforms import ImageTransform, LowResTransform, TextEncoder, to_tensor
from glidectl.errors import GlidectlError


def stripes(w=80, h=40):
    """Left half black, right half white: shows where a crop came from."""
    img = Image.new("RGB", (w, h), (0, 0, 0))
    img.paste((255, 255, 255), (w // 2, 0, w, h))
    return img


def test_centre_crop_keeps_aspect_and_is_deterministic():
    t = ImageTransform(20, random_crop=False)
    a, b = t(stripes(), random.Random(0)), t(stripes(), random.Random(1))
    assert a.size == (20, 20) and a.tobytes() == b.tobytes()
    arr = to_tensor(a)
    assert arr[:, :, :8].mean() < -0.9 and arr[:, :, 12:].mean() > 0.9  # both halves kept


def test_random_crop_moves_along_the_long_side():
    t = ImageTransform(20, random_crop=True)
    means = {round(float(to_tensor(t(stripes(), random.Random(i))).mean()), 1) for i in range(20)}
    assert len(means) > 3


def test_random_resized_crop_scale_zooms_in():
    t = ImageTransform(16, random_crop=True, crop_scale=(0.1, 0.1))
    box = t.crop_box(100, 100, random.Random(0))
    assert box[2] - box[0] == pytest.approx(100 * 0.1 ** 0.5)
    assert t.draft_size() >= 16 / 0.1 ** 0.5 - 1


def test_flip_mirrors_about_half_the_time():
    t = ImageTransform(20, random_crop=False, flip=True)
    lefts = [float(to_tensor(t(stripes(40, 40), random.Random(i)))[:, :, :5].mean())
             for i in range(40)]
    flipped = sum(v > 0 for v in lefts)
    assert 8 < flipped < 32


def test_caption_dropout_gives_the_empty_token_sequence(byte_tok):
    enc = TextEncoder(byte_tok, 16, uncond_p=1.0)
    tokens, mask, caption = enc("a red circle", random.Random(0))
    assert caption == "" and not mask.any() and (tokens == byte_tok.pad_id).all()
    tokens, mask, caption = TextEncoder(byte_tok, 4, 0.0)("abcdef", random.Random(0))
    assert tokens.tolist() == list(b"abcd") and mask.all()


def test_caption_dropout_rate_in_the_dataset(byte_tok):
    ds = build_dataset(DataConfig(demo_size=200, uncond_p=0.3), tokenizer=byte_tok,
                       image_size=16, text_ctx=64)
    empty = [s for s in ds if s["caption"] == ""]
    assert 30 < len(empty) < 95
    assert all(not s["mask"].any() for s in empty)


def test_gpt2_tokens_in_the_dataset(gpt2_vocab):
    from glidectl.tokenizer import get_tokenizer

    tok = get_tokenizer("gpt2", gpt2_vocab)
    ds = build_dataset(DataConfig(demo_size=2, uncond_p=0.0), tokenizer=tok, image_size=16,
                       text_ctx=128, train=False)
    sample = next(iter(ds))
    ids = tok.encode(sample["caption"])
    assert sample["tokens"][: len(ids)].tolist() == ids
    assert int(sample["mask"].sum()) == len(ids) and sample["tokens"][-1] == 50256


def test_upsampler_low_res_comes_from_the_same_crop(byte_tok):
    ds = build_dataset(DataConfig(demo_size=4, uncond_p=0.0, low_res_resample="box"),
                       tokenizer=byte_tok, image_size=64, text_ctx=32, low_res_size=16)
    for s in ds:
        assert s["image"].shape == (3, 64, 64) and s["low_res"].shape == (3, 16, 16)
        pooled = torch.nn.functional.avg_pool2d(s["image"][None], 4)[0]
        assert (pooled - s["low_res"]).abs().max() < 2 / 127.5 + 1e-6


def test_degradations_change_the_low_res_input():
    high = stripes(64, 64)
    clean = to_tensor(LowResTransform(16)(high, random.Random(0)))
    for kw in ({"blur": 2.0}, {"jpeg_quality": 5}, {"noise": 0.2}):
        degraded = to_tensor(LowResTransform(16, **kw)(high, random.Random(0)))
        assert degraded.shape == clean.shape and (degraded - clean).abs().max() > 0.02, kw


def test_bad_data_options_are_user_errors(byte_tok):
    for kw in ({"crop_scale": [0.5]}, {"crop_scale": [0.0, 1.0]}, {"uncond_p": 1.5},
               {"similarity_range": [0.5, 0.1]}):
        cfg = DataConfig(**kw)
        with pytest.raises(GlidectlError):
            build_dataset(cfg, tokenizer=byte_tok, image_size=16, text_ctx=8)
    with pytest.raises(GlidectlError, match="low-res size"):
        build_dataset(DataConfig(), tokenizer=byte_tok, image_size=16, text_ctx=8,
                      low_res_size=16)
