"""``glidectl sample --from-png``: a PNG's image made again from what it records, a flag
changing one setting, and one sentence (exit 2) for what cannot be made again."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin
from test_front_ends import FLAG_KEYS, models, pixels  # noqa: F401  (models: a fixture)
from test_pipeline import tiny_glide
from test_sample_cmd import in_process

from glidectl.pipeline import GlidePipeline

SAME = ("prompt", "seed", "model_calls", "base", "base_sha256", "upsampler",
        "upsampler_sha256", "lora_sha256", "schedule_sha256", "plugins", *FLAG_KEYS)


def params(png: Path) -> dict:
    return json.loads(Image.open(png).text["parameters"])


@pytest.fixture
def batches(monkeypatch) -> list[tuple[int, int]]:
    """(images, batch size) of each ``GlidePipeline.generate`` call, which still runs."""
    calls, real = [], GlidePipeline.generate

    def spy(self, prompts, **kwargs):
        seeds = kwargs.get("seeds")
        images = len(seeds) if seeds is not None else kwargs["n"] * len(prompts)
        calls.append((images, kwargs["batch_size"]))
        return real(self, prompts, **kwargs)

    monkeypatch.setattr(GlidePipeline, "generate", spy)
    return calls


@pytest.fixture(scope="module")
def made(models, tmp_path_factory):  # noqa: F811
    """A sample request of 4 images in batches of 3 (with an upsampler, a LoRA and a
    schedule file) and a copy of its models folder that tests may damage."""
    from glidectl.samplers.tuned import write_schedule_file

    root = tmp_path_factory.mktemp("made")
    shutil.copytree(models, root / "models")
    write_schedule_file(root / "models" / "s.json", {3: torch.tensor([80.0, 2.0, 0.1, 0.0])},
                        0.002, 80.0, "test", sampler="unipc")
    m = root / "models"
    args = ("sample", "a red circle", "--n", 4, "-b", 3, "--base", m / "base.safetensors",
            "--upsampler", m / "up.safetensors", "--lora", f"{m / 'my-lora'}:0.5",
            "--sampler", "unipc", "--steps", 3, "--schedule", m / "s.json",
            "--upsample-steps", 2, "--seed", 10, "--device", "cpu", "-q")
    return root, args


def sample(made, capsys, out: Path, *extra) -> Path:
    """``out``, where the request of ``made`` (and ``extra`` flags) wrote its images."""
    res = in_process(capsys, *made[1], "--out", out, *extra)
    assert res.returncode == 0, res.stderr
    return out


def test_a_sample_png_is_made_again_bit_for_bit_in_a_batch_as_long_as_its_own(
        made, capsys, tmp_path, batches):
    """Image 2 was the last of a batch of 3, image 4 alone in the second batch: each is made
    in a batch as long as its own (the length sets the float sums), and a remade PNG records
    the same, so it is made again too."""
    out = sample(made, capsys, tmp_path / "s")
    for index, length in ((1, 3), (3, 1)):
        png = out / f"{index:05d}.png"
        assert params(png)["image_index"] == index
        res = in_process(capsys, "sample", "--from-png", png, "--device", "cpu", "-q",
                         "--out", tmp_path / str(index))
        assert res.returncode == 0, res.stderr
        assert batches[-1] == (length, 3)
        again = tmp_path / str(index) / "00000.png"
        assert sorted(p.name for p in again.parent.iterdir()) == ["00000.png"]
        assert np.array_equal(pixels(again), pixels(png))
        assert {k: params(again).get(k) for k in SAME} == {k: params(png).get(k) for k in SAME}
    res = in_process(capsys, "sample", "--from-png", again, "--device", "cpu", "-q",
                     "--out", tmp_path / "twice")
    assert res.returncode == 0, res.stderr
    assert np.array_equal(pixels(tmp_path / "twice" / "00000.png"), pixels(again))


def test_a_flag_given_with_from_png_changes_that_setting_only(made, capsys, tmp_path):
    png = sample(made, capsys, tmp_path / "s") / "00000.png"
    res = in_process(capsys, "sample", "--from-png", png, "--seed", 7, "--device", "cpu", "-q",
                     "--out", tmp_path / "again")
    assert res.returncode == 0, res.stderr
    assert "Not as" in res.stderr and "--seed 7 (given)" in res.stderr
    assert f"Precision: {params(png)['precision']} (as {png} records)." in res.stderr
    new, old = params(tmp_path / "again" / "00000.png"), params(png)
    assert new["seed"] == 7
    assert not np.array_equal(pixels(tmp_path / "again" / "00000.png"), pixels(png))
    assert {k: new.get(k) for k in SAME if k != "seed"} == \
        {k: old.get(k) for k in SAME if k != "seed"}


def test_an_eval_png_is_made_again_from_its_image_seed_and_its_folder_s_record(
        models, capsys, tmp_path, batches):  # noqa: F811
    """Eval batches mix prompts; the PNG's seed finds its prompt's place in them."""
    (tmp_path / "p.txt").write_text("a red circle\na blue square\na green one\n")
    res = in_process(capsys, "eval", tmp_path / "p.txt", "--base", models / "base.safetensors",
                     "--upsampler", "none", "--batch-size", 2, "--steps", 3, "--device", "cpu",
                     "--out", tmp_path / "eval")
    assert res.returncode == 0, res.stderr
    png = sorted((tmp_path / "eval").glob("002_*.png"))[0]  # the third: a batch of one
    res = in_process(capsys, "sample", "--from-png", png, "--device", "cpu", "-q",
                     "--out", tmp_path / "again")
    assert res.returncode == 0, res.stderr
    assert batches[-1] == (1, 2)
    again = tmp_path / "again" / "00000.png"
    assert np.array_equal(pixels(again), pixels(png))
    assert params(again)["seed"] == int(Image.open(png).text["seed"])
    second = sorted((tmp_path / "eval").glob("001_*.png"))[0]  # image 2 of the first batch
    res = in_process(capsys, "sample", "--from-png", second, "--device", "cpu", "-q",
                     "--out", tmp_path / "second")
    assert res.returncode == 0, res.stderr
    assert batches[-1] == (2, 2)  # was "image 1 is kept": the remade batch's first
    assert (f"Making the image of {second} (an eval PNG) again: its batch held 2 images (it "
            "was image 2) and the batch size changes float sums, so 2 are sampled and it is "
            "kept.") in " ".join(res.stderr.split())
    assert np.array_equal(pixels(tmp_path / "second" / "00000.png"), pixels(second))
    # the folder grown by --skip-existing: the batch length came from its prompts now
    (tmp_path / "p.txt").write_text("a red circle\na blue square\na green one\nmore\n")
    res = in_process(capsys, "eval", tmp_path / "p.txt", "--base", models / "base.safetensors",
                     "--upsampler", "none", "--batch-size", 2, "--steps", 3, "--device", "cpu",
                     "--out", tmp_path / "eval", "--skip-existing")
    assert res.returncode == 0, res.stderr
    res = in_process(capsys, "sample", "--from-png", png, "--device", "cpu", "-q",
                     "--out", tmp_path / "grown")
    assert res.returncode == 0, res.stderr
    assert batches[-1] == (1, 2)  # made alone, as it was (2 once the folder grew)
    assert np.array_equal(pixels(tmp_path / "grown" / "00000.png"), pixels(png))


def test_a_training_preview_is_made_again_from_its_step_s_checkpoint(models, capsys,  # noqa: F811
                                                                     tmp_path):
    """A preview names its run (the folder it is in) and its step; its step's weights make
    every image of it again."""
    from glidectl import runs
    from glidectl.config import GlideConfig
    from glidectl.glide import load_model
    from glidectl.images import captioned_grid
    from glidectl.sampling import tokenizer_for
    from glidectl.training.model_setup import ModelBundle
    from glidectl.training.previews import Previewer

    root = tmp_path / "run"
    step = root / "checkpoints" / runs.step_dir_name(2)
    step.mkdir(parents=True)
    shutil.copy(models / "base.safetensors", step / "ema.safetensors")
    (root / "previews").mkdir()
    cfg = GlideConfig()
    cfg.preview.every, cfg.preview.steps = 2, 3
    cfg.preview.prompts = ["a red circle", "a blue square"]
    model = load_model(step / "ema.safetensors")
    bundle = ModelBundle(model, model.options, tokenizer_for(model), None)
    torch.set_num_threads(1)
    png = Previewer(cfg, bundle, model, None).run(2, root / "previews").path
    res = in_process(capsys, "sample", "--from-png", png, "--device", "cpu", "-q",
                     "--out", tmp_path / "again")
    assert res.returncode == 0, res.stderr
    images = [Image.open(tmp_path / "again" / f"{k:05d}.png") for k in range(2)]
    grid = captioned_grid(images, cfg.preview.prompts)
    assert grid.tobytes() == Image.open(png).convert("RGB").tobytes()
    shutil.rmtree(step)  # pruned by checkpoint.keep_last
    res = in_process(capsys, "sample", "--from-png", png, "--device", "cpu")
    assert res.returncode == 2
    assert "whose checkpoint of that step is not there" in res.stderr
    # an upsampler run's pruned step: it advised --base SPEC, which samples a base model
    (root / "config.toml").write_text('[model]\nkind = "upsample"\n')
    res = in_process(capsys, "sample", "--from-png", png, "--device", "cpu")
    assert res.returncode == 2 and "is a preview of an 'upsample' model" in res.stderr, \
        res.stderr


def refused(capsys, *args) -> str:
    res = in_process(capsys, "sample", *[str(a) for a in args], "--device", "cpu")
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
    return lines[0]


def test_what_is_no_glidectl_png_is_one_sentence(capsys, tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    assert "holds no glidectl record" in refused(capsys, "--from-png", tmp_path / "plain.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "photo.jpg")
    assert "is a JPEG image, not a PNG" in refused(capsys, "--from-png",
                                                   tmp_path / "photo.jpg")
    (tmp_path / "text.png").write_text("not a picture")
    assert "Cannot read --from-png" in refused(capsys, "--from-png", tmp_path / "text.png")
    assert "does not exist" in refused(capsys, "--from-png", tmp_path / "gone.png")
    assert "Give a PROMPT" in refused(capsys)


@pytest.mark.parametrize("extra", [
    {"loras": [["sd_xl_offset_example-lora_1.0.safetensors", 0.1, "4852686128"]]},
    {"sampler": "dpmpp_2m_sde_gpu"}, {"sampler": "euler"}])
def test_another_programs_json_parameters_are_no_glidectl_record(capsys, tmp_path, extra):
    """Fooocus writes its settings as JSON in a "parameters" text chunk, with a prompt and
    a seed: --from-png took that for glidectl's record and said it was damaged, asked to
    install the sampler 'dpmpp_2m_sde_gpu', or said "--base none needs --low-res IMAGE"."""
    record = {"base_model": "juggernautXL_v8Rundiffusion", "guidance_scale": 4.0,
              "metadata_scheme": "fooocus", "prompt": "a cat", "seed": "1234567",
              "steps": 30, "version": "Fooocus v2.5.5", **extra}
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", json.dumps(record))
    Image.new("RGB", (8, 8)).save(tmp_path / "fooocus.png", pnginfo=info)
    message = refused(capsys, "--from-png", tmp_path / "fooocus.png", "--out", tmp_path / "o")
    assert "fooocus.png holds no glidectl record" in message, message
    assert not (tmp_path / "o").exists()


def png_with_record(path, record: dict) -> None:
    """An 8 px PNG whose glidectl record (the "parameters" text) is ``record``."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", json.dumps({"glidectl": "0.1.0", **record}))
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)


