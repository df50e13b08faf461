"""Exact resume: 2N steps straight == N steps, stop, resume, N steps (bitwise, on CPU)."""

from __future__ import annotations

import math
import re

import pytest
import torch
from safetensors.torch import load_file

from glidectl.errors import GlidectlError
from glidectl.training.engine import Trainer


def _weights(run_root, step: int) -> dict[str, torch.Tensor]:
    step_dir = run_root / "checkpoints" / f"step-{step:06d}"
    return {**load_file(step_dir / "model.safetensors"),
            **{f"ema.{k}": v for k, v in load_file(step_dir / "ema.safetensors").items()}}


def _shards(folder, out):
    """Two webdataset shards of the folder's images; one sample has an empty image."""
    import webdataset as wds

    out.mkdir()
    images = sorted(folder.glob("*.png"))
    for s in range(2):
        with wds.TarWriter(str(out / f"shard-{s}.tar")) as sink:
            for path in images[s::2]:
                sink.write({"__key__": path.stem, "png": path.read_bytes(),
                            "txt": path.with_suffix(".txt").read_bytes()})
            if s == 0:
                sink.write({"__key__": "empty", "png": b"", "txt": b"an empty file"})
    return out


def _kohya_config(folder, out):
    """A kohya dataset.toml over the folder: tags from class_tokens, shuffled and dropped,
    whole captions dropped and colours jittered per draw, every caption of the second
    epoch dropped (caption_dropout_every_n_epochs, from the data pipeline's epoch), and tags
    cut by the token warm-up until step 5 (from the optimizer step), resumed inside it."""
    out.write_text(f"""
[[datasets]]
  [[datasets.subsets]]
  image_dir = {str(folder)!r}
  caption_extension = ".none"
  class_tokens = "square, small, bright, pixel, plain"
  shuffle_caption = true
  keep_tokens = 1
  caption_tag_dropout_rate = 0.3
  caption_dropout_rate = 0.3
  caption_dropout_every_n_epochs = 2
  color_aug = true
  token_warmup_step = 5
""")
    return out


def _onetrainer_concepts(folder, out):
    """A OneTrainer concepts file over the folder: half its images per epoch (a ring that
    goes on over epochs), tags shuffled per draw, a loss weight; the folder is a VALIDATION
    concept too, the run's validation data, and a PRIOR_PREDICTION one, which a full
    finetune leaves out."""
    import json

    out.write_text(json.dumps([{"name": "squares", "path": str(folder), "balancing": 0.5,
                                "loss_weight": 0.5, "text": {"enable_tag_shuffling": True,
                                                             "tag_delimiter": " "}},
                               {"name": "held", "path": str(folder), "type": "VALIDATION"},
                               {"path": str(folder), "type": "PRIOR_PREDICTION"}]))
    return out


@pytest.mark.parametrize("data", ["demo", "folder", "folder-2-workers", "webdataset",
                                  "kohya-toml", "onetrainer-json"])
def test_resume_is_bitwise_identical(tiny, image_folder, tmp_path, data):
    sections = dict(
        train=dict(steps=6, lr_schedule="cosine", warmup_steps=1, min_snr_gamma=5.0),
        data=dict(flip=True, uncond_p=0.3, crop_scale=[0.6, 1.0], demo_size=6),
    )
    if data.startswith("folder"):
        sections["data"]["source"] = str(image_folder)
        sections["data"]["workers"] = 2 if data == "folder-2-workers" else 0
    elif data == "kohya-toml":  # captions shuffled and dropped per draw
        sections["data"]["source"] = str(_kohya_config(image_folder, tmp_path / "data.toml"))
        sections["train"]["batch_size"] = 4  # 2 steps an epoch: resume inside epoch 1
    elif data == "onetrainer-json":  # fractional repeats, shuffled tags, a loss weight
        sections["data"]["source"] = str(_onetrainer_concepts(image_folder,
                                                              tmp_path / "concepts.json"))
        sections["validation"] = dict(every=3, samples=2, timesteps=1)
    elif data == "webdataset":  # a shuffle buffer across shards, and a rejected sample
        sections["data"].update(source=str(_shards(image_folder, tmp_path / "shards")),
                                shuffle_buffer=4, image_key="png")
    else:
        sections["train"]["grad_accum"] = 2  # the accumulation counter resumes too
        sections["data"]["demo_size"] = 12
    straight_cfg = tiny(**sections)
    straight_cfg.train.name = "straight"
    straight = Trainer(straight_cfg, quiet=True).run()
    assert straight.history[-1]["epoch"] >= 1  # the runs cross an epoch boundary

    split_cfg = tiny(**sections)
    split_cfg.train.name = "split"
    first = Trainer(split_cfg, quiet=True).run(until=3)
    assert first.step == 3 and first.interrupted
    second = Trainer(split_cfg, resume="latest", quiet=True).run()
    assert second.step == 6 and not second.interrupted

    a, b = _weights(straight.run_dir, 6), _weights(second.run_dir, 6)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # every generator too: the global one (dropout's) made one draw more after a resume
    from safetensors.torch import load_file

    rng = [load_file(str(r.run_dir / "checkpoints" / "step-000006" / "state" / "rng-0.safetensors"))
           for r in (straight, second)]
    assert rng[0].keys() == rng[1].keys() and all(torch.equal(rng[0][k], rng[1][k]) for k in rng[0])
    losses = [r["loss"] for r in straight.history]
    assert losses[3:] == [r["loss"] for r in second.history]
    assert straight.validation[-1:] == second.validation  # [] but for onetrainer-json
    if data == "onetrainer-json":  # on its VALIDATION concept
        assert [r["step"] for r in straight.validation] == [3, 6]
    # the data counts go on from the checkpoint's (rejections included): nothing lost, and
    # with workers, none of the samples they read ahead (a resume reads those again)
    def counts(history):
        return [{k: v for k, v in r.items() if k.startswith("data_") and k != "data_wait"}
                for r in history]

    assert counts(straight.history)[3:] == counts(second.history)
    if data == "folder-2-workers":  # 2 images a step, 8 an epoch
        assert [r["data_accepted"] for r in straight.history] == [2, 4, 6, 8, 10, 12]
    if data == "webdataset":
        assert second.history[-1]["data_skipped_empty_file"] >= 1


