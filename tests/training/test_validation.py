"""Held-out validation: fixed samples, timesteps and noise; val_loss everywhere; keep_best."""

from __future__ import annotations

import pytest
import torch

from glidectl.errors import GlidectlError
from glidectl.training import validation
from glidectl.training.engine import Trainer
from glidectl.training.metrics import read_metrics


def test_holdout_is_kept_out_of_training_and_scored_at_fixed_timesteps(tiny):
    cfg = tiny(train=dict(steps=4), validation=dict(holdout=4, every=2, timesteps=3))
    trainer = Trainer(cfg, quiet=True)
    held = {s["key"] for s in trainer.validator.samples}
    assert len(held) == 4
    seen = {s["key"] for s in trainer.stream.dataset}  # one pass of the training stream
    assert len(seen) == 24 - 4 and not seen & held
    # left out before decoding: the data counts are training's own (20, not 24)
    assert trainer.stream.dataset.stats()["accepted"] == 24 - 4
    # the run's dataset, whose counts the run reports, counts the same, and is not changed
    # behind its back: the stream reads a copy that leaves the held-out keys out
    assert trainer.dataset.stats()["accepted"] == 24 - 4 and not trainer.dataset.exclude
    assert trainer.stream.dataset.dataset.exclude == held
    assert trainer.validator.timesteps == [166, 500, 833]  # (k + 1/2) * 1000 / 3

    first = trainer.validator.run(trainer.unwrapped, trainer.accelerator.device)
    again = trainer.validator.run(trainer.unwrapped, trainer.accelerator.device)
    assert first == again  # fixed noise: values compare across a run
    result = trainer.run()
    assert [r["step"] for r in result.validation] == [2, 4]
    record = result.validation[-1]
    buckets = [record[f"val_loss_t{k}"] for k in range(3)]
    assert record["val_loss"] == pytest.approx(sum(buckets) / 3)
    assert record["val_loss"] != first["val_loss"]  # training moved it
    logged = [r for r in read_metrics(result.run_dir / "metrics.jsonl") if "val_loss" in r]
    assert logged == result.validation


def test_another_source_validates_without_touching_training(tiny, image_folder):
    cfg = tiny(train=dict(steps=1), checkpoint=dict(every=0),
               validation=dict(source=str(image_folder), samples=3, every=1))
    trainer = Trainer(cfg, quiet=True)
    assert sorted(s["caption"] for s in trainer.validator.samples) == [
        "a blue square number 2", "a green square number 1", "a red square number 0"]
    assert trainer.stream.dataset is trainer.dataset  # nothing held out of data.source
    assert len(trainer.run().validation) == 1


def test_keep_best_keeps_the_lowest_val_loss_checkpoint(tiny, monkeypatch):
    scripted = iter([3.0, 1.0, 2.0, 2.5])
    monkeypatch.setattr(validation.Validator, "run",
                        lambda self, model, device: {"val_loss": next(scripted)})
    cfg = tiny(train=dict(steps=4), checkpoint=dict(every=0, keep_last=1, keep_best=True),
               validation=dict(holdout=2, every=1))
    result = Trainer(cfg, quiet=True).run()
    ckpts = result.run_dir / "checkpoints"
    assert (ckpts / "best").read_text().strip() == "step-000002"
    assert (ckpts / "latest").read_text().strip() == "step-000004"
    assert sorted(p.name for p in ckpts.glob("step-*")) == ["step-000002", "step-000004"]
    import json

    state = json.loads((ckpts / "step-000004" / "state" / "train.json").read_text())
    assert ["best_val_loss", 1.0] in state["$dict"]  # the best so far resumes too