@pytest.mark.parametrize("damage", [
    {"batch_size": 0}, {"request_images": "x"}, {"image_index": 99}, {"image_index": -1},
    {"seed": -5}, {"guidance": "strong"}, {"batch_size": [4]}, {"prompt": 5},
    {"sampler": 5}, {"base_sha256": 5}, {"loras": 5}, {"loras": [1]}, {"plugins": True},
    {"low_res": True}, {"grey": "yes"}, {"prompt": None},
    # int() and float() read the first four as 1000, 3, 2 and 3 (sample's flags refuse them)
    {"seed": "1_000"}, {"seed": "\u0663"}, {"seed": 2.5}, {"guidance": "\uff13"},
    {"batch_size": 1.5}])
def test_a_damaged_record_is_one_sentence(capsys, tmp_path, damage):
    """A record edited by hand or by another program: batch_size 0 was a ZeroDivisionError
    traceback, a word for a number a ValueError one, an image_index past its request
    "Nothing to generate" and a negative seed wrote nothing and exited 0; a number for the
    prompt, the sampler or a sha256, or for the list of LoRAs, was a traceback, and so was
    a null prompt (AttributeError: 'NoneType' object has no attribute 'isascii')."""
    record = {"prompt": "a red circle", "seed": 1, "request_seed": 0, "image_index": 1,
              "request_images": 4, "batch_size": 4, "sampler": "euler", "steps": "3",
              "guidance": 2.0, "base": "none", **damage}
    png_with_record(tmp_path / "edited.png", record)
    message = refused(capsys, "--from-png", tmp_path / "edited.png", "--out", tmp_path / "o")
    key, value = next(iter(damage.items()))
    assert f"glidectl record is damaged ({key} = {value!r})" in message, message
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("damage, flag, must", [
    ({"steps": "2.5"}, "--steps", "a number of steps from 1 to 10000 or a respacing string"),
    ({"steps": "\u0663"}, "--steps", "a number of steps from 1 to 10000 or a respacing "
     "string"),  # str.isdigit() took it: said as "--steps ٣: the … schedule needs …"
    ({"steps": "ddim2", "schedule": "karras"}, "--steps", "a whole number of steps from 1 "
     "to 10000, as its schedule 'karras' takes"),
    ({"guidance_interval": "a"}, "--guidance-interval", "two σ values LO,HI"),
    ({"guidance_rescale": 5}, "--guidance-rescale", "from 0 to 1"),
    ({"dynamic_threshold": 200}, "--dynamic-threshold", "a percentile from 50 to 100"),
    ({"sigma_max": 0}, "--sigma-max", "a σ above 0"),
    ({"precision": "fp8"}, "--precision", "auto, fp32, bf16 or fp16")])