def test_a_stop_between_records_keeps_their_steps_for_the_resumed_runs_next_record(tiny):
    """A stop at step 1 of a log.every = 2 run lost step 1 from metrics.jsonl: the resumed
    run's step-2 record was the loss of step 2 alone. The checkpoint keeps the window, so
    the record is the straight run's: the mean of both steps."""
    cfg = tiny(train=dict(steps=2), log=dict(every=2), checkpoint=dict(every=100))
    first = Trainer(cfg, quiet=True).run(until=1)
    resumed = Trainer(cfg, resume="latest", quiet=True).run()
    assert first.history == [] and [r["step"] for r in resumed.history] == [2]
    assert resumed.history[0]["loss"] == pytest.approx(
        (first.last_loss + resumed.last_loss) / 2, rel=1e-6)


def test_a_resume_trains_with_the_configs_optimizer_settings_and_says_which_changed(
        tiny, config_file, capsys):
    """The optimizer's state_dict carries its settings; loading it used to bring back the
    checkpoint's LR and weight decay while config.toml recorded the new ones."""
    from glidectl.cli.app import main
    from glidectl.training.metrics import read_metrics

    cfg = tiny(train=dict(steps=2, lr=1e-3, lr_schedule="cosine"))
    first = Trainer(cfg, quiet=True).run()
    path = config_file(cfg)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "-c", str(path), "--resume", "latest", "--steps", "4", "--no-live",
              "--set", "train.lr=0.01", "--set", "train.weight_decay=0.05"])
    assert exit_info.value.code in (0, None)
    out = capsys.readouterr().out
    assert ("Optimizer settings changed since the checkpoint; the config's apply from here "
            "on: lr 0.001 → 0.01, weight_decay 0.0 → 0.05.") in " ".join(out.split())
    records = read_metrics(first.run_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    # the LR after step 3 of a cosine schedule over 4 steps, from the new peak
    assert records[2]["lr"] == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi * 3 / 4)))


