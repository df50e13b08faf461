"""``glidectl sample --from-png`` on the less common PNGs: an upsampled ``--low-res`` image,
an inpainting, a LoRA run's preview and a ``--lora`` sample, a prompt past the model's
text context, another plugin version, an eval image without its metadata.json."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from test_front_ends import models, pixels  # noqa: F401  (models: a fixture)
from test_pipeline import tiny_glide
from test_remake import params, refused
from test_sample_cmd import in_process


def remade(capsys, png: Path, out: Path, *extra) -> tuple[Path, str]:
    """The image ``png`` records made again into ``out`` (and what sample said)."""
    res = in_process(capsys, "sample", "--from-png", png, "--device", "cpu", "-q",
                     "--out", out, *extra)
    assert res.returncode == 0, res.stderr
    return out / "00000.png", res.stderr


def noise_png(path: Path, seed: int, mode: str = "RGB") -> Path:
    shape = (8, 8, 3) if mode == "RGB" else (8, 8)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, shape, np.uint8)).save(path)
    return path


def test_an_upsampled_low_res_png_is_made_again_and_its_image_checked(models, capsys,  # noqa: F811
                                                                      tmp_path):
    """The upsampler's input is pinned by its sha256 as the weights are: a low-res image
    edited in place would make another picture."""
    low = noise_png(tmp_path / "low.png", 0)
    res = in_process(capsys, "sample", "a red circle", "--low-res", low, "--upsampler",
                     models / "up.safetensors", "--upsample-steps", 2, "--device", "cpu", "-q",
                     "--out", tmp_path / "s")
    assert res.returncode == 0, res.stderr
    png = tmp_path / "s" / "00000.png"
    assert params(png)["low_res_sha256"] == hashlib.sha256(low.read_bytes()).hexdigest()
    again, _ = remade(capsys, png, tmp_path / "again")
    assert np.array_equal(pixels(again), pixels(png))
    noise_png(low, 1)
    message = refused(capsys, "--from-png", png)
    assert "--low-res image" in message and "holds other contents now" in message
    assert f"pass --low-res {low} to use what is there now" in message
    now, said = remade(capsys, png, tmp_path / "now", "--low-res", low)
    assert "(not the file that made it) (given); the image will differ" in said
    assert not np.array_equal(pixels(now), pixels(png))


def test_an_upsampler_guidance_or_low_res_the_png_left_unset_is_said_to_differ(tmp_path):
    """A two-stage PNG made without upsampler guidance records none: --upsample-guidance 3
    (or a --low-res image, which replaces the base sample) makes another picture and is
    said so; --upsample-guidance 1, guidance off, is no change."""
    from glidectl.images import save_png
    from glidectl.remake_records import read_remake

    rec = {"prompt": "a", "seed": 0, "glidectl": "0.1.0", "base": "b.safetensors",
           "upsampler": "u.safetensors", "sampler": "ddpm", "steps": "2", "guidance": 2.0,
           "upsample_sampler": "ddpm", "upsample_steps": "2", "upsample_schedule": "respaced",
           "upsample_temp": 0.997, "batch_size": 1, "grey": False, "precision": "fp32"}
    png = save_png(Image.new("RGB", (8, 8)), tmp_path / "two.png",
                   {"parameters": json.dumps(rec)})
    for given, said in (({"upsample_guidance": 3.0}, "--upsample-guidance 3.0"),
                        ({"low_res": Path("me.png")}, "--low-res me.png"),
                        ({"upsample_guidance": 1.0}, None)):
        lines = read_remake(png).apply({"prompts": [], **given}, set(given))
        assert lines == ([f"Not as {png} records: {said} (given); the image will differ."]
                         if said else [])


def test_a_base_given_to_a_low_res_png_is_no_change(tmp_path):
    """--low-res upsamples its image with no base sample, so --base on the remake of such a
    PNG (sample says it is not used) does not change the image and is not said to."""
    from glidectl.images import save_png
    from glidectl.remake_records import read_remake

    low = noise_png(tmp_path / "low.png", 0)
    rec = {"prompt": "a", "seed": 0, "glidectl": "0.1.0", "upsampler": "u.safetensors",
           "upsample_sampler": "ddpm", "upsample_steps": "2", "upsample_schedule": "respaced",
           "upsample_temp": 0.997, "batch_size": 1, "grey": False, "precision": "fp32",
           "low_res": str(low),
           "low_res_sha256": hashlib.sha256(low.read_bytes()).hexdigest()}
    png = save_png(Image.new("RGB", (8, 8)), tmp_path / "up.png", {"parameters": json.dumps(rec)})
    assert read_remake(png).apply({"prompts": [], "base": "b.safetensors"}, {"base"}) == []


def test_a_low_res_image_shrunk_with_the_upsampler_s_filter_is_made_again_with_it(
        capsys, tmp_path):
    """A 32 px --low-res image for a box-trained upsampler of 8 px input is shrunk with box
    and the PNG records it; a PNG from before it was recorded (shrunk with bicubic) is made
    again with bicubic, as it was made."""
    from glidectl.glide import save_weights

    up = save_weights(tiny_glide("upsample", 1), tmp_path / "up.safetensors",
                      metadata={"glidectl.low_res_resample": "box"})
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), np.uint8)).save(big)
    made = {}
    for how in ("box", "bicubic"):
        res = in_process(capsys, "sample", "a", "--low-res", big, "--upsampler", up,
                         "--upsample-steps", 2, "--device", "cpu", "-q", "--out",
                         tmp_path / how, *(["--low-res-resample", how] if how == "bicubic"
                                           else []))
        assert res.returncode == 0, res.stderr
        made[how] = tmp_path / how / "00000.png"
        assert params(made[how])["low_res_resample"] == how
    assert not np.array_equal(pixels(made["box"]), pixels(made["bicubic"]))
    again, _ = remade(capsys, made["box"], tmp_path / "again")
    assert np.array_equal(pixels(again), pixels(made["box"]))
    older = tmp_path / "older.png"  # made with bicubic before the filter was recorded
    record = {k: v for k, v in params(made["bicubic"]).items() if k != "low_res_resample"}
    info = PngInfo()
    info.add_text("parameters", json.dumps(record))
    Image.open(made["bicubic"]).save(older, pnginfo=info)
    again, said = remade(capsys, older, tmp_path / "older-again")
    assert "Not as" not in said
    assert np.array_equal(pixels(again), pixels(made["bicubic"]))
    assert params(again)["low_res_resample"] == "bicubic"


def test_an_upsampler_only_png_on_respaced_steps_records_no_sigma_max(models, capsys,  # noqa: F811
                                                                      tmp_path):
    """`sample --base none --upsampler UP --low-res IMAGE` on the upsampler's default ddpm
    fast27 recorded sigma_max 80.0, which its respaced steps ignore; it records none, and a
    PNG from before (sigma_max 80.0) is still made again bit for bit."""
    low = noise_png(tmp_path / "low.png", 0)
    res = in_process(capsys, "sample", "a", "--base", "none", "--low-res", low, "--upsampler",
                     models / "up.safetensors", "--device", "cpu", "-q", "--out",
                     tmp_path / "s")
    assert res.returncode == 0, res.stderr
    png = tmp_path / "s" / "00000.png"
    record = params(png)
    assert record["upsample_schedule"] == "respaced" and record["sigma_max"] is None
    older = tmp_path / "older.png"
    info = PngInfo()
    info.add_text("parameters", json.dumps({**record, "sigma_max": 80.0}))
    Image.open(png).save(older, pnginfo=info)
    again, said = remade(capsys, older, tmp_path / "again")
    assert "Not as" not in said and "sigma" not in said
    assert np.array_equal(pixels(again), pixels(png))
    res = in_process(capsys, "sample", "a", "--base", "none", "--low-res", low, "--upsampler",
                     models / "up.safetensors", "--upsample-schedule", "karras",
                     "--upsample-steps", 2, "--device", "cpu", "-q", "--out", tmp_path / "k")
    assert res.returncode == 0, res.stderr
    assert params(tmp_path / "k" / "00000.png")["sigma_max"] == 80.0  # karras takes it


def test_an_inpainting_png_is_made_again_and_its_mask_checked(capsys, tmp_path):
    from glidectl.glide import save_weights

    save_weights(tiny_glide("base-inpaint", 2), tmp_path / "inpaint.safetensors")
    noise_png(tmp_path / "im.png", 1)
    mask = np.zeros((8, 8), np.uint8)
    mask[2:6, 2:6] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    res = in_process(capsys, "sample", "a red circle", "--base", tmp_path / "inpaint.safetensors",
                     "--upsampler", "none", "--inpaint-image", tmp_path / "im.png",
                     "--inpaint-mask", tmp_path / "mask.png", "--steps", 2, "--device", "cpu",
                     "-q", "--out", tmp_path / "s")
    assert res.returncode == 0, res.stderr
    png = tmp_path / "s" / "00000.png"
    again, _ = remade(capsys, png, tmp_path / "again")
    assert np.array_equal(pixels(again), pixels(png))
    Image.fromarray(255 - mask).save(tmp_path / "mask.png")
    message = refused(capsys, "--from-png", png)
    assert "--inpaint-mask image" in message and "holds other contents now" in message


def test_a_lora_run_s_preview_and_a_lora_sample_are_made_again(capsys, tmp_path):
    """A LoRA run's preview is made from its step's EMA adapter on the base the adapter
    records; ``sample --lora RUN`` records the adapter file the run's latest was then."""
    from test_lora import lora_config

    from glidectl.config import save_config
    from glidectl.images import captioned_grid

    prompts = ["a red circle", "a blue square"]
    cfg = lora_config(tmp_path, preview=dict(every=2, steps=2, prompts=prompts),
                      lora=dict(patterns=[r"out\.2"]), train=dict(steps=2))
    save_config(cfg, tmp_path / "lora.toml")
    res = in_process(capsys, "lora", "--config", tmp_path / "lora.toml", "--no-live")
    assert res.returncode == 0, res.stderr
    run = tmp_path / "runs" / "lora"
    png = run / "previews" / "step-000002.png"
    res = in_process(capsys, "sample", "--from-png", png, "--device", "cpu", "-q",
                     "--out", tmp_path / "again")
    assert res.returncode == 0, res.stderr
    images = [Image.open(tmp_path / "again" / f"{k:05d}.png") for k in range(2)]
    assert captioned_grid(images, prompts).tobytes() == Image.open(png).convert("RGB").tobytes()
    res = in_process(capsys, "sample", prompts[0], "--lora", f"{run}:0.5", "--steps", 2,
                     "--device", "cpu", "-q", "--out", tmp_path / "s")
    assert res.returncode == 0, res.stderr
    sample = tmp_path / "s" / "00000.png"
    assert params(sample)["base"] == str(run / "base.safetensors")
    again, _ = remade(capsys, sample, tmp_path / "s2")
    assert np.array_equal(pixels(again), pixels(sample))
    step = run / "checkpoints" / "step-000002"
    shutil.rmtree(step / "lora-ema")
    shutil.copytree(step / "lora", step / "lora-ema")  # the raw adapter, not the EMA
    message = refused(capsys, "--from-png", png)
    assert "step-2 LoRA adapter" in message and "holds other contents now" in message


