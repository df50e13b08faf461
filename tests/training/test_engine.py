"""The engine end to end with the tiny preset: run layout, EMA, previews, guards, parts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file
from tiny_configs import tiny_base_weights

from glidectl.config import load_config
from glidectl.errors import GlidectlError
from glidectl.training.engine import Trainer
from glidectl.training.metrics import read_metrics


def test_run_directory_layout_and_metrics(tiny):
    cfg = tiny(checkpoint=dict(every=1, keep_last=2), preview=dict(every=2, steps=2,
               prompts=["a red circle on a white background", "a blue square"]))
    trainer = Trainer(cfg, quiet=True)
    result = trainer.run()
    root = result.run_dir
    assert load_config(root / "config.toml") == cfg
    records = read_metrics(root / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for key in ("loss", "mse", "vb", "lr", "grad_norm", "images_per_s", "data_wait",
                "skipped_nonfinite", "data_accepted", "data_skipped"):
        assert key in records[-1], key
    assert all(math.isfinite(r["loss"]) for r in records)
    ckpts = sorted(p.name for p in (root / "checkpoints").iterdir())
    assert ckpts == ["latest", "step-000003", "step-000004"]
    assert (root / "checkpoints" / "latest").read_text().strip() == "step-000004"
    step_dir = root / "checkpoints" / "step-000004"
    assert {p.name for p in step_dir.iterdir()} == {"model.safetensors", "ema.safetensors",
                                                     "state"}
    with safe_open(step_dir / "model.safetensors", "pt") as f:
        meta = f.metadata()
    assert json.loads(meta["glidectl.model_options"]) == trainer.bundle.options.to_dict()
    assert meta["step"] == "4" and meta["run"] == "t"
    recommended = json.loads(meta["glidectl.sampling"])  # from [preview]: sample's defaults
    assert recommended == {"sampler": cfg.preview.sampler, "steps": 2,
                           "guidance": cfg.preview.guidance,
                           "prompts": ["a red circle on a white background", "a blue square"]}
    previews = sorted(p.name for p in (root / "previews").iterdir())
    assert previews == ["step-000000.png", "step-000002.png", "step-000004.png"]
    im = Image.open(root / "previews" / "step-000004.png")
    assert im.text["step"] == "4" and "a blue square" in im.text["prompts"]
    assert im.width >= 2 * 64 and im.height > 64  # 32 px tiles enlarged to 64, captioned
    assert remade_preview(im, step_dir / "ema.safetensors") == im.convert("RGB").tobytes()


def remade_preview(png: Image.Image, weights: Path) -> bytes:
    """A preview grid made again by the library from what its PNG records and the EMA
    weights of its step, as ``glidectl sample`` would make it."""
    from glidectl import generate
    from glidectl.images import captioned_grid

    t = png.text
    prompts = json.loads(t["prompts"])
    images = generate(prompts, base=str(weights), upsampler="none", device="cpu",
                      seed=int(t["seed"]), sampler=t["sampler"], steps=int(t["steps"]),
                      schedule=t["schedule"], guidance=float(t["guidance"]),
                      precision=t["precision"], batch_size=int(t["batch_size"]))
    return captioned_grid(images, prompts).tobytes()


def test_throughput_leaves_out_previews_validation_and_checkpoints(tiny, monkeypatch):
    """A clock that moves only inside previews and checkpoints: every window's images/s
    counts no second of them (the window after a preview or a checkpoint counted them)."""
    import types

    from glidectl.training import metrics
    from glidectl.training.loop import TrainingLoop
    from glidectl.training.trainer_checkpoints import TrainerCheckpoints

    clock = [0.0]
    monkeypatch.setattr(metrics, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))

    def slow(method):
        def run(self, *args, **kwargs):
            clock[0] += 100.0
            return method(self, *args, **kwargs)
        return run

    monkeypatch.setattr(TrainingLoop, "_preview", slow(TrainingLoop._preview))
    monkeypatch.setattr(TrainerCheckpoints, "_checkpoint", slow(TrainerCheckpoints._checkpoint))
    cfg = tiny(train=dict(steps=4), log=dict(every=1), checkpoint=dict(every=1),
               preview=dict(every=2, steps=2, prompts=["a red circle"]))
    records = read_metrics(Trainer(cfg, quiet=True).run().run_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert all(r["images_per_s"] > 1e6 for r in records), records


def test_ema_feeds_previews_and_exports_but_never_the_training_weights(tiny, monkeypatch):
    cfg = tiny(train=dict(steps=3, ema_decay=0.5), preview=dict(every=3, steps=2,
               prompts=["a green triangle"]), checkpoint=dict(every=3))
    trainer = Trainer(cfg, quiet=True)
    seen = {}

    def fake_sample(self):
        seen["weights"] = [p.detach().clone() for p in trainer.params]
        return torch.zeros(1, 3, 32, 32)

    from glidectl.training.previews import Previewer

    monkeypatch.setattr(Previewer, "sample", fake_sample)
    trainer.run()
    training = [p.detach() for p in trainer.params]
    ema = trainer.ema.shadow
    assert all(torch.equal(a, b) for a, b in zip(seen["weights"], ema, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(training, ema, strict=True))
    step_dir = trainer.run_dir.checkpoints / "step-000003"
    exported_ema, exported = load_file(step_dir / "ema.safetensors"), load_file(
        step_dir / "model.safetensors")
    names = [n for n, _ in trainer.adapter.trainable(trainer.unwrapped)]
    for name, p, s in zip(names, training, ema, strict=True):
        assert torch.equal(exported[name], p), name
        assert torch.equal(exported_ema[name], s), name


def _change_losses(trainer, monkeypatch, change) -> None:
    """The trainer's training losses, each changed in place by ``change(call, out)`` (call:
    1, 2, … as the loop asks for them)."""
    calls = {"n": 0}
    real = trainer.bundle.diffusion.training_losses

    def changed(*args, **kwargs):
        calls["n"] += 1
        out = real(*args, **kwargs)
        change(calls["n"], out)
        return out

    monkeypatch.setattr(trainer.bundle.diffusion, "training_losses", changed)


def test_nonfinite_losses_are_skipped_then_stop_the_run(tiny, monkeypatch):
    cfg = tiny(train=dict(steps=20, max_nonfinite=3))
    trainer = Trainer(cfg, quiet=True)

    def flaky(call, out):
        if call in (2,) or call >= 4:
            out["loss"] = out["loss"] * float("nan")

    _change_losses(trainer, monkeypatch, flaky)
    before = [p.detach().clone() for p in trainer.params]
    with pytest.raises(GlidectlError, match="3 steps in a row"):
        trainer.run()
    # steps: ok, NaN (skipped), ok, then NaN x3 → stop; only 2 optimizer steps happened
    assert trainer.state.step == 2 and trainer.guard.total == 4
    assert all(torch.isfinite(p).all() for p in trainer.params)
    assert not all(torch.equal(a, b) for a, b in zip(before, trainer.params, strict=True))


def test_a_nan_gradient_under_a_finite_loss_is_skipped_and_never_saved(tiny, monkeypatch):
    """A finite loss whose gradient is NaN stepped the optimizer: every weight and the EMA
    went NaN, and the step's checkpoint saved them as ``latest``."""
    cfg = tiny(train=dict(steps=8, max_nonfinite=3, ema_decay=0.5), checkpoint=dict(every=2))
    trainer = Trainer(cfg, quiet=True)

    def nan_gradient(call, out):
        if call >= 4:  # sqrt's gradient at 0 is inf, times 0: NaN; the value stays
            out["loss"] = out["loss"] + torch.sqrt(out["loss"] * 0) * 0

    _change_losses(trainer, monkeypatch, nan_gradient)
    with pytest.raises(GlidectlError, match=r"at step 4: the gradient norm was nan for 3 steps "
                       r"in a row.*its last checkpoint is '.*step-000002': resume with"):
        trainer.run()
    assert trainer.state.step == 3 and trainer.guard.total == 3
    assert all(torch.isfinite(p).all() for p in trainer.params)
    checkpoints = trainer.run_dir.checkpoints
    assert (checkpoints / "latest").read_text().strip() == "step-000002"
    for name in ("model", "ema"):
        saved = load_file(checkpoints / "step-000002" / f"{name}.safetensors")
        assert all(torch.isfinite(t).all() for t in saved.values()), name


