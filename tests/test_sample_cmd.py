"""``glidectl sample`` end to end on tiny random models saved as .safetensors."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_pipeline import tiny_glide


def run_subprocess(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "glidectl", "sample", *args],
                          capture_output=True, text=True, env=full_env, timeout=300)


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def in_process(capsys, *args: str) -> Result:
    """``glidectl ARGS`` in this process at one thread (start-up is tested by the CLI tests)."""
    from glidectl.cli.app import main

    capsys.readouterr()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        torch.set_num_threads(threads)
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


@pytest.fixture
def run(capsys):
    """``glidectl sample ARGS`` in this process."""
    return lambda *args: in_process(capsys, "sample", *args)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    from glidectl.glide import save_weights

    folder = tmp_path_factory.mktemp("weights")
    return {
        "base": save_weights(tiny_glide("base", 0), folder / "base.safetensors"),
        "upsample": save_weights(tiny_glide("upsample", 1), folder / "up.safetensors"),
        "inpaint": save_weights(tiny_glide("base-inpaint", 2), folder / "inpaint.safetensors"),
    }


def test_sample_writes_numbered_pngs_with_parameters_and_a_grid(run, weights, tmp_path) -> None:
    out = tmp_path / "out"
    res = run("a red cube", "a blue ball", "--base", str(weights["base"]),
              "--upsampler", str(weights["upsample"]), "--steps", "3", "--upsample-steps", "2",
              "--upsample-sampler", "euler", "--n", "2", "--batch-size", "3", "--seed", "5",
              "--grid", "--out", str(out), "--device", "cpu")
    assert res.returncode == 0, res.stderr
    pngs = sorted(out.glob("0*.png"))
    assert [p.name for p in pngs] == ["00000.png", "00001.png", "00002.png", "00003.png"]
    first = Image.open(pngs[2])
    assert first.size == (32, 32)
    params = json.loads(first.text["parameters"])
    assert (params["prompt"], params["seed"], params["sampler"]) == ("a blue ball", 7, "dpm++2m")
    assert params["model_calls"] == 3 + 2  # dpm++2m 3 steps, then euler 2 steps
    assert first.text["base"] == str(weights["base"]) and first.text["steps"] == "3"
    from glidectl.pipeline import file_sha256  # which weights: a run folder's latest moves on

    assert [(params[f"{k}_file"], params[f"{k}_sha256"]) for k in ("base", "upsampler")] == [
        (str(weights[k]), file_sha256(weights[k])) for k in ("base", "upsample")]
    grid = Image.open(out / "grid-00000.png")
    assert grid.size == (2 * 64 + 2, 2 * 64 + 2)  # all four, none dropped, 32 px shown at 64
    assert grid.crop((0, 0, 64, 64)).resize((32, 32), Image.Resampling.NEAREST).tobytes() == \
        Image.open(pngs[0]).convert("RGB").tobytes()  # each pixel a sharp 2x2 square
    again = run("a red cube", "--base", str(weights["base"]), "--steps", "1",
                "--out", str(out), "--device", "cpu", "-q")
    assert again.returncode == 0 and (out / "00004.png").is_file()  # never overwrites


def test_a_long_request_holds_one_batch_of_images_at_a_time(run, weights, tmp_path,
                                                            monkeypatch) -> None:
    """Thousands of prompts: each batch is written and let go (kept only for --grid)."""
    import weakref

    from glidectl import images

    real, saved, alive = images.save_png, [], []

    def save_png(image, path, text, **kwargs):
        saved.append(weakref.ref(image))
        alive.append(sum(ref() is not None for ref in saved))
        return real(image, path, text, **kwargs)

    monkeypatch.setattr(images, "save_png", save_png)
    res = run(*[f"a red cube {i}" for i in range(8)], "--base", str(weights["base"]),
              "--steps", "1", "--batch-size", "2", "--out", str(tmp_path / "out"),
              "--device", "cpu", "-q")
    assert res.returncode == 0, res.stderr
    assert len(saved) == 8 and max(alive) <= 2  # before: all 8 held to the end


def test_compile_flag_compiles_the_networks(run, weights, tmp_path, monkeypatch) -> None:
    """--compile, as eval has it: each network goes through torch.compile before sampling."""
    compiled: list[str] = []
    monkeypatch.setattr(torch.nn.Module, "compile",
                        lambda self, *a, **k: compiled.append(self.options.kind))
    res = run("a red cube", "--base", str(weights["base"]), "--upsampler",
              str(weights["upsample"]), "--steps", "1", "--upsample-steps", "1", "--compile",
              "--out", str(tmp_path / "out"), "--device", "cpu", "-q")
    assert res.returncode == 0, res.stderr
    assert compiled == ["base", "upsample"]


def test_a_model_that_returns_nan_is_one_sentence_not_a_black_png(run, tmp_path) -> None:
    """Damaged weights drew all-black PNGs without a word; now nothing is written and the
    message blames the model, not the sampler."""
    from glidectl.glide import save_weights

    model = tiny_glide("base", 0)
    with torch.no_grad():
        model.out[2].bias.fill_(float("nan"))
    broken = save_weights(model, tmp_path / "broken.safetensors")
    out = tmp_path / "out"
    res = run("a red cube", "--base", str(broken), "--steps", "2", "--out", str(out),
              "--device", "cpu", "--precision", "bf16", "-q")
    assert res.returncode == 2, res.stderr
    assert ("The base model returned NaN or infinite values while sampling: its weights may be "
            "damaged or bf16 too coarse for it (try --precision fp32).") in res.stderr
    assert "Traceback" not in res.stderr and not list(out.glob("*.png"))
    # in fp32 (autocast's "no") it said "damaged or no too coarse for it (try … fp32)"
    res = run("a red cube", "--base", str(broken), "--steps", "2", "--out", str(out),
              "--device", "cpu", "--precision", "fp32", "-q")
    assert res.returncode == 2 and res.stderr.endswith(
        "while sampling: its weights may be damaged.\n"), res.stderr


def test_a_sampler_s_nan_from_finite_model_outputs_names_the_sampler() -> None:
    from glidectl.errors import NonFiniteSample
    from glidectl.sampling import check_finite

    class Finite:
        nonfinite = False

    with pytest.raises(NonFiniteSample, match="Sampler 'euler' produced NaN or infinite values "
                       "from finite model outputs; try another --sampler or --schedule."):
        check_finite(torch.tensor([float("nan")]), Finite(), "base", "euler", "fp32")
    check_finite(torch.zeros(1), Finite(), "base", "euler", "fp32")  # finite: no error


def test_sample_is_reproducible_per_seed(run, weights, tmp_path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    common = ("--base", str(weights["base"]), "--steps", "3", "--sampler", "euler_a", "-q")
    assert run("a cat", "--n", "3", "--seed", "2", "--batch-size", "3", "--out", str(a),
               *common).returncode == 0
    assert run("a cat", "--seed", "4", "--out", str(b), *common).returncode == 0
    together = np.asarray(Image.open(a / "00002.png"), dtype=np.int16)
    alone = np.asarray(Image.open(b / "00000.png"), dtype=np.int16)
    assert np.abs(together - alone).max() <= 1  # batched float32 sums may round one level off
    other = np.asarray(Image.open(a / "00001.png"), dtype=np.int16)
    assert np.abs(together - other).max() > 10


def test_sample_inpaints_with_an_inpaint_model(run, weights, tmp_path) -> None:
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "image.png")
    mask = Image.new("L", (8, 8), 0)
    mask.paste(255, (4, 0, 8, 8))  # white = repaint the right half
    mask.save(tmp_path / "mask.png")
    res = run("a cat", "--base", str(weights["inpaint"]), "--steps", "2", "-q",
              "--inpaint-image", str(tmp_path / "image.png"),
              "--inpaint-mask", str(tmp_path / "mask.png"), "--out", str(tmp_path / "o"))
    assert res.returncode == 0, res.stderr
    pixels = Image.open(tmp_path / "o" / "00000.png").load()
    assert all(pixels[x, y] == (255, 0, 0) for x in range(4) for y in range(8))
    text = Image.open(tmp_path / "o" / "00000.png").text
    assert text["inpaint_mask"] == str(tmp_path / "mask.png")


def test_a_mask_is_read_as_images_are_transparent_and_16_bit(run, weights, tmp_path):
    """Transparency is what is repainted, whatever the colour (OpenAI's image-edit masks:
    the photo with a transparent hole), 16-bit levels are scaled (a 31 % grey keeps), and a
    mask that keeps or repaints every pixel is said."""
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "image.png")
    alpha = np.zeros((8, 8, 4), np.uint8)
    alpha[..., 3] = 255
    alpha[:, 4:, 3] = 0  # the right half transparent
    Image.fromarray(alpha, "RGBA").save(tmp_path / "alpha.png")
    deep = np.full((8, 8), 20000, np.uint16)
    deep[:, 4:] = 65535
    Image.fromarray(deep).save(tmp_path / "deep.png")
    Image.new("L", (8, 8), 0).save(tmp_path / "black.png")
    from glidectl.images import known_mask_from_pil

    soft = np.zeros((8, 8, 4), np.uint8)  # a painted black/white mask, opaque but for a
    soft[..., 3] = 255  # few soft-edged pixels: read by its colour, not its alpha
    soft[:, 4:, :3] = 255
    soft[0, 3, 3] = 200
    assert int((known_mask_from_pil(Image.fromarray(soft, "RGBA")) == 0).sum()) == 32
    photo = np.full((8, 8, 4), 255, np.uint8)  # OpenAI's kind: the (white) photo itself,
    photo[:, 4:, 3] = 0  # with a transparent hole: read by its alpha, not its colour
    Image.fromarray(photo, "RGBA").save(tmp_path / "photo.png")
    for name in ("alpha", "deep", "black", "photo"):
        res = run("a cat", "--base", str(weights["inpaint"]), "--steps", "2", "-q",
                  "--inpaint-image", str(tmp_path / "image.png"),
                  "--inpaint-mask", str(tmp_path / f"{name}.png"), "--out", str(tmp_path / name))
        assert res.returncode == 0, res.stderr
        got = np.asarray(Image.open(tmp_path / name / "00000.png"), dtype=int)
        assert (got[:, :4] == (255, 0, 0)).all()
        said = ("Warning: The inpaint mask keeps every pixel at 8 px (white marks what to "
                "repaint), so the picture comes back as the inpaint image.") in res.stderr
        assert said == (name == "black"), res.stderr
        assert (got[:, 4:] != (255, 0, 0)).any() == (name != "black")
    Image.new("L", (8, 8), 255).save(tmp_path / "white.png")  # an inverted mask, likely
    res = run("a cat", "--base", str(weights["inpaint"]), "--steps", "2", "-q",
              "--inpaint-image", str(tmp_path / "image.png"),
              "--inpaint-mask", str(tmp_path / "white.png"), "--out", str(tmp_path / "white"))
    assert res.returncode == 0 and ("Warning: The inpaint mask repaints every pixel at 8 px"
                                    in res.stderr), res.stderr


def test_an_upsample_only_png_records_the_upsampler_and_no_base_stage(run, weights, tmp_path):
    Image.new("RGB", (8, 8), (0, 0, 255)).save(tmp_path / "low.png")
    res = run("a cat", "--base", "none", "--upsampler", str(weights["upsample"]), "-q",
              "--low-res", str(tmp_path / "low.png"), "--upsample-steps", "3",
              "--upsample-temp", "0.5", "--sigma-max", "10", "--out", str(tmp_path / "o"))
    assert res.returncode == 0, res.stderr
    text = Image.open(tmp_path / "o" / "00000.png").text
    assert not {"sampler", "steps", "guidance", "schedule"} & set(text), text
    assert (text["upsample_sampler"], text["upsample_steps"], text["upsample_temp"]) == (
        "ddpm", "3", "0.5")
    assert text["upsample_schedule"] == "respaced" and text["model_calls"] == "3"
    # GLIDE's respaced steps take no σ_max: said, and not recorded as if it made the image
    assert "sigma_max" not in text and "--sigma-max not used" in res.stderr


def test_unknown_sampler_is_one_line_with_the_nearest_name(run, weights) -> None:
    res = run("a cat", "--base", str(weights["base"]), "--sampler", "dpm++2n")
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "Did you mean 'dpm++2m'" in res.stderr
    assert "heun" in res.stderr


def test_sample_takes_the_guidance_tools_and_records_them(run, weights, tmp_path) -> None:
    res = run("a cat", "--base", str(weights["base"]), "--steps", "2", "-q", "--out",
              str(tmp_path), "--guidance-interval", "0.5,20", "--guidance-rescale", "0.7",
              "--dynamic-threshold", "99.5")
    assert res.returncode == 0, res.stderr
    params = json.loads(Image.open(tmp_path / "00000.png").text["parameters"])
    assert (params["guidance_interval"], params["guidance_rescale"],
            params["dynamic_threshold"]) == ("0.5,20", 0.7, 99.5)


@pytest.mark.parametrize("flag,value", [("--guidance-interval", "5"),
                                        ("--guidance-interval", "5,1"),
                                        ("--guidance-rescale", "2"),
                                        ("--dynamic-threshold", "5")])
def test_bad_guidance_tool_flags_are_one_line_exit_2(run, weights, flag, value) -> None:
    res = run("a cat", "--base", str(weights["base"]), flag, value)
    assert res.returncode == 2 and res.stderr.startswith("Error:"), res.stderr
    assert res.stderr.count("\n") == 1


def test_missing_model_file_is_one_line_exit_2(run, tmp_path) -> None:
    res = run("a cat", "--base", str(tmp_path / "nope.safetensors"))
    assert res.returncode == 2 and res.stderr.startswith("Error:")
    assert res.stderr.count("\n") == 1 and "nope.safetensors" in res.stderr


@pytest.mark.parametrize("flags", [("--upsampler", "NONE"), ("--upsampler", "Auto"),
                                   ("--base", "None", "--upsampler", "none")])
def test_a_model_word_in_another_case_names_the_words(run, weights, tmp_path, monkeypatch,
                                                      flags) -> None:
    """`--upsampler NONE` said only "Model 'NONE' … not found: pass openai:<kind>, …"."""
    monkeypatch.chdir(tmp_path)
    res = run("a cat", *(["--base", str(weights["base"])] if flags[0] != "--base" else []),
              *flags, "--out", "o")
    assert res.returncode == 2 and res.stderr == (
        f"Error: Model {flags[1]!r} (relative to the current folder, {tmp_path}) not found; the "
        "words --base and --upsampler take are lower-case: none (no model; --base none with "
        "--low-res) and auto (--upsampler only: OpenAI's upsampler for OpenAI's base).\n")
    (tmp_path / flags[1]).write_bytes((weights["upsample"] if flags[0] == "--upsampler"
                                       else weights["base"]).read_bytes())  # a file so named
    assert run("a cat", *(["--base", str(weights["base"])] if flags[0] != "--base" else []),
               *flags, "--steps", "1", "--upsample-steps", "1", "-q",
               "--out", "o").returncode == 0


def test_a_model_that_cannot_load_is_said_before_any_warning(run, weights, tmp_path) -> None:
    """No "--upsample-steps not used" line about a run that will not start: only why."""
    (tmp_path / "bad.safetensors").write_text("not weights")
    for base, reason in ((tmp_path / "bad.safetensors", "Cannot read weights"),
                         (weights["upsample"], "is an 'upsample' model")):
        res = run("a cat", "--base", base, "--upsampler", "none", "--upsample-steps", "5",
                  "--out", tmp_path / "s")
        assert res.returncode == 2 and res.stderr.startswith("Error:"), res.stderr
        assert res.stderr.count("\n") == 1 and reason in res.stderr, res.stderr
    assert not (tmp_path / "s").exists()


def test_a_run_folder_without_a_checkpoint_yet_says_so(capsys, weights, tmp_path) -> None:
    """A run whose training has not checkpointed yet is a run, not 'not a training run'."""
    run_dir = tmp_path / "runs" / "early"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.toml").write_text("[train]\nsteps = 900\n")
    commands = [
        ("sample", "a cat", "--base", run_dir),
        ("sample", "a cat", "--base", weights["base"], "--lora", run_dir),
        ("export", run_dir, "-o", tmp_path / "x.safetensors"),
        ("lora", "merge", run_dir, "-o", tmp_path / "m.safetensors"),
        ("export", run_dir, "--out", tmp_path / "x.safetensors"),  # as sample and eval say
        ("lora", "merge", run_dir, "--out", tmp_path / "m.safetensors"),
    ]
    for args in commands:
        res = in_process(capsys, *args)
        assert res.returncode == 2 and res.stderr.count("\n") == 1, (args, res.stderr)
        assert "has no checkpoint, and no process is training it" in res.stderr
    assert not (tmp_path / "x.safetensors").exists()


def test_a_model_s_run_given_as_a_lora_says_which_is_which(capsys, weights, tmp_path) -> None:
    """Not "'runs/x/checkpoints/step-000001' holds no LoRA adapter (lora-ema/ or lora/)"."""
    import shutil

    step = tmp_path / "runs" / "x" / "checkpoints" / "step-000001"
    step.mkdir(parents=True)
    shutil.copy(weights["base"], step / "ema.safetensors")
    run = step.parent.parent
    for args in (("sample", "a cat", "--base", run, "--lora", run),
                 ("lora", "merge", run, "-o", tmp_path / "m.safetensors")):
        res = in_process(capsys, *args)
        assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
        assert f"{str(run)!r} holds a model's weights, not a LoRA adapter; name it as the " \
            "base model (--base)" in res.stderr


def test_long_prompt_warns_how_many_tokens_were_dropped(run, weights, tmp_path) -> None:
    res = run("z" * 21, "--base", str(weights["base"]), "--steps", "1", "-q",
              "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert "21 tokens" in res.stderr and "last 5 tokens were dropped" in res.stderr
    text = Image.open(tmp_path / "00000.png").text  # under 200 characters, yet cut
    assert text["prompt"] == "z" * 21 and text["prompt_used"] == "z" * 16
    res = run("z" * 16, "--base", str(weights["base"]), "--steps", "1", "-q",
              "--out", str(tmp_path))
    assert "prompt_used" not in Image.open(tmp_path / "00001.png").text  # read whole


def test_sample_with_the_example_plugin_sampler(run, weights, tmp_path) -> None:
    if importlib.util.find_spec("glidectl_dpm3m") is None:
        pytest.skip("example plugin not installed: pip install -e plugins/glidectl-dpm3m")
    res = run_subprocess("a cat", "--base", str(weights["base"]), "--sampler", "dpm++3m_sde",
                         "--steps", "4", "-q", "--out", str(tmp_path),
                         env={"GLIDECTL_LOAD_PLUGINS": "dpm3m"})
    assert res.returncode == 0, res.stderr
    from importlib.metadata import version

    params = json.loads(Image.open(tmp_path / "00000.png").text["parameters"])
    assert params["sampler"] == "dpm++3m_sde"  # and the code that made it:
    assert params["plugins"] == [f"glidectl-dpm3m {version('glidectl-dpm3m')}"]
    without = run("a cat", "--base", str(weights["base"]), "--sampler", "dpm++3m_sde")
    assert without.returncode == 2  # conftest hides installed plugins unless allow-listed


def test_an_unwritable_out_fails_before_any_model_loads(run, tmp_path, monkeypatch) -> None:
    from glidectl.glide import loading

    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    (tmp_path / "file").write_text("x")
    res = run("a cat", "--out", str(tmp_path / "file"))
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    assert "--out" in res.stderr and "is a file" in res.stderr
    res = run("a cat", "--out", str(tmp_path / "file" / "sub"))
    assert res.returncode == 2 and "is under" in res.stderr


def test_an_out_named_like_an_image_says_it_is_a_folder(run, weights, tmp_path,
                                                        monkeypatch) -> None:
    """`sample --out x.png` made a folder named x.png holding 00000.png."""
    monkeypatch.chdir(tmp_path)
    res = run("a cat", "--base", weights["base"], "--upsampler", "none", "--out", "x.png")
    assert res.returncode == 2 and res.stderr == (
        "Error: --out 'x.png' names an image file, but --out is the folder images are written "
        "to (00000.png, 00001.png, …); pass a folder (e.g. 'x').\n")
    assert not (tmp_path / "x.png").exists()
    (tmp_path / "x.png").mkdir()  # a folder so named already: written into, as before
    assert run("a cat", "--base", weights["base"], "--upsampler", "none", "--steps", "1", "-q",
               "--out", "x.png").returncode == 0
    assert (tmp_path / "x.png" / "00000.png").is_file()


def test_an_out_in_a_checkpoint_folder_is_refused(capsys, tmp_path, monkeypatch) -> None:
    """Images, evals and schedule files written into runs/x/checkpoints/step-N/ were deleted,
    unsaid, with the step folder when the run's keep_last pruned it."""
    from glidectl.glide import loading

    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    monkeypatch.chdir(tmp_path)
    step = Path("runs", "x", "checkpoints", "step-000002")
    step.mkdir(parents=True)
    (step.parents[1] / "config.toml").write_text("")
    (tmp_path / "prompts.txt").write_text("a cat\n")
    (tmp_path / "mine" / "step-000002").mkdir(parents=True)  # no run's: written into
    for args, flag, out in (
            (("sample", "a cat"), "--out", step / "samples"),
            (("sample", "a cat"), "--out", step),
            (("eval", "prompts.txt"), "--out", step / "eval"),
            (("fit-steps", "runs/x", "--prompt", "a cat"), "--out", step / "s.json"),
            (("dataset", "inspect", "demo:shapes"), "--preview", step / "p.png")):
        res = in_process(capsys, *args, flag, out)
        assert res.returncode == 2 and res.stderr.count("\n") == 1, (args, res.stderr)
        assert f"is in checkpoint folder {str(step)!r}, which training deletes when it " \
               "prunes old checkpoints" in res.stderr, res.stderr
    assert list(step.iterdir()) == []
    from glidectl.out_dir import check_out_dir

    check_out_dir(tmp_path / "mine" / "step-000002")