def test_one_changed_adapter_of_several_names_every_lora_to_pass_again(capsys, tmp_path):
    """--lora replaces the whole recorded list: the fix for one changed adapter of two names
    both (passing only the changed one dropped the other silently), and a --lora list that
    leaves a recorded adapter out says which."""
    from tiny_configs import random_attention_adapter, tiny_base_weights

    tiny_base_weights(tmp_path / "base.safetensors")
    first = random_attention_adapter(tmp_path, "base.safetensors", std=0.5)
    second = first.rename(tmp_path / "second")
    first = random_attention_adapter(tmp_path, "base.safetensors", std=0.2)
    res = in_process(capsys, "sample", "a red circle", "--base", tmp_path / "base.safetensors",
                     "--lora", f"{first}:0.5", "--lora", f"{second}:-0.3", "--steps", 2,
                     "--device", "cpu", "-q", "--out", tmp_path / "s")
    assert res.returncode == 0, res.stderr
    png = tmp_path / "s" / "00000.png"
    shutil.rmtree(first)
    random_attention_adapter(tmp_path, "base.safetensors", std=0.9)  # other weights there
    message = refused(capsys, "--from-png", png)
    assert "holds other contents now" in message
    assert f"pass --lora {first}:0.5 --lora {second}:-0.3 to use what is there now" in message
    _, said = remade(capsys, png, tmp_path / "now", "--lora", f"{first}:0.5")
    assert f"--lora {first}:0.5 (without the recorded {second}:-0.3) (given)" in said


