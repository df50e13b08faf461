"""Config keys a training run ignores are named in a warning, never dropped without a word."""

from __future__ import annotations

import pytest
from tiny_configs import TINY

from glidectl.config import from_dict, save_config
from glidectl.unused_keys import unused_keys


def _notes(sections: dict, lora: bool) -> list[str]:
    return unused_keys(from_dict(sections), lora=lora)


@pytest.mark.parametrize("sections, lora, note", [
    ({"model": {"init": "openai:base", "size": "official", "time_embed_max_freq": 0.5}}, False,
     "model.init 'openai:base' brings its own network, so model.size, "
     "model.time_embed_max_freq (scratch models only) are ignored."),
    ({"data": {"degrade_blur": 0.6}, "preview": {"low_res": ["x.png"]}}, False,
     "model.kind 'base' is no upsampler, so data.degrade_blur, preview.low_res (upsamplers "
     "only) are ignored."),
    ({"model": {"kind": "base-inpaint"}, "data": {"degrade_jpeg": 75}}, False,
     "model.kind 'base-inpaint' is no upsampler, so data.degrade_jpeg (upsamplers only) is "
     "ignored."),
    ({"train": {"optimizer": "adafactor", "adam_beta2": 0.99}}, False,
     "train.optimizer = \"adafactor\" ignores train.adam_beta2 (AdamW's)."),
    ({"log": {"wandb_mode": "offline"}}, False,
     "log.wandb_mode is ignored: W&B is off (add \"wandb\" to log.trackers or set "
     "log.wandb_project)."),
    ({"validation": {"holdout": 64}}, False,
     "validation.holdout is ignored: validation.every and validation.fid_every are 0, so "
     "nothing is held out or validated."),
    ({"train": {"ema_decay": 0.0, "ema_warmup": True}}, False,
     "train.ema_warmup is ignored: train.ema_decay = 0 keeps no EMA."),
    ({"model": {"vocab_dir": "gpt2"}}, False,
     "model.vocab_dir is ignored: this scratch model reads UTF-8 bytes (model.tokenizer "
     "\"byte\"), not GPT-2's vocabulary."),
    ({"train": {"trainable": "text"}}, True,
     "glidectl lora trains only its adapters and ignores train.trainable."),
    ({"lora": {"rank": 4}}, False,
     "this command trains every weight and ignores lora.rank; to train LoRA adapters, run "
     "glidectl lora with this config."),
])
def test_a_set_key_the_run_ignores_is_named(sections, lora, note):
    assert _notes(sections, lora) == [note]


@pytest.mark.parametrize("sections, lora", [
    ({"model": {"init": "scratch", "size": "small", "time_embed_max_freq": 0.5}}, False),
    ({"model": {"kind": "upsample"}, "data": {"degrade_blur": 0.6},
      "preview": {"low_res": ["x.png"]}}, False),
    ({"model": {"vocab_dir": "gpt2", "size": "small"}}, False),
    ({"model": {"vocab_dir": "gpt2", "tokenizer": "gpt2"}}, False),
    ({"model": {"vocab_dir": "gpt2", "init": "openai:base"}}, False),
    ({"train": {"adam_beta2": 0.99}}, False),
    ({"log": {"trackers": ["wandb"], "wandb_mode": "offline"}}, False),
    ({"log": {"wandb_mode": "online"}}, False),  # older runs' saved default: no warning
    ({"log": {"wandb_project": "p", "wandb_entity": "me"}}, False),
    ({"validation": {"holdout": 64, "every": 10}}, False),
    ({"validation": {"source": "x", "fid_every": 10}}, False),
    ({"lora": {"rank": 4}}, True),
    ({"model": {"init": "openai:base"}}, False),  # defaults are never named
])
def test_keys_the_run_uses_are_not_named(sections, lora):
    assert _notes(sections, lora) == []


def test_train_and_lora_print_one_warning_line_per_group(tmp_path, capsys):
    """Through the CLI: the warnings come first, before the missing model.init stops it."""
    from glidectl.cli.app import main

    cfg = from_dict({**TINY, "model": {"init": str(tmp_path / "w.pt"), "size": "small"},
                     "data": {**TINY["data"], "degrade_noise": 0.1},
                     "train": {**TINY["train"], "trainable": "unet"}})
    save_config(cfg, tmp_path / "glide.toml")
    for command, lora in (("train", False), ("lora", True)):
        with pytest.raises(SystemExit) as done:
            main([command, "-c", str(tmp_path / "glide.toml")])
        lines = capsys.readouterr().err.splitlines()
        assert done.value.code == 2 and lines[-1].startswith("Error: Model ")
        assert lines[:-1] == [f"Warning: {note}" for note in unused_keys(cfg, lora=lora)]
        assert len(lines) == 4 if lora else 3


def test_the_tokenizer_doc_names_what_auto_picks_for_each_scratch_size():
    from glidectl.config import describe
    from glidectl.glide.options import SIZES, preset_options

    doc = next(row[3] for row in describe() if row[0] == "model.tokenizer")
    byte = [s for s in SIZES if preset_options("base", s).tokenizer == "byte"]
    gpt2 = [s for s in SIZES if preset_options("base", s).tokenizer == "gpt2"]
    assert f"byte for scratch {' and '.join(byte)} models" in doc
    assert f"gpt2 for scratch {' and '.join(gpt2)} ones" in doc