def test_text_only_training_keeps_the_unet_frozen_but_trains_encoder_kv(tiny, tmp_path):
    init = tiny_base_weights(tmp_path / "live.safetensors")  # output layers live, as trained
    cfg = tiny(model=dict(init=str(init)), data=dict(resolution=16),
               train=dict(steps=2, trainable="text"), checkpoint=dict(every=0))
    trainer = Trainer(cfg, quiet=True)
    before = {k: v.clone() for k, v in trainer.unwrapped.state_dict().items()}
    trainer.run()
    after = trainer.unwrapped.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(".encoder_kv." in k for k in changed)
    assert any(k.startswith("transformer.") for k in changed)
    assert not any(k.startswith(("input_blocks", "output_blocks", "middle_block", "out."))
                   and ".encoder_kv." not in k for k in changed)


def test_upsampler_trains_and_previews_input_output_reference_rows(tiny):
    cfg = tiny(model=dict(kind="upsample"), data=dict(resolution=64),
               train=dict(steps=2), preview=dict(every=2, steps=2), checkpoint=dict(every=2))
    result = Trainer(cfg, quiet=True, kinds=("upsample", "upsample-inpaint")).run()
    assert result.step == 2
    grid = Image.open(result.run_dir / "previews" / "step-000002.png")
    assert grid.width == 3 * 64  # 8 rows of [low-res | output | reference], each captioned
    assert grid.height > 8 * 64 + 7 * 4