def test_a_run_begun_before_fused_adamw_resumes_bit_for_bit_on_its_own_kernel(
        tiny, monkeypatch):
    """Runs of 2026-11-29 and before trained with torch's unfused AdamW (their checkpoints'
    parameter groups say fused = None); a resume took the config's fused AdamW and went on
    ~1e-10 off the run it continued, silently."""
    import glidectl.training.optimizers as optimizers

    class Unfused(torch.optim.AdamW):  # the optimizer as the older version built it
        def __init__(self, *args, fused=None, **kwargs):
            super().__init__(*args, **kwargs)

    sections = dict(train=dict(steps=4, lr=1e-2))
    with monkeypatch.context() as patch:
        patch.setattr(optimizers.torch.optim, "AdamW", Unfused)
        straight_cfg = tiny(**sections)
        straight_cfg.train.name = "straight"
        straight = Trainer(straight_cfg, quiet=True).run()
        split_cfg = tiny(**sections)
        split_cfg.train.name = "split"
        Trainer(split_cfg, quiet=True).run(until=2)
    second = Trainer(split_cfg, resume="latest", quiet=True).run()  # today's: fused AdamW
    a, b = _weights(straight.run_dir, 4), _weights(second.run_dir, 4)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_a_resume_in_another_precision_says_so(tiny, config_file, capsys):
    """Resuming an fp32 run in bf16 is allowed but not the run it was: one line says so
    (before, nothing did, and config.toml was silently rewritten)."""
    from glidectl.cli.app import main

    cfg = tiny(train=dict(steps=2, precision="fp32"))
    first = Trainer(cfg, quiet=True).run()
    path = config_file(cfg)
    step_dir = first.run_dir / "checkpoints" / "step-000002"
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "-c", str(path), "--resume", "latest", "--steps", "3", "--no-live",
              "--precision", "bf16"])
    assert exit_info.value.code in (0, None)
    out = " ".join(capsys.readouterr().out.split())
    assert (f"Resuming {str(step_dir)!r}, trained in fp32, in bf16: the run goes on, but not "
            "as it would have in fp32 (set train.precision = \"fp32\" to keep it).") in out
    with pytest.raises(SystemExit):
        main(["train", "-c", str(path), "--resume", "latest", "--steps", "4", "--no-live",
              "--precision", "bf16"])
    assert "Resuming" not in capsys.readouterr().out


def test_a_resume_with_another_batch_says_so(tiny, config_file, capsys):
    """Resuming with another train.batch_size or train.grad_accum is allowed (the data go
    on from the same image) but not the run it was: one line says so (before, nothing did)."""
    from glidectl.cli.app import main

    cfg = tiny(train=dict(steps=2, batch_size=2))
    first = Trainer(cfg, quiet=True).run()
    path = config_file(cfg)
    step_dir = first.run_dir / "checkpoints" / "step-000002"
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "-c", str(path), "--resume", "latest", "--steps", "3", "--no-live",
              "--set", "train.batch_size=3", "--set", "train.grad_accum=2"])
    assert exit_info.value.code in (0, None)
    out = " ".join(capsys.readouterr().out.split())
    assert (f"Resuming {str(step_dir)!r} with train.batch_size 2 → 3, train.grad_accum 1 → 2: "
            "the run goes on from the same image, but not as it would have (set "
            "train.batch_size = 2 and train.grad_accum = 1 to keep it).") in out
    with pytest.raises(SystemExit):  # the same batch again: nothing to say
        main(["train", "-c", str(path), "--resume", "latest", "--steps", "4", "--no-live",
              "--set", "train.batch_size=3", "--set", "train.grad_accum=2"])
    assert "Resuming" not in capsys.readouterr().out


def test_a_resume_that_changes_the_lr_schedule_says_where_the_lr_goes_on(tiny, config_file,
                                                                          capsys):
    """More steps on a cosine schedule, or another train.lr_schedule or warmup, made the
    LR jump where the run went on (from near 0 to half the peak) without a word; a
    constant schedule over more steps is the same LR and says nothing."""
    from glidectl.cli.app import main

    cfg = tiny(train=dict(steps=2, lr_schedule="cosine", warmup_steps=0))
    first = Trainer(cfg, quiet=True).run()
    path = config_file(cfg)
    step_dir = first.run_dir / "checkpoints" / "step-000002"

    def resume(*args: str) -> str:
        with pytest.raises(SystemExit) as exit_info:
            main(["train", "-c", str(path), "--resume", "latest", "--no-live", *args])
        assert exit_info.value.code in (0, None)
        return " ".join(capsys.readouterr().out.split())

    assert (f"Resuming {str(step_dir)!r} with another LR schedule (steps 2 → 4): the LR "
            "goes on at 0.5× train.lr from step 2, where the checkpoint's schedule gave 0×."
            ) in resume("--steps", "4")
    out = resume("--steps", "6", "--set", "train.lr_schedule=constant")
    assert ("with another LR schedule (train.lr_schedule 'cosine' → 'constant', steps 4 → 6): "
            "the LR goes on at 1× train.lr from step 4, where the checkpoint's schedule gave "
            "0×.") in out
    assert "LR schedule" not in resume("--steps", "7", "--set", "train.lr_schedule=constant")


def test_a_checkpoint_naming_an_lr_schedule_this_version_lacks_is_read_as_keeping_none():
    """train.json's lr_schedule naming no schedule of this version (damaged, or a later
    version's) ended the resume in a ValueError traceback from the schedule note; it is now
    read as a checkpoint from before the schedule was kept (no note)."""
    from types import SimpleNamespace

    from glidectl.training.state import TrainState

    part = SimpleNamespace(load_state_dict=lambda saved: None)
    state = TrainState(part, part)
    for saved, kept in ((["cosine", 0, 4], ("cosine", 0, 4)), (["cosine-restarts", 0, 4], None)):
        state.load_state_dict({"step": 4, "data": {}, "guard": {}, "lr_schedule": saved})
        assert state.saved_schedule == kept