def test_keep_best_prunes_the_previous_best_once_best_moves_on(tiny, monkeypatch):
    """Step 4's regular checkpoint is pruned around the old best (step 2); when step 4's
    validation then makes it the best, step 2 is kept by nothing and goes."""
    scripted = iter([2.0, 1.0])
    monkeypatch.setattr(validation.Validator, "run",
                        lambda self, model, device: {"val_loss": next(scripted)})
    cfg = tiny(train=dict(steps=4), checkpoint=dict(every=2, keep_last=1, keep_best=True),
               validation=dict(holdout=2, every=2))
    ckpts = Trainer(cfg, quiet=True).run().run_dir / "checkpoints"
    assert (ckpts / "best").read_text().strip() == "step-000004"
    assert (ckpts / "latest").read_text().strip() == "step-000004"
    assert sorted(p.name for p in ckpts.glob("step-*")) == ["step-000004"]


def test_a_kill_before_best_is_pointed_keeps_the_best_checkpoint(tiny, monkeypatch):
    """Killed after the best checkpoint (step 2) was written but before ``best`` named it:
    the resume points ``best`` at it, so pruning keeps it."""
    scripted = iter([3.0, 1.0, 2.0, 2.5])
    monkeypatch.setattr(validation.Validator, "run",
                        lambda self, model, device: {"val_loss": next(scripted)})
    cfg = tiny(train=dict(steps=4), checkpoint=dict(every=0, keep_last=1, keep_best=True),
               validation=dict(holdout=2, every=1))

    class Killed(BaseException):
        pass

    trainer = Trainer(cfg, quiet=True)
    mark_best = trainer.checkpoints.mark_best

    def killed_at_step_two(step: int) -> None:
        if step == 2:
            raise Killed
        mark_best(step)

    trainer.checkpoints.mark_best = killed_at_step_two
    with pytest.raises(Killed):
        trainer.run()
    ckpts = trainer.run_dir.checkpoints
    assert (ckpts / "best").read_text().strip() == "step-000001"
    Trainer(cfg, resume="latest", quiet=True).run()
    assert (ckpts / "best").read_text().strip() == "step-000002"
    assert sorted(p.name for p in ckpts.glob("step-*")) == ["step-000002", "step-000004"]


def test_a_resume_that_measures_val_loss_otherwise_starts_best_over(tiny, monkeypatch):
    """Resumed with another validation.timesteps, the new val_loss (2.0) was compared with
    the best of the old measure (1.0): ``best`` stayed on step 1 in silence. It now says the
    values do not compare, and the next validation names the new best."""
    scripted = iter([1.0, 2.0])
    monkeypatch.setattr(validation.Validator, "run",
                        lambda self, model, device: {"val_loss": next(scripted)})
    cfg = tiny(train=dict(steps=1), checkpoint=dict(every=0, keep_last=1, keep_best=True),
               validation=dict(holdout=2, every=1, timesteps=2))
    Trainer(cfg, quiet=True).run()
    cfg.validation.samples = 5  # unused by a holdout: no change of measure
    assert validation.loss_settings(cfg) == validation.loss_settings(tiny(
        **{"validation": dict(holdout=2, every=1, timesteps=2)}))
    cfg.train.steps, cfg.validation.timesteps = 2, 1
    trainer = Trainer(cfg, resume="latest", quiet=True)
    assert any(" ".join(note.split()).startswith(
        "Warning: val_loss is measured otherwise than when") and
        "(validation.timesteps 2 → 1)" in note and "checkpoints/best starts over" in note
        for note in trainer._notes), trainer._notes
    ckpts = trainer.run().run_dir / "checkpoints"
    assert (ckpts / "best").read_text().strip() == "step-000002"
    assert sorted(p.name for p in ckpts.glob("step-*")) == ["step-000002"]