def test_a_prompt_past_the_text_context_is_made_again_as_the_model_read_it(
        models, capsys, tmp_path):  # noqa: F811
    """sample keeps the tokens the model reads and says so; the remake does the same. A
    prompt too long to record whole is refused in one sentence until it is given."""
    prompt = "A red circle on a blue square, and words past the 16 bytes the model reads"
    args = ("--base", models / "base.safetensors", "--upsampler", "none", "--steps", 2,
            "--device", "cpu", "-q")
    res = in_process(capsys, "sample", prompt, *args, "--out", tmp_path / "s")
    assert res.returncode == 0, res.stderr
    dropped = "tokens but the model reads 16: the last"
    assert dropped in res.stderr
    png = tmp_path / "s" / "00000.png"
    assert params(png)["prompt_used"] == prompt.lower()[:16]
    again, said = remade(capsys, png, tmp_path / "again")
    assert dropped in said and np.array_equal(pixels(again), pixels(png))
    assert params(again)["prompt"] == prompt
    long = prompt + " and more" * 30
    res = in_process(capsys, "sample", long, *args, "--out", tmp_path / "long")
    assert res.returncode == 0, res.stderr
    png = tmp_path / "long" / "00000.png"
    assert "records only the start of its prompt" in refused(capsys, "--from-png", png)
    again, _ = remade(capsys, png, tmp_path / "long-again", long)
    assert np.array_equal(pixels(again), pixels(png))
    assert params(again)["prompt_sha256"] == params(png)["prompt_sha256"]