def test_an_out_in_a_step_folder_not_written_yet_is_refused(capsys, tmp_path,
                                                             monkeypatch) -> None:
    """`sample --out runs/x/checkpoints/step-000008` before step 8 was made a folder that
    pruning took for the newest checkpoint (deleting real ones first) and that training,
    reaching step 8, wrote its checkpoint over, deleting the images."""
    from glidectl.glide import loading

    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    monkeypatch.chdir(tmp_path)
    checkpoints = Path("runs", "x", "checkpoints")
    (checkpoints / "step-000002").mkdir(parents=True)
    (checkpoints.parent / "config.toml").write_text("")
    step = checkpoints / "step-000008"
    res = in_process(capsys, "sample", "a cat", "--out", step / "s")
    assert res.returncode == 2, res.stderr
    assert f"is in checkpoint folder {str(step)!r}" in res.stderr, res.stderr
    assert not step.exists()


def test_a_leading_tilde_the_shell_left_in_a_path_flag_is_the_home_folder(
        run, weights, tmp_path, monkeypatch) -> None:
    """`--out=~/pics` (the shell expands no `~` after `=`) wrote into a folder named '~'
    here, and `--low-res=~/x.png` said the file did not exist; `--base` read it as home."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "home").mkdir()
    Image.new("RGB", (16, 16), (200, 0, 0)).save(tmp_path / "home" / "low.png")
    res = run("a cat", "--base", "none", "--upsampler", weights["upsample"], "--steps", "1",
              "--upsample-steps", "1", "-q", "--low-res=~/low.png", "--out=~/pics")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "home" / "pics" / "00000.png").is_file()
    assert not (tmp_path / "~").exists()


def test_a_models_recommended_sampling_is_used_and_said(run, weights, tmp_path) -> None:
    from glidectl.glide import load_model, save_weights
    from glidectl.pipeline import RECOMMENDED_KEY

    trained = save_weights(load_model(weights["base"]), tmp_path / "trained.safetensors",
                           metadata={RECOMMENDED_KEY: json.dumps(
                               {"sampler": "euler", "steps": 2, "guidance": 5.0})})
    res = run("a cat", "--base", str(trained), "-q", "--out", str(tmp_path / "a"))
    assert res.returncode == 0, res.stderr
    assert "recommended sampling settings (sampler euler, steps 2, guidance 5.0)" in res.stderr
    from glidectl.devices import pick_precision

    assert pick_precision("auto", "cpu").line() in res.stderr  # bf16 on CPUs that have it
    params = json.loads(Image.open(tmp_path / "a" / "00000.png").text["parameters"])
    assert (params["sampler"], params["steps"], params["guidance"]) == ("euler", "2", 5.0)
    res = run("a cat", "--base", str(trained), "-q", "--steps", "1", "--guidance", "2",
              "--out", str(tmp_path / "b"))
    assert "(sampler euler);" in res.stderr
    params = json.loads(Image.open(tmp_path / "b" / "00000.png").text["parameters"])
    assert (params["sampler"], params["steps"], params["guidance"]) == ("euler", "1", 2.0)
    res = run("a cat", "--base", str(weights["base"]), "-q", "--steps", "1",
              "--out", str(tmp_path / "c"))
    assert "recommended" not in res.stderr  # a model without recommendations: the defaults
    params = json.loads(Image.open(tmp_path / "c" / "00000.png").text["parameters"])
    assert (params["sampler"], params["guidance"]) == ("dpm++2m", 3.0)


def test_a_recommended_sigma_max_is_used_unless_the_flag_is_given(run, weights, tmp_path):
    """sample passed --sigma-max's default over the model's recommended σ_max (while saying
    it used it), so its picture was not the page's and generate()'s."""
    from glidectl.glide import load_model, save_weights
    from glidectl.pipeline import RECOMMENDED_KEY, GlidePipeline

    trained = save_weights(load_model(weights["base"]), tmp_path / "trained.safetensors",
                           metadata={RECOMMENDED_KEY: json.dumps(
                               {"sampler": "euler", "steps": 3, "sigma_max": 5.0})})
    res = run("a cat", "--base", str(trained), "-q", "--precision", "fp32",
              "--out", str(tmp_path / "a"))
    assert res.returncode == 0 and "sigma_max 5.0" in res.stderr, res.stderr
    png = Image.open(tmp_path / "a" / "00000.png")
    assert json.loads(png.text["parameters"])["sigma_max"] == 5.0
    pipe = GlidePipeline.from_specs(str(trained), precision="fp32", device="cpu")
    same = pipe.generate("a cat", seed=0, output="pil")[0]
    assert np.array_equal(np.asarray(png), np.asarray(same))
    res = run("a cat", "--base", str(trained), "-q", "--sigma-max", "20",
              "--out", str(tmp_path / "b"))
    assert res.returncode == 0 and "(sampler euler, steps 3);" in res.stderr, res.stderr
    params = json.loads(Image.open(tmp_path / "b" / "00000.png").text["parameters"])
    assert params["sigma_max"] == 20.0


def test_a_huge_prompt_is_stored_as_read_with_an_excerpt_and_hash(run, weights, tmp_path):
    import hashlib

    huge = "a red cube " + "x" * 50_000
    res = run(huge, "--base", str(weights["base"]), "--steps", "1", "-q",
              "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert res.stderr.count("Warning:") == 1
    png = tmp_path / "00000.png"
    assert png.stat().st_size < 20_000
    text = Image.open(png).text
    assert text["prompt_sha256"] == hashlib.sha256(huge.encode()).hexdigest()
    assert len(text["prompt"]) == 200 and text["prompt_used"].startswith("a red cube x")


def test_a_respacing_string_under_a_karras_schedule_says_what_to_pass(run, weights, tmp_path):
    res = run("a cat", "--base", str(weights["base"]), "--steps", "fast27", "-q",
              "--out", str(tmp_path))
    assert res.returncode == 2 and res.stderr.count("Error:") == 1
    assert "got 'fast27'; a respacing string such as 'fast27' needs --schedule respaced" in \
        res.stderr
    for word in ("abc", "fast"):  # no respacing string either: not called one
        res = run("a cat", "--base", str(weights["base"]), "--steps", word, "-q",
                  "--out", str(tmp_path))
        assert res.returncode == 2 and res.stderr.count("Error:") == 1, res.stderr
        assert "a respacing string such as 'abc'" not in res.stderr, res.stderr
        assert f"got {word!r}; pass a number of steps such as 25 (or a respacing string such " \
            "as fast27 with --schedule respaced)" in res.stderr, res.stderr


def test_an_unknown_schedule_is_named_before_sampling_starts(run, weights, tmp_path):
    res = run("a cat", "--base", str(weights["base"]), "--schedule", "karas",
              "--out", str(tmp_path / "o"))
    assert res.returncode == 2 and res.stderr.count("Error:") == 1, res.stderr
    assert "Did you mean 'karras'?" in res.stderr and "respaced" in res.stderr
    assert "model calls" not in res.stderr and not (tmp_path / "o").exists()  # no bar, no file


@pytest.mark.parametrize("flag,value", [("--steps", "0"), ("--steps", "-3"),
                                        ("--upsample-steps", "0")])
def test_steps_below_one_are_one_line_exit_2_before_any_model_loads(run, tmp_path, flag,
                                                                       value) -> None:
    res = run("a cat", "--base", str(tmp_path / "never-read.safetensors"), flag, value)
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert res.stderr.startswith(f"Error: {flag} must be from 1 to 10000, got {value};")


def test_a_schedule_file_drives_the_steps_and_a_missing_one_is_an_error(run, weights,
                                                                          tmp_path):
    from glidectl.samplers.tuned import write_schedule_file

    path = tmp_path / "schedule.json"
    write_schedule_file(path, {3: torch.tensor([80.0, 2.0, 0.1, 0.0])}, 0.002, 80.0, "test",
                        sampler="unipc")
    res = run("a cat", "--base", str(weights["base"]), "--steps", "3", "--schedule", str(path),
              "--sampler", "unipc_bh2", "-q", "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert Image.open(tmp_path / "00000.png").text["model_calls"] == "3"
    assert "tuned for" not in res.stderr  # unipc_bh2 is unipc's alias
    res = run("a cat", "--base", str(weights["base"]), "--steps", "3", "--schedule", str(path),
              "--sampler", "dpm++2m", "-q", "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert "was tuned for the unipc sampler, not dpm++2m" in res.stderr, res.stderr
    res = run("a cat", "--base", str(weights["base"]), "--schedule", str(tmp_path / "no.json"),
              "-q", "--out", str(tmp_path))
    assert res.returncode == 2 and res.stderr.count("Error:") == 1
    assert "no.json' does not exist" in res.stderr and "Traceback" not in res.stderr


def test_bespoke_sampling_reads_its_coefficients_from_the_schedule_file(run, weights,
                                                                        tmp_path) -> None:
    from glidectl import plugins
    from glidectl.samplers.bespoke import linear_coefficients
    from glidectl.samplers.schedules import sigmas_from_alphas_cumprod
    from glidectl.samplers.tuned import get_sigmas_from_file, write_schedule_file
    from glidectl.sampling import sigma_table_for

    path = tmp_path / "schedule.json"
    lo = float(sigmas_from_alphas_cumprod(sigma_table_for(tiny_glide("base", 0).options))[0])
    write_schedule_file(path, {3: torch.tensor([80.0, 2.0, 0.1, 0.0])}, lo, 80.0, "test")
    sigmas = get_sigmas_from_file(path, 3, lo, 80.0)  # the σ's `sample` will walk
    write_schedule_file(path, {3: sigmas}, lo, 80.0, "test", sampler="bespoke",
                        coefficients={3: linear_coefficients(plugins.samplers().get("dpm++2m"),
                                                             sigmas)})
    common = ("a cat", "--base", str(weights["base"]), "--steps", "3", "--schedule", str(path),
              "-q", "--seed", "5", "--precision", "fp32")
    res = run(*common, "--sampler", "bespoke", "--out", str(tmp_path / "b"))
    assert res.returncode == 0, res.stderr
    assert Image.open(tmp_path / "b" / "00000.png").text["model_calls"] == "3"
    res = run(*common, "--sampler", "dpm++2m", "--out", str(tmp_path / "d"))
    assert res.returncode == 0, res.stderr
    bespoke, dpm = (np.asarray(Image.open(tmp_path / d / "00000.png"), dtype=int)
                    for d in "bd")
    assert np.abs(bespoke - dpm).max() <= 1  # dpm++2m's own coefficients: the same image
    for args, message in (
            (("--steps", "4", "--schedule", str(path)), "no bespoke coefficients for 4 steps"),
            (("--steps", "3"), "needs coefficients fitted to the model: pass --schedule FILE"),
            (("--steps", "3", "--schedule", str(path), "--sigma-max", "40"),
             "but this run samples from 40")):
        res = run("a cat", "--base", str(weights["base"]), "--sampler", "bespoke", *args, "-q",
                  "--precision", "fp32", "--out", str(tmp_path / "e"))
        assert res.returncode == 2 and res.stderr.count("Error:") == 1, res.stderr
        assert message in res.stderr and "Traceback" not in res.stderr


def bespoke_file(path: Path, coefficients: bool = True) -> Path:
    """A valid 3-step bespoke schedule file for the tiny base model (dpm++2m's own rows)."""
    from glidectl import plugins
    from glidectl.samplers.bespoke import linear_coefficients
    from glidectl.samplers.schedules import sigmas_from_alphas_cumprod
    from glidectl.samplers.tuned import get_sigmas_from_file, write_schedule_file
    from glidectl.sampling import sigma_table_for

    lo = float(sigmas_from_alphas_cumprod(sigma_table_for(tiny_glide("base", 0).options))[0])
    write_schedule_file(path, {3: torch.tensor([80.0, 2.0, 0.1, 0.0])}, lo, 80.0, "test")
    sigmas = get_sigmas_from_file(path, 3, lo, 80.0)
    write_schedule_file(path, {3: sigmas}, lo, 80.0, "test", sampler="bespoke",
                        coefficients={3: linear_coefficients(plugins.samplers().get("dpm++2m"),
                                                             sigmas)},
                        model_sha256="0" * 64)
    return path


@pytest.mark.parametrize("change, message", [
    (lambda d: d["positions"].update({"0": []}), "is not a glidectl.schedule/1 file"),
    (lambda d: d["positions"]["3"].__setitem__(1, True), "is not a glidectl.schedule/1 file"),
    (lambda d: d.update(sampler=5), "names its sampler with 5, not a sampler name"),
    (lambda d: d["coefficients"]["3"][0].__setitem__(0, float("nan")),
     "not all numbers within ±1e+06"),
    (lambda d: d["coefficients"]["3"][1].__setitem__(0, 1e308), "not all numbers within"),
    (lambda d: d["positions"].update({"4": d["positions"].pop("3") + [0.9999]}),
     "holds bespoke coefficients for 3 steps but no σ's for 3 steps"),
    # a hand-edited σ range said "leave --sigma-max at the value it was fitted with", unset
    (lambda d: d.pop("sigma_min"), "but no σ range they were fitted on (sigma_min, "
     "sigma_max: two numbers with 0 < sigma_min < sigma_max, got missing, 80.0)"),
    (lambda d: d.update(sigma_max="80"), ', "80"); refit it with glidectl fit-steps'),
    (lambda d: d.update(sigma_min=100.0), "got 100.0, 80.0); refit it with glidectl fit-steps"),
])
def test_a_damaged_schedule_file_is_one_sentence_before_sampling(capsys, weights, tmp_path,
                                                                 change, message) -> None:
    path = bespoke_file(tmp_path / "s.json")
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    for cmd in ("sample", "eval"):
        args = (["a cat"] if cmd == "sample" else [str(tmp_path / "p.txt")])
        (tmp_path / "p.txt").write_text("a cat\n")
        res = in_process(capsys, cmd, *args, "--base", str(weights["base"]), "--sampler", "bespoke",
                             "--steps", "3", "--schedule", str(path), "--out",
                             str(tmp_path / cmd))
        assert res.returncode == 2 and res.stderr.count("Error:") == 1, res.stderr
        assert message in res.stderr and "Traceback" not in res.stderr, res.stderr
        assert not (tmp_path / cmd).exists()  # nothing written, metadata.json included


def test_bespoke_without_steps_takes_the_count_its_file_holds(capsys, weights, tmp_path):
    """It took the default 25 steps and stopped: the file has no solver for them. sample and
    eval take its one count; a file of several names them."""
    path = bespoke_file(tmp_path / "s.json")
    (tmp_path / "p.txt").write_text("a cat\n")
    for cmd, arg in (("sample", "a cat"), ("eval", str(tmp_path / "p.txt"))):
        res = in_process(capsys, cmd, arg, "--base", str(weights["base"]), "--upsampler",
                         "none", "--sampler", "bespoke", "--schedule", str(path), "--precision",
                         "fp32", "--out", str(tmp_path / cmd))
        assert res.returncode == 0, res.stderr
    assert Image.open(tmp_path / "sample" / "00000.png").text["steps"] == "3"
    meta = json.loads((tmp_path / "eval" / "metadata.json").read_text())
    assert meta["settings"]["base_stage"]["steps"] == 3
    data = json.loads(path.read_text())
    rows = data["coefficients"]["3"]
    path.write_text(json.dumps({**data, "coefficients": {"3": rows, "5": rows, "10": rows}}))
    for cmd, arg in (("sample", "a cat"), ("eval", str(tmp_path / "p.txt"))):
        res = in_process(capsys, cmd, arg, "--base", str(weights["base"]), "--sampler",
                         "bespoke", "--schedule", str(path), "--out", str(tmp_path / "e"))
        assert res.returncode == 2 and res.stderr.count("Error:") == 1, res.stderr
        assert res.stderr.endswith(f"Schedule file {str(path)!r} holds bespoke coefficients "
                                   "for 3, 5 and 10 steps; pass --steps with one of those "
                                   "counts.\n"), res.stderr


def test_a_file_fitted_to_other_weights_is_named_and_steps_sigma_max_are_bounded(
        run, weights, tmp_path) -> None:
    path = bespoke_file(tmp_path / "s.json")  # records another model's sha256
    res = run("a cat", "--base", str(weights["base"]), "--sampler", "bespoke", "--steps", "3",
              "--schedule", str(path), "-q", "--precision", "fp32", "--out", str(tmp_path / "o"))
    assert res.returncode == 0, res.stderr
    assert "was fitted to other weights (sha256 000000000000…)" in res.stderr, res.stderr
    # the refit writes the model's own file, not over s.json, which suits its own model
    own = weights["base"].with_name(f"{weights['base'].stem}-schedule.json")
    assert f"--method bespoke --calls 3 --guidance 3 --out {own}." in res.stderr, res.stderr
    assert "--overwrite" not in res.stderr, res.stderr
    for args, message in ((("--steps", "10001"), "--steps must be from 1 to 10000"),
                          (("--schedule", "karras", "--sigma-max", "0.001"),
                           "sigma_max (--sigma-max) 0.001 is not above this model's smallest")):
        res = run("a cat", "--base", str(weights["base"]), *args, "-q", "--out",
                  str(tmp_path / "e"))
        assert res.returncode == 2 and res.stderr.count("Error:") == 1, res.stderr
        assert message in res.stderr, res.stderr


def test_a_file_fitted_to_the_other_ode_than_the_one_sampled_is_named(run, weights,
                                                                      tmp_path) -> None:
    """fit-steps records whether it fitted grey sampling's ODE; sampling the other one with
    that file says so (its steps suit the other ODE), and the same one says nothing."""
    path = bespoke_file(tmp_path / "s.json")
    data = json.loads(path.read_text())
    for fitted, flag, said in ((True, "--no-grey", "was fitted to grey sampling's ODE, and "
                                "these images sample in colour: its steps suit the other ODE; "
                                "sample with --grey, or refit it with glidectl fit-steps "),
                               (False, "--grey", "was fitted to the colour ODE, and these "
                                "images sample grey: its steps suit the other ODE; sample with "
                                "--no-grey, or refit it with glidectl fit-steps "),
                               (True, "--grey", None), (None, "--grey", None)):
        data.pop("grey", None)
        if fitted is not None:
            data["grey"] = fitted
        path.write_text(json.dumps(data))
        res = run("a cat", "--base", str(weights["base"]), "--sampler", "bespoke", "--steps",
                  "3", "--schedule", str(path), flag, "-q", "--precision", "fp32", "--out",
                  str(tmp_path / f"o{fitted}{flag}"))
        assert res.returncode == 0, res.stderr
        assert (said in res.stderr) if said else ("these images sample" not in res.stderr)
        if said:  # the refit names the other ODE's flag, the guidance sampled and the file
            assert (f"--method bespoke --calls 3 --guidance 3 "
                    f"{'--no-grey' if fitted else '--grey'} --out") in res.stderr, res.stderr


def test_a_file_fitted_at_another_guidance_than_the_one_sampled_is_named(run, weights,
                                                                         tmp_path) -> None:
    """fit-steps records the guidance it fitted at; sampling at another says so in one line
    with the refit at the guidance sampled, and the same guidance says nothing."""
    path = bespoke_file(tmp_path / "s.json")
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "guidance": 3}))
    for guidance, said in (("5", True), ("3", False)):
        res = run("a cat", "--base", str(weights["base"]), "--sampler", "bespoke", "--steps",
                  "3", "--schedule", str(path), "--guidance", guidance, "-q", "--precision",
                  "fp32", "--out", str(tmp_path / f"o{guidance}"))
        assert res.returncode == 0, res.stderr
        assert (f"Schedule file {str(path)!r} was fitted at guidance 3, and these images "
                "sample at 5: its steps suit the other ODE; sample with --guidance 3, or "
                "refit it with glidectl fit-steps " in res.stderr) is said, res.stderr
        assert ("--method bespoke --calls 3 --guidance 5 --out" in res.stderr) is said