def test_upsampler_previews_use_their_images_own_captions_and_record_no_sampler(tiny):
    """preview.prompts are for base models: held-out images are upsampled under their own
    captions, and an upsampler's checkpoint recommends no sampling settings (every front end
    upsamples with fast27 DDPM unless told)."""
    from glidectl.glide.checkpoints import read_metadata
    from glidectl.pipeline import RECOMMENDED_KEY

    cfg = tiny(model=dict(kind="upsample"), data=dict(resolution=32),
               train=dict(steps=1), checkpoint=dict(every=1),
               preview=dict(every=1, steps=2, prompts=["an unrelated prompt"]))
    trainer = Trainer(cfg, quiet=True, kinds=("upsample", "upsample-inpaint"))
    assert trainer.previewer.prompts and "an unrelated prompt" not in trainer.previewer.prompts
    result = trainer.run()
    step = result.run_dir / "checkpoints" / "step-000001" / "ema.safetensors"
    recorded = json.loads(read_metadata(step)[RECOMMENDED_KEY])
    assert set(recorded) == {"prompts"}


def test_a_preview_low_res_file_of_another_size_is_named_in_a_warning(tiny, tmp_path, capsys):
    """An upsampler of 8 px input previews a 16 px file shrunk, and the run says so."""
    Image.new("RGB", (16, 16), (255, 0, 0)).save(tmp_path / "big.png")
    cfg = tiny(model=dict(kind="upsample"), data=dict(resolution=32), train=dict(steps=1),
               preview=dict(every=1, steps=1, low_res=[str(tmp_path / "big.png")]))
    Trainer(cfg, live=False, kinds=("upsample", "upsample-inpaint"))
    assert (f"Warning: preview.low_res image {str(tmp_path / 'big.png')!r} is 16 px across, "
            "but this upsampler takes 8 px input") in " ".join(capsys.readouterr().out.split())


def test_a_preview_low_res_file_is_shrunk_with_the_run_s_low_res_filter(tiny, tmp_path):
    """preview.low_res of another size was shrunk with bicubic whatever
    data.low_res_resample said, so a box-trained upsampler previewed inputs unlike those it
    trained on; it is shrunk with the run's filter, which the preview PNG records."""
    import numpy as np
    import torch

    from glidectl.images import from_pil

    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "big.png")
    cfg = tiny(model=dict(kind="upsample"), data=dict(resolution=32, low_res_resample="box"),
               train=dict(steps=1), preview=dict(every=1, steps=1,
                                                 low_res=[str(tmp_path / "big.png")]))
    previewer = Trainer(cfg, quiet=True, kinds=("upsample", "upsample-inpaint")).previewer
    box = from_pil(Image.fromarray(noise), 8, Image.Resampling.BOX)
    assert not torch.equal(box, from_pil(Image.fromarray(noise), 8))
    assert torch.equal(previewer.low_res, box)
    assert previewer.picture_record()["low_res_resample"] == "box"