def test_a_sampler_from_another_plugin_version_is_said(models, capsys, tmp_path,  # noqa: F811
                                                      register_plugin, monkeypatch):
    from glidectl import plugins
    from glidectl.hookspecs import hookimpl
    from glidectl.samplers.euler import sample_euler

    class Plugin:
        @hookimpl
        def register_samplers(self, register):
            register("my-euler", sample_euler)

    register_plugin(Plugin(), "my-sampler-plugin")
    monkeypatch.setitem(plugins._dists, "my-sampler-plugin", "glidectl-my-euler 1.0")
    res = in_process(capsys, "sample", "a red circle", "--base", models / "base.safetensors",
                     "--upsampler", "none", "--sampler", "my-euler", "--steps", 2,
                     "--device", "cpu", "-q", "--out", tmp_path / "s")
    assert res.returncode == 0, res.stderr
    png = tmp_path / "s" / "00000.png"
    assert params(png)["plugins"] == ["glidectl-my-euler 1.0"]
    monkeypatch.setitem(plugins._dists, "my-sampler-plugin", "glidectl-my-euler 2.0")
    again, said = remade(capsys, png, tmp_path / "again")
    assert (f"{png} was made with glidectl-my-euler 1.0; now glidectl-my-euler 2.0 runs: "
            "the image may differ.") in said.replace("\n", " ")
    assert params(again)["plugins"] == ["glidectl-my-euler 2.0"]
    assert np.array_equal(pixels(again), pixels(png))  # the same code, here


def test_an_eval_png_without_its_metadata_json_is_made_alone_and_says_so(
        models, capsys, tmp_path):  # noqa: F811
    (tmp_path / "p.txt").write_text("a red circle\na blue square\na green one\n")
    res = in_process(capsys, "eval", tmp_path / "p.txt", "--base", models / "base.safetensors",
                     "--upsampler", "none", "--batch-size", 2, "--steps", 3, "--device", "cpu",
                     "--out", tmp_path / "eval")
    assert res.returncode == 0, res.stderr
    png = sorted((tmp_path / "eval").glob("002_*.png"))[0]  # alone in its batch
    meta = tmp_path / "eval" / "metadata.json"
    assert json.loads(meta.read_text())["device"] == "cpu"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "device": "cuda:1"}))
    res = in_process(capsys, "sample", "--from-png", png, "-q", "--out", tmp_path / "gpu")
    assert res.returncode == 0, res.stderr
    assert "was made on cuda; this runs on cpu" in res.stderr.replace("\n", " ")
    meta.unlink()
    again, said = remade(capsys, png, tmp_path / "again")
    assert "has no metadata.json beside it" in said and "made alone" in said
    assert np.array_equal(pixels(again), pixels(png))
    assert params(again)["seed"] == int(Image.open(png).text["seed"])