def test_a_resume_on_data_changed_since_the_checkpoint_says_so(tiny, image_folder,
                                                               config_file, capsys):
    """Files added, removed or renamed before --resume reshuffle the epoch under the saved
    cursor (some samples read twice, others never): one warning says so (it was silent)."""
    from glidectl.cli.app import main

    cfg = tiny(train=dict(steps=1), data=dict(source=str(image_folder)))
    run_dir = Trainer(cfg, quiet=True).run().run_dir
    path = config_file(cfg)

    def resume(steps: int) -> str:
        with pytest.raises(SystemExit):
            main(["train", "-c", str(path), "--resume", "latest", "--steps", str(steps),
                  "--no-live"])
        return " ".join(capsys.readouterr().out.split())

    assert "data changed" not in resume(2)  # the same files: nothing to say
    for name in ("img7.png", "img7.txt"):
        (image_folder / name).unlink()
    out = resume(3)
    assert ("Warning: the data or their order changed since "
            f"{str(run_dir / 'checkpoints' / 'step-000002')!r} was saved "
            f"({str(image_folder)!r} now lists 7 samples an epoch, not 8): the run goes on "
            "with the data as they are, but not as it would have") in out
    (image_folder / "img6.png").rename(image_folder / "other.png")
    assert "now lists other files (7 samples an epoch, as before))" in resume(4)


def test_a_resume_with_another_shuffle_buffer_or_resampling_says_so(tiny, image_folder,
                                                                     tmp_path):
    """Shards read through another data.shuffle_buffer, or data.resampled switched, put
    other samples under the saved cursor: one warning names the setting (it was silent)."""
    shards = _shards(image_folder, tmp_path / "shards")
    cfg = tiny(train=dict(steps=1), data=dict(source=str(shards), image_key="png",
                                              shuffle_buffer=4))
    Trainer(cfg, quiet=True).run()
    cfg.train.steps, cfg.data.shuffle_buffer, cfg.data.resampled = 2, 100, True
    trainer = Trainer(cfg, resume="latest", quiet=True)
    assert [n for n in trainer._notes if "order changed" in n] == [
        f"Warning: the data or their order changed since "
        f"{str(trainer.run_dir.checkpoints / 'step-000001')!r} was saved (data.shuffle_buffer "
        "4 → 100; data.resampled false → true): the run goes on with the data as they are, "
        "but not as it would have, as the samples under way are shuffled anew and may be "
        "read again or left out (undo the change to resume exactly)."]


def test_a_resume_with_another_batch_under_train_epochs_names_the_steps_that_read_them(tiny):
    """train.epochs counts the steps at the resumed run's batch from the run's start: a run
    stopped a third into its epoch at batch 2 and resumed at batch 4 ended at step 6, a
    third of the epoch unread, saying only that it was already done; the line now says so
    and names the train.steps that reads the epoch."""
    from glidectl.training.metrics import read_metrics

    cfg = tiny(train=dict(steps=0, epochs=1, batch_size=2), checkpoint=dict(every=4))
    first = Trainer(cfg, quiet=True).run(until=4)  # 8 of the 24 demo images
    cfg.train.batch_size = 4
    resumed = Trainer(cfg, resume="latest", quiet=True)
    assert resumed.total_steps == 6
    assert ("train.epochs = 1 counts 6 steps at the new batch, as if the run had used it from "
            "its start, but 0.33 epochs were read by step 4: for 1 epoch in all, set "
            "train.steps = 8 and train.epochs = 0.") in " ".join(resumed._notes)
    cfg.train.steps, cfg.train.epochs = 8, 0
    Trainer(cfg, resume="latest", quiet=True).run()
    last = read_metrics(first.run_dir / "metrics.jsonl")[-1]
    assert (last["step"], last["data_accepted"]) == (8, 24)  # the epoch, each image once


def test_a_resume_with_another_optimizer_is_one_line_and_changes_nothing(tiny):
    cfg = tiny(train=dict(steps=2))
    result = Trainer(cfg, quiet=True).run()
    saved = (result.run_dir / "config.toml").read_text(encoding="utf-8")
    cfg.train.optimizer, cfg.train.steps = "adafactor", 3
    with pytest.raises(GlidectlError, match=r"trained with train.optimizer = \"adamw\" and "
                       r"this config says \"adafactor\"; resume with \"adamw\""):
        Trainer(cfg, resume="latest", quiet=True)
    assert (result.run_dir / "config.toml").read_text(encoding="utf-8") == saved


