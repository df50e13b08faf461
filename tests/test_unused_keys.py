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
    ({"train": {"trainable": "unet", "text_lr_scale": 0.3}}, False,
     "train.text_lr_scale is ignored: train.trainable = \"unet\" freezes the text "
     "transformer."),
    ({"log": {"wandb_mode": "offline"}}, False,
     "log.wandb_mode is ignored: W&B is off (add \"wandb\" to log.trackers or set "
     "log.wandb_project)."),
    ({"log": {"project": "myproj", "wandb_project": "wbp"}}, False,  # TensorBoard too
     "log.project 'myproj' is ignored: log.wandb_project 'wbp' names the project of every "
     "tracker (TensorBoard's folder too); set one of the two."),
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
    ({"data": {"image_key": "png", "split": "test"}}, False,
     "data.image_key, data.split are ignored: this run reads demo data, which does not read "
     "them."),
    ({"data": {"source": "wds:/x/{0..3}.tar", "image_column": "c"}}, False,
     "data.image_column is ignored: this run reads webdataset data, which does not read it."),
    ({"data": {"kohya_folders": False}}, False,
     "data.kohya_folders is ignored: this run reads demo data, which does not read it."),
    ({"data": {"min_size": 256, "similarity_range": [0.3, 1.0]}}, False,
     "data.min_size, data.similarity_range are ignored: data.preset 'simple' does not filter "
     "on them (\"laion\" does)."),
    ({"data": {"preset": "datacomp", "max_punsafe": 0.1, "similarity_range": [0.3, 1.0]}}, False,
     "data.max_punsafe is ignored: data.preset 'datacomp' does not filter on it (\"laion\" "
     "does)."),
    ({"data": {"shuffle_buffer": 7}}, False,
     "data.shuffle_buffer is ignored: this run reads demo data, which does not read it."),
    ({"data": {"random_crop": False, "crop_scale": [0.3, 0.5]}}, False,
     "data.crop_scale is ignored: data.random_crop = false takes the centre crop."),
    ({"validation": {"every": 2, "fid_samples": 8, "fid_weights": "x.pth"}}, False,
     "validation.fid_weights, validation.fid_samples are ignored: validation.fid_every = 0, "
     "so no FID/KID is measured."),
    ({"train": {"epochs": 2, "steps": 50}}, False,
     "train.steps is ignored: train.epochs = 2 decides how long the run trains (set "
     "train.epochs = 0 to train by steps)."),
    ({"model": {"kind": "upsample"}, "preview": {"prompts": ["a red circle"]}}, False,
     "preview.prompts is ignored: an 'upsample' model previews held-out images under their "
     "own captions (set preview.low_res to images for them to caption)."),
    ({"model": {"kind": "base-inpaint"}, "preview": {"prompt_file": "p.txt"}}, True,
     "preview.prompt_file is ignored: a 'base-inpaint' model previews held-out images under "
     "their own captions."),
    ({"model": {"kind": "upsample-inpaint"}, "preview": {"low_res": ["a.png"]}}, False,
     "preview.low_res is ignored: an 'upsample-inpaint' model previews held-out images with a "
     "rectangle hidden, under their own captions (a low-res file holds no image to inpaint)."),
    ({"model": {"kind": "upsample"}, "preview": {"low_res": ["a.png", "b.png"],
                                                 "prompts": ["a"]}}, False,
     "preview.prompts holds 1 prompt for 2 preview.low_res images: each image takes the "
     "prompt in its place, the images without one are upsampled under the empty caption."),
    # the README's upsampler recipe (examples/glide.toml) previewed with guided dpm++2m
    ({"model": {"kind": "upsample"}, "preview": {"sampler": "dpm++2m", "guidance": 2.0}}, False,
     "preview.sampler, preview.guidance are used: previews and validation FID sample this "
     "upsampler with sampler dpm++2m, guidance 2.0, where glidectl sample upsamples with "
     "fast27 DDPM and no guidance; remove them from [preview] to preview as sample does."),
    # a saved DatasetDict given as both: validation read data.split, the training split
    ({"data": {"source": "hf:/data/ds"}, "validation": {"source": "/data/ds/", "every": 5}},
     False, "validation.source '/data/ds/' is the training data (data.source, split 'train'), "
     "so validation measures what the model trains on; point it at other data (a saved "
     "Hugging Face dataset's split by its own folder, e.g. /data/ds/validation), or set "
     "validation.holdout to keep samples out of training."),
])
def test_a_set_key_the_run_ignores_is_named(sections, lora, note):
    assert _notes(sections, lora) == [note]


