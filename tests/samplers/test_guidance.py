"""Guidance tools: a σ interval, guidance rescale, dynamic thresholding (all off by default)."""

from __future__ import annotations

import pytest
import torch

from glidectl.diffusion import create_diffusion
from glidectl.errors import GlidectlError
from glidectl.samplers.denoiser import GlideDenoiser
from glidectl.samplers.guidance import dynamic_threshold, rescale_guidance

RAMP = torch.arange(16.0).reshape(4, 4) / 16


class _TextNet(torch.nn.Module):
    """A fake GLIDE network: ε = 0.1·x + the row's text code × a ramp; records batch sizes."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[int] = []

    def forward(self, x, t, text_emb=None, **kwargs):
        self.rows.append(x.shape[0])
        eps = 0.1 * x + text_emb["xf_proj"][:, :1, None, None] * RAMP
        return torch.cat([eps, torch.zeros_like(eps)], dim=1)


def _denoiser(**tools) -> tuple[GlideDenoiser, _TextNet]:
    net = _TextNet()
    text_emb = {"xf_proj": torch.tensor([[1.0], [2.0], [0.0], [0.0]])}  # cond 1, 2; uncond 0
    return GlideDenoiser(net, create_diffusion().alphas_cumprod, text_emb=text_emb,
                         guidance=3.0, clip=False, **tools), net


def test_guidance_interval_guides_inside_and_runs_the_conditional_rows_alone_outside() -> None:
    den, net = _denoiser(guidance_interval=(0.5, 5.0))
    plain, _ = _denoiser()
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(den(x, 2.0), plain(x, 2.0))  # inside: guided
    assert net.rows == [4]
    outside = den(x, 10.0)
    assert net.rows == [4, 2]  # half the rows, still one model call
    eps_cond = 0.1 * x / (1 + 100) ** 0.5 + torch.tensor([1.0, 2.0])[:, None, None, None] * RAMP
    torch.testing.assert_close(outside, x - 10.0 * eps_cond)
    assert den.calls == 2


def test_guidance_interval_judges_the_samplers_own_sigma_at_its_edges() -> None:
    """σ 80 (a Karras start) came back from its timestep as 80.0000000000002, so an
    interval 0,80 left the first step unguided."""
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(4))
    plain, _ = _denoiser()
    for sigma in (80.0, 11.015393170430679, 0.5):
        den, net = _denoiser(guidance_interval=(sigma, sigma * 2))
        torch.testing.assert_close(den(x, sigma), plain(x, sigma))
        den, net = _denoiser(guidance_interval=(0.0, sigma))
        torch.testing.assert_close(den(x, sigma), plain(x, sigma))
        assert net.rows == [4]


def test_guidance_rescale_matches_the_conditional_std_at_phi_one_and_is_off_at_zero() -> None:
    g = torch.Generator().manual_seed(1)
    cond, guided = torch.randn(3, 3, 8, 8, generator=g), 4 * torch.randn(3, 3, 8, 8, generator=g)
    torch.testing.assert_close(rescale_guidance(guided, cond, 0.0), guided)
    full = rescale_guidance(guided, cond, 1.0)
    torch.testing.assert_close(full.std(dim=(1, 2, 3)), cond.std(dim=(1, 2, 3)))
    half = rescale_guidance(guided, cond, 0.5)
    torch.testing.assert_close(half, (full + guided) / 2)


def test_guidance_rescale_in_the_denoiser_shrinks_the_guided_x0() -> None:
    plain, _ = _denoiser()
    rescaled, _ = _denoiser(guidance_rescale=1.0)
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    a, b = plain(x, 1.0), rescaled(x, 1.0)
    assert b.std(dim=(1, 2, 3)).sum() < a.std(dim=(1, 2, 3)).sum()


def test_dynamic_threshold_clips_at_the_percentile_and_rescales_into_the_unit_range() -> None:
    x0 = torch.linspace(-3, 3, 201).reshape(1, 1, 1, 201).repeat(2, 1, 1, 1)
    x0[1] = x0[1] / 10  # within [−1, 1]: s = 1 leaves it alone
    out = dynamic_threshold(x0, 90.0)
    s = torch.quantile(x0[0].abs().flatten(), 0.9)
    torch.testing.assert_close(out[0], x0[0].clamp(-s, s) / s)
    torch.testing.assert_close(out[1], x0[1])
    assert out.abs().max() <= 1


def test_dynamic_threshold_replaces_the_static_clip_in_the_denoiser() -> None:
    den, _ = _denoiser(dynamic_threshold=99.5)
    x = 5 * torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    out = den(x, 0.5)
    assert out.abs().max() <= 1 and out.abs().max() > 0.99


@pytest.mark.parametrize("tools,match", [
    ({"guidance_interval": (5.0, 1.0)}, "LO < HI"),
    ({"guidance_rescale": 1.5}, "between 0 and 1"),
    ({"dynamic_threshold": 10.0}, "between 50 and 100"),
])
def test_bad_guidance_tool_settings_are_one_sentence_errors(tools: dict, match: str) -> None:
    with pytest.raises(GlidectlError, match=match):
        _denoiser(**tools)


def test_pipeline_passes_the_guidance_tools_to_the_denoiser() -> None:
    from test_pipeline import tiny_glide

    from glidectl.pipeline import GlidePipeline

    pipe = GlidePipeline(tiny_glide("base", 0))
    common = dict(seed=3, steps=4, sampler="euler", output="tensor")
    plain = pipe.generate("a cat", **common)
    assert torch.equal(plain, pipe.generate("a cat", guidance_interval=(0.0, 1e6),
                                            guidance_rescale=0.0, **common))
    for tools in ({"guidance_interval": (0.0, 1e-3)}, {"guidance_rescale": 1.0},
                  {"dynamic_threshold": 60.0}):
        assert not torch.equal(plain, pipe.generate("a cat", **tools, **common)), tools


def test_dynamic_threshold_leaves_the_pixels_denoised_fn_pastes_as_given() -> None:
    """Inpainting's kept pixels were divided by the threshold's s in every x0 prediction
    (0.9 became 0.3 when the drawn pixels reached -3)."""
    image = torch.full((1, 3, 4, 4), 0.9)
    known = torch.zeros(1, 1, 4, 4)
    known[..., :2] = 1
    den, _ = _denoiser(dynamic_threshold=99.5)
    den.denoised_fn = lambda x0: x0 * (1 - known) + image * known
    x = 5 * torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(5))
    out = den(x, 0.5)
    torch.testing.assert_close(out[..., :2], image.expand(2, 3, 4, 4)[..., :2])
    assert out.abs().max() <= 1