def test_a_resume_refused_once_set_up_leaves_the_runs_config(tiny, tmp_path):
    """The config was saved before the previews' prompt file was read (and the trackers
    started), so a resume refused there left config.toml naming settings never trained."""
    cfg = tiny(train=dict(steps=2))
    result = Trainer(cfg, quiet=True).run()
    saved = (result.run_dir / "config.toml").read_bytes()
    cfg.train.steps, cfg.preview.every = 3, 1
    cfg.preview.prompt_file = str(tmp_path / "missing.txt")
    with pytest.raises(GlidectlError, match="preview.prompt_file .* does not exist"):
        Trainer(cfg, resume="latest", quiet=True).run()
    assert (result.run_dir / "config.toml").read_bytes() == saved


def test_a_resume_whose_first_step_fails_leaves_the_runs_config(tiny):
    """config.toml was written before the resume's first batch was read, so a resume whose
    data gave no sample left it naming settings that trained nothing (lr, min_image_size),
    which a later `--resume RUN` read back and failed on again."""
    cfg = tiny(train=dict(steps=2))
    result = Trainer(cfg, quiet=True).run()
    saved = (result.run_dir / "config.toml").read_bytes()
    cfg.train.steps, cfg.train.lr, cfg.data.min_image_size = 3, 5e-4, 999
    with pytest.raises(GlidectlError, match="No valid samples"):
        Trainer(cfg, resume="latest", quiet=True).run()
    assert (result.run_dir / "config.toml").read_bytes() == saved


def test_a_resume_path_records_the_run_it_trains_not_another_name(tiny, capsys):
    """`--resume runs/t --name other` trained runs/t and recorded name = "other", so a later
    `--resume latest` from that config looked for runs/other."""
    from glidectl.config import load_config

    cfg = tiny(train=dict(steps=2))
    run = Trainer(cfg, quiet=True).run().run_dir
    cfg.train.steps, cfg.train.name = 3, "other"
    Trainer(cfg, resume=str(run), live=False).run()
    saved = load_config(run / "config.toml").train
    assert (saved.name, saved.output_dir) == ("t", str(run.parent))
    assert (f"--resume trains the run in {str(run)!r}; train.name 'other' in "
            f"{cfg.train.output_dir!r} names another folder") in " ".join(
        capsys.readouterr().out.split())
    again = load_config(run / "config.toml")
    again.train.steps = 4
    assert Trainer(again, resume="latest", quiet=True).run().step == 4
    assert not (run.parent / "other").exists()


def test_a_resume_from_an_earlier_checkpoint_sets_the_later_ones_aside(tiny, capsys):
    """Pruning deleted the new run's checkpoints first (it keeps the highest steps), and
    step-N named either run's weights; now the later ones are moved, whole, out of the way."""
    cfg = tiny(train=dict(steps=4), checkpoint=dict(every=1, keep_last=0))
    first = Trainer(cfg, quiet=True).run()
    checkpoints = first.run_dir / "checkpoints"
    old_four = _weights(first.run_dir, 4)
    cfg.train.steps, cfg.checkpoint.keep_last = 3, 2
    Trainer(cfg, resume=str(checkpoints / "step-000002"), live=False).run()
    assert sorted(p.name for p in checkpoints.glob("step-*")) == ["step-000002", "step-000003"]
    aside = checkpoints / "abandoned-after-step-000002"
    assert sorted(p.name for p in aside.iterdir()) == ["step-000003", "step-000004"]
    moved = load_file(aside / "step-000004" / "model.safetensors")
    assert all(torch.equal(v, old_four[k]) for k, v in moved.items())
    assert (checkpoints / "latest").read_text().strip() == "step-000003"
    assert "later checkpoints (step-000003, step-000004)" in " ".join(
        capsys.readouterr().out.split())
    cfg.train.steps = 5
    with pytest.raises(GlidectlError, match="was set aside when its run resumed from an earlier"):
        Trainer(cfg, resume=str(aside / "step-000004"), quiet=True)