def test_a_base_file_on_the_upsampler_at_another_guidance_names_no_guidance_fix(
        run, weights, tmp_path) -> None:
    """It said "sample with --upsample-guidance 3" beside the warning that the file is
    another model's: that guidance leaves the file on the wrong model."""
    path = bespoke_file(tmp_path / "s.json")  # records another model's sha256
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "guidance": 3, "grey": True}))
    Image.new("RGB", (8, 8), (0, 0, 255)).save(tmp_path / "low.png")
    res = run("a cat", "--base", "none", "--upsampler", str(weights["upsample"]), "--low-res",
              str(tmp_path / "low.png"), "--upsample-sampler", "dpm++2m", "--upsample-steps",
              "3", "--upsample-schedule", str(path), "--upsample-guidance", "5", "--no-grey",
              "-q", "--precision", "fp32", "--out", str(tmp_path / "o"))
    assert "was fitted to other weights" in res.stderr, res.stderr
    drop = "drop it from the upsampler stage (glidectl fit-steps fits base models only)."
    assert (f"sample at 5: its steps suit the other ODE; {drop}" in res.stderr
            and f"sample in colour: its steps suit the other ODE; {drop}" in res.stderr)
    assert "sample with --upsample-guidance" not in res.stderr, res.stderr
    assert "sample with --grey" not in res.stderr, res.stderr


