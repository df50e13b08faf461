"""Training on a OneTrainer concepts file: its VALIDATION concepts as the run's validation
data (the run's own [validation] wins)."""

from __future__ import annotations

import json

from PIL import Image

from glidectl.training.engine import Trainer


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