def test_a_branch_resume_leaves_best_naming_no_rewritten_step(tmp_path):
    """The best (step 3) is set aside by a resume from step 2, whose own best (step 1) was
    pruned when step 3 became best: ``best`` went on naming 'step-000003', so the branch's
    step 3, whatever its val_loss, became ``checkpoints/best`` in silence."""
    from glidectl import runs
    from glidectl.training.checkpointing import CheckpointManager
    from glidectl.training.run_dir import tidy_run

    run = runs.RunDir(tmp_path / "run")
    for step in (2, 3):
        runs.state_dir(run.step_dir(step)).mkdir(parents=True)
    for pointer in ("best", "latest"):
        (run.checkpoints / pointer).write_text("step-000003\n")
    tidy_run(run, CheckpointManager(run.checkpoints, keep_last=2), 2, best_step=1)
    assert not (run.checkpoints / "best").exists()
    assert (run.checkpoints / "abandoned-after-step-000002" / "step-000003").is_dir()
    assert (run.checkpoints / "latest").read_text().strip() == "step-000002"


@pytest.mark.parametrize(("sections", "message"), [
    (dict(validation=dict(holdout=2, source="x", every=1)), "not both"),
    (dict(validation=dict(every=5)), "nothing to validate"),
    (dict(checkpoint=dict(keep_best=True)), "keep_best needs validation"),
    (dict(validation=dict(holdout=500, every=1)), "gave only 24 samples"),
    # every sample held out: "not one batch … lower train.batch_size", which cannot help
    (dict(validation=dict(holdout=24, every=1)), r"^validation.holdout = 24 takes every one "
     r"of the 24 samples data.source gave, leaving none to train on; lower "
     r"validation.holdout\.$"),
    # refused before training, not at the first FID (which lost the steps since a checkpoint)
    (dict(validation=dict(holdout=1, fid_every=2)), r"^validation.fid_every needs at least 2 "
     r"validation images \(FID/KID compare two sets\), but there is 1; raise "
     r"validation.holdout or set validation.fid_every = 0\.$"),
])
def test_validation_config_mistakes_are_one_line_errors(tiny, sections, message):
    with pytest.raises(GlidectlError, match=message):
        Trainer(tiny(**sections), quiet=True)


def test_fid_during_training_with_local_features_and_absent_without(tiny, monkeypatch):
    from test_fid import ColourStats

    from glidectl import fid

    sections = dict(train=dict(steps=2), preview=dict(steps=2),
                    validation=dict(holdout=4, fid_every=2, fid_samples=4))
    result = Trainer(tiny(**sections), quiet=True).run()
    assert result.validation == [{"step": 2, "fid_missing": result.validation[0]["fid_missing"]}]
    assert "--fid-weights" in result.validation[0]["fid_missing"]

    monkeypatch.setattr(fid, "inception_features", lambda weights: fid.Features(ColourStats()))
    cfg = tiny(**sections)
    cfg.train.name = "with-features"
    record = Trainer(cfg, quiet=True).run().validation[-1]
    assert record["fid_real"] == record["fid_fake"] == 4
    assert record["fid"] > 0 and record["kid_std"] >= 0
    logged = read_metrics(result.run_dir.parent / "with-features" / "metrics.jsonl")
    assert logged[-1] == record


def test_upsampler_fid_upsamples_at_its_own_size_whatever_data_resolution(tiny, tmp_path,
                                                                          monkeypatch):
    """A 32 px upsampler finetuned on 16 px crops: FID upsampled 4 px inputs to 32 px (8×,
    never trained) and scored them against 16 px references; it samples 8 → 32 px, as the
    previews and glidectl sample do, against the same held-out images at 32 px."""
    from test_fid import ColourStats

    from glidectl import fid
    from glidectl.glide import create_model, preset_options, save_weights
    from glidectl.glide.unet import GlideUNet

    seen: list[tuple[list, list]] = []
    monkeypatch.setattr(fid, "inception_features", lambda weights: fid.Features(ColourStats()))
    monkeypatch.setattr(fid, "fid_kid", lambda real, fake, features: seen.append((real, fake))
                        or {"fid": 1.0, "kid": 0.0})
    inputs: set[tuple[int, int]] = set()
    forward = GlideUNet._inputs

    def spy(self, x, low_res, *rest):
        if not torch.is_grad_enabled():
            inputs.add((x.shape[-1], low_res.shape[-1]))
        return forward(self, x, low_res, *rest)

    monkeypatch.setattr(GlideUNet, "_inputs", spy)
    init = save_weights(create_model(preset_options("upsample", "tiny").replace(
        image_size=32)), tmp_path / "up32.safetensors")
    cfg = tiny(model=dict(kind="upsample", init=str(init)), data=dict(resolution=16),
               train=dict(steps=1), validation=dict(holdout=4, fid_every=1, fid_samples=4))
    trainer = Trainer(cfg, quiet=True, kinds=("upsample", "upsample-inpaint"))
    trainer.run()
    real, fake = torch.cat(seen[-1][0]), torch.cat(seen[-1][1])
    assert real.shape == fake.shape == (4, 3, 32, 32)
    assert inputs == {(32, 8)}
    validator = trainer.validator
    assert [s["key"] for s in validator.fid_samples] == [s["key"] for s in validator.samples]
    assert torch.as_tensor(validator.samples[0]["image"]).shape[-1] == 16  # val_loss: 16 px