def test_a_branch_resume_sets_the_later_previews_aside_with_their_checkpoints(tiny, capsys):
    """The old branch's previews/step-000003.png and step-000004.png stayed beside the new
    branch's, which replaced step-000003.png; they go with their checkpoints' branch, to
    previews/abandoned-after-step-000002/, the shared steps' grids staying."""
    cfg = tiny(train=dict(steps=4), checkpoint=dict(every=1, keep_last=0),
               preview=dict(every=1, steps=1, prompts=["a red square"]))
    run = Trainer(cfg, quiet=True).run().run_dir
    previews = run / "previews"
    old = {p.name: p.read_bytes() for p in previews.glob("step-00000[34].png")}
    cfg.train.steps = 3
    Trainer(cfg, resume=str(run / "checkpoints" / "step-000002"), live=False).run()
    aside = previews / "abandoned-after-step-000002"
    assert {p.name: p.read_bytes() for p in aside.iterdir()} == old
    assert sorted(p.name for p in previews.glob("*.png")) == [
        f"step-00000{i}.png" for i in range(4)]
    assert f"and its later previews (step-000003.png, step-000004.png) to {str(aside)!r}" in \
        " ".join(capsys.readouterr().out.split())


def test_a_resume_with_nothing_to_train_leaves_the_later_steps_as_they_were(tiny, capsys):
    """`--resume RUN/checkpoints/step-000002 --steps 2` trained nothing, yet dropped steps 3
    and 4 from metrics.jsonl, set their checkpoints aside and pointed `latest` back."""
    from glidectl.training.metrics import read_metrics

    cfg = tiny(train=dict(steps=4), checkpoint=dict(every=1, keep_last=0))
    run = Trainer(cfg, quiet=True).run().run_dir
    checkpoints = run / "checkpoints"
    cfg.train.steps = 2
    assert Trainer(cfg, resume=str(checkpoints / "step-000002"), live=False).run().step == 2
    assert "already at step 2 of 2: nothing to train" in capsys.readouterr().out
    assert sorted(p.name for p in checkpoints.iterdir()) == [
        "latest", "step-000001", "step-000002", "step-000003", "step-000004"]
    assert (checkpoints / "latest").read_text().strip() == "step-000004"
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [1, 2, 3, 4]


def test_a_resume_with_nothing_to_train_prunes_to_the_runs_own_keep_last(tiny):
    """`--resume latest --steps 2 --set checkpoint.keep_last=1` on a run at step 4 trained
    nothing and left config.toml's keep_last = 0, yet deleted steps 1 to 3; the run's
    recorded keep_last still prunes what a kill left."""
    cfg = tiny(train=dict(steps=4), checkpoint=dict(every=1, keep_last=0))
    run = Trainer(cfg, quiet=True).run().run_dir
    checkpoints = run / "checkpoints"
    cfg.train.steps, cfg.checkpoint.keep_last = 2, 1
    assert Trainer(cfg, resume="latest", quiet=True).run().step == 4
    assert sorted(p.name for p in checkpoints.iterdir()) == [
        "latest", "step-000001", "step-000002", "step-000003", "step-000004"]
    config = run / "config.toml"
    config.write_text(config.read_text().replace("keep_last = 0", "keep_last = 2"))
    Trainer(cfg, resume="latest", quiet=True).run()
    assert sorted(p.name for p in checkpoints.iterdir()) == [
        "latest", "step-000003", "step-000004"]


def test_a_metrics_record_whose_step_is_no_number_does_not_stop_a_resume(tiny):
    """A damaged or hand-edited metrics.jsonl line (`{"step": "x"}`, `{"step": null}`) made
    every resume a traceback (`ValueError: invalid literal for int()`); it is kept."""
    from glidectl.training.metrics import read_metrics

    cfg = tiny(train=dict(steps=2), checkpoint=dict(every=1))
    run = Trainer(cfg, quiet=True).run().run_dir
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": "x", "note": "mine"}\n{"step": null}\n')
    cfg.train.steps = 3
    assert Trainer(cfg, resume=str(run / "checkpoints" / "step-000001"),
                   quiet=True).run().step == 3
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [1, "x", None, 2, 3]


def test_your_own_pairs_train_as_a_folder_of_them_does_and_resume_exactly(tiny, image_folder):
    """``dataset=[(image, caption), ...]`` (PIL images or paths; a list or a torch Dataset)
    is read as ``data.source`` is, with [data]'s resolution, crops, flips and caption
    dropout, and validation's holdout taken from it: the same weights as a folder of those
    files, bit for bit, also when stopped and resumed with the same pairs."""
    from PIL import Image

    files = sorted(image_folder.glob("*.png"))
    pairs = [(Image.open(p) if i % 2 else str(p), p.with_suffix(".txt").read_text())
             for i, p in enumerate(files)]

    class Pairs(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(pairs)

        def __getitem__(self, i: int) -> tuple:
            return pairs[i]

    sections = dict(train=dict(steps=2), checkpoint=dict(every=1),
                    data=dict(flip=True, uncond_p=0.3, crop_scale=[0.6, 1.0]),
                    validation=dict(every=2, holdout=2, timesteps=1))
    folder_cfg = tiny(**sections)
    folder_cfg.data.source, folder_cfg.train.name = str(image_folder), "folder"
    folder = Trainer(folder_cfg, quiet=True).run()

    pairs_cfg = tiny(**sections)  # its data.source (demo data) is not read
    pairs_cfg.train.name = "pairs"
    first = Trainer(pairs_cfg, dataset=pairs, quiet=True).run(until=1)
    assert first.step == 1 and first.interrupted
    second = Trainer(pairs_cfg, resume="latest", dataset=Pairs(), quiet=True).run()
    a, b = _weights(folder.run_dir, 2), _weights(second.run_dir, 2)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["loss"] for r in folder.history] == [
        r["loss"] for r in first.history + second.history]
    assert folder.validation == second.validation and len(second.validation) == 1