def test_a_preview_records_its_weights_and_a_remake_checks_the_step_s_file(capsys, tmp_path):
    """A preview samples the EMA weights of its step; the checkpoint of that step saves them
    and a remake loads it: the preview records their sha256 (of the tensors: the file is
    written after it), so other weights there now are refused, and once the checkpoint is
    gone ``--base`` (which the sentence names) makes it from other weights."""
    from tiny_configs import tiny_config

    from glidectl.config import save_config
    from glidectl.glide.checkpoints import state_sha256
    from glidectl.images import captioned_grid

    cfg = tiny_config(tmp_path, data={"demo_size": 8, "resolution": 16},
                      train={"steps": 2}, preview={"every": 2, "steps": 2,
                                                   "prompts": ["a red circle"]})
    save_config(cfg, tmp_path / "t.toml")
    res = in_process(capsys, "train", "--config", tmp_path / "t.toml", "--no-live")
    assert res.returncode == 0, res.stderr
    run = tmp_path / "runs" / "t"
    png, step = run / "previews" / "step-000002.png", run / "checkpoints" / "step-000002"
    from safetensors.torch import load_file

    ema = step / "ema.safetensors"
    assert Image.open(png).text["device"] == "cpu"
    assert Image.open(png).text["weights_sha256"] == state_sha256(load_file(ema))
    again, _ = remade(capsys, png, tmp_path / "again")
    grid = captioned_grid([Image.open(again)], ["a red circle"])
    assert grid.tobytes() == Image.open(png).convert("RGB").tobytes()
    shutil.copy(ema, tmp_path / "ema.safetensors")
    shutil.copy(step / "model.safetensors", tmp_path / "raw.safetensors")
    shutil.copy(step / "model.safetensors", ema)  # the raw weights, not the EMA
    message = refused(capsys, "--from-png", png)
    assert "step-2 base weights" in message and "holds other contents now" in message
    shutil.rmtree(step)
    assert "whose checkpoint of that step is not there" in refused(capsys, "--from-png", png)
    _, said = remade(capsys, png, tmp_path / "same", "--base", tmp_path / "ema.safetensors")
    assert "Not as" not in said  # the same weights, elsewhere
    _, said = remade(capsys, png, tmp_path / "other", "--base", tmp_path / "raw.safetensors")
    assert "raw.safetensors (not the file that made it) (given)" in said


def test_a_preview_of_a_branch_a_resume_set_aside_is_made_from_its_checkpoint(capsys,
                                                                              tmp_path):
    """After `train --resume RUN/checkpoints/step-000002`, the old branch's step-4 preview
    said its checkpoint was "pruned by checkpoint.keep_last" (it is in
    checkpoints/abandoned-after-step-000002/); its grid, set aside with that branch, is
    made from it, and so is one left in previews/ (by an older version) whose step is only
    there; several set-aside copies of the step are named."""
    from tiny_configs import tiny_config

    from glidectl.config import save_config
    from glidectl.images import captioned_grid

    def grid(png: Path) -> bytes:
        return captioned_grid([Image.open(png)], ["a red circle"]).tobytes()

    cfg = tiny_config(tmp_path, data={"demo_size": 8, "resolution": 16},
                      preview={"every": 2, "steps": 2, "prompts": ["a red circle"]})
    save_config(cfg, tmp_path / "t.toml")
    run = tmp_path / "runs" / "t"
    for extra in ([], ["--resume", run / "checkpoints" / "step-000002", "--set", "train.lr=0.01"]):
        res = in_process(capsys, "train", "--config", tmp_path / "t.toml", "--no-live", *extra)
        assert res.returncode == 0, res.stderr
    aside = run / "previews" / "abandoned-after-step-000002" / "step-000004.png"
    old, _ = remade(capsys, aside, tmp_path / "old")
    assert grid(old) == Image.open(aside).convert("RGB").tobytes()
    new, _ = remade(capsys, run / "previews" / "step-000004.png", tmp_path / "new")
    assert grid(new) != grid(old)
    shutil.rmtree(run / "checkpoints" / "step-000004")
    left = run / "previews" / "step-000004.png"
    shutil.copy(aside, left)
    again, said = remade(capsys, left, tmp_path / "again")
    assert grid(again) == grid(old)
    assert "abandoned-after-step-000002/step-000004" in said.replace("\n", "")
    twice = run / "checkpoints" / "abandoned-after-step-000002-2" / "step-000004"
    shutil.copytree(run / "checkpoints" / "abandoned-after-step-000002" / "step-000004", twice)
    assert "set 2 of that step aside, in" in refused(capsys, "--from-png", left)