def test_a_recorded_setting_sample_refuses_names_the_record_not_a_flag(capsys, tmp_path,
                                                                       damage, flag, must):
    """A record whose steps, guidance tools, σ_max or precision sample's own checks refuse
    was refused in the words of a flag no one typed ("--steps 2.5: the exponential schedule
    needs ...", "Unknown --precision 'fp8'"); it names the record's key and the flag that
    overrides it, and with that flag given the record's value is not checked."""
    record = {"prompt": "a red circle", "seed": 1, "sampler": "euler", "steps": "3",
              "guidance": 2.0, "base": "none", **damage}
    png_with_record(tmp_path / "edited.png", record)
    message = refused(capsys, "--from-png", tmp_path / "edited.png", "--out", tmp_path / "o")
    key, value = next(iter(damage.items()))
    shown = record[key] if isinstance(value, str) else float(value)
    assert message.startswith(
        f"Error: {tmp_path / 'edited.png'}'s glidectl record holds {key} = {shown!r}, which "
        f"is not {must}"), message
    assert message.endswith(f" (damaged or edited); pass {flag} VALUE to use another (the "
                            "image will differ), or the PNG as glidectl wrote it."), message
    value = {"--precision": "fp32", "--steps": "3", "--guidance-interval": "0.5,5"}.get(flag, 1)
    message = refused(capsys, "--from-png", tmp_path / "edited.png", flag, value, "--out",
                      tmp_path / "o")
    assert "record holds" not in message, message


def test_files_that_changed_since_are_refused_unless_a_flag_names_them(made, capsys,
                                                                      tmp_path):
    """Weights, a schedule file or a LoRA that are gone or hold something else: one sentence
    naming the flag that takes what is there now; given, it runs and says what differs."""
    from glidectl.glide import save_weights

    out = sample(made, capsys, tmp_path / "s", "--grid")
    png, m = out / "00003.png", made[0] / "models"
    assert "grid of many images" in refused(capsys, "--from-png", out / "grid-00000.png")
    shutil.copytree(m, tmp_path / "kept")
    try:
        (m / "s.json").write_text((m / "s.json").read_text().replace("80.0", "70.0"))
        message = refused(capsys, "--from-png", png)
        assert "schedule file" in message and f"pass --schedule {m / 's.json'} to use" in message
        shutil.copy(tmp_path / "kept" / "s.json", m / "s.json")
        save_weights(tiny_glide("upsample", 5), m / "up.safetensors")
        message = refused(capsys, "--from-png", png)
        assert "upsampler weights" in message and "holds other contents now" in message
        res = in_process(capsys, "sample", "--from-png", png, "--upsampler",
                         m / "up.safetensors", "--device", "cpu", "-q", "--out", tmp_path / "now")
        assert res.returncode == 0, res.stderr
        assert "(not the file that made it) (given); the image will differ" in res.stderr
        shutil.copy(tmp_path / "kept" / "up.safetensors", m / "up.safetensors")
        shutil.rmtree(m / "my-lora")
        message = refused(capsys, "--from-png", png)
        assert "LoRA adapter" in message and "not there; pass --lora PATH:SCALE" in message
        (m / "base.safetensors").unlink()
        message = refused(capsys, "--from-png", png, "--lora",
                          f"{tmp_path / 'kept' / 'my-lora'}:0.5")
        assert "base weights" in message and "not there; pass --base SPEC" in message
    finally:
        shutil.copytree(tmp_path / "kept", m, dirs_exist_ok=True)


