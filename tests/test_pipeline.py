"""The sampling pipeline: guidance, text encoded once, per-image seeds, upsampler, inpainting."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from glidectl.errors import GlidectlError


def tiny_glide(kind: str = "base", seed: int = 0, image_size: int | None = None,
               tokenizer: str | None = None):
    """A tiny random GLIDE (byte tokenizer unless told) with non-zero output layers."""
    from glidectl.glide import create_model, preset_options

    size = image_size or (32 if kind.startswith("upsample") else 8)
    opts = preset_options(kind, "tiny", tokenizer=tokenizer).replace(
        image_size=size, num_channels=32, channel_mult="1,2", num_res_blocks=1,
        attention_resolutions=str(size // 2), num_head_channels=16, text_ctx=16,
        xf_width=32, xf_layers=1, xf_heads=2,
    )
    model = create_model(opts)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
            else:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()



@pytest.fixture(scope="module")
def base():
    return tiny_glide("base", 0)


@pytest.fixture(scope="module")
def upsampler():
    return tiny_glide("upsample", 1)


def test_tokenizer_is_picked_from_the_model_options(base) -> None:
    from glidectl.pipeline import GlidePipeline

    assert GlidePipeline(base).tokenizer.name == "byte"


def test_image_is_the_same_whatever_the_batch_size(base) -> None:
    from glidectl.pipeline import GlidePipeline

    pipe = GlidePipeline(base)
    for sampler in ("euler_a", "ddpm"):
        kw = dict(n=3, seed=7, steps=3, sampler=sampler, output="tensor")
        together = pipe.generate(["a cat", "a dog"], batch_size=6, **kw)
        alone = pipe.generate(["a cat", "a dog"], batch_size=1, **kw)
        # equal up to float32 reduction order (batched convs), far below one 8-bit level
        torch.testing.assert_close(together, alone, atol=1e-3, rtol=0)
        assert not torch.allclose(together[0], together[1])  # seeds 7 and 8 differ
        third = pipe.generate(["a cat"], n=1, seed=9, steps=3, sampler=sampler,
                              output="tensor")
        torch.testing.assert_close(third[0], together[2], atol=1e-3, rtol=0)


@pytest.mark.parametrize("dtype, mean_error", [(torch.float64, 1e-4), (torch.bfloat16, 0.1),
                                               (torch.float16, 0.05)])
def test_a_model_loaded_in_another_dtype_samples(base, tmp_path, dtype, mean_error) -> None:
    from glidectl.glide import load_model, save_weights
    from glidectl.pipeline import GlidePipeline

    path = save_weights(base, tmp_path / "base.safetensors")
    kw = dict(seed=3, steps=3, sampler="euler", output="tensor")
    ref = GlidePipeline(load_model(path), precision="fp32").generate("a cat", **kw)
    model = load_model(path, dtype=dtype)
    assert model.torso_dtype == dtype
    out = GlidePipeline(model).generate("a cat", **kw)
    assert out.shape == ref.shape and torch.isfinite(out).all()
    assert (out.float() - ref).abs().mean() < mean_error  # another seed: ~1.0 away
    model.float()  # and back: the torso follows its weights
    assert model.torso_dtype == torch.float32
    assert GlidePipeline(model).generate("a cat", **kw).dtype == torch.float32


def test_a_dtype_named_in_words_says_to_pass_a_torch_dtype(base, tmp_path) -> None:
    """``load_model(spec, dtype="fp16")`` (was: TypeError "to() received an invalid
    combination of arguments" from torch, after the file was read)."""
    from glidectl.glide import load_model, save_weights

    path = save_weights(base, tmp_path / "base.safetensors")
    with pytest.raises(GlidectlError) as error:
        load_model(path, dtype="fp16")
    assert str(error.value) == ("load_model(dtype=...) takes a float torch dtype such as "
                                "torch.bfloat16, got 'fp16' (str); autocast is the "
                                "precision= of GlidePipeline and generate().")
    with pytest.raises(GlidectlError) as error:  # was: TypeError from nn.Module.to
        load_model(path, dtype=torch.int64)
    assert str(error.value).startswith("load_model(dtype=...) takes a float torch dtype such "
                                       "as torch.bfloat16, got torch.int64 (dtype)")


def test_a_pipeline_of_a_model_in_hand_picks_the_precision_from_specs_does(
        base, tmp_path, monkeypatch) -> None:
    """``GlidePipeline(load_model(spec))`` and ``GlidePipeline.from_specs(spec)`` draw the same
    pixels: both default to ``auto`` (was fp32 for a model in hand, bf16 here)."""
    from glidectl import devices
    from glidectl.glide import load_model, save_weights
    from glidectl.pipeline import GlidePipeline

    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    path = save_weights(base, tmp_path / "base.safetensors")
    by_spec = GlidePipeline.from_specs(str(path), None, device="cpu")
    in_hand = GlidePipeline(load_model(path))
    assert in_hand.precision == by_spec.precision and in_hand.precision.name == "bf16"
    kw = dict(seed=3, steps=2, sampler="euler", output="tensor")
    assert torch.equal(in_hand.generate("a cat", **kw), by_spec.generate("a cat", **kw))
    fp64 = GlidePipeline(load_model(path, dtype=torch.float64))  # runs as loaded
    assert fp64.precision.autocast == "no" and "float64" in fp64.precision.reason


def test_guidance_encodes_text_once_and_runs_one_forward_over_cond_and_uncond(
        base, monkeypatch) -> None:
    from glidectl.pipeline import GlidePipeline

    encoded, forwards = [], []
    encode, forward = base.encode_text, base.forward
    monkeypatch.setattr(base, "encode_text",
                        lambda tokens, mask: (encoded.append(tokens), encode(tokens, mask))[1])
    monkeypatch.setattr(base, "forward",
                        lambda x, t, **kw: (forwards.append(x.shape[0]), forward(x, t, **kw))[1])
    GlidePipeline(base).generate(["a", "b", "c"], steps=4, sampler="heun", guidance=3.0,
                                 batch_size=2)
    assert len(encoded) == 2  # once per batch, reused at every step
    assert encoded[0][2:].eq(encoded[0][2:][0]).all()  # uncond rows: the empty caption
    assert forwards == [4] * 7 + [2] * 7  # heun: 2·4−1 calls; [cond, uncond] rows in one
    forwards.clear()
    GlidePipeline(base).generate(["a"], steps=2, sampler="euler", guidance=None)
    assert forwards == [1, 1]


def test_progress_counts_every_model_call(base) -> None:
    from glidectl.pipeline import GlidePipeline

    seen = []
    GlidePipeline(base).generate(["a"], n=3, batch_size=2, steps="10", sampler="plms",
                                 progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (34, 34) and len(seen) == 34  # 2 batches × 17 PLMS calls


def test_long_prompt_warns_how_many_tokens_were_dropped(base) -> None:
    from glidectl.pipeline import GlidePipeline

    messages: list[str] = []
    GlidePipeline(base).generate(["x" * 20], steps=1, sampler="euler", warn=messages.append)
    assert messages == ["Prompt 'xxxxxxxxxxxxxxxxxxxx' is 20 tokens but the model reads 16: "
                        "the last 4 tokens were dropped."]


def test_pil_images_carry_prompt_and_seed(base) -> None:
    from glidectl.pipeline import GlidePipeline

    images = GlidePipeline(base).generate(["a", "b"], n=2, seed=3, steps=1, sampler="euler")
    assert [(im.info["prompt"], im.info["seed"]) for im in images] == [
        ("a", "3"), ("a", "4"), ("b", "5"), ("b", "6")]
    assert images[0].size == (8, 8)


def test_upsampler_gets_8bit_low_res_and_scaled_noise(base, upsampler, monkeypatch) -> None:
    from glidectl import pipeline

    seen: dict[float, dict[str, torch.Tensor]] = {}
    forward = upsampler.forward

    def run(temp: float | None) -> torch.Tensor:
        calls: dict[str, torch.Tensor] = {}

        def spy(x, t, **kw):
            calls.setdefault("low_res", kw["low_res"])
            calls.setdefault("x", x.detach().clone())  # first call: x_T · c_in(σ_max)
            return forward(x, t, **kw)

        monkeypatch.setattr(upsampler, "forward", spy)
        extra = {} if temp is None else {"upsample_temp": temp}
        out = pipeline.GlidePipeline(base, upsampler).generate(
            ["a"], steps=2, sampler="euler", upsample_steps=2, upsample_sampler="ddim",
            output="tensor", **extra)
        seen[temp] = calls
        return out

    assert run(None).shape == (1, 3, 32, 32)
    levels = (seen[None]["low_res"] + 1) * 127.5
    torch.testing.assert_close(levels, levels.round(), atol=1e-4, rtol=0)
    run(1.0)
    run(0.5)
    # The default temperature 0.997 scales the upsampler's initial noise, nothing else.
    torch.testing.assert_close(seen[None]["x"], 0.997 * seen[1.0]["x"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(seen[0.5]["x"], 0.5 * seen[1.0]["x"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(seen[0.5]["low_res"], seen[1.0]["low_res"], rtol=0, atol=0)
    assert pipeline.UPSAMPLE_DEFAULTS.guidance is None


def test_upsampler_alone_upsamples_a_given_low_res_image(upsampler) -> None:
    from glidectl.pipeline import GlidePipeline

    low = torch.rand(1, 3, 8, 8) * 2 - 1
    out = GlidePipeline(None, upsampler).generate(["a"], low_res=low, upsample_steps=2,
                                                  upsample_sampler="euler", output="tensor")
    assert out.shape == (1, 3, 32, 32)


def test_an_image_tensor_of_zero_to_one_pixels_is_warned_of(upsampler) -> None:
    """torchvision's ToTensor gives [0, 1]; read as [-1, 1] it was a washed-out picture
    without a word. A tensor in [-1, 1], or of one flat tone, is taken without one."""
    from glidectl.pipeline import GlidePipeline

    torch.manual_seed(0)
    pixels = torch.rand(1, 3, 8, 8)
    pipe = GlidePipeline(None, upsampler)

    def said(low: torch.Tensor) -> list[str]:
        messages: list[str] = []
        pipe.generate(["a"], low_res=low, upsample_steps=1, upsample_sampler="euler",
                      output="tensor", warn=messages.append)
        return messages

    low, high = pixels.aminmax()
    assert said(pixels) == [
        f"The low_res tensor holds values from {low.item():.3g} to {high.item():.3g} only, so "
        "it is read as a pale picture (images are tensors in [-1, 1], 0 mid-grey); if it holds "
        "[0, 1] pixels (torchvision's ToTensor), pass x * 2 - 1."]
    assert said(pixels * 2 - 1) == said(torch.zeros(1, 3, 8, 8)) == []


def test_a_low_res_image_of_another_size_is_resized_with_a_warning(upsampler, tmp_path) -> None:
    """A 32 px image given to an upsampler of 8 px input is shrunk first, and said so."""
    from PIL import Image

    from glidectl.pipeline import GlidePipeline

    Image.new("RGB", (32, 32), (255, 0, 0)).save(tmp_path / "big.png")
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "fits.png")
    said: list[str] = []
    for name in ("big.png", "fits.png"):
        out = GlidePipeline(None, upsampler).generate(
            ["a"], low_res=tmp_path / name, upsample_steps=1, upsample_sampler="euler",
            warn=said.append, output="tensor")
        assert out.shape == (1, 3, 32, 32)
    assert said == [f"The low-res image {str(tmp_path / 'big.png')!r} is 32 px across, but "
                    "this upsampler takes 8 px input: it is resized to 8×8 (bicubic) first, "
                    "so the output is 32 px (pass an image of 8 px to upsample it as it is)."]


def test_a_low_res_tensor_of_another_size_is_shrunk_as_its_image_is(upsampler) -> None:
    """A 32 px picture given as a tensor to an upsampler of 8 px input was shrunk by torch's
    bicubic without antialiasing (up to 150 levels off the antialiased downscale training
    and a file get); it is now the same input, so the same output, as the picture's file."""
    from PIL import Image

    from glidectl.images import from_pil
    from glidectl.pipeline import GlidePipeline

    noise = np.random.default_rng(0).integers(0, 256, (32, 40, 3), dtype=np.uint8)
    picture = Image.fromarray(noise)
    pipe = GlidePipeline(None, upsampler)
    kw = dict(upsample_steps=1, upsample_sampler="euler", output="tensor", warn=lambda _: None)
    as_file = pipe.generate(["a"], low_res=picture, **kw)
    assert torch.equal(pipe.generate(["a"], low_res=from_pil(picture), **kw), as_file)
    fits = from_pil(picture, 8)  # a tensor of the input's size is taken as it is
    assert torch.equal(pipe.generate(["a"], low_res=fits, **kw), as_file)


def test_inpaint_tensors_of_another_size_are_resized_as_their_images_are() -> None:
    """A 32 px inpaint image and mask given as tensors to an 8 px inpainting model went
    through torch's aliased bicubic and floor-indexed nearest, so the same picture as a PIL
    image (PIL's antialiased bicubic, centre-sampled nearest) made another image; now one."""
    from PIL import Image

    from glidectl.images import from_pil
    from glidectl.pipeline import GlidePipeline

    rng = np.random.default_rng(0)
    picture = Image.fromarray(rng.integers(0, 256, (32, 40, 3), dtype=np.uint8))
    repaint = (rng.random((32, 40)) < 0.5).astype(np.uint8) * 255  # white: repaint
    keep = torch.from_numpy(1 - repaint.astype(np.float32) / 255)  # GLIDE's: 1 = keep
    pipe = GlidePipeline(tiny_glide("base-inpaint", 2))
    kw = dict(steps=1, sampler="euler", output="tensor", warn=lambda _: None)
    as_files = pipe.generate(["a"], inpaint_image=picture, inpaint_mask=Image.fromarray(repaint),
                             **kw)
    as_tensors = pipe.generate(["a"], inpaint_image=from_pil(picture), inpaint_mask=keep, **kw)
    assert torch.equal(as_tensors, as_files)


def test_a_low_res_input_of_another_size_is_shrunk_with_the_upsampler_s_training_filter(
        upsampler, tmp_path) -> None:
    """An upsampler trained with data.low_res_resample = "box" got a 32 px --low-res image
    shrunk with bicubic (up to 14 levels off the box downscale it trained on, and eval
    --low-res gives it); it is shrunk with box, and the PNG records it. An image of the
    input's size is taken as it is, whatever the filter."""
    from PIL import Image

    from glidectl.glide import load_model, save_weights
    from glidectl.images import from_pil
    from glidectl.pipeline import GlidePipeline

    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "big.png")
    save_weights(upsampler, tmp_path / "box.safetensors",
                 metadata={"glidectl.low_res_resample": "box"})
    boxed = GlidePipeline.from_specs(None, tmp_path / "box.safetensors", device="cpu")
    plain = GlidePipeline(None, upsampler)
    assert boxed.low_res_filter() == "box" and plain.low_res_filter() == "bicubic"
    assert GlidePipeline(None, load_model(tmp_path / "box.safetensors")).low_res_filter() == "box"
    kw = dict(upsample_steps=1, upsample_sampler="euler", output="tensor",
              warn=lambda _: None)
    picture = Image.fromarray(noise)
    shrunk = {f: from_pil(picture, 8, getattr(Image.Resampling, f.upper()))
              for f in ("box", "bicubic")}
    assert not torch.equal(shrunk["box"], shrunk["bicubic"])
    for low in (tmp_path / "big.png", picture, from_pil(picture)):
        out = boxed.generate(["a"], low_res=low, **kw)
        assert torch.equal(out, plain.generate(["a"], low_res=shrunk["box"], **kw))
        asked = boxed.generate(["a"], low_res=low, low_res_resample="bicubic", **kw)
        assert torch.equal(asked, plain.generate(["a"], low_res=low, **kw))
    for fits in shrunk.values():  # the input's size: no filter runs
        assert torch.equal(boxed.generate(["a"], low_res=fits, **kw),
                           plain.generate(["a"], low_res=fits, **kw))
    image, = boxed.generate(["a"], low_res=tmp_path / "big.png", upsample_steps=1,
                            upsample_sampler="euler", warn=lambda _: None)
    assert json.loads(image.info["parameters"])["low_res_resample"] == "box"
    with pytest.raises(GlidectlError, match=r"low_res_resample must be 'box' or 'bicubic'"):
        boxed.generate(["a"], low_res=picture, low_res_resample="lanczos", **kw)


@pytest.mark.parametrize("base_kind, up_kind, message", [
    ("upsample", None, r"The base model 'runs/u' is an 'upsample' model; pass it as the "
                       r"upsampler \(--upsampler\) behind a base model, or in glidectl sample "
                       r"with --base none --low-res IMAGE\."),
    (None, "base", r"The upsampler 'runs/u' is a 'base' model; pass it as the base "
                   r"\(--base\) and an upsample model"),
    ("base", "upsample", r"The upsampler 'runs/u' takes 16 px input but the base model "
                         r"'runs/b' makes 12 px images; pick a matching pair \(an upsampler "
                         r"trained with data.resolution = 48 takes 12 px input\)\."),
])
def test_a_model_of_the_wrong_stage_is_named_with_what_to_do(base_kind, up_kind,
                                                             message) -> None:
    from glidectl.glide import preset_options
    from glidectl.pipeline import check_pair

    opts = {"base": preset_options("base", "quickstart"),
            "upsample": preset_options("upsample", "quickstart").replace(image_size=64)}
    names = {"base": "runs/b", "upsample": "runs/u"}
    if base_kind == "upsample":
        names["base"] = "runs/u"
    with pytest.raises(GlidectlError, match=message):
        check_pair(opts.get(base_kind), opts.get(up_kind), names)


def test_inpainting_keeps_the_known_pixels() -> None:
    from glidectl.pipeline import GlidePipeline

    model = tiny_glide("base-inpaint", 2)
    image = torch.rand(1, 3, 8, 8) * 2 - 1
    known = torch.zeros(1, 1, 8, 8)
    known[..., :, :4] = 1
    out = GlidePipeline(model).generate(["a"], n=2, steps=3, sampler="dpm++2m",
                                        inpaint_image=image, inpaint_mask=known,
                                        output="tensor")
    torch.testing.assert_close(out[:, :, :, :4], image.expand(2, -1, -1, -1)[:, :, :, :4])
    assert not torch.allclose(out[:, :, :, 4:], image.expand(2, -1, -1, -1)[:, :, :, 4:])


def test_one_inpaint_image_and_mask_per_image_are_cut_into_the_batches() -> None:
    """[N,…] inpaint tensors went whole into every batch: n=4 in batches of 2 silently kept
    images 0 and 1 again in images 2 and 3, other counts ended in torch's RuntimeError; a
    0–255 or NaN mask was used as it was."""
    from glidectl.pipeline import GlidePipeline

    pipe = GlidePipeline(tiny_glide("base-inpaint", 2))
    images = torch.rand(4, 3, 8, 8) * 2 - 1
    known = torch.zeros(4, 1, 8, 8)
    known[..., :, :4] = 1
    out = pipe.generate(["a"], n=4, batch_size=2, steps=2, sampler="euler", output="tensor",
                        inpaint_image=images, inpaint_mask=known)
    torch.testing.assert_close(out[..., :4], images[..., :4])
    for kwargs, said in [
        (dict(inpaint_image=images[:2], inpaint_mask=known[:1]),
         "inpaint_image holds 2 images but the request makes 4; pass one image, or one per "
         "image."),
        (dict(inpaint_image=images[:1], inpaint_mask=known[:3]),
         "inpaint_mask holds 3 images but the request makes 4; pass one image, or one per "
         "image."),
        (dict(inpaint_image=images[:1], inpaint_mask=known[:1] * 255),
         "The inpaint_mask tensor holds values from 0 to 255; a mask is 1 on the pixels to "
         "keep and 0 on those to repaint (1 - mask / 255 for a 0-255 mask that is white where "
         "to repaint, as diffusers' are)."),
    ]:
        with pytest.raises(GlidectlError) as info:
            pipe.generate(["a"], n=4, batch_size=2, steps=2, sampler="euler", **kwargs)
        assert str(info.value) == said


def test_inpaint_upsampler_keeps_the_known_pixels_at_full_size() -> None:
    from glidectl.pipeline import GlidePipeline

    pipe = GlidePipeline(tiny_glide("base-inpaint", 2), tiny_glide("upsample-inpaint", 3))
    image = torch.rand(1, 3, 32, 32) * 2 - 1
    known = torch.zeros(1, 1, 32, 32)
    known[..., 16:, :] = 1
    out = pipe.generate(["a"], steps=2, sampler="euler", upsample_steps=2,
                        upsample_sampler="dpm++2m", inpaint_image=image, inpaint_mask=known,
                        output="tensor")
    assert out.shape == (1, 3, 32, 32)
    torch.testing.assert_close(out[..., 16:, :], image[..., 16:, :])


def test_a_hole_only_the_inpaint_upsampler_sees_is_not_called_all_kept() -> None:
    """A 2×2 hole the base's 8 px mask misses: the 32 px upsampler repaints it, but the
    warning said the picture comes back as the inpaint image (and all white at 8 px only
    said the image is not used, though the upsampler keeps its black pixels)."""
    from glidectl.pipeline import GlidePipeline

    pipe = GlidePipeline(tiny_glide("base-inpaint", 2), tiny_glide("upsample-inpaint", 3))
    image = torch.rand(1, 3, 32, 32) * 2 - 1
    kw = dict(steps=1, sampler="euler", upsample_steps=1, upsample_sampler="euler",
              inpaint_image=image, output="tensor")
    for hole, changed in ((0.0, True), (1.0, False)):
        known = torch.full((1, 1, 32, 32), 1.0 - hole)
        known[..., :2, :2] = hole  # nearest to 8 px samples pixel 2 of each 4: not these
        said: list[str] = []
        out = pipe.generate(["a"], inpaint_mask=known, warn=said.append, **kw)
        assert not any("every pixel" in s for s in said), said
        kept = known.bool().expand_as(out)
        assert torch.equal(out[kept], image[kept])
        assert bool((out[..., :2, :2] != image[..., :2, :2]).any()) == changed
    said = []
    pipe.generate(["a"], inpaint_mask=torch.ones(1, 1, 32, 32), warn=said.append, **kw)
    assert "The inpaint mask keeps every pixel at 8 px and 32 px (white marks" in said[-1]


def test_inpainting_with_a_plain_base_model_is_a_user_error(base) -> None:
    from glidectl.pipeline import GlidePipeline

    with pytest.raises(GlidectlError, match="inpaint"):
        GlidePipeline(base).generate(["a"], steps=1, inpaint_image=torch.zeros(1, 3, 8, 8),
                                     inpaint_mask=torch.ones(1, 1, 8, 8))


def test_sample_base_for_training_previews(base) -> None:
    from glidectl.diffusion import create_diffusion
    from glidectl.pipeline import sample_base, sample_upsample

    out = sample_base(base, create_diffusion(), ["a", "b"], None, sampler="ddim", steps=3,
                      guidance=3.0, seed=0)
    assert out.shape == (2, 3, 8, 8) and out.abs().max() <= 1
    up = sample_upsample(tiny_glide("upsample", 1), None, ["a", "b"], None, out,
                         sampler="euler", steps=2, seed=0)
    assert up.shape == (2, 3, 32, 32)


def test_unknown_sampler_names_the_nearest(base) -> None:
    from glidectl.pipeline import GlidePipeline

    with pytest.raises(GlidectlError, match="Did you mean 'heun'"):
        GlidePipeline(base).generate(["a"], sampler="huen")


@pytest.mark.parametrize(("options", "message"), [
    ({"guidance": float("nan")}, "guidance must be from 0 to 100 (a finite number); got nan"),
    ({"seed": -1}, "seed must be from 0 to 2**63-1; got -1"),
    ({"seeds": [2**70]}, "seed must be from 0 to 2**63-1"),
    ({"upsample_guidance": -2}, "upsample_guidance must be from 0 to 100; got -2"),
    ({"eta": 3.0}, "eta must be from 0 to 1; got 3"),
])
def test_library_numbers_are_checked_like_the_flags(base, options, message) -> None:
    from glidectl.pipeline import GlidePipeline

    # before: a nan guidance drew an image, a negative seed folded onto another one
    with pytest.raises(GlidectlError, match=re.escape(message)):
        GlidePipeline(base).generate(["a"], sampler="euler", steps=2, **options)


def test_generate_picks_its_device_as_sample_does(base, tmp_path, monkeypatch) -> None:
    import glidectl.pipeline as pipeline
    from glidectl.glide import save_weights

    asked: list[str] = []
    monkeypatch.setattr(pipeline, "pick_device",
                        lambda device="auto": asked.append(device) or "cpu")
    path = save_weights(base, tmp_path / "base.safetensors")
    images = pipeline.generate("a cat", base=str(path), upsampler="none", steps=2,
                               sampler="euler")
    assert asked == ["auto"] and len(images) == 1  # a GPU when there is one, as the CLI


def test_library_arguments_of_the_wrong_kind_are_named(base) -> None:
    from glidectl.pipeline import GlidePipeline

    pipe = GlidePipeline(base)
    with pytest.raises(GlidectlError, match="a prompt string or a list of prompt strings"):
        pipe.generate(["a", None], sampler="euler", steps=2)  # was: no attribute 'lower'
    with pytest.raises(GlidectlError, match="output must be one of 'pil', 'np', 'tensor', "
                       "got 'numpy'"):
        pipe.generate(["a"], output="numpy", sampler="euler", steps=2)  # was: PIL images
    images = pipe.generate((p for p in ["a"]), sampler="euler", steps=2)  # any iterable
    assert len(images) == 1


def test_np_output_is_float32_nhwc_in_0_1_as_the_pil_images(base) -> None:
    """``output="np"`` as diffusers' ``output_type="np"``: the PIL pictures' pixels / 255,
    before their 8-bit rounding."""
    import numpy as np

    from glidectl.pipeline import GlidePipeline

    kw = dict(n=2, seed=5, sampler="euler", steps=2)
    pipe = GlidePipeline(base)
    arr = pipe.generate(["a"], output="np", **kw)
    pil = np.stack([np.asarray(im) for im in pipe.generate(["a"], **kw)])
    assert isinstance(arr, np.ndarray) and arr.dtype == np.float32
    assert arr.shape == pil.shape == (2, 8, 8, 3) and 0 <= arr.min() and arr.max() <= 1
    assert np.abs(arr * 255 - pil).max() <= 0.5 + 1e-3


def test_errors_of_a_library_call_name_its_keywords_not_the_cli_flags(base) -> None:
    """Errors written for ``glidectl sample`` (``raise --steps``) say ``steps`` to a Python
    caller; a ``glidectl fit-steps`` command they suggest keeps its own flags."""
    from glidectl.errors import flags_named
    from glidectl.pipeline import GlidePipeline

    pipe = GlidePipeline(base)
    for kwargs, said in [
        (dict(sampler="plms", steps=2), "steps=2: the plms sampler needs at least 3 steps, "
         "got '2'."),
        (dict(sampler="bespoke", steps=2), "needs coefficients fitted to the model: pass "
         "schedule=FILE written by glidectl fit-steps MODEL --method bespoke."),
        (dict(inpaint_image=torch.zeros(1, 3, 8, 8), steps=2),
         "Inpainting needs both inpaint_image and inpaint_mask."),
    ]:
        with pytest.raises(GlidectlError) as err:
            pipe.generate(["a"], **kwargs)
        assert str(err.value).endswith(said)
    with flags_named(), pytest.raises(GlidectlError, match="^--steps 2: "):  # as the CLI
        pipe.generate(["a"], sampler="plms", steps=2)


def test_numbers_of_the_wrong_kind_are_named_by_their_keyword(base) -> None:
    """``n=2.0`` or ``guidance="3"`` from a notebook: one sentence naming the keyword, as an
    out-of-range value is (was: TypeError from range() or deep in the sampler)."""
    from glidectl.pipeline import GlidePipeline

    pipe = GlidePipeline(base)
    for kwargs, said in [
        (dict(n=2.0), "n must be a whole number, got 2.0 (float)"),
        (dict(batch_size="4"), "batch_size must be a whole number, got '4' (str)"),
        (dict(seeds=[1, 2.5], n=2), "seed must be a whole number, got 2.5 (float)"),
        (dict(guidance="3"), "guidance must be a number, got '3' (str)"),
        (dict(eta=True), "eta must be a number, got True (bool)"),
        (dict(upsample_temp="1"), "upsample_temp must be a number, got '1' (str)"),
    ]:
        with pytest.raises(GlidectlError) as error:
            pipe.generate("a", sampler="euler", steps=2, **kwargs)
        assert str(error.value) == f"generate(): {said}."
    assert len(pipe.generate("a", n=2, seeds=[torch.tensor(3).item(), 4], guidance=2,
                             sampler="euler", steps=2)) == 2  # ints for floats are fine


def test_from_specs_takes_none_for_either_model_as_sample_does() -> None:
    from glidectl.pipeline import GlidePipeline

    with pytest.raises(GlidectlError, match="needs a base model, an upsampler or both"):
        GlidePipeline.from_specs("none", "none")  # was: "Model 'none' not found"


def test_models_info_gives_the_keys_its_docs_name(tmp_path) -> None:
    """The README's `pipe.models_info()` comment and the docstring name the keys it returns
    (they said "file" for the key ``path``)."""
    import hashlib
    from pathlib import Path

    from tiny_configs import tiny_base_weights

    from glidectl.pipeline import GlidePipeline, ModelRecord

    path = tiny_base_weights(tmp_path / "m.safetensors")
    info = GlidePipeline.from_specs(str(path), "none", device="cpu").models_info()
    assert info == {"base": {
        "spec": str(path), "path": str(path), "kind": "base", "image_size": 16,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "tokenizer": "byte",
        "loras": []}}
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    comment = re.search(r"pipe\.models_info\(\) +# per model: ([^\n]*)", readme).group(1)
    named = {item.split()[0] for item in comment.split(", ") if item != "…"}
    documented = set(re.findall(r"``(\w+)``", ModelRecord.info.__doc__))
    assert named < documented == set(info["base"]), (named, documented)


def test_import_glidectl_stays_torch_free_but_exports_generate() -> None:
    code = ("import sys, glidectl\nassert 'torch' not in sys.modules\n"
            "assert callable(glidectl.generate) and callable(glidectl.GlidePipeline)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_upsampler_stage_defaults_to_fast27_ddpm_whatever_its_checkpoint_records(
        base, upsampler) -> None:
    """sample, eval, the UI and the library upsample alike: an upsampler's recorded preview
    settings (older checkpoints have them) are not its defaults."""
    from glidectl.pipeline import GlidePipeline, ModelRecord

    pipe = GlidePipeline(base, upsampler)
    pipe.records["upsample"] = ModelRecord("upsample", "up", recommended={
        "sampler": "dpm++2m", "steps": 25, "guidance": 2.0})
    _, up, _ = pipe.stages()
    assert (up.sampler, up.steps, up.guidance) == ("ddpm", "fast27", None)
    _, up, _ = pipe.stages(upsample_sampler="euler", upsample_steps=5)
    assert (up.sampler, up.steps) == ("euler", 5)


def test_a_recommended_sampler_no_plugin_registers_is_one_sentence(base) -> None:
    """A model that previewed with a plugin's sampler, sampled where that plugin is gone,
    said "Unknown sampler 'gone'. Did you mean ...?" for a --sampler nobody passed."""
    from glidectl.errors import GlidectlError
    from glidectl.pipeline import GlidePipeline, ModelRecord

    pipe = GlidePipeline(base)
    pipe.records["base"] = ModelRecord("base", "b", recommended={
        "sampler": "gone_euler", "steps": 5, "guidance": 2.0})
    with pytest.raises(GlidectlError, match=r"^The base model recommends the sampler "
                       r"'gone_euler' .* no (installed|loaded) plugin registers; (install|load) "
                       r"the plugin that provides it .*or pass --sampler NAME\.$"):
        pipe.stages()
    opts, _, _ = pipe.stages(sampler="euler")  # given: the recommendation's sampler unused
    assert (opts.sampler, opts.steps, opts.guidance) == ("euler", 5, 2.0)


def test_a_base_model_as_the_upsampler_of_low_res_input_is_not_told_to_pass_base(base) -> None:
    """With --low-res no base model runs (eval refuses --base there): the upsampler that is
    a base model is told to drop --low-res or name an upsample model, however it is built."""
    from glidectl.pipeline import GlidePipeline, check_pair

    said = (r"The upsampler 'runs/b' is a 'base' model, and --low-res upsamples with an "
            r"upsample model; pass one \(a glidectl upsample run or openai:upsample\) as "
            r"--upsampler, or drop --low-res to sample this model as the base \(--base\)\.")
    with pytest.raises(GlidectlError, match=said):
        check_pair(None, base.options, {"upsample": "runs/b"}, alone=True)
    with pytest.raises(GlidectlError, match="The upsampler is a 'base' model, and low_res "):
        GlidePipeline(None, base)


def test_pairs_are_checked_kind_first_however_the_pipeline_is_built(base, upsampler) -> None:
    from glidectl.pipeline import GlidePipeline

    with pytest.raises(GlidectlError, match="The upsampler is a 'base' model; pass it as the base"):
        GlidePipeline(base, base)
    with pytest.raises(GlidectlError, match="The base model is an 'upsample' model"):
        GlidePipeline(upsampler, upsampler)
    with pytest.raises(GlidectlError, match="takes 8 px input but the base model makes 16 px"):
        GlidePipeline(tiny_glide("base", image_size=16), upsampler)


def test_inpainting_through_a_plain_upsampler_is_refused_before_sampling(upsampler) -> None:
    """A plain upsampler would repaint the pixels the mask keeps."""
    from glidectl.pipeline import GlidePipeline

    pipe = GlidePipeline(tiny_glide("base-inpaint"), upsampler)
    image, mask = torch.zeros(1, 3, 8, 8), torch.ones(1, 1, 8, 8)
    with pytest.raises(GlidectlError, match="needs an upsample-inpaint model, but this is an "
                       "'upsample' model"):
        pipe.generate(["a cat"], steps=2, inpaint_image=image, inpaint_mask=mask,
                      on_step=lambda *a: pytest.fail("sampled before refusing"))
    alone = GlidePipeline(None, upsampler)  # no base stage: "upsampler='none'" cannot help
    with pytest.raises(GlidectlError, match="or drop inpaint_image and inpaint_mask") as err:
        alone.generate(["a cat"], low_res=torch.zeros(1, 3, 8, 8), inpaint_image=image,
                       inpaint_mask=mask)
    assert "'none'" not in str(err.value)


def test_image_and_mask_tensors_of_any_height_are_resized_to_the_model() -> None:
    from glidectl.sampling import as_image_tensor, as_mask_tensor

    assert as_image_tensor(torch.zeros(1, 3, 20, 12), 12).shape == (1, 3, 12, 12)
    assert as_mask_tensor(torch.ones(20, 12), 12).shape == (1, 1, 12, 12)


def test_a_low_res_file_is_read_as_training_reads_its_images(tmp_path) -> None:
    """Input images (--low-res, --inpaint-image, preview.low_res) were read with PIL's
    convert("RGB"): an EXIF-rotated photo came in sideways, a 16-bit PNG white, a transparent
    pixel as its hidden colour; they are read as the data pipeline (the upsampler's training,
    eval --low-res's references) reads them."""
    import numpy as np
    from PIL import Image

    from glidectl.data.images import open_image
    from glidectl.images import from_pil
    from glidectl.sampling import as_image_tensor
    from glidectl.training.previews import _load_low_res

    halves = np.zeros((8, 16, 3), np.uint8)
    halves[:, 8:] = 255
    photo = Image.fromarray(halves)
    exif = photo.getexif()
    exif[0x0112] = 6  # stored sideways: shown turned 90° clockwise
    photo.save(tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=100)
    Image.fromarray(np.full((8, 8), 30000, np.uint16)).save(tmp_path / "deep.png")
    clear = np.zeros((8, 8, 4), np.uint8)
    clear[..., 0] = 255  # red, fully transparent
    Image.fromarray(clear).save(tmp_path / "clear.png")
    for name in ("rotated.jpg", "deep.png", "clear.png"):
        path = tmp_path / name
        read = from_pil(open_image(path)[0], 8)
        assert torch.equal(as_image_tensor(path, 8), read), name
        assert torch.equal(_load_low_res([str(path)], 8), read), name  # preview.low_res
    noise = np.random.default_rng(0).integers(0, 256, (36, 40, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "whole.png")
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[:len(data) // 2])  # was an OSError traceback
    with pytest.raises(GlidectlError, match=r"Cannot read image '.*cut.png' \(image file is "
                                            r"truncated"):
        as_image_tensor(tmp_path / "cut.png", 8)


def test_low_res_holds_one_image_or_one_per_image(upsampler) -> None:
    from glidectl.pipeline import GlidePipeline

    pipe = GlidePipeline(None, upsampler)
    kw = dict(upsample_steps=2, upsample_sampler="euler", output="tensor")
    with pytest.raises(GlidectlError, match="low_res holds 2 images but the request makes 3"):
        pipe.generate(["a cat"], n=3, low_res=torch.zeros(2, 3, 8, 8), **kw)
    lows = torch.stack([torch.full((3, 8, 8), v) for v in (-0.5, 0.5)])
    both = pipe.generate(["a cat"], n=2, batch_size=1, seed=4, low_res=lows, **kw)
    second = pipe.generate(["a cat"], n=1, seed=5, low_res=lows[1:], **kw)
    assert torch.allclose(both[1:], second, atol=1e-5)


def test_non_square_inputs_use_their_centre_square_and_say_so(tmp_path) -> None:
    from PIL import Image

    from glidectl.pipeline import GlidePipeline
    from glidectl.sampling import as_image_tensor, as_mask_tensor

    wide = Image.new("RGB", (24, 8), (255, 0, 0))  # red sides, a blue centre square
    wide.paste((0, 0, 255), (8, 0, 16, 8))
    wide.save(tmp_path / "wide.png")
    mask = Image.new("L", (24, 8), 255)  # repaint all but the centre square's left half
    mask.paste(0, (8, 0, 12, 8))
    mask.save(tmp_path / "mask.png")
    image = as_image_tensor(tmp_path / "wide.png", 8)
    assert image[0, 2].min() > 0.99 and image[0, 0].max() < -0.99  # only blue: not stretched
    known = as_mask_tensor(tmp_path / "mask.png", 8)
    assert known[..., :4].min() == 1 and known[..., 4:].max() == 0
    tensor = torch.full((1, 3, 8, 24), -1.0)
    tensor[..., 8:16] = 1.0
    assert as_image_tensor(tensor, 8).min() > 0.99

    said: list[str] = []
    out = GlidePipeline(tiny_glide("base-inpaint", 2)).generate(
        ["a"], steps=2, sampler="euler", inpaint_image=tmp_path / "wide.png",
        inpaint_mask=tmp_path / "mask.png", warn=said.append, output="tensor")
    assert out.shape == (1, 3, 8, 8)
    assert [m for m in said if "centre" in m] == [
        f"The inpaint image {str(tmp_path / 'wide.png')!r} is 24×8 px; only its centre 8×8 "
        "square is used.",
        f"The inpaint mask {str(tmp_path / 'mask.png')!r} is 24×8 px; only its centre 8×8 "
        "square is used."]
    Image.new("L", (8, 8)).save(tmp_path / "square.png")
    with pytest.raises(GlidectlError, match=r"mask is 8×8 px but the image 24×8 px; give a "):
        GlidePipeline(tiny_glide("base-inpaint", 2)).generate(
            ["a"], steps=2, inpaint_image=tmp_path / "wide.png",
            inpaint_mask=tmp_path / "square.png")


def test_every_inpainting_stage_without_inputs_is_said() -> None:
    """An upsample-inpaint upsampler behind a plain base, given no inpaint image and mask,
    upsampled with an all-hidden mask without a word (one behind --base none was said)."""
    from glidectl.pipeline import GlidePipeline

    kw = dict(steps=1, sampler="euler", upsample_steps=1, upsample_sampler="euler",
              output="tensor")
    for base, words in (("base", "An upsample-inpaint model without"),
                        ("base-inpaint", "A base-inpaint and an upsample-inpaint model "
                                         "without an inpaint image and mask draw the whole")):
        said: list[str] = []
        GlidePipeline(tiny_glide(base, 2), tiny_glide("upsample-inpaint", 3)).generate(
            ["a"], warn=said.append, **kw)
        assert [s for s in said if "whole picture" in s and s.startswith(words)], said
    said = []
    GlidePipeline(tiny_glide("base", 2), tiny_glide("upsample", 3)).generate(
        ["a"], warn=said.append, **kw)
    assert not [s for s in said if "whole picture" in s], said


def test_a_colour_mask_is_said_the_image_and_mask_swapped(tmp_path) -> None:
    """The photo given as the mask (image and mask swapped) was read by its brightness
    without a word; a black and white mask, or a photo with a transparent hole, is not."""
    from PIL import Image

    from glidectl.pipeline import GlidePipeline

    photo = Image.new("RGB", (8, 8), (200, 30, 30))
    photo.paste((20, 40, 220), (0, 0, 4, 8))
    bw = Image.new("L", (8, 8), 0)
    bw.paste(255, (2, 2, 6, 6))
    holed = photo.convert("RGBA")
    holed.paste((0, 0, 0, 0), (2, 2, 6, 6))
    pipe = GlidePipeline(tiny_glide("base-inpaint", 2))
    for image, mask, warned in ((bw, photo, True), (photo, bw, False), (photo, holed, False)):
        said: list[str] = []
        pipe.generate(["a"], steps=1, sampler="euler", inpaint_image=image, inpaint_mask=mask,
                      warn=said.append, output="tensor")
        assert any("is a colour picture, read by its brightness" in s and
                   "swap the inpaint image and mask" in s for s in said) == warned, said


def test_a_0_255_image_tensor_is_one_sentence(upsampler) -> None:
    from glidectl.pipeline import GlidePipeline

    with pytest.raises(GlidectlError, match=r"low_res tensor holds values from 0 to 255, but "
                                            r"images are tensors in \[-1, 1\]; pass x / 127.5"):
        GlidePipeline(None, upsampler).generate(
            ["a"], low_res=torch.arange(192.0).reshape(1, 3, 8, 8) * 255 / 191,
            upsample_steps=2, upsample_sampler="euler")
    # NaN passed the range test and was blamed on the model's weights
    with pytest.raises(GlidectlError, match=r"^The low_res tensor holds NaN or infinite "
                                            r"values; images are tensors of finite numbers"):
        GlidePipeline(None, upsampler).generate(
            ["a"], low_res=torch.full((3, 8, 8), float("nan")), upsample_steps=2,
            upsample_sampler="euler")


def test_a_spec_given_to_the_constructor_says_to_use_from_specs(base) -> None:
    """``GlidePipeline("runs/quickstart")``, the spec where a model belongs, is one sentence
    (was: AttributeError: 'str' object has no attribute 'options')."""
    from glidectl.pipeline import GlidePipeline

    with pytest.raises(GlidectlError) as error:
        GlidePipeline("runs/quickstart")
    assert str(error.value) == (
        "GlidePipeline(base=...) takes a loaded GLIDE model, got 'runs/quickstart'; to load "
        "one by spec use GlidePipeline.from_specs(base=...).")
    with pytest.raises(GlidectlError, match=r"^GlidePipeline\(upsampler=\.\.\.\) takes"):
        GlidePipeline(base, upsampler="openai:upsample")
    with pytest.raises(GlidectlError, match=r"takes a loaded GLIDE model, got Linear"):
        GlidePipeline(torch.nn.Linear(2, 2))  # was: AttributeError ... no attribute 'options'


def test_guidance_interval_and_sampler_of_the_wrong_kind_are_one_sentence(base) -> None:
    """``guidance_interval=0.5`` and ``sampler=None`` name the keyword (were TypeError "no
    len()" and AttributeError "no attribute 'lower'"); the command line's ``"LO,HI"`` text
    is the interval it names (it was read as a tuple of its characters)."""
    from glidectl.pipeline import GlidePipeline

    pipe = GlidePipeline(base)
    kw = dict(sampler="euler", steps=2, output="tensor")
    for bad, said in [
        (dict(guidance_interval=0.5), "guidance_interval must be two σ values (lo, hi), got "
                                      "0.5 (float)"),
        (dict(sampler=None), "sampler must be a name such as 'dpm++2m', got None (NoneType)"),
        (dict(upsample_schedule=3), "upsample_schedule must be a name such as 'karras' or a "
                                    "schedule file, got 3 (int)"),
        # were TypeErrors in the denoiser and in the noise's scaling
        (dict(guidance_rescale=None), "guidance_rescale must be a number, got None (NoneType)"),
        (dict(upsample_temp=None), "upsample_temp must be a number, got None (NoneType)"),
        (dict(temperature=None), "temperature must be a number, got None (NoneType)"),
    ]:
        with pytest.raises(GlidectlError) as error:
            pipe.generate("a", **{**kw, **bad})
        assert str(error.value) == f"generate(): {said}."
    as_text = pipe.generate("a", guidance_interval="0.5,5", **kw)
    assert torch.equal(as_text, pipe.generate("a", guidance_interval=(0.5, 5.0), **kw))


def test_models_info_docstring_names_its_stage_keys(base, upsampler) -> None:
    """It said ``upsampler`` for the key ``upsample`` (as metadata.json records it)."""
    from glidectl.pipeline import GlidePipeline

    info = GlidePipeline(base, upsampler).models_info()
    named = re.search(r"Per stage \(([^)]*)\)", GlidePipeline.models_info.__doc__).group(1)
    assert set(re.findall(r"``(\w+)``", named)) == set(info) == {"base", "upsample"}


@pytest.mark.parametrize(("keyword", "value", "said"), [
    ("low_res", np.zeros((8, 8, 3), np.uint8), "low_res is a numpy array of shape (8, 8, 3); "
     "pass Image.fromarray(array) for 8-bit H×W×3 pixels, or a [N,]3,H,W tensor in [-1, 1]"),
    ("low_res", torch.zeros(8, 8, 3), "low_res is a tensor of shape (8, 8, 3); pass a "
     "[N,]3,H,W tensor in [-1, 1]"),
    ("low_res", torch.zeros(1, 4, 8, 8), "low_res is a tensor of shape (1, 4, 8, 8)"),
    ("low_res", torch.zeros(8, 8), "low_res is a tensor of shape (8, 8)"),
    ("low_res", torch.zeros(1, 3, 0, 0), "low_res is a tensor of shape (1, 3, 0, 0)"),
    ("low_res", [Image.new("RGB", (8, 8))], "low_res must be an image file's path, a PIL "
     "image or a [N,]3,H,W tensor in [-1, 1], got [<PIL.Image"),
    ("low_res", Image.new("RGB", (8, 8)).crop((4, 4, 4, 4)), "low_res is a PIL image of "
     "0×0 px, which holds no pixel; pass a picture (an empty crop box gives such an image)."),
    ("inpaint_mask", Image.new("L", (8, 0)), "inpaint_mask is a PIL image of 8×0 px"),
    ("inpaint_image", np.zeros((8, 8, 3), np.uint8), "inpaint_image is a numpy array"),
    ("inpaint_image", torch.zeros(1, 1, 8, 8), "inpaint_image is a tensor of shape "
     "(1, 1, 8, 8); pass a [N,]3,H,W tensor in [-1, 1]"),
    ("inpaint_mask", np.ones((8, 8), bool), "inpaint_mask is a numpy array of shape (8, 8); "
     "pass Image.fromarray(array) for 8-bit H×W pixels (white = repaint), or a "
     "[[N,]1,]H,W tensor (1 = keep)"),
    ("inpaint_mask", torch.ones(1, 3, 8, 8), "inpaint_mask is a tensor of shape (1, 3, 8, 8); "
     "pass a [[N,]1,]H,W tensor (1 = keep)"),
])
def test_an_input_image_of_another_kind_or_shape_is_one_sentence(upsampler, keyword, value,
                                                                 said) -> None:
    """A numpy array or a list (was: AttributeError 'read' from PIL), a tensor of other
    channels or dimensions (was: a conv's RuntimeError), a PIL image without pixels (was:
    sampled as some picture) name the keyword and what it takes."""
    from glidectl.pipeline import GlidePipeline

    if keyword == "low_res":
        pipe, kw = GlidePipeline(None, upsampler), dict(upsample_steps=2, upsample_sampler="euler")
    else:
        pipe, kw = GlidePipeline(tiny_glide("base-inpaint", 2)), dict(steps=2, sampler="euler")
        kw.update(inpaint_image=torch.zeros(1, 3, 8, 8), inpaint_mask=torch.ones(1, 1, 8, 8))
    with pytest.raises(GlidectlError) as error:
        pipe.generate("a", **{**kw, keyword: value})
    assert str(error.value).startswith(f"generate(): {said}"), str(error.value)
    assert "\n" not in str(error.value)


def test_seeds_batch_size_and_prompts_of_the_wrong_kind_are_glidectl_errors(base) -> None:
    """``seed=None`` (was: TypeError "NoneType + int"), ``seeds=5``, ``batch_size=None``, a
    seed count that is not the image count and a prompt that is not text: each one sentence
    in a GlidectlError naming the keyword, which the README says to catch."""
    from glidectl.pipeline import GlidePipeline

    pipe = GlidePipeline(base)
    for kwargs, said in [
        (dict(seed=None), "seed must be a whole number, got None (NoneType)"),
        (dict(seed="3"), "seed must be a whole number, got '3' (str)"),
        (dict(batch_size=None), "batch_size must be a whole number, got None (NoneType)"),
        (dict(n=None), "n must be a whole number, got None (NoneType)"),
        (dict(seeds=5), "seeds must be a list of whole numbers, one per image, got 5 (int)"),
        (dict(seeds=[1, 2]), "seeds holds 2 seeds but the request makes 1 image; pass one "
                             "seed per image"),
        (dict(prompts=None), "takes a prompt string or a list of prompt strings, got None"),
        # seed was silently ignored beside seeds
        (dict(seed=3, seeds=[5]), "generate(): seed=3 and seeds= both give the images' seeds;"
                                  " pass seed= (image i gets seed + i) or seeds= (one per "
                                  "image), not both."),
        # undecodable bytes of an argument (sample $'a\xffb'), JSON's "\ud800" from the UI:
        # a UnicodeEncodeError traceback in the byte tokenizer
        (dict(prompts=["ok", "a\udcffb"]), "Prompt 'a\\udcffb' is not valid text: it holds "
         "half of a UTF-16 pair (a lone surrogate, what bytes that are not UTF-8 in a "
         "command-line argument become); give UTF-8 text."),
        (dict(guidence=3), "unknown option 'guidence' (did you mean 'guidance'?)"),
    ]:
        kwargs = {"prompts": "a", **kwargs}
        with pytest.raises(GlidectlError) as error:
            pipe.generate(kwargs.pop("prompts"), sampler="euler", steps=2, **kwargs)
        assert said in str(error.value)


def test_a_loaded_model_given_as_a_spec_says_to_use_the_pipeline(base, tmp_path) -> None:
    """``generate(base=load_model(...))`` (was: TypeError from pathlib), ``loras=3``; and
    ``loras=None`` is no adapter, as ``()`` is (was: TypeError "not iterable")."""
    from tiny_configs import tiny_base_weights

    from glidectl import load_model
    from glidectl.pipeline import GlidePipeline, generate

    with pytest.raises(GlidectlError) as error:
        generate("a", base=base, upsampler="none")
    assert str(error.value) == (
        "base= takes a model spec (openai:base, a weights file or a training run folder), got "
        "a GlideUNet; to sample with a model already loaded, use GlidePipeline(base=model).")
    with pytest.raises(GlidectlError, match=r"^upsampler= takes a model spec .* got 3 \(int\)"):
        GlidePipeline.from_specs("none", 3)
    with pytest.raises(GlidectlError, match=r"^load_model\(\) takes a model spec .* got None"):
        load_model(None)
    with pytest.raises(GlidectlError, match=r"^loras= takes an adapter's path .* got 3 \(int\)"):
        GlidePipeline.from_specs("none", "none", loras=3)
    path = tiny_base_weights(tmp_path / "m.safetensors")
    assert GlidePipeline.from_specs(path, "none", loras=None).models_info()["base"]["loras"] == []


def test_on_images_gets_pil_batches_whatever_the_output(base) -> None:
    """The docstring promises ``on_images`` each batch's PIL images; with ``output="np"``
    it was never called."""
    import numpy as np

    from glidectl.pipeline import GlidePipeline

    pipe = GlidePipeline(base)
    got: list = []
    arr = pipe.generate("a", n=3, batch_size=2, output="np", on_images=got.append,
                        sampler="euler", steps=2)
    assert [len(b) for b in got] == [2, 1] and arr.shape == (3, 8, 8, 3)
    assert got[1][0].info["seed"] == "2"
    assert np.array_equal(np.asarray(got[1][0]), np.asarray(
        pipe.generate("a", seed=2, sampler="euler", steps=2)[0]))


def refused_remake(png: Path, capsys) -> str:
    """What `sample --from-png PNG` says when it refuses (exit 2)."""
    from cli_helpers import exit_code

    capsys.readouterr()
    assert exit_code("sample", "--from-png", png, "--out", png.parent / "o") == 2
    return capsys.readouterr().err


def test_a_model_load_model_read_samples_and_records_as_from_specs(tmp_path, capsys) -> None:
    """GlidePipeline(load_model(spec)) dropped the file's recommended settings (guidance 2
    became 3: other pixels than from_specs and sample) and recorded "base": null, which a
    remake read as --base none; a model built in memory is recorded as such."""
    from cli_helpers import exit_code

    from glidectl.glide import load_model, save_weights
    from glidectl.images import save_png
    from glidectl.pipeline import RECOMMENDED_KEY, GlidePipeline

    base = save_weights(tiny_glide("base", 0), tmp_path / "base.safetensors", metadata={
        RECOMMENDED_KEY: json.dumps({"sampler": "euler", "steps": 2, "guidance": 2.0})})
    [spec] = GlidePipeline.from_specs(str(base), None, device="cpu",
                                      precision="fp32").generate("a cat", seed=2)
    [loaded] = GlidePipeline(load_model(str(base)), precision="fp32").generate("a cat", seed=2)
    assert np.array_equal(np.asarray(spec), np.asarray(loaded))
    record = json.loads(loaded.info["parameters"])
    assert (record["base"], record["base_file"], record["guidance"]) == (str(base), str(base),
                                                                         2.0)
    [made] = GlidePipeline(tiny_glide("base", 0), precision="fp32").generate(
        "a cat", seed=2, sampler="euler", steps=2)
    assert json.loads(made.info["parameters"])["base"] == "(in memory)"
    save_png(made, tmp_path / "made.png", made.info)
    assert refused_remake(tmp_path / "made.png", capsys) == (
        f"Error: {tmp_path / 'made.png'} was made with base weights passed to GlidePipeline "
        "in memory, which the PNG does not name; pass --base SPEC with those weights.\n")
    assert exit_code("sample", "--from-png", tmp_path / "made.png", "--base", base, "--out",
                     tmp_path / "o", "-q") == 0
    # changed in memory since it was read (a step of training), or its file gone since (a
    # pruned step): recorded as in memory, not as that file
    changed = load_model(str(base))
    with torch.no_grad():
        next(changed.parameters()).add_(1.0)
    assert GlidePipeline(changed).models_info()["base"]["spec"] == "(in memory)"
    gone = load_model(str(base))
    base.rename(tmp_path / "moved.safetensors")
    assert GlidePipeline(gone).models_info()["base"]["path"] is None


def test_generate_warns_at_the_callers_line_so_each_notebook_cell_warns_again() -> None:
    """The warnings named glidectl's own line, so Python showed each once a process: a
    notebook cell run again said nothing of the prompt it cut."""
    import warnings

    from glidectl.pipeline import GlidePipeline

    pipe = GlidePipeline(tiny_glide("base", 0), precision="fp32")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        pipe.generate("a red circle on a white background " * 10, steps=2, sampler="euler")
    assert [(w.filename, "tokens" in str(w.message)) for w in caught] == [(__file__, True)]


def test_a_model_in_train_mode_is_sampled_without_dropout_and_left_training() -> None:
    """GlidePipeline(model) of a model a notebook is training sampled it with dropout on:
    one seed gave other pixels at every call."""
    from glidectl.glide import create_model
    from glidectl.pipeline import GlidePipeline

    m = tiny_glide("base", 0)
    dropped = create_model(m.options.replace(dropout=0.3))
    dropped.load_state_dict(m.state_dict())
    dropped.train()
    pipe = GlidePipeline(dropped, precision="fp32")
    first, again = (pipe.generate("a cat", seed=1, steps=3, output="tensor") for _ in range(2))
    assert torch.equal(first, again) and dropped.training


def test_a_call_s_own_precision_is_the_one_its_images_record(tmp_path, capsys) -> None:
    """generate(precision="fp32") on a bf16 pipeline drew in fp32 but recorded bf16, so
    `sample --from-png` of the saved PNG made other pixels."""
    from cli_helpers import exit_code

    from glidectl.glide import save_weights
    from glidectl.images import save_png
    from glidectl.pipeline import GlidePipeline

    base = save_weights(tiny_glide("base", 0), tmp_path / "base.safetensors")
    pipe = GlidePipeline.from_specs(str(base), None, device="cpu", precision="bf16")
    [image] = pipe.generate("a cat", seed=3, steps=2, sampler="euler", precision="fp32")
    assert json.loads(image.info["parameters"])["precision"] == "fp32"
    [own] = pipe.generate("a cat", seed=3, steps=2, sampler="euler")
    assert json.loads(own.info["parameters"])["precision"] == "bf16"
    save_png(image, tmp_path / "fp32.png", image.info)
    assert exit_code("sample", "--from-png", tmp_path / "fp32.png", "--out", tmp_path / "o",
                     "-q") == 0, capsys.readouterr().err
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o" / "00000.png").convert("RGB")),
                          np.asarray(image.convert("RGB")))


def test_a_generated_image_s_record_takes_numpy_settings_and_names_in_memory_inputs(
        tmp_path, capsys) -> None:
    """Each PIL image carries its record as JSON: numpy seeds and scales (which generate()
    takes) made that a TypeError after sampling. An input passed as a PIL image is recorded
    as "(in memory)", and its remake asks for the file, not for one "that is not there"."""

    from glidectl.glide import save_weights
    from glidectl.images import save_png
    from glidectl.pipeline import GlidePipeline

    up = save_weights(tiny_glide("upsample", 1), tmp_path / "up.safetensors")
    base = save_weights(tiny_glide("base", 0), tmp_path / "base.safetensors")
    pipe = GlidePipeline.from_specs(str(base), None, device="cpu", precision="fp32")
    image = pipe.generate("a cat", seed=np.int64(5), guidance=np.float32(3), steps=2)[0]
    record = json.loads(image.info["parameters"])
    assert (record["seed"], record["guidance"], record["base_file"]) == (5, 3.0, str(base))
    assert "base_sha256" not in record  # not read for a record no one may save
    pipe = GlidePipeline.from_specs(None, str(up), device="cpu", precision="fp32")
    low = Image.new("RGB", (8, 8), (0, 0, 255))
    image = pipe.generate("a cat", low_res=low, upsample_steps=2)[0]
    assert json.loads(image.info["parameters"])["low_res"] == "(in memory)"
    save_png(image, tmp_path / "up.png", image.info)
    assert refused_remake(tmp_path / "up.png", capsys) == (
        f"Error: {tmp_path / 'up.png'} was made from a --low-res image passed to generate() in "
        "memory, which the PNG does not hold; pass --low-res IMAGE with that image.\n")


def test_generate_says_a_keyword_that_changes_no_pixel_as_sample_says_its_flag(
        base, upsampler) -> None:
    """``generate(eta=0.5, sampler="dpm++2m")`` (and ``sigma_max`` on respaced steps, base
    settings beside ``low_res``, ``upsample_eta`` for DDPM) drew the same pixels without a
    word, where ``glidectl sample`` warns "--eta not used: ..."; said once per reason, in
    the caller's keywords."""
    import torch

    from glidectl.errors import flags_named
    from glidectl.pipeline import GlidePipeline

    pipe = GlidePipeline(base, upsampler)

    def said(**options: object) -> list[str]:
        messages: list[str] = []
        pipe.generate("x", steps=2, upsample_steps=2, warn=messages.append, output="tensor",
                      **options)
        return messages

    assert said(sampler="dpm++2m", eta=0.5) == [
        "eta=0.5 not used: the dpm++2m sampler takes no η (ddim and the ancestral and SDE "
        "samplers do)."]
    assert said(sampler="ddim", eta=0.5) == []
    assert said(sampler="ddim", sigma_max=5, upsample_eta=0.3) == [
        "upsample_eta=0.3 not used: the ddpm sampler takes no η (ddim and the ancestral and "
        "SDE samplers do).",
        "sigma_max=5 not used: the respaced schedule (GLIDE's own timesteps) starts at the "
        "model's top σ; pass schedule='karras' (or another) to set it."]
    assert said(low_res=torch.zeros(1, 3, 8, 8), sampler="ddim", guidance=4) == [
        "steps=2, sampler='ddim', guidance=4 not used: with low_res only the upsampler runs "
        "(upsample_sampler, upsample_steps, upsample_schedule and upsample_guidance set it)."]
    with flags_named():  # glidectl sample and the web UI say their own flags' lines
        assert said(sampler="dpm++2m", eta=0.5) == []


def test_auto_is_the_sampler_s_own_schedule_for_both_stages(base, upsampler) -> None:
    """``schedule="auto"`` and ``upsample_schedule="auto"`` (``--upsample-schedule auto``)
    were "Unknown schedule 'auto'" though ``--schedule auto`` is a documented word: each
    is the stage's sampler's own schedule, the pictures of leaving it unset."""
    from glidectl.pipeline import GlidePipeline

    pipe = GlidePipeline(base, upsampler)

    def draw(**options: object):
        return pipe.generate("x", steps=2, upsample_steps=2, seed=3, output="tensor",
                             **options)

    assert draw(schedule="AUTO", upsample_schedule="auto").equal(draw())
    base_opts, up_opts, _ = pipe.stages(schedule="auto", upsample_schedule="Auto")
    assert (base_opts.schedule, up_opts.schedule, up_opts.steps) == (None, None, "fast27")