@pytest.mark.parametrize("dataset, said", [
    ("images/", "dataset= got 'images/' (str) (a folder or file is data.source); pass a list "
                "of (image, caption) pairs"),
    ([("a.png", "a cat"), ("b.png", None)], "dataset[1] is ('b.png', None) (tuple); pass a "
                                              "list of (image, caption) pairs"),
    ([], "dataset= holds no pairs; pass a list of (image, caption) pairs"),
])
def test_training_data_of_another_kind_is_one_sentence_and_makes_no_run(tiny, dataset, said):
    from pathlib import Path

    from glidectl.training import train

    cfg = tiny()
    with pytest.raises(GlidectlError) as err:
        train(cfg, dataset=dataset, quiet=True)
    assert str(err.value).startswith(said) and str(err.value).count(". ") == 0
    assert not Path(cfg.train.output_dir, cfg.train.name).exists()


def test_a_resume_that_switches_the_ema_on_or_off_says_so(tiny, capsys):
    """Switching EMA on said the checkpoint's ema.safetensors "is not a glidectl resume
    file (it is missing)", as if damaged; switching it off dropped the EMA without a word."""
    cfg = tiny(train=dict(steps=2, ema_decay=0.0))
    run = Trainer(cfg, quiet=True).run().run_dir
    cfg.train.steps, cfg.train.ema_decay = 3, 0.9
    with pytest.raises(GlidectlError, match=r"with an EMA: the run was trained without one "
                                            r"\(train.ema_decay = 0\) and this config sets"):
        Trainer(cfg, resume="latest", quiet=True)
    cfg.train.ema_decay = 0.0
    Trainer(cfg, resume="latest", quiet=True).run()  # as it trained: no word
    cfg.train.name, cfg.train.ema_decay = "with-ema", 0.9
    Trainer(cfg, quiet=True).run()
    capsys.readouterr()
    cfg.train.steps, cfg.train.ema_decay = 4, 0.0
    Trainer(cfg, resume="latest", live=False).run()
    assert "train.ema_decay = 0 drops the run's EMA weights" in " ".join(
        capsys.readouterr().out.split())
    assert (run / "checkpoints" / "step-000003").is_dir()


def test_a_resume_with_another_seed_is_one_line_and_an_idle_one_keeps_the_config(tiny):
    """A new train.seed re-shuffled the epoch under the old cursor (images read twice and
    never) while the noise followed the old seed; a resume with nothing to train rewrote
    config.toml with settings that trained nothing."""
    cfg = tiny(train=dict(steps=2))
    result = Trainer(cfg, quiet=True).run()
    saved = (result.run_dir / "config.toml").read_text(encoding="utf-8")
    cfg.train.seed, cfg.train.steps = cfg.train.seed + 1, 3
    with pytest.raises(GlidectlError, match=r"with train.seed = \d+: it trained with "
                       r"train.seed = \d+, whose data order"):
        Trainer(cfg, resume="latest", quiet=True)
    cfg.train.seed, cfg.train.steps, cfg.train.warmup_steps = cfg.train.seed - 1, 1, 7
    again = Trainer(cfg, resume="latest", quiet=True).run()
    assert again.step == 2
    assert (result.run_dir / "config.toml").read_text(encoding="utf-8") == saved


def test_a_resume_with_another_text_lr_scale_names_that_key(tiny):
    """It said "lr 0.0006 → 0.001" where train.lr had not changed."""
    cfg = tiny(train=dict(steps=2, lr=2e-3, text_lr_scale=0.3))
    Trainer(cfg, quiet=True).run()
    cfg.train.steps, cfg.train.text_lr_scale = 3, 0.5
    said = " ".join(Trainer(cfg, resume="latest", quiet=True)._notes)  # shown at the start
    assert "text_lr_scale 0.3 → 0.5" in said and "lr 0.0006" not in said, said
    cfg.train.lr, cfg.train.text_lr_scale = 1e-3, 0.3  # train.lr alone: no scale change said
    said = " ".join(Trainer(cfg, resume="latest", quiet=True)._notes)
    assert "lr 0.002 → 0.001" in said and "text_lr_scale" not in said, said