def test_a_run_folder_that_trained_on_since_is_refused_until_base_names_it(models, capsys,  # noqa: F811
                                                                         tmp_path):
    """A PNG made from a run folder names the checkpoint file its latest was then; once
    training pruned it, ``--base RUN`` samples from the run's newest weights."""
    from glidectl import runs
    from glidectl.glide import save_weights

    steps = [tmp_path / "run" / "checkpoints" / runs.step_dir_name(k) for k in (1, 2)]
    steps[0].mkdir(parents=True)
    shutil.copy(models / "base.safetensors", steps[0] / "ema.safetensors")
    res = in_process(capsys, "sample", "a red circle", "--base", tmp_path / "run", "--steps", 2,
                     "--device", "cpu", "-q", "--out", tmp_path / "s")
    assert res.returncode == 0, res.stderr
    png = tmp_path / "s" / "00000.png"
    assert params(png)["base_file"] == str(steps[0] / "ema.safetensors")
    steps[1].mkdir()
    save_weights(tiny_glide("base", 3), steps[1] / "ema.safetensors")
    shutil.rmtree(steps[0])  # pruned by checkpoint.keep_last
    message = refused(capsys, "--from-png", png)
    assert "step-000001/ema.safetensors" in message and "holds other contents now" in message
    assert f"pass --base {tmp_path / 'run'} to use what is there now" in message
    res = in_process(capsys, "sample", "--from-png", png, "--base", tmp_path / "run",
                     "--device", "cpu", "-q", "--out", tmp_path / "now")
    assert res.returncode == 0, res.stderr
    assert params(tmp_path / "now" / "00000.png")["base_file"] == str(
        steps[1] / "ema.safetensors")


def test_a_sample_of_a_step_a_resume_set_aside_is_made_from_the_set_aside_copy(
        models, capsys, tmp_path):  # noqa: F811
    """After `train --resume RUN/checkpoints/step-000001`, a PNG sampled from the old
    branch's step 2 said RUN's step-2 file 'holds other contents now' and to pass --base RUN
    (the image will differ), while the weights that made it lay in
    checkpoints/abandoned-after-step-000001/step-000002/: it is made again from them."""
    from glidectl import runs
    from glidectl.glide import save_weights

    checkpoints = tmp_path / "run" / "checkpoints"
    step = checkpoints / runs.step_dir_name(2)
    step.mkdir(parents=True)
    shutil.copy(models / "base.safetensors", step / "ema.safetensors")
    res = in_process(capsys, "sample", "a red circle", "--base", tmp_path / "run", "--steps", 2,
                     "--device", "cpu", "-q", "--out", tmp_path / "s")
    assert res.returncode == 0, res.stderr
    png = tmp_path / "s" / "00000.png"
    aside = checkpoints / "abandoned-after-step-000001" / step.name
    aside.parent.mkdir()
    step.rename(aside)  # what the resume does, before the new branch writes step 2
    step.mkdir()
    save_weights(tiny_glide("base", 3), step / "ema.safetensors")
    res = in_process(capsys, "sample", "--from-png", png, "--device", "cpu", "-q",
                     "--out", tmp_path / "again")
    assert res.returncode == 0, res.stderr
    assert "a resume from an earlier checkpoint set aside" in res.stderr, res.stderr
    assert pixels(tmp_path / "again" / "00000.png").tobytes() == pixels(png).tobytes()
    assert params(tmp_path / "again" / "00000.png")["base_file"] == str(
        aside / "ema.safetensors")


def test_a_lora_run_that_trained_on_remakes_from_its_step_and_its_settings_count(
        models, capsys, tmp_path):  # noqa: F811
    """A LoRA given as its run folder was pinned by the folder only: once the run wrote a
    later step, --from-png refused though the step that made the image was there. And only
    the adapter's weights were hashed: a changed lora_alpha in adapter_config.json was
    taken as the same adapter and made another picture."""
    from glidectl import runs

    steps = [tmp_path / "lrun" / "checkpoints" / runs.step_dir_name(k) / "lora-ema"
             for k in (1, 2)]
    shutil.copytree(models / "my-lora", steps[0])
    res = in_process(capsys, "sample", "a red circle", "--base", models / "base.safetensors",
                     "--lora", f"{tmp_path / 'lrun'}:0.5", "--steps", 2, "--upsampler", "none",
                     "--device", "cpu", "-q", "--out", tmp_path / "s")
    assert res.returncode == 0, res.stderr
    png = tmp_path / "s" / "00000.png"
    shutil.copytree(models / "my-lora", steps[1])  # the run trains on: other settings
    config = steps[1] / "adapter_config.json"
    config.write_text(config.read_text().replace('"lora_alpha": 2.0', '"lora_alpha": 6.0'))
    res = in_process(capsys, "sample", "--from-png", png, "--device", "cpu", "-q",
                     "--out", tmp_path / "again")
    assert res.returncode == 0, res.stderr
    assert np.array_equal(pixels(tmp_path / "again" / "00000.png"), pixels(png))
    assert params(tmp_path / "again" / "00000.png")["loras"] == [f"{steps[0]}:0.5"]
    config = steps[0] / "adapter_config.json"  # the step's own settings changed
    config.write_text(config.read_text().replace('"lora_alpha": 2.0', '"lora_alpha": 6.0'))
    message = refused(capsys, "--from-png", png)
    assert "made with the LoRA adapter" in message and "holds other settings now (its " \
        "adapter_config.json: lora_alpha, …)" in message, message


def test_a_sampler_no_plugin_registers_now_is_one_sentence(models, capsys, tmp_path,  # noqa: F811
                                                          register_plugin):
    from glidectl import plugins
    from glidectl.hookspecs import hookimpl
    from glidectl.samplers.euler import sample_euler

    class Plugin:
        @hookimpl
        def register_samplers(self, register):
            register("my-euler", sample_euler)

    register_plugin(Plugin(), "my-sampler-plugin")
    res = in_process(capsys, "sample", "a red circle", "--base", models / "base.safetensors",
                     "--sampler", "my-euler", "--steps", 2, "--device", "cpu", "-q",
                     "--out", tmp_path)
    assert res.returncode == 0, res.stderr
    plugins.pm.unregister(name="my-sampler-plugin")
    plugins.refresh()
    message = refused(capsys, "--from-png", tmp_path / "00000.png")
    assert "'my-euler'" in message and "pass --sampler NAME" in message