def test_boolean_flags_show_no_type_in_help(run) -> None:
    res = run("--help")
    assert res.returncode == 0
    flags = [ln for ln in res.stdout.splitlines() if "--grid" in ln or "--quiet" in ln]
    assert len(flags) == 2 and not any("<bool>" in ln for ln in flags)


def _sample_in_background(*args: str) -> subprocess.Popen:
    """``glidectl sample ARGS`` on one thread, interruptible by SIGINT as in a terminal."""
    import signal

    return subprocess.Popen(
        [sys.executable, "-m", "glidectl", "sample", *args], env={**os.environ,
                                                                "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for(proc: subprocess.Popen, done, deadline: float) -> None:
    """Poll until ``done()``, failing with the process's output if it ends first."""
    import time

    while time.monotonic() < deadline and not done():
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)


def _interrupt(proc: subprocess.Popen, sig: str = "SIGINT") -> tuple[str, str]:
    """Ctrl-C (or another signal), then the process's stdout and stderr."""
    import signal

    try:
        proc.send_signal(getattr(signal, sig))
        return proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_ctrl_c_keeps_the_images_already_written(weights, tmp_path, sig) -> None:
    """Each batch is written when it is done: Ctrl-C keeps them, names them and says how many;
    SIGTERM (kill, timeout, a scheduler) too (it ended the process without a word)."""
    import time

    out = tmp_path / "out"
    proc = _sample_in_background(
        "a red cube", "--base", str(weights["base"]), "--upsampler", "none", "--n", "60",
        "--batch-size", "2", "--steps", "20", "--out", str(out), "--device", "cpu", "-q")
    try:
        _wait_for(proc, lambda: len(list(out.glob("0*.png"))) >= 2, time.monotonic() + 120)
    finally:
        stdout, stderr = _interrupt(proc, sig)
    assert proc.returncode == 130, stderr
    pngs = sorted(out.glob("0*.png"))
    assert 2 <= len(pngs) < 60 and stdout.split() == [str(p) for p in pngs]
    assert f"Interrupted: {len(pngs)} of 60 images were written to {str(out)!r}; no grid." \
        in stderr and "Traceback" not in stderr
    seeds = [json.loads(Image.open(p).text["parameters"])["seed"] for p in pngs]
    assert seeds == list(range(len(pngs)))


def test_a_reader_that_stops_early_cuts_the_list_not_the_grid(weights, tmp_path) -> None:
    """`sample … --grid | head -1`: the grid was written after the list of files, so a
    reader gone before its end meant no grid (exit 1, no word); every file is on disk first."""
    out = tmp_path / "out"
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "glidectl", "sample", "a red cube", "--base",
             str(weights["base"]), "--upsampler", "none", "--n", "2", "--steps", "1", "--grid",
             "--out", str(out), "--device", "cpu", "-q"], stdout=write, stderr=subprocess.PIPE,
            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    finally:
        os.close(write)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["00000.png", "00001.png",
                                                     "grid-00000.png"]


