"""A run whose training images are all grey recommends grey sampling; colour data do not."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open

from glidectl.greyscale import GREY_NOTE
from glidectl.training.engine import Trainer
from glidectl.training.resume_state import read_state_file


def recommended(step_dir: Path) -> dict:
    with safe_open(step_dir / "ema.safetensors", "pt") as f:
        return json.loads(f.metadata()["glidectl.sampling"])


def train(cfg) -> tuple[Path, list[str]]:
    trainer = Trainer(cfg, quiet=True)
    messages: list[str] = []
    trainer.display.message = messages.append
    return trainer.run().run_dir, messages


def test_a_run_on_grey_data_recommends_grey_and_previews_grey(tiny, image_folder):
    for png in image_folder.glob("*.png"):
        Image.open(png).convert("L").convert("RGB").save(png)
    cfg = tiny(data=dict(source=str(image_folder)), train=dict(steps=1),
               preview=dict(every=1, steps=2, prompts=["a grey square"]))
    run, messages = train(cfg)
    step = run / "checkpoints" / "step-000001"
    assert recommended(step)["grey"] is True
    assert read_state_file(step / "state" / "train.json")["grey_data"] is True  # resumes
    assert messages.count(GREY_NOTE) == 1
    preview = Image.open(run / "previews" / "step-000001.png")
    assert preview.text["grey"] == "True"
    rgb = np.asarray(preview.convert("RGB")).astype(int)
    assert (rgb.max(axis=2) - rgb.min(axis=2)).max() == 0


def test_a_run_on_colour_data_does_not(tiny, image_folder):
    cfg = tiny(data=dict(source=str(image_folder)), train=dict(steps=1),
               preview=dict(every=1, steps=2, prompts=["a red square"]))
    run, messages = train(cfg)
    assert "grey" not in recommended(run / "checkpoints" / "step-000001")
    assert GREY_NOTE not in messages
    assert Image.open(run / "previews" / "step-000001.png").text["grey"] == "False"


def test_an_upsampler_run_on_grey_data_recommends_grey_too(tiny, image_folder):
    """sample, eval and the web UI read an upsampler's grey (both stages then draw grey)."""
    for png in image_folder.glob("*.png"):
        Image.open(png).convert("L").convert("RGB").save(png)
    cfg = tiny(model=dict(kind="upsample"), data=dict(source=str(image_folder), resolution=32),
               train=dict(steps=1), preview=dict(every=1, steps=2))
    trainer = Trainer(cfg, quiet=True, kinds=("upsample", "upsample-inpaint"))
    messages: list[str] = []
    trainer.display.message = messages.append
    run = trainer.run().run_dir
    assert set(recommended(run / "checkpoints" / "step-000001")) == {"grey", "prompts"}
    assert recommended(run / "checkpoints" / "step-000001")["grey"] is True
    assert messages.count(GREY_NOTE) == 1


def test_the_step_0_preview_of_grey_data_is_grey_and_training_is_unchanged(
        tiny, image_folder, monkeypatch):
    """The first batch is looked at before the step-0 preview (no training image had been
    seen, so it was drawn in colour); the weights are bit-identical to a run that takes that
    batch only at the first step, with flips, crops and caption dropout drawing RNG."""
    from safetensors.torch import load_file

    from glidectl.training.loop import TrainingLoop

    for png in image_folder.glob("*.png"):
        Image.open(png).convert("L").convert("RGB").save(png)

    def run(name: str) -> tuple[Path, dict]:
        cfg = tiny(data=dict(source=str(image_folder), flip=True, uncond_p=0.5),
                   train=dict(steps=2, name=name), checkpoint=dict(every=2),
                   preview=dict(every=2, steps=2, prompts=["a grey square"]))
        root, _ = train(cfg)
        step = root / "checkpoints" / "step-000002"
        return root, {str(p.relative_to(step)): load_file(p) for p in step.rglob("*.safetensors")}

    run_dir, weights = run("now")
    first = Image.open(run_dir / "previews" / "step-000000.png")
    assert first.text["grey"] == "True"
    rgb = np.asarray(first.convert("RGB")).astype(int)
    assert (rgb.max(axis=2) - rgb.min(axis=2)).max() == 0
    with monkeypatch.context() as m:  # as before: the first batch taken by the first step
        m.setattr(TrainingLoop, "_first_batch", lambda self: None)
        before_dir, before = run("before")
    assert Image.open(before_dir / "previews" / "step-000000.png").text["grey"] == "False"
    assert set(weights) == set(before) and len(weights) >= 4
    for name, tensors in weights.items():
        assert tensors.keys() == before[name].keys()
        for key, value in tensors.items():
            assert torch.equal(value, before[name][key]), (name, key)
    losses = [[r["loss"] for r in map(json.loads, (d / "metrics.jsonl").read_text()
                                      .splitlines())] for d in (run_dir, before_dir)]
    assert losses[0] == losses[1] and len(losses[0]) == 2


