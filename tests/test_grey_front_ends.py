"""``--grey`` in sample and eval, the web UI's box, the PNG record and ``--from-png``: a model
that recommends grey (trained on grey data) samples grey unless told ``--no-grey``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_pipeline import tiny_glide
from test_sample_cmd import in_process

COMMON = ("--upsampler", "none", "--steps", 2, "--sampler", "euler", "--device", "cpu")


def chroma(png: Path) -> int:
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    return int((rgb.max(axis=2) - rgb.min(axis=2)).max())


def params(png: Path) -> dict:
    return json.loads(Image.open(png).text["parameters"])


@pytest.fixture(scope="module")
def grey_model(tmp_path_factory) -> Path:
    """A tiny base model whose checkpoint recommends grey sampling, as a grey run's does."""
    from glidectl.glide import save_weights
    from glidectl.pipeline import RECOMMENDED_KEY

    folder = tmp_path_factory.mktemp("grey-models")
    return save_weights(tiny_glide("base", 0), folder / "grey.safetensors",
                        metadata={RECOMMENDED_KEY: json.dumps({"grey": True})})


def test_sample_records_grey_and_from_png_makes_it_again(grey_model, capsys, tmp_path):
    res = in_process(capsys, "sample", "a cat", "--base", grey_model, *COMMON, "-q",
                     "--out", tmp_path / "grey")
    assert res.returncode == 0, res.stderr
    assert "recommended sampling settings (grey); pass --no-grey" in res.stderr
    png = tmp_path / "grey" / "00000.png"
    assert params(png)["grey"] is True and chroma(png) == 0
    res = in_process(capsys, "sample", "a cat", "--base", grey_model, *COMMON, "--no-grey",
                     "-q", "--out", tmp_path / "colour")
    assert res.returncode == 0, res.stderr
    colour = tmp_path / "colour" / "00000.png"
    assert params(colour)["grey"] is False and chroma(colour) > 0
    for made in (png, colour):  # the record, not the model's recommendation, decides
        again = tmp_path / f"again-{made.parent.name}"
        res = in_process(capsys, "sample", "--from-png", made, "--device", "cpu", "-q",
                         "--out", again)
        assert res.returncode == 0, res.stderr
        assert np.array_equal(np.asarray(Image.open(again / "00000.png")),
                              np.asarray(Image.open(made)))
        assert params(again / "00000.png")["grey"] == params(made)["grey"]


def test_eval_uses_the_recommendation_records_it_and_from_png_makes_it_again(
        grey_model, capsys, tmp_path):
    (tmp_path / "p.txt").write_text("a cat\n")
    res = in_process(capsys, "eval", tmp_path / "p.txt", "--base", grey_model, *COMMON,
                     "--out", tmp_path / "eval")
    assert res.returncode == 0, res.stderr
    meta = json.loads((tmp_path / "eval" / "metadata.json").read_text())
    assert meta["settings"]["grey"] is True
    png = sorted((tmp_path / "eval").glob("000_*.png"))[0]
    assert chroma(png) == 0
    res = in_process(capsys, "sample", "--from-png", png, "--device", "cpu", "-q",
                     "--out", tmp_path / "again")
    assert res.returncode == 0, res.stderr
    assert np.array_equal(np.asarray(Image.open(tmp_path / "again" / "00000.png")),
                          np.asarray(Image.open(png)))
    res = in_process(capsys, "eval", tmp_path / "p.txt", "--base", grey_model, *COMMON,
                     "--no-grey", "--out", tmp_path / "eval", "--resume")
    assert res.returncode == 2 and "--no-grey would change the images" in res.stderr


def test_the_web_ui_fills_in_the_recommendation_and_records_it(grey_model, tmp_path):
    from glidectl.ui.app import _recommended_grey
    from glidectl.ui.backend import UiBackend

    ui = UiBackend(grey_model.parent, device="cpu", output_dir=tmp_path / "ui")
    assert _recommended_grey(ui, "grey.safetensors")
    for grey in (None, False):
        result = ui.generate("a cat", n=1, seed=1, base="grey.safetensors", base_steps=2,
                             sampler="euler", grey=grey)
        assert result.settings["grey"] is (grey is None)
        assert (chroma(result.files[0]) == 0) is (grey is None)