def test_the_device_and_compile_are_recorded_and_a_remake_says_what_differs(
        models, capsys, tmp_path):  # noqa: F811
    """Kernels differ by device type and under torch.compile, and so do pixels: a PNG
    records both; a remake uses them (a CPU's) or says that another device runs."""
    from glidectl.images import save_png
    from glidectl.remake_records import read_remake

    res = in_process(capsys, "sample", "a red circle", "--base", models / "base.safetensors",
                     "--upsampler", "none", "--steps", 2, "--device", "cpu", "-q",
                     "--out", tmp_path / "s")
    assert res.returncode == 0, res.stderr
    png = tmp_path / "s" / "00000.png"
    assert params(png)["device"] == "cpu" and params(png).get("compile") is None
    assert read_remake(png).values["device"] == "cpu"
    text = dict(Image.open(png).text)
    text["parameters"] = json.dumps({**params(png), "device": "cuda", "compile": True})
    gpu = save_png(Image.open(png).convert("RGB"), tmp_path / "gpu.png", text)
    assert read_remake(gpu).values["compile_"] is True
    text["parameters"] = json.dumps({**params(png), "device": "cuda"})
    gpu = save_png(Image.open(png).convert("RGB"), tmp_path / "gpu.png", text)
    res = in_process(capsys, "sample", "--from-png", gpu, "-q", "--out", tmp_path / "again")
    assert res.returncode == 0, res.stderr
    assert f"{gpu} was made on cuda; this runs on cpu: the image may differ" in \
        res.stderr.replace("\n", " ")


def test_an_upsampler_preview_says_it_cannot_be_made_again_and_what_can(tmp_path):
    """An upsampler's preview rows come from held-out images: refused in one sentence that
    names the model kind and how to upsample with that step's weights."""
    from glidectl.errors import GlidectlError
    from glidectl.glide import save_weights
    from glidectl.remake_records import read_remake

    step = tmp_path / "run" / "checkpoints" / "step-000001"
    step.mkdir(parents=True)
    save_weights(tiny_glide("upsample", 1), step / "ema.safetensors")
    (tmp_path / "run" / "previews").mkdir()
    png = tmp_path / "run" / "previews" / "step-000001.png"
    info = PngInfo()
    for key, value in {"step": "1", "prompts": '["a"]', "sampler": "ddpm"}.items():
        info.add_text(key, value)
    Image.new("RGB", (8, 8)).save(png, pnginfo=info)
    with pytest.raises(GlidectlError) as err:
        read_remake(png)
    assert f"{png} is a preview of an 'upsample' model: it was made" in str(err.value)
    assert f"pass --base none --upsampler {step} --low-res IMAGE." in str(err.value)


def test_an_upsampler_finetune_s_step_0_preview_names_its_model_init(tmp_path):
    """Step 0 of an upsampler finetune has no checkpoint folder: the refusal told the user
    to pass `--upsampler RUN/checkpoints/step-000000`, which is not there; it names the
    model.init file the preview was made from, and no folder where that file is gone."""
    from glidectl.errors import GlidectlError
    from glidectl.glide import save_weights
    from glidectl.glide.checkpoints import state_sha256
    from glidectl.remake_records import read_remake

    model = tiny_glide("upsample", 1)
    init = save_weights(model, tmp_path / "up.safetensors")
    run = tmp_path / "run"
    (run / "previews").mkdir(parents=True)
    (run / "config.toml").write_text(f'[model]\nkind = "upsample"\ninit = {str(init)!r}\n')
    png = run / "previews" / "step-000000.png"
    info = PngInfo()
    for key, value in {"step": "0", "prompts": '["a"]', "sampler": "ddpm",
                       "weights_sha256": state_sha256(model.state_dict())}.items():
        info.add_text(key, value)
    Image.new("RGB", (8, 8)).save(png, pnginfo=info)
    for gone in (False, True):
        if gone:
            init.unlink()
        with pytest.raises(GlidectlError) as err:
            read_remake(png)
        assert "checkpoints" not in str(err.value)
        assert (f"--upsampler {init} --low-res IMAGE." in str(err.value)) is not gone