def test_two_samples_writing_into_one_folder_never_overwrite_each_other(run, weights,
                                                                        tmp_path) -> None:
    """A run that starts while another is writing into the same folder takes the next free
    number; the first run's later batches skip it instead of writing over it."""
    import time

    out = tmp_path / "out"
    proc = _sample_in_background("a red cube", "--base", str(weights["base"]), "--n", "200",
                                 "--batch-size", "1", "--steps", "20", "--out", str(out), "-q")
    try:
        deadline = time.monotonic() + 120
        _wait_for(proc, (out / "00000.png").exists, deadline)
        other = run("a blue ball", "--base", str(weights["base"]), "--steps", "1", "-q",
                    "--out", str(out), "--grid")
        assert other.returncode == 0, other.stderr
        mine, grid = map(Path, other.stdout.split())
        taken = int(mine.stem)
        _wait_for(proc, (out / f"{taken + 2:05d}.png").exists, deadline)
    finally:
        stdout, stderr = _interrupt(proc)
    first = [Path(p) for p in stdout.split()]
    assert mine not in first and out / f"{taken + 1:05d}.png" in first, (stdout, stderr)
    assert Image.open(mine).text["prompt"] == "a blue ball"
    assert {Image.open(p).text["prompt"] for p in first} == {"a red cube"}
    assert grid.name == f"grid-{taken:05d}.png"