def test_inpaint_fid_fills_a_hidden_rectangle_of_each_held_out_image(tiny, monkeypatch):
    """Inception weights cannot exist here: the features are a fixed conv, and the FID
    computation is caught to look at what it was given."""
    from test_fid import ColourStats

    from glidectl import fid

    seen: list[tuple[list, list]] = []
    monkeypatch.setattr(fid, "inception_features", lambda weights: fid.Features(ColourStats()))
    monkeypatch.setattr(fid, "fid_kid", lambda real, fake, features: seen.append((real, fake))
                        or {"fid": 1.0, "kid": 0.0})
    cfg = tiny(model=dict(kind="base-inpaint"), train=dict(steps=1), preview=dict(every=0),
               validation=dict(holdout=4, fid_every=1, fid_samples=4))
    Trainer(cfg, quiet=True).run()
    real, fake = torch.cat(seen[-1][0]), torch.cat(seen[-1][1])
    kept = (fake - real).abs().amax(1) < 1e-4  # per pixel: the known pixels come back
    share = kept.float().mean((1, 2))
    assert ((share >= 0.75) & (share < 1)).all(), share  # at most a quarter hidden, some


@pytest.mark.parametrize("kind", ["base-inpaint", "base"])
def test_base_fid_samples_at_its_own_size_whatever_data_resolution(tiny, tmp_path, monkeypatch,
                                                                   kind):
    """A 16 px base-inpaint model finetuned on 32 px crops: FID passed the 32 px held-out
    images (and their masks) to a 16 px sampling, a RuntimeError ("Sizes of tensors must
    match") at the first validation; a base model's 16 px samples were scored against 32 px
    references. Both now sample and score the held-out images at 16 px."""
    from test_fid import ColourStats

    from glidectl import fid
    from glidectl.glide import create_model, preset_options, save_weights

    seen: list[tuple[list, list]] = []
    monkeypatch.setattr(fid, "inception_features", lambda weights: fid.Features(ColourStats()))
    monkeypatch.setattr(fid, "fid_kid", lambda real, fake, features: seen.append((real, fake))
                        or {"fid": 1.0, "kid": 0.0})
    init = save_weights(create_model(preset_options(kind, "tiny").replace(image_size=16)),
                        tmp_path / "b16.safetensors")
    cfg = tiny(model=dict(kind=kind, init=str(init)), data=dict(resolution=32),
               train=dict(steps=1), validation=dict(holdout=4, fid_every=1, fid_samples=4))
    trainer = Trainer(cfg, quiet=True, kinds=(kind,))
    trainer.run()
    real, fake = torch.cat(seen[-1][0]), torch.cat(seen[-1][1])
    assert real.shape == fake.shape == (4, 3, 16, 16)
    if kind == "base-inpaint":  # the known pixels come back
        assert ((fake - real).abs().amax(1) < 1e-4).float().mean() >= 0.5
    assert torch.as_tensor(trainer.validator.samples[0]["image"]).shape[-1] == 32  # val_loss