def test_a_schedule_no_plugin_registers_now_is_one_sentence(models, capsys, tmp_path,  # noqa: F811
                                                           register_plugin):
    """It failed as an unknown --schedule after "Making the image again", also once --sampler
    had replaced a plugin sampler whose own schedule it was."""
    from glidectl import plugins
    from glidectl.hookspecs import hookimpl

    class Plugin:
        @hookimpl
        def register_schedules(self, register):
            register("my-lin", lambda n, lo, hi: [hi - (hi - lo) * i / (n - 1)
                                                  for i in range(n)] + [0.0])

    register_plugin(Plugin(), "my-schedule-plugin")
    res = in_process(capsys, "sample", "a red circle", "--base", models / "base.safetensors",
                     "--sampler", "euler", "--schedule", "my-lin", "--steps", 2, "--device",
                     "cpu", "-q", "--out", tmp_path)
    assert res.returncode == 0, res.stderr
    plugins.pm.unregister(name="my-schedule-plugin")
    plugins.refresh()
    for extra in ((), ("--sampler", "heun")):
        message = refused(capsys, "--from-png", tmp_path / "00000.png", *extra)
        assert "made with the schedule 'my-lin'" in message and "pass --schedule NAME" in \
            message, message


def test_a_png_that_records_the_schedule_auto_is_made_again(models, capsys,  # noqa: F811
                                                             tmp_path):
    """Earlier releases recorded "auto" (the sampler's own schedule): --from-png said no
    plugin registered it and to install one."""
    res = in_process(capsys, "sample", "a red circle", "--base", models / "base.safetensors",
                     "--upsampler", "none", "--sampler", "dpm++2m", "--schedule", "auto",
                     "--steps", 3, "--device", "cpu", "-q", "--out", tmp_path / "s")
    assert res.returncode == 0, res.stderr
    png = tmp_path / "s" / "00000.png"
    record = params(png)
    record["schedule"] = "auto"  # as an earlier release wrote it
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", json.dumps(record))
    Image.open(png).save(tmp_path / "old.png", pnginfo=info)
    res = in_process(capsys, "sample", "--from-png", tmp_path / "old.png", "--device", "cpu",
                     "-q", "--out", tmp_path / "again")
    assert res.returncode == 0, res.stderr
    assert np.array_equal(pixels(tmp_path / "again" / "00000.png"), pixels(png))
    # "auto" was karras for dpm++2m until 2026-12-01: the PNG cannot say which; a line does
    assert ("records the schedule 'auto' (its sampler's own), which for dpm++2m was karras "
            "before 2026-12-01 and exponential since: it is made with exponential; if the "
            "image differs, pass --schedule karras.") in " ".join(res.stderr.split())
    # the older meaning, given, is not "Not as ... records" (nor the line again)
    res = in_process(capsys, "sample", "--from-png", tmp_path / "old.png", "--device", "cpu",
                     "-q", "--schedule", "karras", "--out", tmp_path / "karras")
    assert res.returncode == 0, res.stderr
    assert "Not as" not in res.stderr and "'auto'" not in res.stderr, res.stderr


def test_a_sample_png_that_records_no_batch_says_it_is_made_alone(models, capsys,  # noqa: F811
                                                                  tmp_path, batches):
    """PNGs before 2026-12-03 recorded no batch size (sample's -b was 4): one of a request
    of several was made alone, a pixel off maybe, with nothing said."""
    res = in_process(capsys, "sample", "a red circle", "--base", models / "base.safetensors",
                     "--upsampler", "none", "--steps", 3, "--device", "cpu", "-q",
                     "--out", tmp_path / "s")
    assert res.returncode == 0, res.stderr
    png = tmp_path / "s" / "00000.png"
    record = {k: v for k, v in params(png).items()
              if k not in ("batch_size", "image_index", "request_images", "request_seed")}
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", json.dumps(record))  # as an earlier release wrote it
    Image.open(png).save(tmp_path / "old.png", pnginfo=info)
    res = in_process(capsys, "sample", "--from-png", tmp_path / "old.png", "--device", "cpu",
                     "-q", "--out", tmp_path / "again")
    assert res.returncode == 0, res.stderr
    assert batches[-1][0] == 1  # one image: alone
    assert (f"{tmp_path / 'old.png'} does not record its batch (made before glidectl recorded "
            "it): it is made alone, so a pixel may differ by a level if its request made more "
            "images") in " ".join(res.stderr.split())
    assert np.array_equal(pixels(tmp_path / "again" / "00000.png"), pixels(png))


def test_an_eval_png_from_before_schedules_were_recorded_is_made_on_karras(
        models, capsys, tmp_path):  # noqa: F811
    """Evals before 2026-12-01 recorded no schedule and sampled dpm++2m on karras (as eval
    --resume reads them); --from-png made their images on today's exponential steps."""
    (tmp_path / "p.txt").write_text("a red circle\n")
    res = in_process(capsys, "eval", tmp_path / "p.txt", "--base", models / "base.safetensors",
                     "--upsampler", "none", "--sampler", "dpm++2m", "--schedule", "karras",
                     "--steps", 3, "--device", "cpu", "--out", tmp_path / "eval")
    assert res.returncode == 0, res.stderr
    png = sorted((tmp_path / "eval").glob("000_*.png"))[0]
    with Image.open(png) as im:
        text = dict(im.text)
        record = json.loads(text["glidectl"])
        del record["base_stage"]["schedule"]  # as the older version wrote it
        text["glidectl"] = json.dumps(record)
        info = PngImagePlugin.PngInfo()
        for key, value in text.items():
            info.add_text(key, value)
        im.save(tmp_path / "eval" / "old.png", pnginfo=info)
    res = in_process(capsys, "sample", "--from-png", tmp_path / "eval" / "old.png", "--device",
                     "cpu", "-q", "--out", tmp_path / "again")
    assert res.returncode == 0, res.stderr
    again = tmp_path / "again" / "00000.png"
    assert params(again)["schedule"] == "karras"
    assert np.array_equal(pixels(again), pixels(png))


