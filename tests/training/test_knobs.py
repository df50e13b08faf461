"""train.noise_offset, train.input_perturbation and train.optimizer: each changes what it should
and nothing else."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from glidectl.errors import GlidectlError
from glidectl.training.engine import Trainer


def _first_call(tiny, **train) -> dict:
    """What the first training step hands to the loss: images, timesteps and both noises."""
    name = "-".join(f"{k}{v}" for k, v in train.items()) or "base"
    trainer = Trainer(tiny(train=dict(steps=1, name=name, **train)), quiet=True)
    seen = {}
    real = trainer.bundle.diffusion.training_losses

    def spy(model_fn, x0, t, noise, **kwargs):
        seen.setdefault("x0", x0.clone())
        seen.setdefault("t", t.clone())
        seen.setdefault("noise", noise.clone())
        seen.setdefault("q_noise", kwargs.get("q_noise"))
        return real(model_fn, x0, t, noise, **kwargs)

    trainer.bundle.diffusion.training_losses = spy
    trainer.run()
    return seen


def _weights_at(run, step: int) -> dict[str, torch.Tensor]:
    return load_file(run.run_dir / "checkpoints" / f"step-{step:06d}" / "model.safetensors")


def _split_run_weights(tiny, sections: dict, name: str, stop: int) -> dict[str, torch.Tensor]:
    """Final weights of the same run stopped at ``stop`` and resumed from its checkpoint."""
    split = tiny(**sections)
    split.train.name = name
    Trainer(split, quiet=True).run(until=stop)
    resumed = Trainer(split, resume="latest", quiet=True).run()
    return _weights_at(resumed, split.train.steps)


def test_noise_offset_adds_one_constant_per_image_and_channel(tiny):
    base, shifted = _first_call(tiny), _first_call(tiny, noise_offset=0.1)
    assert torch.equal(base["x0"], shifted["x0"]) and torch.equal(base["t"], shifted["t"])
    assert base["q_noise"] is None and shifted["q_noise"] is None  # x_t and target alike
    diff = shifted["noise"] - base["noise"]
    per_channel = diff[:, :, :1, :1]
    assert torch.allclose(diff, per_channel.expand_as(diff), atol=1e-6)
    assert per_channel.abs().min() > 0 and per_channel.abs().max() < 0.5  # 0.1 * N(0, 1)


def test_input_perturbation_noises_x_t_but_keeps_the_target(tiny):
    base, perturbed = _first_call(tiny), _first_call(tiny, input_perturbation=0.1)
    assert torch.equal(base["x0"], perturbed["x0"]) and torch.equal(base["t"], perturbed["t"])
    assert torch.equal(base["noise"], perturbed["noise"])  # the target is unchanged
    extra = perturbed["q_noise"] - perturbed["noise"]
    assert 0.07 < float(extra.std()) < 0.13  # 0.1 * N(0, 1), per pixel
    assert float(extra[:, :, 0, 0].std()) > 0


def test_training_losses_uses_q_noise_for_x_t_only(tiny):
    trainer = Trainer(tiny(train=dict(steps=1)), quiet=True)
    diffusion = trainer.bundle.diffusion
    x0 = torch.zeros(2, 3, 8, 8)
    t = torch.tensor([10, 900])
    noise, q_noise = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    seen = {}

    def model_fn(x_t, ts):
        seen["x_t"] = x_t
        return torch.cat([noise, torch.zeros_like(noise)], dim=1)  # predicts the target

    out = diffusion.training_losses(model_fn, x0, t, noise, loss_type="eps", q_noise=q_noise)
    assert torch.allclose(seen["x_t"], diffusion.q_sample(x0, t, q_noise))
    assert torch.equal(out["mse"], torch.zeros(2))


def test_adamw_is_the_default_with_the_configured_betas(tiny):
    trainer = Trainer(tiny(train=dict(adam_beta2=0.98)), quiet=True)
    inner = trainer.optimizer.optimizer
    assert type(inner) is torch.optim.AdamW and inner.defaults["betas"] == (0.9, 0.98)


def test_adafactor_trains_and_resumes_bitwise(tiny):
    sections = dict(train=dict(steps=2, optimizer="adafactor", ema_decay=0.0),
                    checkpoint=dict(every=1))
    straight = tiny(**sections)
    straight.train.name = "straight"
    trainer = Trainer(straight, quiet=True)
    assert type(trainer.optimizer.optimizer) is torch.optim.Adafactor
    before = [p.detach().clone() for p in trainer.params]
    a = trainer.run()
    assert not all(torch.equal(x, p) for x, p in zip(before, trainer.params, strict=True))
    wa, wb = _weights_at(a, 2), _split_run_weights(tiny, sections, "split", stop=1)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_text_lr_scale_puts_the_text_transformer_in_a_slower_group_and_resumes_bitwise(tiny):
    from glidectl.training.adapters import is_text_param

    sections = dict(train=dict(steps=3, text_lr_scale=0.25, lr=1e-3, warmup_steps=2,
                               lr_schedule="cosine", ema_decay=0.0), checkpoint=dict(every=1))
    straight = tiny(**sections)
    straight.train.name = "straight"
    trainer = Trainer(straight, quiet=True)
    unet, text = trainer.optimizer.optimizer.param_groups
    named = dict(trainer._named)
    text_ids = {id(p) for n, p in named.items() if is_text_param(n)}
    assert text_ids and {id(p) for p in text["params"]} == text_ids
    assert not text_ids & {id(p) for p in unet["params"]}
    a = trainer.run()
    # The schedule scales both groups alike: after warmup and decay the ratio still holds.
    assert text["lr"] == pytest.approx(0.25 * unet["lr"]) and unet["lr"] < 1e-3
    wa, wb = _weights_at(a, 3), _split_run_weights(tiny, sections, "split", stop=2)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_text_lr_scale_1_keeps_one_group(tiny):
    trainer = Trainer(tiny(), quiet=True)
    assert len(trainer.optimizer.optimizer.param_groups) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_adamw8bit_without_a_gpu_is_a_one_line_error(tiny):
    with pytest.raises(GlidectlError, match="needs a CUDA GPU") as info:
        Trainer(tiny(train=dict(optimizer="adamw8bit")), quiet=True)
    assert "\n" not in str(info.value)


def test_t_curriculum_starts_at_high_noise_and_widens_to_all_timesteps(tiny):
    trainer = Trainer(tiny(train=dict(steps=10, t_curriculum=0.5)), quiet=True)
    T = trainer.bundle.diffusion.num_timesteps
    lows = []
    for step in range(11):
        lows.append(trainer.objective.t_low(step))
    assert lows[:3] == [int(0.9 * T)] * 3  # top 10 % for the first half of the curriculum
    assert lows[5:] == [0] * 6  # uniform after half the steps
    assert lows[2] > lows[3] > lows[4] > lows[5]  # then falls linearly
    seen = _first_call(tiny, t_curriculum=0.5)
    assert int(seen["t"].min()) >= int(0.9 * T)
    assert torch.equal(_first_call(tiny)["t"], _first_call(tiny, t_curriculum=0.0)["t"])


def test_channels_last_trains_like_nchw_and_resumes_bitwise(tiny):
    sections = dict(train=dict(steps=2, channels_last=True), checkpoint=dict(every=1))
    straight = tiny(**sections)
    straight.train.name = "nhwc"
    trainer = Trainer(straight, quiet=True)
    conv = next(p for p in trainer.params if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last)
    a = trainer.run()
    wb = _split_run_weights(tiny, sections, "nhwc-split", stop=1)
    nchw = tiny(train=dict(steps=2), checkpoint=dict(every=1))
    nchw.train.name = "nchw"
    c = Trainer(nchw, quiet=True).run()
    wa, wc = _weights_at(a, 2), _weights_at(c, 2)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # resume is exact
    # Layout changes rounding only: Adam moves a weight by at most ~lr a step either way.
    bound = 2 * nchw.train.lr * 2 + 1e-6
    assert all(float((wa[k] - wc[k]).abs().max()) <= bound for k in wa)


def test_an_explicit_train_precision_wins_over_the_launcher_with_one_warning(
        tiny, monkeypatch, capsys):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    trainer = Trainer(tiny(train=dict(precision="fp32")))
    assert trainer.accelerator.mixed_precision == "no"
    out = capsys.readouterr().out
    assert ("Warning: training in fp32 as train.precision = \"fp32\" says, not in accelerate "
            "launch's bf16 (ACCELERATE_MIXED_PRECISION=bf16); set train.precision = \"auto\" "
            "to follow the launcher.\n") in out, out


def test_the_launcher_s_no_leaves_auto_as_it_is(tiny, monkeypatch, capsys):
    """`no` is also what accelerate launch sets when nothing was asked."""
    from glidectl.devices import training_precision

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    alone = training_precision("auto")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    assert training_precision("auto") == alone


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_the_launcher_s_fp16_on_a_cpu_is_one_line_naming_it(tiny, monkeypatch):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    with pytest.raises(GlidectlError) as info:
        Trainer(tiny(), quiet=True)
    assert str(info.value) == (
        "ACCELERATE_MIXED_PRECISION=fp16 (accelerate launch --mixed_precision fp16) needs a "
        "GPU (it uses a GradScaler on CUDA); on a CPU launch with --mixed_precision bf16 or no.")


def test_prior_loss_weight_scales_the_loss_of_regularisation_samples(tiny, tmp_path):
    """kohya's prior_loss_weight: each reg sample's loss times the weight, then the mean."""
    from PIL import Image

    for folder, rgb in (("train/1_sks square", (200, 30, 30)), ("regs/1_square", (30, 30, 200))):
        (tmp_path / folder).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (40, 36), rgb).save(tmp_path / folder / f"{i}.png")
    cfg = tiny(data=dict(source=str(tmp_path / "train"), reg_source=str(tmp_path / "regs")),
               train=dict(steps=1, batch_size=4, name="prior", prior_loss_weight=0.25))
    trainer = Trainer(cfg, quiet=True)
    seen = []
    real = trainer.objective.losses

    def spy(model, batch, step, *args):
        out = real(model, batch, step, *args)
        seen.append((out["loss"].detach().clone(), list(batch["is_reg"])))
        return out

    trainer.objective.losses = spy
    result = trainer.run()
    [(loss, reg)] = seen
    assert sorted(reg) == [False, False, True, True]  # one epoch: 2 images, 2 reg draws
    weights = torch.tensor([0.25 if r else 1.0 for r in reg])
    assert result.last_loss == pytest.approx(float((loss * weights).mean()), rel=1e-5)
    assert result.last_loss != pytest.approx(float(loss.mean()), rel=1e-3)


def test_kohyas_token_warmup_follows_the_optimizer_step(tiny, tmp_path):
    """Each micro-batch of an optimizer step trains on the tags kohya keeps at that step
    (0-based, as kohya's global_step): token_warmup_step = 0.5 of 4 steps ends at step 2."""
    from PIL import Image

    (tmp_path / "img").mkdir()
    Image.new("RGB", (40, 36), (200, 30, 30)).save(tmp_path / "img" / "0.png")
    (tmp_path / "data.toml").write_text(
        "[[datasets]]\n  [[datasets.subsets]]\n  image_dir = 'img'\n"
        "  class_tokens = 'sks, red, square, plain, small'\n  keep_tokens = 1\n"
        "  token_warmup_step = 0.5\n  token_warmup_min = 2\n")
    cfg = tiny(data=dict(source=str(tmp_path / "data.toml"), uncond_p=0.0),
               train=dict(steps=4, batch_size=1, grad_accum=2, name="warmup"))
    trainer = Trainer(cfg, quiet=True)
    seen = []
    real = trainer.objective.losses

    def spy(model, batch, step, *args):
        seen.append((step, batch["caption"][0]))
        return real(model, batch, step, *args)

    trainer.objective.losses = spy
    trainer.run()
    # W = floor(0.5 · 4) = 2; keeps floor(s · (4 − 2) / 2) + 2 of the 4 tags after "sks"
    two, three, whole = "sks, red, square", "sks, red, square, plain", \
        "sks, red, square, plain, small"
    assert seen == [(0, two), (0, two), (1, three), (1, three), (2, whole), (2, whole),
                    (3, whole), (3, whole)]


def test_a_onetrainer_concepts_loss_weight_scales_the_loss_of_its_samples(tiny, tmp_path):
    """OneTrainer's per-concept loss_weight: each sample's loss times its concept's weight,
    then the mean; a batch whose weights are all 1 is left untouched."""
    import json

    from PIL import Image

    for folder, rgb in (("sks", (200, 30, 30)), ("plain", (30, 30, 200))):
        (tmp_path / folder).mkdir()
        for i in range(2):
            Image.new("RGB", (40, 36), rgb).save(tmp_path / folder / f"{i}.png")
    concepts = tmp_path / "concepts.json"
    concepts.write_text(json.dumps([
        {"path": "sks", "loss_weight": 0.25, "text": {"prompt_source": "filename"}},
        {"path": "plain", "text": {"prompt_source": "filename"}}]))
    cfg = tiny(data=dict(source=str(concepts)),
               train=dict(steps=1, batch_size=4, name="weighted", prior_loss_weight=3.0))
    trainer = Trainer(cfg, quiet=True)
    seen = []
    real = trainer.objective.losses

    def spy(model, batch, step, *args):
        out = real(model, batch, step, *args)
        seen.append((out["loss"].detach().clone(), list(batch["loss_weight"]),
                     list(batch["is_reg"])))
        return out

    trainer.objective.losses = spy
    result = trainer.run()
    [(loss, weights, reg)] = seen
    assert sorted(weights) == [0.25, 0.25, 1.0, 1.0] and not any(reg)  # not prior weighted
    assert result.last_loss == pytest.approx(float((loss * torch.tensor(weights)).mean()),
                                             rel=1e-5)
    assert result.last_loss != pytest.approx(float(loss.mean()), rel=1e-3)
    ones = {"loss_weight": [1.0] * 4, "is_reg": [False] * 4}
    assert trainer.objective.weighted(loss, ones) is loss