def test_the_upsampler_takes_its_own_schedule(run, weights, tmp_path) -> None:
    """A respacing string under another upsample sampler needs --upsample-schedule respaced,
    and the error names that flag, not the base's --schedule."""
    Image.new("RGB", (8, 8), (0, 0, 255)).save(tmp_path / "low.png")
    args = ["a cat", "--base", "none", "--upsampler", str(weights["upsample"]), "-q",
            "--low-res", str(tmp_path / "low.png"), "--upsample-sampler", "euler",
            "--upsample-steps", "ddim5"]
    res = run(*args, "--out", str(tmp_path / "a"))
    assert res.returncode == 2 and "--upsample-schedule respaced" in res.stderr, res.stderr
    res = run(*args, "--upsample-schedule", "respaced", "--out", str(tmp_path / "b"))
    assert res.returncode == 0, res.stderr
    text = Image.open(tmp_path / "b" / "00000.png").text
    assert (text["upsample_schedule"], text["model_calls"]) == ("respaced", "5")
    # the advice named glidectl fit-steps, which refuses upsamplers
    args = args[:-4]
    res = run(*args, "--upsample-sampler", "bespoke", "--out", str(tmp_path / "c"))
    assert res.returncode == 2 and res.stderr.endswith(
        "Upsampler: The bespoke sampler needs coefficients fitted to the model; glidectl "
        "fit-steps fits base models only, so pick another --upsample-sampler or "
        "--upsample-schedule.\n"), res.stderr
    res = run(*args, "--upsample-schedule", str(tmp_path / "gone.json"), "--out",
              str(tmp_path / "d"))
    assert res.returncode == 2 and "does not exist; glidectl fit-steps fits base models " \
        "only, so pick another --upsample-sampler or --upsample-schedule." in res.stderr, \
        res.stderr
    # other errors that name fit-steps keep their words (the list of schedules was cut)
    res = run(*args, "--upsample-schedule", "karas", "--out", str(tmp_path / "e"))
    assert res.returncode == 2 and "Did you mean 'karras'? Available: exponential" in \
        res.stderr and "FILE.json from glidectl fit-steps." in res.stderr, res.stderr


def test_flags_that_would_not_be_used_are_named(run, weights, tmp_path) -> None:
    res = run("a cat", "--base", str(weights["base"]), "--upsampler", "none", "--steps", "2",
              "-q", "--upsample-steps", "50", "--out", str(tmp_path / "a"))
    assert res.returncode == 0, res.stderr
    assert "Warning: --upsample-steps not used: this run has no upsampler." in res.stderr
    Image.new("RGB", (8, 8), (0, 0, 255)).save(tmp_path / "low.png")
    res = run("a cat", "--base", str(weights["base"]), "--upsampler", str(weights["upsample"]),
              "--low-res", str(tmp_path / "low.png"), "--upsample-steps", "2", "-q",
              "--out", str(tmp_path / "b"))
    assert res.returncode == 0, res.stderr
    assert "Warning: --base not used: --low-res upsamples the given image" in res.stderr
    res = run("a cat", "--base", "openai:base", "--upsampler", str(weights["upsample"]),
              "--low-res", str(tmp_path / "low.png"), "--upsample-steps", "2", "-q",
              "--out", str(tmp_path / "c"))  # the default spelled out is still not used
    assert res.returncode == 0, res.stderr
    assert "Warning: --base not used: --low-res upsamples the given image" in res.stderr
    # the base stage's flags were dropped without a word (eval --low-res refuses them)
    res = run("a cat", "--base", "none", "--upsampler", str(weights["upsample"]),
              "--low-res", str(tmp_path / "low.png"), "--upsample-steps", "2", "-q",
              "--steps", "8", "--guidance", "7", "--dynamic-threshold", "90",
              "--out", str(tmp_path / "d"))
    assert res.returncode == 0, res.stderr
    assert ("Warning: --steps, --guidance, --dynamic-threshold not used: with --low-res only "
            "the upsampler runs (--upsample-sampler, --upsample-steps, --upsample-schedule "
            "and --upsample-guidance set it).") in res.stderr


def test_a_schedule_file_of_a_stage_that_does_not_run_warns_only_that_it_is_unused(
        run, weights, tmp_path) -> None:
    """`--upsample-schedule FILE` on a run with no upsampler (and `--schedule FILE` with
    `--low-res`) said the file was tuned for ddpm and fitted at guidance 1, advising
    --upsample-sampler and --upsample-guidance for a stage that never ran."""
    path = bespoke_file(tmp_path / "s.json")
    path.write_text(json.dumps({**json.loads(path.read_text()), "sampler": "unipc",
                                "guidance": 5.0}))
    res = run("a cat", "--base", str(weights["base"]), "--upsampler", "none", "--steps", "2",
              "-q", "--upsample-schedule", str(path), "--out", str(tmp_path / "a"))
    assert res.returncode == 0, res.stderr
    assert "Warning: --upsample-schedule not used: this run has no upsampler." in res.stderr
    assert "Schedule file" not in res.stderr, res.stderr
    Image.new("RGB", (8, 8), (0, 0, 255)).save(tmp_path / "low.png")
    res = run("a cat", "--base", str(weights["base"]), "--upsampler", str(weights["upsample"]),
              "--low-res", str(tmp_path / "low.png"), "--upsample-steps", "2", "-q",
              "--schedule", str(path), "--out", str(tmp_path / "b"))
    assert res.returncode == 0, res.stderr
    assert "not used" in res.stderr and "Schedule file" not in res.stderr, res.stderr


