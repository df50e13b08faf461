"""Training on a OneTrainer concepts file: its VALIDATION concepts as the run's validation
data (the run's own [validation] wins); its PRIOR_PREDICTION concepts trained towards the
base model's own prediction in LoRA runs, left out of full finetunes."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from tiny_configs import tiny_base_weights

from glidectl.cli.app import main
from glidectl.errors import GlidectlError
from glidectl.lora import LoraTrainingAdapter
from glidectl.lora.inject import lora_parameters
from glidectl.training import engine
from glidectl.training import validation as val
from glidectl.training.engine import Trainer
from glidectl.training.setup import check_data_before_download


def concepts_file(root, concepts):
    """Two folders of two squares each, ``train`` red and ``held`` blue, and ``concepts``."""
    for folder, rgb in (("train", (200, 30, 30)), ("held", (30, 30, 200))):
        (root / folder).mkdir()
        for i in range(2):
            Image.new("RGB", (40, 36), rgb).save(root / folder / f"{folder} {i}.png")
    path = root / "concepts.json"
    path.write_text(json.dumps(concepts))
    return path


def test_validation_concepts_are_the_runs_validation_data(tiny, tmp_path, capsys):
    concepts = concepts_file(tmp_path, [
        {"path": "train", "text": {"prompt_source": "filename"}},
        {"name": "held out", "path": "held", "type": "VALIDATION",
         "text": {"prompt_source": "filename"}}])
    cfg = tiny(data=dict(source=str(concepts)), train=dict(steps=1),
               validation=dict(every=1, timesteps=1))
    trainer = Trainer(cfg, live=False)
    assert [(s["key"], s["caption"]) for s in trainer.validator.samples] == [
        ("2/held 0.png", "held 0"), ("2/held 1.png", "held 1")]
    assert {s["key"][0] for s in trainer.dataset} == {"1"}  # not trained on
    result = trainer.run()
    assert [r["step"] for r in result.validation] == [1]
    out = " ".join(capsys.readouterr().out.split())
    spec = f"onetrainer-validation:{concepts}"
    assert (f"Validation: on the VALIDATION concept 2 ('held out') of data.source "
            f"(validation.source = {spec!r}).") in out
    cfg.validation.source = spec  # a resume with the run's saved config: the same line
    Trainer(cfg, live=False, resume="latest")
    assert "Validation: on the VALIDATION concept 2" in capsys.readouterr().out


def test_the_runs_own_validation_wins_over_validation_concepts(tiny, tmp_path, capsys):
    concepts = concepts_file(tmp_path, [
        {"path": "train", "text": {"prompt_source": "filename"}},
        {"path": "held", "type": "VALIDATION"}])
    cfg = tiny(data=dict(source=str(concepts)), train=dict(steps=1),
               validation=dict(every=1, timesteps=1, holdout=1))
    trainer = Trainer(cfg, live=False)
    assert [s["key"] for s in trainer.validator.samples] == ["1/train 0.png"]
    assert trainer.cfg.validation.source == ""
    out = " ".join(capsys.readouterr().out.split())
    assert ("Note: the VALIDATION concept 2 of data.source is not validated on: this run's "
            "validation.holdout decides its validation data.") in out
    cfg.validation.holdout, cfg.validation.every = 0, 0  # no validation asked for
    assert Trainer(cfg, live=False).validator is None
    out = " ".join(capsys.readouterr().out.split())
    assert ("Note: the VALIDATION concept 2 of data.source is this run's validation data, "
            "but validation.every is 0; set it to compute val_loss on it.") in out


PRIOR = [{"path": "train", "text": {"prompt_source": "filename"}},
         {"name": "prior", "path": "held", "type": "PRIOR_PREDICTION",
          "text": {"prompt_source": "filename"}}]


def test_prior_prediction_samples_of_a_lora_run_train_towards_the_base_models_prediction(
        tiny, tmp_path):
    """OneTrainer's target for them: the model's prediction with its adapters off, at the same
    x_t, t and text; with LoRA's B = 0 at the first step that is the model's own."""
    cfg = tiny(model=dict(init=str(tiny_base_weights(tmp_path / "base.safetensors"))),
               data=dict(source=str(concepts_file(tmp_path, PRIOR)), resolution=16),
               train=dict(steps=2, batch_size=4, lr=1e-2, precision="fp32"),
               lora=dict(targets=["attention", "mlp"], rank=4))
    trainer = Trainer(cfg, adapter=LoraTrainingAdapter(cfg.lora), quiet=True)
    seen, real = [], trainer.objective.losses

    def spy(model, batch, step, *args):
        out = real(model, batch, step, *args)
        seen.append((out["loss"].detach(), list(batch["prior_prediction"]),
                     [k[0] for k in batch["key"]], out["mse"].detach()))
        return out

    trainer.objective.losses = spy
    trainer.run()
    (first, prior, concept, mse), (second, prior_2, _, _) = seen
    assert sorted(prior) == [False, False, True, True]
    assert prior == [c == "2" for c in concept]
    rows = torch.tensor(prior)
    # the same ε; the KL of two equal Gaussians, as normal_kl rounds it, is ~1e-8
    assert mse[rows].abs().max() == 0 and first[rows].abs().max() < 1e-6
    assert (first[~rows] > 0.01).all()
    assert (second[torch.tensor(prior_2)] > 0).all()  # the adapters have moved it since
    assert all(p.requires_grad for _, p in lora_parameters(trainer.unwrapped))


def test_a_full_finetune_leaves_prior_prediction_concepts_out_with_a_warning(
        tiny, tmp_path, capsys):
    concepts = concepts_file(tmp_path, PRIOR)
    trainer = Trainer(tiny(data=dict(source=str(concepts)), train=dict(steps=1)), live=False)
    assert {s["key"][0] for s in trainer.dataset} == {"1"}
    assert trainer.stream.steps_per_epoch(1) == 1  # 2 images, batches of 2
    out = " ".join(capsys.readouterr().out.split())
    assert (f"Warning: {str(concepts)!r}: PRIOR_PREDICTION concept 2 ('prior') is left out of "
            "training: their target is the base model's own prediction, which OneTrainer "
            "makes only in LoRA runs (the model with its adapters off), and a full finetune "
            "has no base model beside the one it trains; train with `glidectl lora`, or make "
            "it STANDARD.") in out


@pytest.mark.parametrize("init", ["scratch", "openai:base"])
def test_a_full_finetune_of_only_prior_prediction_concepts_stops_before_the_model_loads(
        tiny, config_file, tmp_path, monkeypatch, capsys, init):
    """Not after the model is built, nor after OpenAI's 1.5 GB base is downloaded (downloads
    are off here, so that would be an error about the cache)."""
    monkeypatch.setenv("GLIDECTL_OFFLINE", "1")
    monkeypatch.setenv("GLIDECTL_HOME", str(tmp_path / "cache"))

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the data was checked")

    monkeypatch.setattr(engine, "build_model", no_model)
    concepts = concepts_file(tmp_path, [
        {"name": "prior", "path": "held", "type": "PRIOR_PREDICTION"},
        {"path": "train", "type": "VALIDATION"}, {"path": "train", "enabled": False}])
    cfg = tiny(model=dict(init=init), data=dict(source=str(concepts)))
    with pytest.raises(SystemExit) as exc:
        main(["train", "-c", str(config_file(cfg))])
    assert exc.value.code == 2
    *warnings, err = capsys.readouterr().err.splitlines()  # warnings: unused config keys
    assert all(w.startswith("Warning: ") for w in warnings)
    assert err == (f"Error: {str(concepts)!r}: every enabled training concept is "
                   "PRIOR_PREDICTION (concept 1 ('prior')), which a full finetune leaves out "
                   "(its target is the base model's own prediction, which only a LoRA run "
                   "makes); train it with `glidectl lora`, or add a STANDARD concept.")
    assert not (tmp_path / "runs").exists()
    check_data_before_download(cfg, LoraTrainingAdapter(cfg.lora))  # a LoRA run trains them


def test_prior_prediction_images_alone_stop_a_full_finetune_before_a_download(
        tiny, tmp_path, monkeypatch):
    """A STANDARD concept whose folder holds no images leaves only PRIOR_PREDICTION images:
    found when the data is opened before OpenAI's base would be downloaded."""
    monkeypatch.setenv("GLIDECTL_OFFLINE", "1")
    monkeypatch.setenv("GLIDECTL_HOME", str(tmp_path / "cache"))
    concepts = concepts_file(tmp_path, [{"path": "empty"}, {"path": "held",
                                                             "type": "PRIOR_PREDICTION"}])
    (tmp_path / "empty").mkdir()
    cfg = tiny(model=dict(init="openai:base"), data=dict(source=str(concepts)))
    with pytest.raises(GlidectlError, match="names only PRIOR_PREDICTION concepts"):
        Trainer(cfg, quiet=True)


def test_validation_holdout_takes_no_prior_prediction_samples(tiny, tmp_path):
    """Their target is the model's own prediction, not their image; held out, a LoRA run
    would also lose them from its prior preservation. So the first N of the others."""
    prior_first = [PRIOR[1], PRIOR[0]]
    cfg = tiny(data=dict(source=str(concepts_file(tmp_path, prior_first))),
               validation=dict(every=1, holdout=2))
    data_args = dict(tokenizer="byte", image_size=32, text_ctx=16, seed=0)
    held = val.load_samples(cfg, data_args)
    assert [(s["key"], s["prior_prediction"]) for s in held] == [
        ("2/train 0.png", False), ("2/train 1.png", False)]
    cfg.validation.holdout = 3
    with pytest.raises(GlidectlError, match=r"^validation.holdout = 3 but data.source gave "
                       r"only 2 samples that are not PRIOR_PREDICTION \(whose target is the "
                       r"model's own prediction, not their image\); lower validation.holdout"):
        val.load_samples(cfg, data_args)