def test_a_lora_run_on_grey_data_is_sampled_grey_wherever_its_adapters_go(tiny, image_folder,
                                                                          tmp_path):
    """Its previews were grey and it said so, but its adapters recorded nothing: sample
    --lora, eval, the web UI, generate(loras=…) and lora merge drew colour."""
    from glidectl.lora.apply import merge_adapter
    from glidectl.lora.training import train_lora
    from glidectl.pipeline import GlidePipeline

    for png in image_folder.glob("*.png"):
        Image.open(png).convert("L").convert("RGB").save(png)
    base_run, _ = train(tiny(train=dict(steps=1, name="base"),
                             data=dict(source=str(image_folder))))
    cfg = tiny(train=dict(steps=1, name="lora"), data=dict(source=str(image_folder)),
               model=dict(init=str(base_run)), lora=dict(targets=["attention"], rank=4),
               preview=dict(every=0))
    lora_run = train_lora(cfg, quiet=True).run_dir
    adapter = lora_run / "checkpoints" / "step-000001" / "lora-ema"
    assert json.loads((adapter / "glidectl.json").read_text())["grey"] is True
    # a colour base (its own recommendation says nothing of grey) with the grey LoRA
    colour = tmp_path / "colour.safetensors"
    from glidectl.glide import read_weights, save_weights

    state, options = read_weights(base_run / "checkpoints" / "step-000001" / "ema.safetensors")
    save_weights(state, colour, options)
    pipe = GlidePipeline.from_specs(str(colour), None, loras=[str(lora_run)], device="cpu",
                                    precision="fp32")
    image = pipe.generate("a square", steps=2, seed=3)[0]
    rgb = np.asarray(image.convert("RGB")).astype(int)
    assert (rgb.max(axis=2) - rgb.min(axis=2)).max() == 0
    merged = merge_adapter(adapter, str(colour), tmp_path / "merged.safetensors").path
    with safe_open(merged, "pt") as f:
        assert json.loads(f.metadata()["glidectl.sampling"])["grey"] is True


def test_colour_after_grey_images_is_said_when_it_switches_grey_off():
    """One colour image in many grey ones turned grey sampling off in silence; a run whose
    first images are in colour says nothing (it is a colour run)."""
    from glidectl.training.state import TrainState

    grey = torch.zeros(4, 3, 8, 8)
    colour = grey.clone()
    colour[1, 0] = 0.5  # red 64 levels up in one image
    state = TrainState(None, None)
    assert state.see_images(grey) is None and state.see_images(grey) is None
    said = state.see_images(colour)
    assert said.startswith("Note: the 8 training images before this batch were greyscale, "
                           "but it holds colour (R, G and B up to 64 of 255 levels apart")
    assert state.grey_data is False and state.see_images(grey) is None
    fresh = TrainState(None, None)
    assert fresh.see_images(colour) is None and fresh.grey_data is False