@pytest.mark.parametrize("args, flags, why", [
    (("--sampler", "ddim", "--sigma-max", "5"), ["--sigma-max"],
     "the respaced schedule (GLIDE's own timesteps) starts at the model's top σ"),
    (("--guidance", "1", "--guidance-interval", "0.3,5", "--guidance-rescale", "0.7"),
     ["--guidance-interval", "--guidance-rescale"], "guidance 1 is the conditional model alone"),
    (("--guidance-interval", "100,200"), ["--guidance-interval"],
     "100,200 holds none of the σ's sampled"),
    (("--guidance-interval", "0.3,5", "--guidance-rescale", "0.5", "--sigma-max", "20"), [],
     None),
])
def test_flags_that_change_no_pixel_are_named(run, weights, tmp_path, args, flags, why):
    res = run("a cat", "--base", str(weights["base"]), "--steps", "3", "-q",
              *args, "--out", str(tmp_path / "o"))
    assert res.returncode == 0, res.stderr
    named = [line.split()[1] for line in res.stderr.splitlines() if " not used: " in line]
    assert named == flags, res.stderr
    assert why is None or why in res.stderr


def test_eta_for_a_sampler_without_one_is_named_and_not_recorded(run, weights, tmp_path):
    for sampler, used in (("euler", False), ("ddim", True)):
        out = tmp_path / sampler
        res = run("a cat", "--base", str(weights["base"]), "--sampler", sampler, "--steps", "2",
                  "--eta", "0.5", "-q", "--out", str(out))
        assert res.returncode == 0, res.stderr
        warned = "Warning: --eta not used: the euler sampler takes no η" in res.stderr
        assert warned != used, res.stderr
        params = json.loads(Image.open(out / "00000.png").text["parameters"])
        assert params["eta"] == (0.5 if used else None)


def test_an_inpaint_model_without_image_and_mask_says_it_draws_everything(run, weights,
                                                                         tmp_path) -> None:
    res = run("a cat", "--base", str(weights["inpaint"]), "--steps", "2", "-q",
              "--out", str(tmp_path / "o"))
    assert res.returncode == 0, res.stderr
    assert "A base-inpaint model without an inpaint image and mask draws the whole" in res.stderr


def test_half_an_inpainting_pair_is_refused_before_any_model_loads(run, tmp_path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "image.png")
    res = run("a cat", "--base", str(tmp_path / "not-loaded.safetensors"), "--inpaint-image",
              str(tmp_path / "image.png"), "--out", str(tmp_path / "o"))
    assert res.returncode == 2, res.stderr
    assert res.stderr == "Error: Inpainting needs both --inpaint-image and --inpaint-mask.\n"


def test_a_folder_as_an_image_says_it_is_a_folder(run, weights, tmp_path) -> None:
    res = run("a cat", "--base", "none", "--upsampler", str(weights["upsample"]),
              "--low-res", str(tmp_path), "--out", str(tmp_path / "o"))
    assert res.returncode == 2 and "is a folder; pass an image file" in res.stderr, res.stderr


@pytest.mark.parametrize("flag", ["--low-res", "--inpaint-image", "--inpaint-mask"])
def test_an_input_that_is_no_image_is_refused_before_any_model_loads(run, tmp_path, monkeypatch,
                                                                     flag) -> None:
    """An unreadable --low-res was refused only after the models loaded, below an empty
    `0/?` progress bar."""
    from glidectl.glide import loading

    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    (tmp_path / "bad.png").write_text("not an image")
    Image.new("RGB", (8, 8)).save(tmp_path / "good.png")
    def image(name: str) -> str:
        return str(tmp_path / ("bad.png" if name == flag else "good.png"))

    models = (["--base", "none", "--upsampler", str(tmp_path / "up.safetensors"),
               "--low-res", image("--low-res")] if flag == "--low-res" else
              ["--base", str(tmp_path / "inpaint.safetensors"), "--inpaint-image",
               image("--inpaint-image"), "--inpaint-mask", image("--inpaint-mask")])
    res = run("a cat", *models, "--out", str(tmp_path / "o"))
    assert res.returncode == 2 and res.stderr == (
        f"Error: Cannot read image {str(tmp_path / 'bad.png')!r} (cannot identify image file "
        f"{str(tmp_path / 'bad.png')!r}); pass a PNG or JPEG.\n"), res.stderr
    assert not (tmp_path / "o").exists()


def test_a_bespoke_stage_without_its_file_is_refused_before_anything_runs(capsys, weights,
                                                                          tmp_path) -> None:
    """Checked with the model calls, before any sampling: eval leaves no half-begun folder,
    and an upsampler's message names the upsampler's flag."""
    (tmp_path / "p.txt").write_text("a cat\n")
    models = ("--base", str(weights["base"]), "--upsampler", str(weights["upsample"]),
              "--steps", "2")
    cases = [
        ("sample", "a cat", *models, "--upsample-sampler", "bespoke", "--upsample-steps", "2"),
        ("eval", tmp_path / "p.txt", *models, "--upsample-sampler", "bespoke", "--dry-run"),
        ("eval", tmp_path / "p.txt", *models[:2], "--sampler", "bespoke"),
    ]
    for k, args in enumerate(cases):
        res = in_process(capsys, *args, "--out", tmp_path / f"o{k}", "--precision", "fp32")
        assert res.returncode == 2 and res.stderr.count("Error:") == 1, res.stderr
        # fit-steps fits base models only: the upsampler's names its other choices
        flag = "--schedule " if "--sampler" in args else \
            "pick another --upsample-sampler or --upsample-schedule."
        assert flag in res.stderr and "Traceback" not in res.stderr, res.stderr
        upsampler = "Upsampler: " in res.stderr or "--upsample-steps fast27: " in res.stderr
        assert upsampler == ("--upsample-sampler" in args), res.stderr
        assert not (tmp_path / f"o{k}").exists(), args


def test_the_upsampler_default_steps_fit_the_upsample_sampler_s_schedule(capsys, weights,
                                                                       tmp_path) -> None:
    """The default fast27 is a respacing string: `--upsample-sampler euler` alone (12 of 16
    samplers) failed naming --upsample-steps, which no one passed. Off respaced steps the
    default is the same 27 steps, in sample, eval and generate()."""
    from glidectl.pipeline import GlidePipeline

    models = ("--base", str(weights["base"]), "--upsampler", str(weights["upsample"]),
              "--steps", "2")
    res = in_process(capsys, "sample", "a cat", *models, "--upsample-sampler", "euler", "-q",
                     "--out", tmp_path / "a")
    assert res.returncode == 0, res.stderr
    params = json.loads(Image.open(tmp_path / "a" / "00000.png").text["parameters"])
    assert (params["upsample_sampler"], params["upsample_steps"],
            params["upsample_schedule"]) == ("euler", "27", "karras")
    res = in_process(capsys, "sample", "a cat", *models, "-q", "--out", tmp_path / "b")
    params = json.loads(Image.open(tmp_path / "b" / "00000.png").text["parameters"])
    assert (params["upsample_sampler"], params["upsample_steps"]) == ("ddpm", "fast27")
    (tmp_path / "p.txt").write_text("a cat\n")
    res = in_process(capsys, "eval", tmp_path / "p.txt", *models, "--upsample-sampler",
                     "dpm++2m", "--dry-run", "--out", tmp_path / "e")
    assert res.returncode == 0, res.stderr
    pipe = GlidePipeline.from_specs(str(weights["base"]), str(weights["upsample"]),
                                    device="cpu")
    _, up, _ = pipe.stages(upsample_sampler="heun")
    assert (up.steps, up.sampler_spec().schedule) == (27, "karras")
    _, up, _ = pipe.stages(upsample_sampler="euler", upsample_schedule="respaced")
    assert up.steps == "fast27"


def test_steps_no_schedule_can_take_name_their_flag(capsys, weights, tmp_path) -> None:
    """``--upsample-steps abc`` said ``Upsampler: Bad timestep respacing 'abc'``, which the
    web UI pinned on its upsampler list, not its steps box; ``--steps abc`` named no flag."""
    models = ("--base", str(weights["base"]), "--upsampler", str(weights["upsample"]))
    for flag, said in (("--steps", "the exponential schedule needs a whole number of steps"),
                       ("--upsample-steps", "bad timestep respacing 'abc'")):
        res = in_process(capsys, "sample", "a cat", *models, flag, "abc", "--out",
                         tmp_path / "o")
        assert res.returncode == 2, res.stderr
        assert res.stderr.splitlines()[-1].startswith(f"Error: {flag} abc: {said}"), res.stderr
        assert not (tmp_path / "o").exists()