def test_a_png_of_settings_sample_cannot_set_is_refused_not_made_otherwise(
        models, capsys, tmp_path):  # noqa: F811
    """generate()'s upsample_eta, upsample_grey, upsample_sigma_max, clip_denoised, ... were
    not recorded: --from-png said it made the image again and made the default one. They are
    recorded where they change the picture (with an upsampler alone too) and refused, unless
    a flag given changes the picture anyway; what sample takes from the base stage and what
    changes no pixel (ddim's own η, guidance tools of an unguided upsampler) are not."""
    from glidectl.images import save_png

    up_file = str(models / "up.safetensors")
    both = GlidePipeline.from_specs(str(models / "base.safetensors"), up_file, device="cpu",
                                    precision="fp32")
    alone = GlidePipeline.from_specs(None, up_file, device="cpu", precision="fp32")
    Image.new("RGB", (8, 8), (200, 30, 30)).save(tmp_path / "low.png")
    kw = dict(steps=2, upsample_steps=2, upsample_sampler="ddim", upsample_schedule="karras")
    cases = [
        ({"upsample_eta": 1.0}, "upsample_eta=1.0"),
        ({"upsample_grey": True}, "upsample_grey=True"),
        ({"upsample_sigma_max": 2.0}, "upsample_sigma_max=2.0"),
        ({"upsample_sigma_max": None}, "upsample_sigma_max=None"),  # the model's top σ
        ({"clip_denoised": False}, "clip_denoised=False"),  # the upsampler's too
        ({"upsample_clip_denoised": False}, "upsample_clip_denoised=False"),
        ({"upsample_dynamic_threshold": 90.0}, "upsample_dynamic_threshold=90.0"),
        ({"temperature": 0.8}, "temperature=0.8"),
        ({"sigma_max": 20.0, "upsample_sigma_max": 20.0}, None),
        ({"upsample_eta": 0.0}, None),  # ddim's own η
        ({"upsample_guidance_rescale": 0.7}, None),  # an unguided upsampler
        # an upsampler alone: its own settings, named as generate() takes them
        ({"low_res": str(tmp_path / "low.png"), "upsample_eta": 1.0}, "upsample_eta=1.0"),
        ({"low_res": str(tmp_path / "low.png"), "upsample_guidance": 3.0,
          "upsample_guidance_rescale": 0.7}, "upsample_guidance_rescale=0.7"),
        ({"low_res": str(tmp_path / "low.png"), "upsample_clip_denoised": False},
         "upsample_clip_denoised=False"),
    ]
    for k, (extra, said) in enumerate(cases):
        pipe = alone if "low_res" in extra else both
        image = pipe.generate("a red circle", seed=3, **kw, **extra)[0]
        png = tmp_path / f"{k}.png"
        save_png(image, png, image.info)
        res = in_process(capsys, "sample", "--from-png", png, "--device", "cpu", "-q",
                         "--out", tmp_path / f"again-{k}")
        if said is None:
            assert res.returncode == 0, (extra, res.stderr)
            assert np.array_equal(pixels(tmp_path / f"again-{k}" / "00000.png"), pixels(png))
            continue
        assert res.returncode == 2, (extra, res.stderr)
        assert res.stderr == (
            f"Error: {png} was made by generate() with {said}, which glidectl sample cannot "
            "set, so --from-png would make another picture; make it again with "
            f"GlidePipeline.generate(..., {said}).\n"), res.stderr
    # a flag that changes the picture anyway is taken, with the setting named
    res = in_process(capsys, "sample", "--from-png", tmp_path / "0.png", "--seed", "4",
                     "--device", "cpu", "-q", "--out", tmp_path / "seed4")
    assert res.returncode == 0 and "generate()'s upsample_eta=1.0 (sample cannot set it)" \
        in res.stderr, res.stderr


def test_a_png_of_sigma_max_none_on_a_sigma_schedule_is_refused(
        models, capsys, tmp_path):  # noqa: F811
    """generate(sigma_max=None) samples from the model's top σ and records sigma_max null,
    as a respaced run that uses none does: --from-png made it again from σ_max 80, another
    picture, without a word. It is refused; --sigma-max given is taken as a change, and a
    respaced run's null is no setting at all."""
    from glidectl.images import save_png

    pipe = GlidePipeline.from_specs(str(models / "base.safetensors"), None, device="cpu",
                                    precision="fp32")
    for name, kw in (("top", {"sampler": "euler"}), ("respaced", {"sampler": "ddim"})):
        image = pipe.generate("a red circle", seed=3, steps=2, sigma_max=None, **kw)[0]
        save_png(image, tmp_path / f"{name}.png", image.info)
    res = in_process(capsys, "sample", "--from-png", tmp_path / "top.png", "--device", "cpu",
                     "-q", "--out", tmp_path / "again")
    assert res.returncode == 2 and res.stderr.startswith(
        f"Error: {tmp_path / 'top.png'} was made by generate() with sigma_max=None, which "
        "glidectl sample cannot set"), res.stderr
    res = in_process(capsys, "sample", "--from-png", tmp_path / "top.png", "--sigma-max", 80,
                     "--device", "cpu", "-q", "--out", tmp_path / "s80")
    assert res.returncode == 0 and "--sigma-max 80.0" in res.stderr, res.stderr
    res = in_process(capsys, "sample", "--from-png", tmp_path / "respaced.png", "--device",
                     "cpu", "-q", "--out", tmp_path / "respaced")
    assert res.returncode == 0, res.stderr
    assert np.array_equal(pixels(tmp_path / "respaced" / "00000.png"),
                          pixels(tmp_path / "respaced.png"))