def test_an_upsample_inpaint_run_previews_held_out_images_whatever_preview_low_res(
        tiny, tmp_path):
    """preview.low_res on an upsample-inpaint run made its previews upsample those files with
    no image and an all-hidden mask (what training never shows it: no inpainting seen), and
    preview.prompts captioned them, without a word; the previews inpaint held-out images
    (test_unused_keys: the files are said to be ignored)."""
    Image.new("RGB", (8, 8), (200, 30, 30)).save(tmp_path / "low.png")
    cfg = tiny(model=dict(kind="upsample-inpaint"), data=dict(resolution=32),
               train=dict(steps=1), preview=dict(every=1, steps=1, prompts=["a"],
                                                 low_res=[str(tmp_path / "low.png")]))
    previewer = Trainer(cfg, quiet=True, kinds=("upsample", "upsample-inpaint")).previewer
    assert previewer.masks is not None and previewer.reference is not None
    assert len(previewer.prompts) == len(previewer.reference) > 1
    assert "a" not in previewer.prompts  # each held-out image's own caption


def test_upsampler_finetuned_at_another_resolution_previews_at_its_own_size(tiny, tmp_path):
    """A 32 px upsampler finetuned on 16 px crops (data.resolution) previews 8 → 32 px rows,
    as it samples; before, the 16 px reference beside the 32 px output was a traceback."""
    from glidectl.glide import create_model, preset_options, save_weights

    init = save_weights(create_model(preset_options("upsample", "tiny").replace(
        image_size=32)), tmp_path / "up32.safetensors")
    cfg = tiny(model=dict(kind="upsample", init=str(init)), data=dict(resolution=16),
               train=dict(steps=1), checkpoint=dict(every=1), preview=dict(every=1, steps=1))
    trainer = Trainer(cfg, quiet=True, kinds=("upsample", "upsample-inpaint"))
    assert (f"data.resolution = 16: {init} trains on 16 px images but stays a 32 px model, "
            "and its checkpoints, previews and glidectl sample make 32 px images "
            "(data.resolution = 0 trains at 32 px).") in trainer._notes  # said, not silent
    result = trainer.run()
    grid = Image.open(result.run_dir / "previews" / "step-000001.png")
    assert grid.width == 3 * 64  # [low-res | output | reference], each enlarged to 64 px
    assert not [n for n in Trainer(tiny(train=dict(steps=1, name="s")), quiet=True)._notes
                if "data.resolution" in n]  # a scratch model takes data.resolution as its size


@pytest.mark.parametrize("kind, width", [("base-inpaint", 3), ("upsample-inpaint", 4)])
def test_inpaint_previews_fill_a_hidden_rectangle_of_held_out_images(tiny, kind, width):
    """Inpainting previews show [(low-res |) masked input | output | reference] rows and keep
    the known pixels; before, they sampled with no image and an all-hidden mask, which
    training never shows the model."""
    cfg = tiny(model=dict(kind=kind), data=dict(resolution=16 if kind == "base-inpaint" else 32),
               train=dict(steps=1), checkpoint=dict(every=1), preview=dict(every=1, steps=2))
    trainer = Trainer(cfg, quiet=True, kinds=(kind,))
    previewer = trainer.previewer
    known = previewer.masks
    assert known is not None and 0 < known.mean() < 1
    out = previewer.sample()
    assert torch.allclose(out * known, previewer.reference * known, atol=1e-5)
    result = trainer.run()
    grid = Image.open(result.run_dir / "previews" / "step-000001.png")
    assert grid.width == width * 64


def test_base_command_refuses_an_upsampler_config(tiny):
    with pytest.raises(GlidectlError, match="upsample"):
        Trainer(tiny(model=dict(kind="upsample")), quiet=True, kinds=("base", "base-inpaint"))


