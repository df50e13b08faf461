"""Grey sampling: x0 projected onto grey images in the one denoiser, so that every sampler
(and the upsampler stage) draws exactly grey pictures; a model of grey data recommends it."""

from __future__ import annotations

import json

import pytest
import torch
from test_pipeline import tiny_glide

from glidectl import plugins
from glidectl.diffusion import create_diffusion
from glidectl.greyscale import all_grey, to_grey
from glidectl.pipeline import GlidePipeline
from glidectl.samplers.denoiser import GlideDenoiser

# bespoke runs on coefficients fitted to a model (a schedule file), like any other then
SAMPLERS = [name for name in plugins.samplers().names() if name != "bespoke"]


def chroma(images: torch.Tensor) -> float:
    """The largest gap between an image pixel's R, G and B."""
    return float((images.amax(dim=1) - images.amin(dim=1)).max())


@pytest.fixture(scope="module")
def base() -> torch.nn.Module:
    return tiny_glide("base", 0)


def text_emb(model: torch.nn.Module, prompts: list[str]) -> dict[str, torch.Tensor]:
    from glidectl.sampling import tokenizer_for

    return model.encode_text(*tokenizer_for(model).encode_batch(prompts,
                                                                model.options.text_ctx))


def test_grey_projection_is_the_channel_mean_and_leaves_grey_images_alone() -> None:
    x = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    g = to_grey(x)
    assert torch.equal(g[:, 0], g[:, 1]) and torch.equal(g[:, 1], g[:, 2])
    torch.testing.assert_close(g[:, 0], x.mean(dim=1))
    assert torch.equal(to_grey(g), g)  # a projection
    # orthogonal: what it removes is perpendicular to every grey image
    assert abs(float(((x - g) * torch.randn(2, 1, 5, 5).expand_as(x)).sum())) < 1e-4


def test_images_are_grey_within_two_levels_of_chroma() -> None:
    grey = torch.linspace(-1, 1, 16).reshape(1, 1, 4, 4).expand(2, 3, 4, 4).clone()
    assert all_grey(grey)
    grey[1, 0, 2, 2] += 2 * 2 / 255  # two levels: a greyscale JPEG's rounding
    assert all_grey(grey)
    grey[1, 0, 2, 2] += 2 / 255
    assert not all_grey(grey)


def test_the_denoiser_projects_x0_before_clipping(base) -> None:
    table = create_diffusion().alphas_cumprod
    x = 3 * torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        emb = text_emb(base, ["a cat", "a dog"])
        plain = GlideDenoiser(base, table, text_emb=emb, clip=False)(x, 2.0)
        grey = GlideDenoiser(base, table, text_emb=emb, grey=True)(x, 2.0)
    assert chroma(plain) > 0.1
    torch.testing.assert_close(grey, to_grey(plain).clamp(-1, 1))


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_draws_exactly_grey_images_with_grey_on(base, sampler) -> None:
    pipe = GlidePipeline(base)
    common = dict(seed=2, steps=3, sampler=sampler, output="tensor")
    assert chroma(pipe.generate(["a cat", "a dog"], **common)) > 0.1
    out = pipe.generate(["a cat", "a dog"], grey=True, **common)
    assert chroma(out) == 0.0


def test_samplers_see_only_grey_x0_and_converge_to_grey_by_themselves(base) -> None:
    """The picture is not merely projected at the end: every x0 a sampler is given is grey,
    and an ε-form sampler's last step lands on grey by itself."""
    from glidectl.sampling import StageOptions, sigma_table

    with torch.no_grad():
        emb = text_emb(base, ["a cat"])
    denoiser = GlideDenoiser(base, sigma_table(base), grey=True, text_emb=emb)
    seen = []
    options = StageOptions(sampler="dpm++2m", steps=4)
    x = 80 * torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = options.sampler_spec()(denoiser, x, options.sigmas(denoiser.sigmas),
                                     callback=lambda step: seen.append(step["denoised"]))
    assert len(seen) == 4 and all(chroma(d) == 0.0 for d in seen)
    assert chroma(out) < 1e-5


def test_the_upsampler_stage_draws_grey_too_unless_told_otherwise(base) -> None:
    pipe = GlidePipeline(base, tiny_glide("upsample", 1, image_size=32))
    common = dict(seed=1, steps=2, sampler="euler", upsample_steps="3",
                  upsample_schedule="respaced", output="tensor")
    out = pipe.generate("a cat", grey=True, **common)
    assert out.shape[-1] == 32 and chroma(out) == 0.0
    base_opts, up_opts, _ = pipe.stages(grey=True, upsample_grey=False)
    assert base_opts.grey and not up_opts.grey
    assert chroma(pipe.generate("a cat", grey=True, upsample_grey=False, **common)) > 0.1


def test_a_model_that_recommends_grey_samples_grey_unless_grey_is_false(base, tmp_path) -> None:
    from glidectl.glide import save_weights
    from glidectl.pipeline import RECOMMENDED_KEY

    path = save_weights(base, tmp_path / "grey.safetensors",
                        metadata={RECOMMENDED_KEY: json.dumps({"grey": True})})
    pipe = GlidePipeline.from_specs(str(path), None, device="cpu")
    base_opts, up_opts, _ = pipe.stages()
    assert base_opts.grey and up_opts.grey
    assert pipe.defaults_note({}) == ("Using the base model's recommended sampling settings "
                                      "(grey); pass --no-grey to change them.")
    assert pipe.defaults_note({"grey": False}) is None
    assert not any(o.grey for o in pipe.stages(grey=False)[:2])
    assert chroma(pipe.generate("a cat", steps=2, sampler="euler", output="tensor")) == 0.0


def test_grey_must_be_a_bool(base) -> None:
    from glidectl.errors import GlidectlError

    with pytest.raises(GlidectlError, match="grey must be True or False"):
        GlidePipeline(base).generate("a cat", grey="yes", steps=2)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_grey_inpainting_keeps_the_colour_of_the_kept_pixels(sampler) -> None:
    """--grey with --inpaint-image greyed the kept pixels too (the projection ran after the
    known pixels were pasted into x0): they come back as given, the drawn ones grey."""
    model = tiny_glide("base-inpaint", 2)
    image = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    known = torch.zeros(1, 1, 8, 8)
    known[..., :4] = 1
    for grey in (False, True):
        out = GlidePipeline(model).generate(["a", "b"], steps=3, sampler=sampler, grey=grey,
                                            inpaint_image=image, inpaint_mask=known,
                                            output="tensor")
        assert torch.equal(out[..., :4], image.expand(2, -1, -1, -1)[..., :4])
        assert (chroma(out[..., 4:]) == 0.0) is grey
    assert chroma(image[..., :4]) > 0.5