def test_a_png_of_weights_loaded_in_float16_is_refused_not_made_in_float32(
        models, capsys, tmp_path):  # noqa: F811
    """A model of load_model(spec, dtype=torch.float16) samples in float16, but its PNG
    said only precision fp32: --from-png loaded the file in float32 and wrote another image
    without a word. The record names the weights' dtype, and the remake is refused unless a
    flag given changes the picture anyway."""
    from glidectl.glide import load_model
    from glidectl.images import save_png

    pipe = GlidePipeline(load_model(models / "base.safetensors", dtype=torch.float16), None)
    image = pipe.generate("a red circle", seed=3, steps=2)[0]
    assert json.loads(image.info["parameters"])["base_dtype"] == "float16"
    save_png(image, tmp_path / "half.png", image.info)
    res = in_process(capsys, "sample", "--from-png", tmp_path / "half.png", "--device", "cpu",
                     "-q", "--out", tmp_path / "again")
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "(base's in float16: load_model(SPEC, dtype=...)), which glidectl sample cannot " \
           "load" in res.stderr and not (tmp_path / "again").exists()
    res = in_process(capsys, "sample", "--from-png", tmp_path / "half.png", "--seed", "4",
                     "--device", "cpu", "-q", "--out", tmp_path / "seed4")
    assert res.returncode == 0 and "the base's weights in float32, not float16" in res.stderr
    assert "base_dtype" not in params(tmp_path / "seed4" / "00000.png")  # float32 now


def test_a_web_ui_png_is_made_again_from_its_models_folder(models, capsys, tmp_path,  # noqa: F811
                                                          monkeypatch):
    """The UI names its files relative to its models folder (no server paths in a PNG
    anyone can download): run there, the PNG makes its image again; elsewhere, one
    sentence says where to run."""
    from glidectl.ui.backend import UiBackend

    ui = UiBackend(models, device="cpu", output_dir=tmp_path / "ui")
    torch.set_num_threads(1)
    result = ui.generate("a red circle", n=2, sampler="euler", base_steps=2, seed=4,
                         base="base.safetensors", lora="my-lora/", lora_scale=0.7)
    png = result.files[1]
    message = refused(capsys, "--from-png", png)
    assert "relative to its models folder: run this there" in message
    monkeypatch.chdir(models)
    res = in_process(capsys, "sample", "--from-png", png, "--device", "cpu", "-q",
                     "--out", tmp_path / "again")
    assert res.returncode == 0, res.stderr
    assert np.array_equal(pixels(tmp_path / "again" / "00000.png"), pixels(png))
    # its text chunks are sample's, under the same names: the LoRA's, request_images too
    # (they were only inside `parameters`), lists as `parameters` holds them
    text, again = Image.open(png).text, Image.open(tmp_path / "again" / "00000.png").text
    assert set(again) <= set(text), set(again) - set(text)  # the UI adds its timings
    assert json.loads(text["loras"]) == params(png)["loras"] and params(png)["loras"]
    assert json.loads(text["lora_sha256"]) == params(png)["lora_sha256"]
    assert text["request_images"] == "2" and again["loras"] == text["loras"]


def test_a_file_is_hashed_once_while_it_is_unchanged(tmp_path, monkeypatch):
    """A remake checked each weights file's sha256 and then hashed it again for the new
    PNG's record (1.5 GB read twice for OpenAI's base). A file older than 2 s is hashed
    once while its inode, size and time stay; rewritten, or just written, it is hashed."""
    import hashlib
    import os
    import types

    from glidectl import file_hashes, pipeline

    hashes = []
    monkeypatch.setattr(file_hashes, "hashlib", types.SimpleNamespace(
        sha256=lambda: hashes.append(1) or hashlib.sha256()))
    path = tmp_path / "w.bin"
    path.write_bytes(b"a" * 100)
    old = path.stat().st_mtime - 10
    os.utime(path, (old, old))
    first = pipeline.file_sha256(path)
    assert pipeline.file_sha256(path) == first and len(hashes) == 1
    path.write_bytes(b"b" * 100)  # the same size, rewritten in place
    os.utime(path, (old + 1, old + 1))
    assert pipeline.file_sha256(path) == hashlib.sha256(b"b" * 100).hexdigest()
    assert len(hashes) == 2
    fresh = tmp_path / "fresh.bin"
    fresh.write_bytes(b"c")
    assert pipeline.file_sha256(fresh) == pipeline.file_sha256(fresh)
    assert len(hashes) == 4  # written just now: its time may not show a quick rewrite


def _swapped_vocab(vocab: Path, to: Path) -> Path:
    """A copy of GPT-2's vocabulary whose tokens " t" and " a" trade ids: it loads, and
    "a" after a space becomes another token."""
    to.mkdir()
    lines = (vocab / "vocab.bpe").read_text(encoding="utf-8").split("\n")
    lines[1], lines[2] = lines[2], lines[1]
    (to / "vocab.bpe").write_text("\n".join(lines), encoding="utf-8")
    ids = json.loads((vocab / "encoder.json").read_text(encoding="utf-8"))
    ids["\u0120t"], ids["\u0120a"] = ids["\u0120a"], ids["\u0120t"]
    (to / "encoder.json").write_text(json.dumps(ids), encoding="utf-8")
    return to


def test_the_vocabulary_that_tokenized_the_prompt_is_recorded_and_checked(
        capsys, tmp_path, gpt2_vocab, monkeypatch):
    """A PNG records the GPT-2 vocabulary's sha256 (and --vocab-dir as given); --from-png
    uses the recorded folder, else the default vocabulary if it is the same; another one is
    one sentence naming --vocab-dir, and --vocab-dir given says the image will differ."""
    from glidectl import tokenizer
    from glidectl.glide import save_weights

    monkeypatch.setenv(tokenizer.VOCAB_ENV, str(gpt2_vocab))  # this machine's default
    save_weights(tiny_glide("base", 3, tokenizer="gpt2"), tmp_path / "base.safetensors")
    other = _swapped_vocab(gpt2_vocab, tmp_path / "other")
    common = ("--device", "cpu", "-q", "--upsampler", "none", "--steps", 2)
    res = in_process(capsys, "sample", "cat a dog", "--base", tmp_path / "base.safetensors",
                     "--vocab-dir", other, *common, "--out", tmp_path / "s")
    assert res.returncode == 0, res.stderr
    png = tmp_path / "s" / "00000.png"
    assert params(png)["vocab_dir"] == str(other)
    assert params(png)["vocab_sha256"] == tokenizer.vocab_sha256(other) != \
        tokenizer.vocab_sha256(gpt2_vocab)

    res = in_process(capsys, "sample", "--from-png", png, *common[:3], "--out", tmp_path / "a")
    assert res.returncode == 0 and "Not as" not in res.stderr, res.stderr
    assert np.array_equal(pixels(tmp_path / "a" / "00000.png"), pixels(png))

    other.rename(tmp_path / "moved")
    tokenizer.clear_cache()  # this process loaded it from where it was
    res = in_process(capsys, "sample", "--from-png", png, *common[:3], "--out", tmp_path / "b")
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert f"made with the GPT-2 vocabulary in {str(other)!r}" in res.stderr
    assert "pass --vocab-dir DIR" in res.stderr and not (tmp_path / "b").exists()
    res = in_process(capsys, "sample", "--from-png", png, *common[:3], "--vocab-dir",
                     tmp_path / "moved", "--out", tmp_path / "c")
    assert res.returncode == 0 and "Not as" not in res.stderr, res.stderr
    assert np.array_equal(pixels(tmp_path / "c" / "00000.png"), pixels(png))
    res = in_process(capsys, "sample", "--from-png", png, *common[:3], "--vocab-dir",
                     gpt2_vocab, "--out", tmp_path / "d")
    assert res.returncode == 0, res.stderr
    assert f"--vocab-dir {gpt2_vocab} (not the vocabulary that made it)" in res.stderr
    assert not np.array_equal(pixels(tmp_path / "d" / "00000.png"), pixels(png))


