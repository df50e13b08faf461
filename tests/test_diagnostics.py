"""The per-noise-level diagnosis measures what it says, on models whose errors are known."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from diffusion_helpers import eps_from_xstart

from glidectl.diagnostics import format_report, split_lowfreq, swap_gap, x0_report
from glidectl.diffusion import create_diffusion
from glidectl.tokenizer import get_tokenizer

BUCKETS = ((0, 100), (400, 500), (900, 1000))


class KnownError(torch.nn.Module):
    """Predicts the ε of ``x0 + error`` (conditional rows) and ``x0 + uncond_error``
    (unconditional rows, i.e. the empty caption): its x0 errors are exactly those."""

    def __init__(self, diffusion, x0, error, uncond_error):
        super().__init__()
        self.diffusion, self.x0 = diffusion, x0
        self.error, self.uncond_error = error, uncond_error
        self.options = SimpleNamespace(text_ctx=16)
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, t, tokens, mask):
        b = x.shape[0] // 2
        empty = ~mask.any(dim=1)
        assert not empty[:b].any() and empty[b:].all(), "second half must be unconditional"
        target = torch.cat([self.x0[:b] + self.error, self.x0[:b] + self.uncond_error])
        eps = eps_from_xstart(self.diffusion, x.double(), t.long(), target.double())
        return torch.cat([eps.float(), torch.zeros_like(eps).float()], dim=1)


@pytest.fixture
def setup():
    torch.manual_seed(0)
    diffusion = create_diffusion("squaredcos_cap_v2", 1000)
    x0 = torch.rand(5, 3, 8, 8) * 2 - 1
    return diffusion, x0, ["a red circle"] * 5


def test_split_lowfreq_separates_channel_means():
    x = torch.randn(2, 3, 5, 5)
    means, rest = split_lowfreq(x)
    assert means.shape == (2, 3)
    torch.testing.assert_close(rest.mean(dim=(2, 3)), torch.zeros(2, 3), atol=1e-6, rtol=0)
    torch.testing.assert_close(rest + means[:, :, None, None], x)


def test_a_colour_cast_is_low_frequency_error(setup):
    diffusion, x0, captions = setup
    cast = torch.tensor([0.2, -0.1, 0.0])[None, :, None, None].expand_as(x0)
    model = KnownError(diffusion, x0, cast, cast)
    for r in x0_report(model, diffusion, x0, captions, get_tokenizer("byte"), buckets=BUCKETS):
        assert r.x0_lowfreq == pytest.approx(127.5 * 0.1, rel=1e-3)  # mean |0.2|,|0.1|,|0|
        assert r.x0_rest == pytest.approx(0.0, abs=1e-2)
        assert r.cond_gap == pytest.approx(0.0, abs=1e-2)


def test_detail_error_is_not_low_frequency(setup):
    diffusion, x0, captions = setup
    checker = torch.ones(8, 8)
    checker[::2, ::2] = checker[1::2, 1::2] = -1  # zero mean per channel
    detail = 0.1 * checker.expand_as(x0)
    model = KnownError(diffusion, x0, detail, detail)
    for r in x0_report(model, diffusion, x0, captions, get_tokenizer("byte"), buckets=BUCKETS):
        assert r.x0_lowfreq == pytest.approx(0.0, abs=1e-2)
        assert r.x0_rest == pytest.approx(12.75, rel=1e-3)


def test_caption_gap_is_conditional_minus_unconditional(setup):
    diffusion, x0, captions = setup
    zero = torch.zeros_like(x0)
    uncond = torch.full_like(x0, -0.4)  # the empty caption predicts a darker picture
    model = KnownError(diffusion, x0, zero, uncond)
    reports = x0_report(model, diffusion, x0, captions, get_tokenizer("byte"), buckets=BUCKETS)
    for r in reports:
        assert r.x0_lowfreq == pytest.approx(0.0, abs=1e-2)
        assert r.cond_gap == pytest.approx(51.0, rel=1e-3)
        assert r.cond_gap_lowfreq == pytest.approx(51.0, rel=1e-3)
        assert r.eps_mse == pytest.approx(0.0, abs=1e-6)
    assert "900-1000" in format_report(reports)


def test_same_seed_same_noisy_inputs(setup):
    diffusion, x0, captions = setup

    class NoiseBlind(torch.nn.Module):  # ε = 0: x0 = x_t / √ᾱ, a function of the inputs only
        options = SimpleNamespace(text_ctx=16)

        def __init__(self):
            super().__init__()
            self.dummy = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x, t, tokens, mask):
            return torch.zeros(x.shape[0], 6, *x.shape[2:])

    model = NoiseBlind()
    tok = get_tokenizer("byte")
    a = x0_report(model, diffusion, x0, captions, tok, buckets=BUCKETS, seed=3)
    b = x0_report(model, diffusion, x0, captions, tok, buckets=BUCKETS, seed=3, batch_size=2)
    for ra, rb in zip(a, b, strict=True):
        assert ra.as_dict() == pytest.approx(rb.as_dict())


class WordBrightness(torch.nn.Module):
    """Predicts the ε of a flat picture at +0.5 when the caption holds "white", else −0.5
    (or 0 whatever the caption says, with ``reads=False``); with ``checker=True`` a ±0.5
    checkerboard (zero mean) whose sign the word sets instead."""

    def __init__(self, diffusion, reads: bool = True, checker: bool = False):
        super().__init__()
        self.diffusion, self.reads, self.checker = diffusion, reads, checker
        self.options = SimpleNamespace(text_ctx=40)
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.white = torch.tensor(list(b"white"))

    def forward(self, x, t, tokens, mask):
        has = torch.tensor([self.white.tolist() in [row[i:i + 5].tolist() for i in range(36)]
                            for row in tokens])
        level = (has.float() - 0.5) if self.reads else torch.zeros(len(tokens))
        target = level[:, None, None, None].expand_as(x).double()
        if self.checker:
            h, w = x.shape[-2:]
            board = ((torch.arange(h)[:, None] + torch.arange(w)[None]) % 2) * 2.0 - 1.0
            target = target * board.double()
        eps = eps_from_xstart(self.diffusion, x.double(), t.long(), target)
        return torch.cat([eps.float(), torch.zeros_like(eps).float()], dim=1)


def test_swap_gap_isolates_one_word(setup):
    diffusion, x0, _ = setup
    captions = ["a red circle on a white background"] * 5
    swapped = ["a red circle on a black background"] * 5
    tok = get_tokenizer("byte")
    gap = swap_gap(WordBrightness(diffusion), diffusion, x0, captions, swapped, tok,
                   timesteps=(100, 900))
    assert gap == pytest.approx({100: 127.5, 900: 127.5}, rel=1e-3)  # |0.5 − (−0.5)| · 127.5
    deaf = swap_gap(WordBrightness(diffusion, reads=False), diffusion, x0, captions, swapped,
                    tok, timesteps=(100, 900))
    assert deaf == pytest.approx({100: 0.0, 900: 0.0}, abs=1e-3)


def test_swap_gap_rest_measures_the_spatial_part_alone(setup):
    diffusion, x0, _ = setup
    captions = ["a red circle on a white background"] * 5
    swapped = ["a red circle on a black background"] * 5
    tok = get_tokenizer("byte")
    checker = WordBrightness(diffusion, checker=True)
    rest = swap_gap(checker, diffusion, x0, captions, swapped, tok, timesteps=(100, 900),
                    part="rest")
    assert rest == pytest.approx({100: 127.5, 900: 127.5}, rel=1e-3)  # ±0.5 flips: 1.0 · 127.5
    means = swap_gap(checker, diffusion, x0, captions, swapped, tok, timesteps=(100,))
    assert means[100] == pytest.approx(0.0, abs=1e-3)  # a zero-mean pattern: no channel mean
    flat = swap_gap(WordBrightness(diffusion), diffusion, x0, captions, swapped, tok,
                    timesteps=(100,), part="rest")
    assert flat[100] == pytest.approx(0.0, abs=1e-3)