def test_eval_records_the_vocabulary_its_prompts_were_tokenized_with(capsys, tmp_path,
                                                                     gpt2_vocab, monkeypatch):
    """eval takes --vocab-dir as sample does; its PNGs record the vocabulary as sample's do,
    so --from-png uses it; --resume keeps the run's and --skip-existing refuses another."""
    from test_remake import _swapped_vocab

    from glidectl import tokenizer
    from glidectl.glide import save_weights

    monkeypatch.setenv(tokenizer.VOCAB_ENV, str(gpt2_vocab))  # this machine's default
    save_weights(tiny_glide("base", 3, tokenizer="gpt2"), tmp_path / "base.safetensors")
    other = _swapped_vocab(gpt2_vocab, tmp_path / "other")
    (tmp_path / "p.txt").write_text("cat a dog\n", encoding="utf-8")
    out = tmp_path / "e"
    run = ("eval", tmp_path / "p.txt", "--base", tmp_path / "base.safetensors", "--upsampler",
           "none", "--steps", 2, "--device", "cpu", "--out", out)
    monkeypatch.setenv(tokenizer.VOCAB_ENV, str(tmp_path / "none"))  # no default one
    res = in_process(capsys, *run, "--vocab-dir", other, "--dry-run")  # times a call
    assert res.returncode == 0 and "estimated time" in res.stdout, res.stderr
    monkeypatch.setenv(tokenizer.VOCAB_ENV, str(gpt2_vocab))
    res = in_process(capsys, *run, "--vocab-dir", other)
    assert res.returncode == 0, res.stderr
    png = next(out.glob("000_*.png"))
    record = json.loads(Image.open(png).text["glidectl"])
    meta = json.loads((out / "metadata.json").read_text())
    made = {"vocab_sha256": tokenizer.vocab_sha256(other), "vocab_dir": str(other)}
    assert {k: record[k] for k in made} == {k: meta[k] for k in made} == made
    assert made["vocab_sha256"] != tokenizer.vocab_sha256(gpt2_vocab)
    again, said = remade(capsys, png, tmp_path / "again")
    assert "Not as" not in said and np.array_equal(pixels(again), pixels(png))

    res = in_process(capsys, *run, "--skip-existing")  # the default vocabulary: another
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "--skip-existing: the GPT-2 vocabulary found by default" in res.stderr
    assert f"is not the one in {str(other)!r} that made the images" in res.stderr
    assert "pass --vocab-dir DIR" in res.stderr
    assert json.loads((out / "metadata.json").read_text()) == meta
    res = in_process(capsys, *run, "--resume")  # the run's own
    assert res.returncode == 0, res.stderr
    assert json.loads((out / "metadata.json").read_text())["vocab_dir"] == str(other)