@pytest.fixture(scope="module")
def grey_upsampler(tmp_path_factory) -> tuple[Path, Path]:
    """(a colour base model, an upsampler whose checkpoint recommends grey, as an upsampler
    run on grey data records it) in one folder."""
    from glidectl.glide import save_weights
    from glidectl.pipeline import RECOMMENDED_KEY

    folder = tmp_path_factory.mktemp("grey-upsampler")
    base = save_weights(tiny_glide("base", 0), folder / "base.safetensors",
                        metadata={RECOMMENDED_KEY: json.dumps({"steps": 2})})
    up = save_weights(tiny_glide("upsample", 1), folder / "up.safetensors",
                      metadata={RECOMMENDED_KEY: json.dumps({"grey": True, "prompts": []})})
    return base, up


def test_the_upsamplers_grey_recommendation_is_used_and_said_with_the_bases(
        grey_upsampler, capsys, tmp_path):
    base, up = grey_upsampler
    run = ("--base", base, "--upsampler", up, "--upsample-steps", 2, "--sampler", "euler",
           "--device", "cpu", "-q")
    res = in_process(capsys, "sample", "a cat", *run, "--out", tmp_path / "grey")
    assert res.returncode == 0, res.stderr
    assert ("Using the base model's recommended sampling settings (steps 2) and the "
            "upsampler's (grey); pass --steps / --no-grey to change them.") in res.stderr
    png = tmp_path / "grey" / "00000.png"
    assert params(png)["grey"] is True and chroma(png) == 0
    res = in_process(capsys, "sample", "a cat", *run, "--no-grey", "--out", tmp_path / "colour")
    assert res.returncode == 0 and "grey" not in res.stderr, res.stderr
    assert params(tmp_path / "colour" / "00000.png")["grey"] is False
    assert chroma(tmp_path / "colour" / "00000.png") > 0
    res = in_process(capsys, "sample", "--from-png", png, "--device", "cpu", "-q",
                     "--out", tmp_path / "again")
    assert res.returncode == 0, res.stderr
    assert np.array_equal(np.asarray(Image.open(tmp_path / "again" / "00000.png")),
                          np.asarray(Image.open(png)))
    colour = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(colour).save(tmp_path / "low.png")  # the upsampler alone, on colour
    res = in_process(capsys, "sample", "a cat", "--low-res", tmp_path / "low.png",
                     "--base", "none", *run[2:], "--out", tmp_path / "low")
    assert res.returncode == 0, res.stderr
    assert ("Using the upsampler's recommended sampling settings (grey); pass --no-grey to "
            "change them.") in res.stderr
    assert chroma(tmp_path / "low" / "00000.png") == 0


def test_eval_and_the_library_follow_the_upsamplers_grey(grey_upsampler, capsys, tmp_path):
    from glidectl.pipeline import GlidePipeline

    base, up = grey_upsampler
    (tmp_path / "p.txt").write_text("a cat\n")
    res = in_process(capsys, "eval", tmp_path / "p.txt", "--base", base, "--upsampler", up,
                     "--upsample-steps", 2, "--device", "cpu", "--out", tmp_path / "eval")
    assert res.returncode == 0, res.stderr
    assert ("Using the base model's recommended sampling settings (steps 2) and the "
            "upsampler's (grey); pass --steps / --no-grey to change them."
            ) in " ".join(res.stdout.split())
    meta = json.loads((tmp_path / "eval" / "metadata.json").read_text())
    assert meta["settings"]["grey"] is True
    assert chroma(sorted((tmp_path / "eval").glob("000_*.png"))[0]) == 0
    pipe = GlidePipeline.from_specs(str(base), str(up), device="cpu")
    assert all(o.grey for o in pipe.stages()[:2])
    assert not any(o.grey for o in pipe.stages(grey=False)[:2])
    assert not any(o.grey for o in pipe.stages(upsample_grey=False)[:2])  # told: as told
    assert pipe.defaults_note({"steps": 3, "grey": None}) == (
        "Using the upsampler's recommended sampling settings (grey); pass --no-grey to "
        "change them.")