def test_existing_run_needs_resume(tiny):
    cfg = tiny(train=dict(steps=1))
    Trainer(cfg, quiet=True).run()
    with pytest.raises(GlidectlError, match="resume='latest'"):
        Trainer(cfg, quiet=True)


def test_ctrl_c_while_a_new_run_is_set_up_leaves_no_run_folder(tiny, monkeypatch):
    """A real SIGINT after the run folder is made, before training starts."""
    import os
    import signal
    import time

    from glidectl.training import engine

    real = engine.build_model

    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the default handler raises KeyboardInterrupt before this ends
        return real(*args, **kwargs)

    cfg = tiny()
    monkeypatch.setattr(engine, "build_model", interrupted)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as at start-up
    try:
        with pytest.raises(KeyboardInterrupt):
            Trainer(cfg, quiet=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert not Path(cfg.train.output_dir).exists()


def test_ctrl_c_in_a_slow_import_of_the_setup_stays_a_ctrl_c(tiny, monkeypatch):
    """torch.use_deterministic_algorithms imports torch._inductor (and sympy) on each call:
    a Ctrl-C in the setup's first seconds left it half-imported, and putting the switches
    back on the way out failed on it (`AttributeError: module 'sympy' has no attribute
    'core'`, a traceback with exit 1, not 'Aborted'). Switches that are already as asked
    are no longer set again."""
    from glidectl.training import engine

    def half_imported(*args, **kwargs):
        raise AttributeError("module 'sympy' has no attribute 'core'")

    def ctrl_c(*args, **kwargs):  # the optimizer's own import of torch._dynamo, cut short
        raise KeyboardInterrupt

    cfg = tiny()
    monkeypatch.setattr(torch, "use_deterministic_algorithms", half_imported)
    monkeypatch.setattr(engine, "make_optimizer", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, quiet=True)
    assert not Path(cfg.train.output_dir).exists()


def test_a_new_run_whose_data_has_no_valid_sample_leaves_no_run_folder(tiny, image_folder):
    """Images without captions are refused at the first batch, after the run folder was
    made: it stayed (config.toml, metrics.jsonl, an empty checkpoints/), so `sample --base`
    of it said to wait for a first checkpoint that no training would write."""
    for caption in image_folder.glob("*.txt"):
        caption.unlink()
    cfg = tiny(data=dict(source=str(image_folder)))
    with pytest.raises(GlidectlError, match="No valid samples"):
        Trainer(cfg, quiet=True).run()
    assert not Path(cfg.train.output_dir).exists()
    runs = Path(cfg.train.output_dir)
    runs.mkdir()  # a folder of the user's: kept, with what it held
    (runs / "notes.txt").write_text("mine")
    with pytest.raises(GlidectlError, match="No valid samples"):
        Trainer(cfg, quiet=True).run()
    assert sorted(p.name for p in runs.iterdir()) == ["notes.txt"]


def test_steps_are_optimizer_steps_across_accumulation_and_epochs(tiny):
    cfg = tiny(train=dict(steps=0, epochs=2, grad_accum=2), data=dict(demo_size=8),
               checkpoint=dict(every=0))
    trainer = Trainer(cfg, quiet=True)
    assert trainer.total_steps == 4  # 8 samples / (2 x 2) per step = 2 steps per epoch
    result = trainer.run()
    assert [r["step"] for r in result.history] == [1, 2, 3, 4]
    assert trainer.stream.epoch == 1 and trainer.stream.position == 4  # micro-batches


def test_a_first_epoch_cut_short_by_rejected_samples_says_how_often_the_run_reads(
        tiny, image_folder, capsys):
    """train.epochs counts steps from the samples the data lists: with 4 of 8 files empty,
    epochs = 1 read the usable 4 twice in silence (a first epoch of 2 steps, of 4)."""
    for i in range(4):
        (image_folder / f"img{i}.png").write_bytes(b"")
    cfg = tiny(train=dict(steps=0, epochs=1, batch_size=2), data=dict(source=str(image_folder)),
               checkpoint=dict(every=0))
    trainer = Trainer(cfg)
    assert trainer.total_steps == 4
    assert trainer.run().step == 4
    out = " ".join(capsys.readouterr().out.split())
    said = ("train.epochs = 1 came to 4 steps from the 8 samples the data lists, but the first "
            "epoch ended after 2: rejected samples (data_skipped in metrics.jsonl; glidectl "
            "dataset inspect names them) leave fewer. The run goes on to step 4, about 2.0 "
            "passes over the usable samples; for 1 epoch, set train.steps = 2 and "
            "train.epochs = 0.")
    assert out.count(said) == 1, out
    capsys.readouterr()
    for i in range(4):  # whole data: no line
        Image.new("RGB", (40, 36)).save(image_folder / f"img{i}.png")
    Trainer(tiny(train=dict(steps=0, epochs=2, batch_size=2, name="whole"),
                 data=dict(source=str(image_folder)), checkpoint=dict(every=0))).run()
    assert "came to" not in capsys.readouterr().out
    # 4 micro-batches an epoch in steps of 3: the first epoch ends inside step 2, which is
    # no rejected sample either (the steps round up over the epochs: 3 epochs, 4 steps)
    trainer = Trainer(tiny(train=dict(steps=0, epochs=3, batch_size=2, grad_accum=3,
                                      name="accum"),
                           data=dict(source=str(image_folder)), checkpoint=dict(every=0)))
    assert trainer.total_steps == 4
    trainer.run()
    assert "came to" not in capsys.readouterr().out


def test_three_images_train_in_batches_of_four_across_epochs(tiny, image_folder):
    """A DreamBooth-sized folder with a bigger batch and data.workers = 4 (was "not one batch
    of 4"): one worker, train.epochs counts the images read, and the checkpoint records the
    workers the run started with."""
    for path in image_folder.glob("img[3-7].*"):
        path.unlink()
    cfg = tiny(train=dict(steps=0, epochs=4, batch_size=4),
               data=dict(source=str(image_folder), workers=4), checkpoint=dict(every=3))
    trainer = Trainer(cfg, quiet=True)
    assert trainer.total_steps == 3 and trainer.stream.workers == 1  # 4 x 3 images
    assert any("each batch runs on into the next epoch" in n for n in trainer._notes)
    result = trainer.run()
    assert result.step == 3 and trainer.stream.epoch == 3 and trainer.stream.cursors == [3]
    from glidectl.training.resume_state import read_state_file

    train = read_state_file(result.checkpoint / "state" / "train.json")
    assert train["data"]["workers"] == {"asked": 4, "used": 1}


def test_a_run_keeps_only_its_last_records_in_memory_and_all_in_the_file(tiny, monkeypatch):
    from glidectl.training import state
    from glidectl.training.metrics import read_metrics

    monkeypatch.setattr(state, "RECORDS_KEPT", 2, raising=False)  # in use: the last 1,000
    cfg = tiny(train=dict(steps=4), checkpoint=dict(every=0),
               validation=dict(holdout=2, every=1, timesteps=1))
    result = Trainer(cfg, quiet=True).run()
    assert [r["step"] for r in result.history] == [3, 4]
    assert [r["step"] for r in result.validation] == [3, 4]
    logged = read_metrics(result.run_dir / "metrics.jsonl")
    assert [r["step"] for r in logged if "loss" in r] == [1, 2, 3, 4]
    assert [r["step"] for r in logged if "val_loss" in r] == [1, 2, 3, 4]


def test_bf16_keeps_fp32_master_weights(tiny):
    trainer = Trainer(tiny(train=dict(steps=1, precision="bf16"), data=dict(resolution=16),
                           preview=dict(every=1, steps=1, prompts=["a red circle"])), quiet=True)
    result = trainer.run()
    assert math.isfinite(result.last_loss)
    assert all(p.dtype == torch.float32 for p in trainer.params)
    assert all(s.dtype == torch.float32 for s in trainer.ema.shadow)
    # previews compute in bf16 too (accelerate autocasts the model), and their PNG says so:
    # glidectl sample --precision auto would not pick bf16 on a CPU without it natively
    png = Image.open(result.run_dir / "previews" / "step-000001.png")
    assert png.text["precision"] == "bf16"
    weights = result.run_dir / "checkpoints" / "step-000001" / "ema.safetensors"
    assert remade_preview(png, weights) == png.convert("RGB").tobytes()


def test_auto_precision_trains_in_what_the_device_does_natively(tiny, monkeypatch):
    from glidectl import devices

    if torch.cuda.is_available():
        pytest.skip("on a GPU, auto follows the GPU")
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    trainer = Trainer(tiny(train=dict(steps=1, precision="auto")), quiet=True)
    assert trainer.precision.name == "fp32" and trainer.accelerator.mixed_precision == "no"
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    trainer = Trainer(tiny(train=dict(steps=1, precision="auto")), quiet=True)
    assert trainer.accelerator.mixed_precision == "bf16"


def test_fp16_without_a_gpu_is_a_user_error(tiny):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(GlidectlError, match='on a CPU use "bf16" or "fp32"'):  # not "no"
        Trainer(tiny(train=dict(precision="fp16")), quiet=True)


def test_upsampler_previews_sample_as_glidectl_sample_upsamples_unless_told(tiny):
    """fast27 DDPM without guidance where [preview] keeps its defaults; what it sets stays."""
    from glidectl.config import PreviewConfig
    from glidectl.training.previews import preview_sampling

    assert {k: v for k, v in preview_sampling(PreviewConfig(), True).items()
            if k in ("sampler", "steps", "guidance")} == dict(sampler="ddpm", steps="fast27",
                                                               guidance=None)
    told = preview_sampling(PreviewConfig(sampler="euler", guidance=1.5), True)
    assert (told["sampler"], told["steps"], told["guidance"]) == ("euler", 25, 1.5)
    assert preview_sampling(PreviewConfig(steps=40), True)["steps"] == 40
    assert preview_sampling(PreviewConfig(), False)["sampler"] == PreviewConfig().sampler
    examples = Path(__file__).resolve().parents[2] / "examples"
    recipe = load_config(examples / "finetune-upsampler.toml").preview
    assert preview_sampling(recipe, True) == preview_sampling(PreviewConfig(), True)
    cfg = tiny(model=dict(kind="upsample"), data=dict(resolution=32), train=dict(steps=1),
               preview=dict(every=1, steps=3))
    result = Trainer(cfg, quiet=True, kinds=("upsample", "upsample-inpaint")).run()
    text = Image.open(result.run_dir / "previews" / "step-000001.png").text
    assert (text["sampler"], text["steps"], text["guidance"]) == ("ddpm", "3", "None")


def test_a_preview_of_a_model_returning_nan_fails_alone(tiny, tmp_path):
    """A preview whose network returns NaN is a failed preview (counted, said), not a black
    grid and not the end of training."""
    trainer = Trainer(tiny(train=dict(steps=1), preview=dict(every=1, steps=1)), quiet=True)
    previewer = trainer.previewer
    with torch.no_grad():
        previewer.model.out[2].bias.fill_(float("nan"))
    assert previewer.run(1, tmp_path) is None
    assert previewer.failures == 1
    assert "returned NaN or infinite values" in previewer.error


def test_captions_longer_than_the_model_reads_are_said_once(tiny, image_folder):
    """The text encoder keeps text_ctx tokens and training dropped the rest without a word."""
    from glidectl.training.caption_check import CaptionLengthCheck

    for i, path in enumerate(sorted(image_folder.glob("*.txt"))):
        if i % 2:
            path.write_text("a photo of " + "a very long and detailed scene, " * 4 + "\n")
    cfg = tiny(data=dict(source=str(image_folder), uncond_p=0.0), train=dict(steps=2))
    trainer = Trainer(cfg, quiet=True)
    messages: list[str] = []
    trainer.display.message = messages.append
    trainer.run()
    ctx = trainer.bundle.options.text_ctx
    said = [m for m in messages if "are cut in training" in m]
    assert len(said) == 1 and said[0].startswith(
        f"Warning: captions longer than the model reads ({ctx} tokens) are cut in training (")
    assert said[0].endswith("); shorten them, or count them all with glidectl dataset inspect "
                            "--config.")
    check = CaptionLengthCheck(trainer.bundle.tokenizer, ctx, want=3)
    assert check.see(["short", ""]) is None and check.see(["x" * (ctx + 1)]) == (
        f"Warning: captions longer than the model reads ({ctx} tokens) are cut in training "
        "(1 of the first 2); shorten them, or count them all with glidectl dataset inspect "
        "--config.")
    assert check.see(["x" * (ctx + 1)]) is None  # once
    fits = CaptionLengthCheck(trainer.bundle.tokenizer, ctx, want=1)
    assert fits.see(["short"]) is None and fits.see(["x" * (ctx + 1)]) is None  # looked enough


def test_a_config_changed_in_code_is_checked_before_anything_is_made(tiny, tmp_path):
    """A notebook's ``cfg.train.lr = -1`` is one sentence naming the key (not torch's
    ValueError from deep in the optimizer), and no run folder is left behind."""
    cfg = tiny()
    cfg.train.lr = -1.0
    with pytest.raises(GlidectlError, match=r"^config: 'train.lr' must be from 0 to 1; got -1"):
        Trainer(cfg, quiet=True)
    assert not (tmp_path / "runs").exists()


def test_train_threads_hold_for_the_run_only(tiny):
    """``train.threads = 1`` does not stay torch's setting after the run: a notebook's next
    cell, or its next run with ``threads = 0`` (torch's default), gets the threads it had."""
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        seen = []
        trainer = Trainer(tiny(train=dict(steps=1, threads=1)), quiet=True)
        assert torch.get_num_threads() == 3
        step = trainer._optimizer_step

        def counted():
            seen.append(torch.get_num_threads())
            return step()

        trainer._optimizer_step = counted
        assert trainer.run().step == 1
        assert seen and set(seen) == {1} and torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("train, said", [
    (dict(steps=0), "train.steps must be positive"),
    (dict(optimizer="adamw8bit"), "needs a CUDA GPU"),
    (dict(trainable="text"), "trains nothing from model.init = \"scratch\""),
])
def test_what_the_config_alone_refuses_is_said_before_the_model_is_built(tiny, monkeypatch,
                                                                        train, said):
    """These came after the model was built (and a model.init downloaded)."""
    import glidectl.training.engine as engine

    if "optimizer" in train:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def built(*args, **kwargs):
        raise AssertionError("the model was built")

    monkeypatch.setattr(engine, "build_model", built)
    with pytest.raises(GlidectlError, match=said):
        Trainer(tiny(train=train), quiet=True)


def test_training_leaves_the_callers_random_generators_and_switches_as_they_were(tiny):
    """train() left numpy's and Python's generators at seed 0's state, torch's reseeded and
    the caller's use_deterministic_algorithms(True) switched off, in a notebook's process."""
    import random

    import numpy as np

    torch.manual_seed(123)
    np.random.seed(5)
    random.seed(7)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        expected = (torch.rand(2), np.random.rand(2), random.random())
        torch.manual_seed(123)
        np.random.seed(5)
        random.seed(7)
        trainer = Trainer(tiny(train=dict(steps=2)), quiet=True)
        assert torch.are_deterministic_algorithms_enabled()  # set up: the caller's again
        first = trainer.run(until=1)
        assert first.step == 1 and torch.is_deterministic_algorithms_warn_only_enabled()
        assert trainer.run().step == 2  # the run's own generators again, kept between runs
        got = (torch.rand(2), np.random.rand(2), random.random())
        assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
        assert got[2] == expected[2] and torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


def test_training_masks_can_hide_every_pixel_and_lean_no_way():
    """The hidden rectangle is placed where it fits, uniformly: the last row and column are
    hidden as often as the first (they never were: inpainting models did not learn to
    repaint a region at the bottom or right edge)."""
    from glidectl.training.objective import random_masks

    for size in (12, 64):
        hidden = 1 - random_masks(20_000, size, torch.Generator().manual_seed(0))
        rows, cols = hidden.amax(3)[:, 0].mean(0), hidden.amax(2)[:, 0].mean(0)
        assert rows[-1] > 0.02 and cols[-1] > 0.02  # was 0: never hidden
        assert abs(rows[0] - rows[-1]) < 0.02 and abs(cols[0] - cols[-1]) < 0.02
        sides = hidden[:, 0].sum(1).amax(1)  # each rectangle's height
        assert sides.min() >= size // 4 and sides.max() <= size // 2