@pytest.mark.parametrize("sections, lora", [
    ({"model": {"init": "scratch", "size": "small", "time_embed_max_freq": 0.5}}, False),
    ({"model": {"kind": "upsample"}, "data": {"degrade_blur": 0.6},
      "preview": {"low_res": ["x.png"]}}, False),
    ({"model": {"kind": "upsample"}, "preview": {"low_res": ["x.png"], "prompts": ["a"]}},
     False),
    ({"model": {"kind": "upsample"}, "preview": {"prompts": ["a"], "every": 0}}, False),
    ({"model": {"kind": "upsample"}, "preview": {"guidance": 2.0, "every": 0}}, False),
    ({"preview": {"sampler": "dpm++2m", "guidance": 2.0}}, False),  # a base model's own
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
    ({"data": {"source": "hf:a/b", "split": "test", "image_column": "img"}}, False),
    ({"data": {"source": "wds:/x/{0..3}.tar", "image_key": "png", "metadata_key": "m"}}, False),
    ({"data": {"source": "wds:/x/{0..3}.tar", "caption_column": "prompt"}}, False),  # JSON's
    ({"data": {"preset": "laion", "min_size": 256, "nsfw_allowed": ["NSFW"]}}, False),
    ({"data": {"preset": "datacomp", "similarity_range": [0.3, 1.0]}}, False),
    ({"data": {"demo_size": 10}}, False),
    ({"data": {"crop_scale": [0.3, 0.5]}}, False),
    ({"data": {"source": "data.parquet", "shuffle_buffer": 7}}, False),
    ({"data": {"source": "folder:/x/images", "caption_column": "prompt"}}, False),  # metadata
    ({"validation": {"every": 2, "fid_every": 4, "fid_samples": 8}}, False),
    ({"train": {"epochs": 2}}, False),
    # the validation source reads what the training source does not
    ({"data": {"image_key": "png"}, "validation": {"source": "wds:/v.tar", "every": 5}}, False),
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


def test_the_library_warns_as_the_commands_do(tmp_path, capsys):
    """glidectl.training.train and glidectl.lora.train_lora say the commands' warnings (the
    commands' are theirs) before the missing model.init, a run folder, stops them."""
    from glidectl.errors import GlidectlError
    from glidectl.lora import train_lora
    from glidectl.training import train

    runs = tmp_path / "runs"
    cfg = from_dict({**TINY, "model": {"init": str(runs / "base"), "size": "small"},
                     "train": {**TINY["train"], "output_dir": str(runs)}})
    note = (f"model.init {str(runs / 'base')!r} brings its own network, so model.size "
            "(scratch models only) is ignored.")
    for call, lora in ((train, False), (train_lora, True)):
        with pytest.raises(GlidectlError, match="^Model "):
            call(cfg)
        lines = capsys.readouterr().err.splitlines()
        assert f"Warning: {note}" in lines
        assert lines == [f"Warning: {n}" for n in unused_keys(cfg, lora=lora)]
        with pytest.raises(GlidectlError, match="^Model "):
            call(cfg, quiet=True)
        assert capsys.readouterr().err == ""


def test_the_tokenizer_doc_names_what_auto_picks_for_each_scratch_size():
    from glidectl.config import describe
    from glidectl.glide.options import SIZES, preset_options

    doc = next(row[3] for row in describe() if row[0] == "model.tokenizer")
    byte = [s for s in SIZES if preset_options("base", s).tokenizer == "byte"]
    gpt2 = [s for s in SIZES if preset_options("base", s).tokenizer == "gpt2"]
    assert f"byte for scratch {' and '.join(byte)} models" in doc
    assert f"gpt2 for scratch {' and '.join(gpt2)} ones" in doc


def test_data_keys_are_judged_by_the_source_that_reads_them(tmp_path, register_plugin):
    """A folder does not read Parquet columns; a plugin's source type may read any key."""
    from glidectl.data.source_api import SourceType
    from glidectl.hookspecs import hookimpl

    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"")
    assert _notes({"data": {"source": str(folder), "image_column": "img"}}, False) == [
        "data.image_column is ignored: this run reads folder data, which does not read it."]
    assert _notes({"data": {"source": str(folder), "kohya_folders": False}}, False) == []
    kohya = tmp_path / "dataset.toml"  # kohya's dataset config: its own repeats, no folders
    kohya.write_text("[[datasets]]\n")
    assert _notes({"data": {"source": str(kohya), "kohya_folders": False}}, False) == [
        "data.kohya_folders is ignored: this run reads kohya data, which does not read it."]

    concepts = tmp_path / "concepts.json"  # OneTrainer's: its concepts, no reg folder
    concepts.write_text('[{"path": "images"}]')
    assert _notes({"data": {"source": str(concepts), "reg_source": "reg"}}, False) == [
        "data.reg_source is ignored: this run reads onetrainer data, which does not read it."]

    class Mine:
        @hookimpl
        def register_data_sources(self, register):
            register("mine", SourceType("mine", lambda spec, cfg, resolution: None))

    register_plugin(Mine(), "my-source")
    assert _notes({"data": {"source": "mine:x", "image_column": "img"}}, False) == []
    assert _notes({"data": {"source": str(tmp_path / "nowhere"), "demo_size": 3}}, False) == []


def test_every_built_in_source_type_says_which_data_keys_it_reads():
    from glidectl.data.builtin_sources import BUILTIN_SOURCES
    from glidectl.unused_keys import SOURCE_KEYS

    assert sorted(SOURCE_KEYS) == sorted(kind.name for kind in BUILTIN_SOURCES)
