"""One image, every front end: a PNG from ``glidectl sample`` or the web UI records what
makes it again with ``glidectl sample`` (its flags, each file and its sha256), and does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_pipeline import tiny_glide
from test_sample_cmd import in_process

from glidectl.pipeline import file_sha256

# PNG parameters that are glidectl sample's flags of the same name (--upsample-temp, ...)
FLAG_KEYS = ("sampler", "steps", "schedule", "guidance", "eta", "guidance_interval",
             "guidance_rescale", "dynamic_threshold", "upsample_sampler", "upsample_steps",
             "upsample_schedule", "upsample_guidance", "upsample_temp", "sigma_max",
             "precision", "batch_size")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """A models folder: a tiny base, an upsampler for it and a LoRA adapter for the base."""
    from tiny_configs import random_attention_adapter

    from glidectl.glide import save_weights

    folder = tmp_path_factory.mktemp("front-end-models")
    save_weights(tiny_glide("base", 0), folder / "base.safetensors")
    save_weights(tiny_glide("upsample", 1), folder / "up.safetensors")
    random_attention_adapter(folder, "base.safetensors", 0.2)
    return folder


def sample_flags(params: dict, root: Path) -> list[str]:
    """``glidectl sample`` flags from a PNG's ``parameters``, its files found under ``root``
    (the web UI records them relative to its models folder), each checked by its sha256."""
    args = []
    for key in FLAG_KEYS:
        if params.get(key) is not None:
            args += [f"--{key.replace('_', '-')}", str(params[key])]
    for key, flag in (("base", "--base"), ("upsampler", "--upsampler")):
        path = root / params[f"{key}_file"]
        assert file_sha256(path) == params[f"{key}_sha256"]
        args += [flag, str(path)]
    for lora, sha in zip(params.get("loras") or (), params.get("lora_sha256") or (),
                         strict=True):
        path, scale = lora.rsplit(":", 1)
        from glidectl.lora import read_adapter

        assert file_sha256(read_adapter(str(root / path)).weights_path) == sha
        args += ["--lora", f"{root / path}:{scale}"]
    return args


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_a_web_ui_png_is_made_again_by_glidectl_sample_from_what_it_records(models, tmp_path,
                                                                          capsys):
    """The UI's PNGs named their models by label only (a run folder's latest checkpoint moves
    on), left out the LoRA's file and sha256, σ_max and the upsampler's schedule, guidance
    and noise scale, and named the rest otherwise than sample does (base_steps, lora)."""
    from glidectl.ui.backend import UiBackend

    ui = UiBackend(models, device="cpu", output_dir=tmp_path / "ui")
    torch.set_num_threads(1)  # as in_process runs sample: the same float sums
    result = ui.generate("a red circle", n=2, sampler="euler_a", base_steps=3, up_steps="2",
                         guidance=2.5, seed=11, base="base.safetensors",
                         upsampler="up.safetensors", lora="my-lora/", lora_scale=0.7)
    params = json.loads(Image.open(result.files[1]).text["parameters"])
    assert (params["seed"], params["request_seed"], params["image_index"]) == (12, 11, 1)
    assert params["base_file"] == "base.safetensors"  # no server paths in a downloaded PNG
    # the whole request again (the same batches), then the same image of it
    res = in_process(capsys, "sample", params["prompt"], "--seed", params["request_seed"],
                     "--n", params["batch_size"], *sample_flags(params, models), "-q",
                     "--out", tmp_path / "again", "--device", "cpu")
    assert res.returncode == 0, res.stderr
    again = tmp_path / "again" / f"{params['image_index']:05d}.png"
    assert np.array_equal(pixels(again), pixels(result.files[1]))
    remade = json.loads(Image.open(again).text["parameters"])
    same = ("prompt", "seed", "model_calls", "base_sha256", "upsampler_sha256", "lora_sha256",
            "plugins", "glidectl", *FLAG_KEYS)
    assert {k: remade.get(k) for k in same} == {k: params.get(k) for k in same}


def test_a_sample_png_records_its_lora_and_schedule_file_by_sha256(models, tmp_path, capsys):
    """A LoRA run folder's adapter and a refitted schedule file change the images under the
    same name: PNGs recorded their paths only."""
    from glidectl.lora import read_adapter
    from glidectl.samplers.tuned import write_schedule_file

    schedule = tmp_path / "schedule.json"
    write_schedule_file(schedule, {3: torch.tensor([80.0, 2.0, 0.1, 0.0])}, 0.002, 80.0,
                        "test", sampler="unipc")
    res = in_process(capsys, "sample", "a blue square", "--base", models / "base.safetensors",
                     "--lora", f"{models / 'my-lora'}:0.5", "--sampler", "unipc", "--steps",
                     "3", "--schedule", schedule, "-q", "--out", tmp_path / "a", "--seed", "3")
    assert res.returncode == 0, res.stderr
    params = json.loads(Image.open(tmp_path / "a" / "00000.png").text["parameters"])
    assert params["schedule_sha256"] == file_sha256(schedule)
    assert params["loras"] == [f"{models / 'my-lora'}:0.5"]
    assert params["lora_sha256"] == [file_sha256(read_adapter(str(models / "my-lora"))
                                                 .weights_path)]
    assert params["batch_size"] == 4


def test_every_front_end_makes_the_same_image_on_the_one_set_of_defaults(models, tmp_path,
                                                                         capsys):
    """Nothing but prompt and seed given (the page: what it fills in for a model without
    recommendations): sample, the library, the web UI and eval (at the image's seed) draw
    the same pixels; each front end's defaults are those of glidectl.sampling_defaults."""
    from glidectl import generate, sampling_defaults
    from glidectl.eval_settings import UPSAMPLE_STAGE, EvalSettings
    from glidectl.evaluation import RunOptions, image_seed, run_eval, settings_for
    from glidectl.pipeline import GlidePipeline
    from glidectl.sampling import BASE_DEFAULTS, UPSAMPLE_DEFAULTS
    from glidectl.ui.app import _recommended_values
    from glidectl.ui.backend import UiBackend

    d = sampling_defaults
    base = (d.BASE_SAMPLER, d.BASE_STEPS, d.BASE_GUIDANCE)
    up = (d.UPSAMPLE_SAMPLER, d.UPSAMPLE_STEPS, None)
    assert (BASE_DEFAULTS.sampler, BASE_DEFAULTS.steps, BASE_DEFAULTS.guidance) == base
    assert (UPSAMPLE_DEFAULTS.sampler, UPSAMPLE_DEFAULTS.steps, UPSAMPLE_DEFAULTS.guidance,
            UPSAMPLE_DEFAULTS.temperature) == (*up, d.UPSAMPLE_TEMP)
    s = EvalSettings()
    assert (s.base_stage.sampler, s.base_stage.steps, s.base_stage.guidance) == base
    assert (UPSAMPLE_STAGE.sampler, UPSAMPLE_STAGE.steps, UPSAMPLE_STAGE.guidance) == up
    assert s.batch_size == d.BATCH_SIZE
    ui = UiBackend(models, device="cpu", output_dir=tmp_path / "ui")
    assert _recommended_values(ui, "base.safetensors", [d.BASE_SAMPLER]) == base

    weights = str(models / "base.safetensors")
    prompts = ["a red circle", "a red circle"]  # a repeated prompt: each image its own seed
    # one batch size and thread count everywhere: another sums floats in another order,
    # which may move a pixel by one level
    torch.set_num_threads(1)
    common = ("--base", weights, "--upsampler", "none", "--device", "cpu", "-q")
    res = in_process(capsys, "sample", *prompts, "--seed", 5, "--batch-size", 1,
                     "--out", tmp_path / "s", *common)
    assert res.returncode == 0, res.stderr
    made = [pixels(tmp_path / "s" / f"{k:05d}.png") for k in range(2)]
    assert not np.array_equal(made[0], made[1])
    library = generate(prompts, base=weights, upsampler="none", seed=5, batch_size=1,
                       device="cpu")
    sampler, steps, guidance = _recommended_values(ui, "base.safetensors", [d.BASE_SAMPLER])
    page = [ui.generate(p, n=1, seed=5 + k, base="base.safetensors", sampler=sampler,
                        base_steps=steps, guidance=guidance).files[0]
            for k, p in enumerate(prompts)]
    for k in range(2):
        assert np.array_equal(np.asarray(library[k]), made[k])
        assert np.array_equal(pixels(page[k]), made[k])
    (tmp_path / "p.txt").write_text("\n".join(prompts) + "\n", encoding="utf-8")
    options = RunOptions(out=tmp_path / "eval", device="cpu")
    settings, _ = settings_for(tmp_path / "p.txt", {"base": weights, "batch_size": 1},
                               options)
    run_eval(tmp_path / "p.txt", settings, options,
             pipeline=GlidePipeline.from_specs(weights, None, device="cpu"))
    evaluated = sorted(p for p in (tmp_path / "eval").glob("0*.png"))
    assert len(evaluated) == 2 and not np.array_equal(pixels(evaluated[0]),
                                                      pixels(evaluated[1]))
    for i, path in enumerate(evaluated):  # eval's image i is sample's at image_seed(0, i, 0)
        seed = image_seed(0, i, 0)
        assert Image.open(path).text["seed"] == str(seed)
        res = in_process(capsys, "sample", prompts[i], "--seed", seed, "--out",
                         tmp_path / f"e{i}", *common)
        assert res.returncode == 0, res.stderr
        assert np.array_equal(pixels(tmp_path / f"e{i}" / "00000.png"), pixels(path))


def test_the_library_takes_loras_and_makes_sample_s_image(models, tmp_path, capsys):
    """``generate()`` had no ``loras``: a notebook could not make a LoRA image in one call."""
    from glidectl import generate

    lora = f"{models / 'my-lora'}:0.7"
    torch.set_num_threads(1)
    res = in_process(capsys, "sample", "a red circle", "--base", models / "base.safetensors",
                     "--upsampler", models / "up.safetensors", "--lora", lora, "--steps", "3",
                     "--upsample-steps", "2", "--seed", "4", "-q", "--out", tmp_path)
    assert res.returncode == 0, res.stderr
    (image,) = generate("a red circle", base=str(models / "base.safetensors"),
                        upsampler=str(models / "up.safetensors"), loras=[lora], steps=3,
                        upsample_steps=2, seed=4, device="cpu")
    assert np.array_equal(np.asarray(image), pixels(tmp_path / "00000.png"))
    plain = generate("a red circle", base=str(models / "base.safetensors"), upsampler="none",
                     steps=3, seed=4, device="cpu")[0]
    with_lora = generate("a red circle", base=str(models / "base.safetensors"),
                         upsampler="none", loras=[lora], steps=3, seed=4, device="cpu")[0]
    assert not np.array_equal(np.asarray(plain), np.asarray(with_lora))  # it was applied