def test_the_web_ui_ticks_grey_for_an_upsampler_that_recommends_it(grey_upsampler, tmp_path):
    from glidectl.ui.app import _recommended_grey
    from glidectl.ui.backend import UiBackend

    ui = UiBackend(grey_upsampler[0].parent, device="cpu", output_dir=tmp_path / "ui")
    assert not _recommended_grey(ui, "base.safetensors")
    assert _recommended_grey(ui, "base.safetensors", "up.safetensors")
    result = ui.generate("a cat", n=1, seed=1, base="base.safetensors", base_steps=2,
                         upsampler="up.safetensors", up_steps=2, sampler="euler")
    assert result.settings["grey"] is True and chroma(result.files[0]) == 0


def test_eval_draws_as_grey_says_and_warns_of_a_schedule_fitted_to_the_other_ode(
        grey_model, capsys, tmp_path):
    """eval recorded --grey / --no-grey but drew the model's recommendation, and it dropped
    the pipeline's warnings: a schedule file fitted to the other ODE went unsaid."""
    import torch

    from glidectl.glide import save_weights
    from glidectl.samplers.tuned import write_schedule_file

    colour = save_weights(tiny_glide("base", 0), tmp_path / "colour.safetensors")
    schedule = tmp_path / "fitted in colour.json"
    write_schedule_file(schedule, {2: torch.tensor([80.0, 1.0, 0.0])}, 0.002, 80.0, "test",
                        grey=False)
    (tmp_path / "p.txt").write_text("a cat\n")
    for model, flag, grey in ((colour, "--grey", True), (grey_model, "--no-grey", False)):
        out = tmp_path / flag
        res = in_process(capsys, "eval", tmp_path / "p.txt", "--base", model, *COMMON,
                         "--schedule", schedule, flag, "--out", out)
        assert res.returncode == 0, res.stderr
        png = sorted(out.glob("000_*.png"))[0]
        assert json.loads((out / "metadata.json").read_text())["settings"]["grey"] is grey
        assert (chroma(png) == 0) is grey
        said = " ".join(res.stdout.split())
        assert (f"Warning: Schedule file {str(schedule)!r} was fitted to the colour ODE, and "
                "these images sample grey" in said) is grey, said
        assert said.count("was fitted to") == int(grey)


def test_inpainting_with_a_grey_model_keeps_the_kept_pixels_colour(capsys, tmp_path):
    """A model that recommends grey (or --grey) inpaints the drawn region grey; the kept
    pixels of a colour image stay the user's, as without grey."""
    from glidectl.glide import save_weights
    from glidectl.pipeline import RECOMMENDED_KEY

    model = save_weights(tiny_glide("base-inpaint", 2), tmp_path / "grey.safetensors",
                         metadata={RECOMMENDED_KEY: json.dumps({"grey": True})})
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "image.png")
    mask = Image.new("L", (8, 8), 0)
    mask.paste(255, (4, 0, 8, 8))  # white = repaint the right half
    mask.save(tmp_path / "mask.png")
    res = in_process(capsys, "sample", "a cat", "--base", model, *COMMON, "-q",
                     "--inpaint-image", tmp_path / "image.png", "--inpaint-mask",
                     tmp_path / "mask.png", "--out", tmp_path / "o")
    assert res.returncode == 0, res.stderr
    png = tmp_path / "o" / "00000.png"
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert params(png)["grey"] is True
    assert (rgb[:, :4] == (255, 0, 0)).all()
    assert (rgb[:, 4:].max(axis=2) == rgb[:, 4:].min(axis=2)).all()