def test_an_upsampler_step_keeps_the_filter_it_trained_with_after_a_resume_changes_it(tiny):
    """An upsampler run resumed with another data.low_res_resample: exports and evals of
    its earlier steps read the run's config.toml and recorded the new filter; each step's
    weights now record the filter they trained with."""
    from glidectl.eval_upsampler_inputs import RESAMPLE_KEY, training_resample
    from glidectl.glide.checkpoints import read_metadata
    from glidectl.training.export import export_weights

    sections = dict(model=dict(kind="upsample"), data=dict(min_image_size=8),
                    train=dict(steps=2), checkpoint=dict(every=2))
    run = Trainer(tiny(**sections), quiet=True).run().run_dir
    cfg = tiny(**sections)
    cfg.train.steps, cfg.data.low_res_resample = 4, "box"
    Trainer(cfg, resume="latest", quiet=True).run()
    step2, step4 = (run / "checkpoints" / f"step-{s:06d}" for s in (2, 4))
    assert training_resample(step2 / "ema.safetensors") == "bicubic"
    assert training_resample(step4 / "model.safetensors") == "box"
    _, out = export_weights(step2, run.parent / "up2.safetensors")
    assert read_metadata(out)[RESAMPLE_KEY] == "bicubic"


def test_a_full_run_resumed_with_another_model_init_is_one_line(tiny, tmp_path, monkeypatch):
    """`train --resume RUN --set model.init=OTHER` trained on from the checkpoint's weights
    and recorded OTHER in the run's config.toml, as if the run had begun from it."""
    monkeypatch.chdir(tmp_path)
    cfg = tiny(train=dict(steps=2, output_dir="runs"))
    first = Trainer(cfg, quiet=True).run().run_dir
    saved = (first / "config.toml").read_text(encoding="utf-8")
    cfg.train.steps, cfg.model.init = 3, "runs/t/checkpoints/step-000002"
    with pytest.raises(GlidectlError, match=(
            r"^Cannot resume 'runs/t' with model.init = 'runs/t/checkpoints/step-000002': it "
            r"began from model.init = 'scratch', and a resume goes on with its checkpoint's "
            r"weights, not model.init's; resume with model.init = 'scratch', or start a new "
            r"run \(another train.name\) to train from 'runs/t/checkpoints/step-000002'\.$")):
        Trainer(cfg, resume="latest", quiet=True)
    assert (first / "config.toml").read_text(encoding="utf-8") == saved
    cfg.train.name, cfg.train.steps = "on-t", 2  # a run begun from a path: the same path
    Trainer(cfg, quiet=True).run()
    cfg.train.steps, cfg.model.init = 3, str(tmp_path / "runs/t/checkpoints/step-000002/")
    assert Trainer(cfg, resume="latest", quiet=True).run().step == 3


def test_a_finetune_resumes_from_its_checkpoint_without_its_model_init_file(tiny, tmp_path):
    """A finetune's resume loaded model.init again (openai:base: downloaded again) only to
    replace its weights with the checkpoint's: with the file moved it stopped, `Model ...
    not found`. It resumes from the checkpoint alone."""
    from tiny_configs import tiny_base_weights

    init = tiny_base_weights(tmp_path / "base.safetensors")
    cfg = tiny(model=dict(init=str(init)), data=dict(resolution=16), train=dict(steps=1))
    Trainer(cfg, quiet=True).run()
    init.unlink()
    cfg.train.steps = 2
    assert Trainer(cfg, resume="latest", quiet=True).run().step == 2


def test_a_resume_with_another_trainable_part_names_that_key(tiny):
    """It said "state/optimizer.safetensors does not fit this run (ValueError: loaded state
    dict contains a parameter group that doesn't match the size of optimizer's group)"."""
    cfg = tiny(train=dict(steps=2))
    run = Trainer(cfg, quiet=True).run().run_dir
    cfg.train.steps, cfg.train.trainable = 3, "unet"
    with pytest.raises(GlidectlError, match=(
            rf"^Cannot resume '{re.escape(str(run))}' with train.trainable = 'unet': it trained "
            r"train.trainable = 'all', whose optimizer state the checkpoint holds; resume with "
            r"train.trainable = 'all', or start a new run \(another train.name\) with "
            rf"model.init = '{re.escape(str(run))}/checkpoints/step-000002' to train the "
            r"UNet alone\.$")):
        Trainer(cfg, resume="latest", quiet=True)