def test_a_preview_records_the_vocabulary_of_the_config(capsys, tmp_path, gpt2_vocab,
                                                        monkeypatch):
    """A GPT-2 model's preview records model.vocab_dir's vocabulary as sample's PNGs do;
    --from-png uses it, and another one is one sentence naming --vocab-dir."""
    from test_remake import _swapped_vocab
    from tiny_configs import tiny_config

    from glidectl import tokenizer
    from glidectl.config import save_config

    monkeypatch.setenv(tokenizer.VOCAB_ENV, str(gpt2_vocab))  # this machine's default
    other = _swapped_vocab(gpt2_vocab, tmp_path / "other")
    cfg = tiny_config(tmp_path, model={"tokenizer": "gpt2", "vocab_dir": str(other)},
                      data={"demo_size": 4, "resolution": 16}, train={"steps": 1},
                      checkpoint={"every": 1},
                      preview={"every": 1, "steps": 2, "prompts": ["cat a dog"]})
    save_config(cfg, tmp_path / "t.toml")
    res = in_process(capsys, "train", "--config", tmp_path / "t.toml", "--no-live")
    assert res.returncode == 0, res.stderr
    png = tmp_path / "runs" / "t" / "previews" / "step-000001.png"
    text = Image.open(png).text
    assert text["vocab_sha256"] == tokenizer.vocab_sha256(other) != \
        tokenizer.vocab_sha256(gpt2_vocab)
    assert text["vocab_dir"] == str(other)
    again, said = remade(capsys, png, tmp_path / "again")
    assert "Not as" not in said
    shutil.rmtree(other)
    tokenizer.clear_cache()
    message = refused(capsys, "--from-png", png)
    assert f"made with the GPT-2 vocabulary in {str(other)!r}" in message
    assert "pass --vocab-dir DIR" in message


def test_a_finetune_s_step_0_preview_is_made_from_its_model_init(capsys, tmp_path):
    """Step 0 of a run that starts from ``model.init`` previews those weights: a remake said
    they were "saved nowhere"; it now finds the file the run's config names, when its
    tensors are what the preview recorded."""
    from tiny_configs import tiny_base_weights, tiny_config

    from glidectl.config import save_config
    from glidectl.images import captioned_grid

    init = tiny_base_weights(tmp_path / "init.safetensors")
    cfg = tiny_config(tmp_path, model={"init": str(init)}, train={"steps": 2, "name": "ft"},
                      data={"demo_size": 8, "resolution": 16},
                      preview={"every": 2, "steps": 2, "prompts": ["a red circle"]})
    save_config(cfg, tmp_path / "ft.toml")
    res = in_process(capsys, "train", "--config", tmp_path / "ft.toml", "--no-live")
    assert res.returncode == 0, res.stderr
    png = tmp_path / "runs" / "ft" / "previews" / "step-000000.png"
    again, said = remade(capsys, png, tmp_path / "again")
    assert f"made from the weights it started from, model.init {str(init)!r}" in said
    grid = captioned_grid([Image.open(again)], ["a red circle"])
    assert grid.tobytes() == Image.open(png).convert("RGB").tobytes()
    shutil.copy(tmp_path / "runs" / "ft" / "checkpoints" / "step-000002" / "ema.safetensors",
                init)  # other weights under that name now: not what step 0 sampled
    message = refused(capsys, "--from-png", png)
    assert "whose checkpoint of that step is not there" in message, message


def test_a_dynamic_threshold_or_rescale_the_png_ran_without_is_said_to_differ(tmp_path):
    """A PNG sampled without dynamic thresholding or guidance rescale records them as null:
    --dynamic-threshold 90 or --guidance-rescale 0.7 on its remake made another picture
    without a word; now it is said. A rescale of an unguided PNG changes no pixel (sample
    says it is not used), nor does --guidance-rescale 0."""
    from glidectl.images import save_png
    from glidectl.remake_records import read_remake

    rec = {"prompt": "a", "seed": 0, "glidectl": "0.1.0", "base": "b.safetensors",
           "sampler": "ddim", "steps": "2", "guidance": 2.0, "eta": 0.0,
           "guidance_interval": None, "guidance_rescale": None, "dynamic_threshold": None,
           "batch_size": 1, "grey": False, "precision": "fp32"}
    for guidance, given, said in (
            (2.0, {"dynamic_threshold": 90.0}, "--dynamic-threshold 90.0"),
            (2.0, {"guidance_rescale": 0.7}, "--guidance-rescale 0.7"),
            (2.0, {"guidance_rescale": 0.0}, None),
            (None, {"guidance_rescale": 0.7}, None)):
        png = save_png(Image.new("RGB", (8, 8)), tmp_path / f"{guidance}.png",
                       {"parameters": json.dumps({**rec, "guidance": guidance})})
        lines = read_remake(png).apply({"prompts": [], **given}, set(given))
        assert lines == ([f"Not as {png} records: {said} (given); the image will differ."]
                         if said else []), (given, lines)