def test_a_png_made_with_the_default_vocabulary_needs_no_vocab_dir(capsys, tmp_path,
                                                                   gpt2_vocab, monkeypatch):
    """No --vocab-dir: the PNG records none, and --from-png checks the default vocabulary."""
    from glidectl import tokenizer
    from glidectl.glide import save_weights

    monkeypatch.setenv(tokenizer.VOCAB_ENV, str(gpt2_vocab))
    save_weights(tiny_glide("base", 3, tokenizer="gpt2"), tmp_path / "base.safetensors")
    common = ("--device", "cpu", "-q", "--upsampler", "none", "--steps", 2)
    res = in_process(capsys, "sample", "cat a dog", "--base", tmp_path / "base.safetensors",
                     *common, "--out", tmp_path / "s")
    assert res.returncode == 0, res.stderr
    png = tmp_path / "s" / "00000.png"
    assert params(png)["vocab_dir"] is None and params(png)["vocab_sha256"]
    res = in_process(capsys, "sample", "--from-png", png, *common[:3], "--out", tmp_path / "a")
    assert res.returncode == 0, res.stderr
    assert np.array_equal(pixels(tmp_path / "a" / "00000.png"), pixels(png))
    monkeypatch.setenv(tokenizer.VOCAB_ENV, str(_swapped_vocab(gpt2_vocab, tmp_path / "o")))
    res = in_process(capsys, "sample", "--from-png", png, *common[:3], "--out", tmp_path / "b")
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "made with the GPT-2 vocabulary found by default" in res.stderr
    assert "--vocab-dir DIR" in res.stderr


@pytest.mark.parametrize("text, said", [
    ({"candidate": "0", "seed": "abc", "prompt": "a", "glidectl": {"base": "none"}},
     "seed = 'abc'"),
    ({"candidate": "0", "seed": "-3", "prompt": "a", "glidectl": {"base": "none"}},
     "seed = '-3'"),
    ({"candidate": "0", "prompt": "a", "glidectl": {"base": "none"}}, "'seed'"),
    ({"candidate": "0", "seed": "1", "prompt": "a",
      "glidectl": {"base": "none", "base_stage": {"guidance": "strong"}}}, "strong"),
    ({"candidate": "0", "seed": "1", "prompt": "a", "glidectl": {"base": 5}}, "base = 5"),
    ({"candidate": "0", "seed": "1", "prompt": "a",
      "glidectl": {"base": "none", "base_stage": {"sampler": 5}}}, "base_stage.sampler = 5"),
    ({"step": "x", "prompts": "[\"a\"]", "sampler": "euler"}, "step = 'x'"),
    ({"step": "1", "prompts": "not json", "sampler": "euler"}, "Expecting value"),
])
def test_a_damaged_eval_or_preview_record_is_one_sentence(capsys, tmp_path, text, said):
    """An eval image's or training preview's record edited by hand: a word for its seed or
    step, a missing key or a preview's prompts that are no JSON were ValueError and KeyError
    tracebacks; a negative seed was taken."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in text.items():
        info.add_text(key, json.dumps(value) if isinstance(value, dict) else value)
    Image.new("RGB", (8, 8)).save(tmp_path / "edited.png", pnginfo=info)
    message = refused(capsys, "--from-png", tmp_path / "edited.png", "--out", tmp_path / "o")
    assert "glidectl record is damaged (" in message and said in message, message
    assert not (tmp_path / "o").exists()


def test_a_png_made_with_relative_paths_is_made_again_from_another_folder(
        made, capsys, tmp_path, monkeypatch):
    """Paths are recorded as typed (relative to where ``sample`` ran); a remake run
    elsewhere looks for them beside the folders above the PNG, where the sha256 they record
    says which file made it."""
    root = tmp_path / "project"
    shutil.copytree(made[0] / "models", root / "models")
    monkeypatch.chdir(root)
    args = [str(a).replace(str(made[0] / "models"), "models") for a in made[1]]
    out = sample((None, args), capsys, Path("samples"))
    png = root / out / "00003.png"
    assert params(png)["base"] == str(Path("models") / "base.safetensors")
    monkeypatch.chdir(tmp_path)
    res = in_process(capsys, "sample", "--from-png", png, "--device", "cpu", "-q",
                     "--out", tmp_path / "again")
    assert res.returncode == 0, res.stderr
    assert np.array_equal(pixels(tmp_path / "again" / "00000.png"), pixels(png))
    # a file of that name above the PNG but with other bytes is not taken for it, nor named
    # as one the record names
    (root / "models" / "s.json").write_text((root / "models" / "s.json").read_text() + " ")
    message = refused(capsys, "--from-png", png)
    assert "schedule file 'models/s.json'" in message and "which is not there" in message
