"""Choice words (precision, device kinds, fit methods, config keys with fixed values, sampler
and schedule names) are read in any case on every surface and kept as the lower-case word."""

from __future__ import annotations

import json
from typing import Any

import pytest

from glidectl.errors import GlidectlError


def _config(*overrides: str) -> Any:
    from glidectl.config import load_config

    return load_config(None, list(overrides))


def _toml(tmp_path, text: str) -> Any:
    from glidectl.config import load_config

    path = tmp_path / "glide.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def _eval_stage() -> tuple[str, str | None]:
    from glidectl.eval_settings import EvalSettings, Stage

    stage = EvalSettings(base_stage=Stage("DDIM", 2, 3.0, "Karras")).base_stage
    return stage.sampler, stage.schedule


SURFACES = [  # (what, call, the word it must give)
    ("check_precision", lambda tmp: __import__("glidectl.devices").devices.check_precision(
        "FP32"), "fp32"),
    ("check_precision alias", lambda tmp: __import__("glidectl.devices").devices
     .check_precision("No"), "fp32"),
    ("pick_device", lambda tmp: __import__("glidectl.devices").devices.pick_device("CPU"),
     "cpu"),
    ("fit-steps --method", lambda tmp: __import__("glidectl.step_fitting").step_fitting
     .check_method("BESPOKE", "UniPC", [10]), ("bespoke", "unipc")),
    ("--set train.precision", lambda tmp: _config("train.precision=BF16").train.precision,
     "bf16"),
    ("--set model.kind", lambda tmp: _config("model.kind=Base-Inpaint").model.kind,
     "base-inpaint"),
    ("toml lr_schedule", lambda tmp: _toml(tmp, '[train]\nlr_schedule = "Cosine"\n')
     .train.lr_schedule, "cosine"),
    ("toml log.trackers", lambda tmp: _toml(tmp, '[log]\ntrackers = ["TensorBoard"]\n')
     .log.trackers, ["tensorboard"]),
    ("toml lora.targets", lambda tmp: _toml(tmp, '[lora]\ntargets = ["MLP", "conv"]\n')
     .lora.targets, ["mlp", "conv"]),
    ("--low-res-resample", lambda tmp: __import__("glidectl.sampling").sampling
     .resample_word("BiCubic"), "bicubic"),
    ("--wandb-mode", lambda tmp: __import__("glidectl.eval_outputs").eval_outputs
     .check_wandb_mode("Offline"), "offline"),
    ("EvalSettings precision", lambda tmp: __import__("glidectl.eval_settings").eval_settings
     .EvalSettings(precision="BF16").precision, "bf16"),
    ("EvalSettings stage", lambda tmp: _eval_stage(), ("ddim", "karras")),
    ("ui schedule", lambda tmp: __import__("glidectl.ui.backend").ui.backend.UiBackend(
        output_dir=tmp)._schedule("Karras", None), "karras"),
    ("schedule file", lambda tmp: __import__("glidectl.sampling").sampling.stage_word(
        "schedule", "Fitted.JSON"), "Fitted.JSON"),  # a file's name: as given
]


@pytest.mark.parametrize(("call", "word"), [s[1:] for s in SURFACES],
                         ids=[s[0] for s in SURFACES])
def test_choice_words_are_read_in_any_case(tmp_path, call, word) -> None:
    assert call(tmp_path) == word


@pytest.mark.parametrize("call", [
    lambda: __import__("glidectl.devices").devices.check_precision("ＦＰ32"),  # not ASCII
    lambda: _config("train.precision=fp64"),
    lambda: __import__("glidectl.step_fitting").step_fitting.check_method("Newton", "unipc",
                                                                          [10]),
], ids=["fullwidth", "no such word", "no such method"])
def test_other_words_are_still_refused(call) -> None:
    with pytest.raises(GlidectlError):
        call()


def test_sample_records_the_lower_case_words(tmp_path) -> None:
    """``sample --sampler DDIM --schedule Karras --precision FP32 --device CPU`` runs, and its
    PNG records the words as ``sample --from-png`` reads them back: ddim, karras, fp32, cpu."""
    import torch
    from cli_helpers import exit_code
    from PIL import Image
    from tiny_configs import fill_zero_layers

    from glidectl.glide import create_model, preset_options, save_weights

    torch.manual_seed(0)
    model = fill_zero_layers(create_model(preset_options("base", "tiny").replace(image_size=32)))
    save_weights(model, tmp_path / "tiny.safetensors")
    assert exit_code("sample", "a cat", "--base", tmp_path / "tiny.safetensors", "--upsampler",
                     "none", "--steps", 2, "--sampler", "DDIM", "--schedule", "Karras",
                     "--precision", "FP32", "--device", "CPU", "-q", "-o",
                     tmp_path / "out") == 0
    record = json.loads(Image.open(tmp_path / "out" / "00000.png").text["parameters"])
    assert {k: record[k] for k in ("sampler", "schedule", "precision", "device")} == {
        "sampler": "ddim", "schedule": "karras", "precision": "fp32", "device": "cpu"}