def test_a_folder_that_stops_taking_files_keeps_and_counts_the_images_written(weights,
                                                                               tmp_path):
    """The folder turned read-only mid-run (as a full disk): one line naming the file and
    how many images were written before it, which are listed; exit 1."""
    import time

    from data_helpers import without_root_powers

    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen(
        [*without_root_powers(), sys.executable, "-m", "glidectl", "sample", "a red cube",
         "--base", str(weights["base"]), "--upsampler", "none", "--n", "60", "--batch-size",
         "2", "--steps", "20", "--out", str(out), "--device", "cpu", "-q"],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(proc, lambda: len(list(out.glob("0*.png"))) >= 2, time.monotonic() + 120)
        out.chmod(0o555)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        out.chmod(0o755)
        if proc.poll() is None:
            proc.kill()
    pngs = sorted(out.glob("0*.png"))
    assert proc.returncode == 1 and "Traceback" not in stderr, stderr
    assert 2 <= len(pngs) < 60 and stdout.split() == [str(p) for p in pngs]
    error = stderr.strip().splitlines()[-1]
    assert error.startswith(f"Error: Cannot write {str(out / f'{len(pngs):05d}.png')!r}")
    assert error.endswith(f"; {len(pngs)} of 60 images were written before it.")


def test_a_grid_that_cannot_be_written_counts_the_images_written(run, weights, tmp_path,
                                                                 monkeypatch) -> None:
    """A full disk at the grid named only the grid, as if nothing was kept; the README says
    sample then says how many images it wrote, as it does when an image fails."""
    from glidectl.cli import sample_cmd
    from glidectl.errors import WriteError

    def full(self, seed: int) -> Path:
        raise WriteError(f"Cannot write {str(tmp_path / 'grid-00000.png')!r} (No space left "
                         "on device); free disk space and try again.")

    monkeypatch.setattr(sample_cmd._Writer, "grid", full)
    res = run("a cat", "--base", weights["base"], "--upsampler", "none", "--n", "3",
              "--steps", "1", "-q", "--grid", "--out", tmp_path)
    assert res.returncode == 1 and res.stderr.count("Error:") == 1, res.stderr
    assert res.stderr.endswith("free disk space and try again; 3 of 3 images were written "
                               "before it.\n")
    assert res.stdout.split() == [str(tmp_path / f"{i:05d}.png") for i in range(3)]


def test_the_upsampler_s_schedule_file_warning_names_its_own_flags() -> None:
    """It advised `--sampler bespoke` (the base's flag) and fitting the upsampler with
    glidectl fit-steps, which fits base models only."""
    from glidectl.sampling import upsampler_words

    said = ("Schedule file 'b.json' was tuned for the bespoke sampler, not ddpm: its steps may "
            "be worse than its own respaced schedule for ddpm; sample with --sampler bespoke, "
            "or fit a file for ddpm with glidectl fit-steps MODEL --sampler ddpm.")
    assert upsampler_words(said) == (
        "Schedule file 'b.json' was tuned for the bespoke sampler, not ddpm: its steps may be "
        "worse than its own respaced schedule for ddpm; sample with --upsample-sampler "
        "bespoke; glidectl fit-steps fits base models only, so pick another "
        "--upsample-sampler or --upsample-schedule.")


def test_the_same_weights_in_another_file_are_not_other_weights(run, weights, tmp_path) -> None:
    """fit-steps records the weights' tensors too: an export of the run it was fitted on
    (other metadata, so another file sha256) samples without the refit warning."""
    from glidectl.glide import read_weights, save_weights
    from glidectl.glide.checkpoints import state_sha256

    state, options = read_weights(weights["base"])
    copy = save_weights(state, tmp_path / "export.safetensors", options, {"run": "elsewhere"})
    path = bespoke_file(tmp_path / "s.json")
    data = json.loads(path.read_text())
    for tensors, warned in ((state_sha256(state), False), ("1" * 64, True)):
        path.write_text(json.dumps({**data, "weights_sha256": tensors}))
        res = run("a cat", "--base", str(copy), "--sampler", "bespoke", "--steps", "3",
                  "--schedule", str(path), "-q", "--out", str(tmp_path / f"o{warned}"))
        assert res.returncode == 0, res.stderr
        assert ("was fitted to other weights" in res.stderr) == warned, res.stderr


def test_a_file_fitted_without_the_lora_sampled_is_named(run, weights, tmp_path) -> None:
    """`sample --base B --lora A --schedule FILE` with FILE fitted to B alone (fit-steps fits
    no adapters) warned of nothing, though B + A runs another ODE."""
    import shutil

    from tiny_configs import random_attention_adapter

    from glidectl.pipeline import file_sha256

    base = Path(shutil.copy(weights["base"], tmp_path / "base.safetensors"))
    adapter = random_attention_adapter(tmp_path, "base.safetensors", std=0.1)
    path = bespoke_file(tmp_path / "s.json")
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "model_sha256": file_sha256(base)}))
    common = ("a cat", "--base", str(base), "--sampler", "bespoke", "--steps", "3",
              "--schedule", str(path), "-q", "--precision", "fp32")
    for lora, warned in (([], False), (["--lora", f"{adapter}:0"], False),
                         (["--lora", f"{adapter}:0.5"], True)):
        res = run(*common, *lora, "--out", str(tmp_path / f"o{len(lora)}{warned}"))
        assert res.returncode == 0, res.stderr
        assert ("was fitted to weights without LoRA adapters" in res.stderr) == warned, \
            res.stderr
    assert (f"these images sample {base} with --lora {adapter}:0.5: its steps suit another "
            f"model's ODE; fold it in (glidectl lora merge {adapter} --base {base} --scale 0.5 "
            "-o merged.safetensors), fit that with glidectl fit-steps merged.safetensors "
            "--prompts PROMPTS.txt --method bespoke --calls 3") in res.stderr, res.stderr
    # the refit writes a new file: FILE still suits B alone (it said --out FILE --overwrite)
    said = " ".join(res.stderr.split())
    assert ("--out merged-schedule.json and sample merged.safetensors with --schedule "
            "merged-schedule.json instead.") in said, said
    assert "--overwrite" not in said and f"--out {path}" not in said, said


def test_an_input_image_past_pillow_s_limit_is_one_sentence(run, weights, tmp_path):
    """A 182-megapixel mask (22 KB as a 1-bit PNG) was PIL's traceback, exit 1."""
    Image.new("1", (14000, 13000), 0).save(tmp_path / "huge.png")
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "image.png")
    res = run("a cat", "--base", str(weights["inpaint"]), "--steps", "2", "-q",
              "--inpaint-image", str(tmp_path / "image.png"),
              "--inpaint-mask", str(tmp_path / "huge.png"), "--out", str(tmp_path / "o"))
    assert res.returncode == 2 and res.stderr.count("Error:") == 1, res.stderr
    assert "Traceback" not in res.stderr and "Warning" not in res.stderr
    assert "exceeds limit of" in res.stderr and "decompression bombs" in res.stderr


def test_the_weights_tensors_are_hashed_once_for_a_schedule_file_s_check(weights, tmp_path,
                                                                          monkeypatch):
    """A schedule file fitted to the same weights in another file is checked by the
    tensors' sha256: hashed once a pipeline, not on every generate() (eval: every batch)."""
    from glidectl.glide import checkpoints, read_weights, save_weights
    from glidectl.pipeline import GlidePipeline

    state, options = read_weights(weights["base"])
    copy = save_weights(state, tmp_path / "export.safetensors", options, {"run": "elsewhere"})
    path = bespoke_file(tmp_path / "s.json")
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "weights_sha256": checkpoints.state_sha256(state)}))
    calls, real = [], checkpoints.state_sha256
    monkeypatch.setattr(checkpoints, "state_sha256", lambda s: calls.append(1) or real(s))
    pipe = GlidePipeline.from_specs(str(copy), None, device="cpu", precision="fp32")
    for _ in range(3):
        pipe.generate("a cat", sampler="bespoke", steps=3, schedule=str(path), warn=print)
    assert len(calls) == 1


@pytest.mark.parametrize("setting", [{"schedule": 5}, {"guidance": "x"}, {"sampler": ["a"]},
                                     {"prompts": 5}])
def test_a_recommended_setting_of_the_wrong_type_is_one_sentence(run, tmp_path, setting):
    """A weights file whose glidectl.sampling metadata held a number for the schedule or
    text for guidance was a traceback (AttributeError, ValueError), exit 1; a list for the
    sampler or a number for the prompts (the web UI's examples) was taken as it was."""
    from glidectl.glide import save_weights
    from glidectl.pipeline import RECOMMENDED_KEY

    base = save_weights(tiny_glide("base", 0), tmp_path / "base.safetensors",
                        metadata={RECOMMENDED_KEY: json.dumps(setting)})
    res = run("a cat", "--base", str(base), "--steps", "1", "-q", "--out", str(tmp_path / "o"))
    [(key, value)] = setting.items()
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.startswith(f"Error: {str(base)!r} recommends {key} = "
                                 f"{json.dumps(value)} in its {RECOMMENDED_KEY} metadata")
    assert not (tmp_path / "o").exists()


def test_a_warning_prints_the_prompt_as_written(run, weights, tmp_path) -> None:
    """Warnings went through rich markup: a cut prompt "a [red] cat …" was said as "a  cat
    …", the [red] taken for a colour (and "[/x]" would have been a MarkupError)."""
    prompt = "a [red] cat on a [/x] mat by the door"  # past the tiny model's 16 tokens
    res = run(prompt, "--base", weights["base"], "--upsampler", "none", "--steps", "1",
              "-q", "--out", tmp_path / "o")
    assert res.returncode == 0, res.stderr
    assert f"Warning: Prompt {prompt!r} is 37 tokens but the model reads 16: the last 21 " \
        "tokens were dropped.\n" in res.stderr, res.stderr
