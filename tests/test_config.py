"""The glide.toml schema: defaults, validation, overrides and round trips."""

from __future__ import annotations

import json
import re
import sys

import pytest

from glidectl.config import (
    GlideConfig,
    describe,
    from_dict,
    load_config,
    override,
    parse_override,
    to_toml,
    validate,
)
from glidectl.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def test_every_key_has_a_default_and_a_doc():
    rows = describe()
    assert len(rows) > 40
    for key, _tp, _default, doc, _allowed in rows:
        assert doc and doc.strip(), key


def test_resolved_config_round_trips_through_toml():
    cfg = load_config(None, ["train.lr=3e-5", "preview.prompts=['a red circle', 'x']"])
    text = to_toml(cfg)
    again = from_dict(tomllib.loads(text))
    assert again == cfg
    assert to_toml(again) == text


def test_short_lists_are_written_on_one_line_and_still_read_back():
    cfg = load_config(None, ["data.crop_scale=[0.8, 1.0]",
                             'preview.prompts=["a ]red[ \\"circle\\"", "x"]'])
    text = to_toml(cfg)
    assert "crop_scale = [0.8, 1.0]\n" in text
    assert 'prompts = ["a ]red[ \\"circle\\"", "x"]\n' in text
    assert from_dict(tomllib.loads(text)) == cfg
    assert override("data.crop_scale", [0.8, 1.0]) == "data.crop_scale=[0.8, 1.0]"
    many = [f"prompt number {i}" for i in range(9)]  # too long for one line: one a line
    assert to_toml(load_config(None, [override("preview.prompts", many)])).count(
        "\n    \"prompt number") == 9


def test_defaults_file_set_precedence(tmp_path):
    path = tmp_path / "glide.toml"
    path.write_text("[train]\nlr = 2e-4\nsteps = 50\n")
    cfg = load_config(path, ["train.steps=7"])
    assert cfg.train.lr == 2e-4  # file beats default
    assert cfg.train.steps == 7  # --set beats file
    assert cfg.train.batch_size == GlideConfig().train.batch_size  # default kept


def test_a_config_saved_with_a_byte_order_mark_or_given_as_a_pipe_is_read(tmp_path):
    """Windows Notepad writes a BOM ("invalid TOML at line 1, column 1" before), and
    --config <(...) gives a pipe ("does not exist" before)."""
    import os

    path = tmp_path / "glide.toml"
    path.write_bytes("\ufeff[train]\nsteps = 7\n".encode())
    assert load_config(path).train.steps == 7
    read, write = os.pipe()
    os.write(write, b"[train]\nsteps = 9\n")
    os.close(write)
    try:
        assert load_config(f"/dev/fd/{read}").train.steps == 9
    finally:
        os.close(read)


def test_a_config_that_cannot_be_read_is_one_sentence(tmp_path, monkeypatch):
    from pathlib import Path

    path = tmp_path / "glide.toml"
    path.write_text("[train]\n")

    def broken(self, *args, **kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(Path, "open", broken)  # was a traceback
    with pytest.raises(ConfigError, match=r"^Config file '.*glide.toml' cannot be read "
                                          r"\(Input/output error\); check that it is a "
                                          r"readable file\.$"):
        load_config(path)


def test_a_config_that_never_ends_is_one_sentence():
    """``--config /dev/zero`` was read until memory ran out (a MemoryError traceback)."""
    with pytest.raises(ConfigError) as info:
        load_config("/dev/zero")
    assert str(info.value) == ("Config file '/dev/zero' is over 16 MiB, far more than any "
                               "glide.toml (a device, or another kind of file); pass a .toml "
                               "file.")


def test_int_is_accepted_for_float():
    assert load_config(None, ["train.lr=1"]).train.lr == 1.0


def test_unknown_key_names_the_dotted_key_and_the_nearest(tmp_path):
    path = tmp_path / "glide.toml"
    path.write_text("[train]\nbatchsize = 4\n")
    with pytest.raises(ConfigError, match=r"unknown key 'train.batchsize'.*'train.batch_size'"):
        load_config(path)


def test_a_key_removed_since_loads_at_the_value_that_did_nothing_else_says_to_delete_it(
        tmp_path):
    """A run's config.toml of 2026-11-30 holds train.mean_loss_weight and t_sampling (both
    removed that day): its --resume was refused with "Did you mean 'train.prior_loss_weight'?"
    and a valid key list, neither of which says the key is gone."""
    path = tmp_path / "config.toml"
    path.write_text('[train]\nsteps = 3\nmean_loss_weight = 0.0\nt_sampling = "uniform"\n')
    assert load_config(path).train.steps == 3
    path.write_text("[train]\nmean_loss_weight = 0.5\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (
        f"{path}:2: 'train.mean_loss_weight' was removed on 2026-11-30 (measured on the "
        "quickstart, it hurt colour); delete it: glidectl trains as with "
        "train.mean_loss_weight = 0.0 did.")


@pytest.mark.parametrize("item, meant", [
    ("data.image_size=64", "data.resolution"),  # was min_image_size: a filter, not a size
    ("train.save_steps=100", "checkpoint.every"),  # was train.steps: a run 100 steps long
    ("data.random_flip=true", "data.flip"),  # was data.random_crop
    ("train.checkpointing_steps=100", "checkpoint.every"),  # was gradient_checkpointing
    ("train.learning_rate=1e-4", "train.lr"),  # was all 36 train keys
])
def test_another_trainers_name_for_a_key_names_that_key(item, meant):
    """The spelling nearest a name diffusers or kohya use was another key, one that set
    would silently train otherwise."""
    with pytest.raises(ConfigError, match=rf"Did you mean '{re.escape(meant)}'\?$"):
        load_config(None, [item])


def test_every_other_trainers_name_leads_to_a_key():
    from glidectl.config import KNOWN_AS

    keys = {row[0] for row in describe()}
    assert set(KNOWN_AS.values()) <= keys
    assert not {name for name in KNOWN_AS if any(k.endswith(f".{name}") for k in keys)}


def test_unknown_section_suggests_nearest(tmp_path):
    path = tmp_path / "glide.toml"
    path.write_text("[trian]\nsteps = 4\n")
    with pytest.raises(ConfigError, match=r"unknown section 'trian'.*'train'"):
        load_config(path)


def test_a_key_in_the_wrong_section_names_its_section(tmp_path):
    path = tmp_path / "glide.toml"
    path.write_text("lr = 2e-4\n[train]\nresolution = 64\n")
    with pytest.raises(ConfigError, match=r"unknown section 'lr'\. Did you mean 'train.lr'\?$"):
        load_config(path)
    path.write_text("[train]\nresolution = 64\n")
    with pytest.raises(ConfigError, match=r"'train.resolution'\. Did you mean 'data.resolution'"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"Did you mean 'train.seed' or 'preview.seed' or "):
        load_config(None, ["model.seed=1"])
    with pytest.raises(ConfigError, match=r"'train.velocity'\. Valid keys: train.output_"):
        load_config(None, ["train.velocity=1"])  # nothing close: no unrelated guess
    # a key in another case: difflib found nothing for a 2-letter 'LR' and listed all 36
    with pytest.raises(ConfigError, match=r"unknown key 'train.LR'\. Did you mean 'train.lr'\?$"):
        load_config(None, ["train.LR=1e-3"])


def test_wrong_type_names_key_type_and_value(tmp_path):
    path = tmp_path / "glide.toml"
    path.write_text('[train]\nsteps = "many"\n')
    with pytest.raises(ConfigError, match=r"'train.steps' must be int, got 'many' \(str\)"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"'train.name' must be str, got 2024 \(int\); quote "
                                          r"it: --set \"train.name='2024'\"\.$"):
        load_config(None, ["train.name=2024"])  # pasted as is, the shell keeps the inner quotes
    path.write_text("[train]\nname = true\n")
    with pytest.raises(ConfigError, match=r"got True \(bool\); quote it: 'true'\.$"):
        load_config(path)
    assert load_config(None, ["train.name='2024'"]).train.name == "2024"
    # the hint repeats what was typed (was: the parsed value, '1000.0' for 1e3)
    for typed in ("1e3", "0x10", "1_000", "2024-01-01"):
        with pytest.raises(ConfigError) as info:
            load_config(None, [f"train.name= {typed}"])
        assert str(info.value).endswith(f"quote it: --set \"train.name='{typed}'\".")


def test_a_nul_character_in_a_text_value_is_refused_before_any_path_is_made_of_it(tmp_path):
    """TOML may write ``\\u0000``; no path, run name or prompt may hold it (os.mkdir raised
    ValueError deep in training)."""
    path = tmp_path / "glide.toml"
    path.write_text('[train]\noutput_dir = "runs\\u0000x"\n')
    with pytest.raises(ConfigError, match=r"'train.output_dir' holds a NUL character"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"^--set: 'preview.prompts' holds a NUL character "
                                          r"\(\\u0000\), .*; remove it\.$"):
        load_config(None, ['preview.prompts=["a", "b\\u0000"]'])
    cfg = GlideConfig()
    cfg.train.name = "a\x00b"
    with pytest.raises(ConfigError, match=r"'train.name' holds a NUL character"):
        validate(cfg)


@pytest.mark.parametrize("key, value, shown", [
    ("train.name", "a\x01b", "\\u0001"),
    ("train.name", "a\nb", "\\u000a"),
    ("train.name", "a\x1b[31mb", "\\u001b"),
    ("train.output_dir", "runs\tx", "\\u0009"),
    ("log.project", "p\x85", "\\u0085"),
])
def test_a_control_character_in_a_name_is_refused(key, value, shown):
    """Run names and folders with control characters garbled terminal output; prompts may
    still hold them (they are text, not names)."""
    section, field = key.split(".")
    with pytest.raises(ConfigError, match=rf"^--set: '{key}' holds a control character "
                                          rf"\({re.escape(shown)}\), which a name may not hold"):
        load_config(None, [f"{key}={json.dumps(value)}"])
    cfg = GlideConfig()
    setattr(getattr(cfg, section), field, value)
    with pytest.raises(ConfigError, match=rf"'{key}' holds a control character"):
        validate(cfg)
    assert load_config(None, ["train.name='café-1'", 'preview.prompts=["a\\nb"]']) \
        .preview.prompts == ["a\nb"]


def test_an_empty_output_dir_is_refused_as_the_flag_refuses_it(tmp_path):
    """``--set train.output_dir=$OUT`` with OUT unset trained into the current folder, where
    ``--output-dir ''`` is refused as an empty path."""
    said = r"'train.output_dir' is empty \('  '\); set it to a folder's path \('\.' for"
    with pytest.raises(ConfigError, match=r"^--set: 'train.output_dir' is empty \(''\)"):
        load_config(None, ["train.output_dir="])
    path = tmp_path / "glide.toml"
    path.write_text('[train]\noutput_dir = "  "\n')
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}:2: {said}"):
        load_config(path)
    cfg = GlideConfig()
    cfg.train.output_dir = "  "
    with pytest.raises(ConfigError, match=said):
        validate(cfg)
    assert load_config(None, ["train.output_dir=."]).train.output_dir == "."


def test_list_items_must_have_the_list_type(tmp_path):
    path = tmp_path / "glide.toml"
    path.write_text('[preview]\nprompts = ["a red circle", 2]\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (f"{path}:2: 'preview.prompts' must be list of str, but item 2 is "
                               '2 (int); quote it: ["..."].')
    with pytest.raises(ConfigError, match="'lora.targets' must be list of str, but item 1"):
        load_config(None, ["lora.targets=[true]"])
    assert load_config(None, ["log.trackers=['tensorboard']"]).log.trackers == ["tensorboard"]


def test_one_text_where_a_list_of_text_belongs_says_how_to_write_the_list(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(None, ["lora.targets=attention"])
    assert str(info.value).endswith("got 'attention' (str); write a list: --set "
                                    "'lora.targets=[\"attention\"]'.")
    assert load_config(None, ['lora.targets=["attention"]']).lora.targets == ["attention"]
    path = tmp_path / "glide.toml"
    path.write_text('[preview]\nprompts = "a red circle"\n')
    with pytest.raises(ConfigError, match=r'write a list: prompts = \["a red circle"\]\.$'):
        load_config(path)


def test_a_section_set_to_a_table_sets_its_keys_as_toml_would():
    """--set 'data={source="x", flip=true}' is TOML's data = {source = "x", flip = true}."""
    cfg = load_config(None, ['data={source="x", flip=true}', "data = {}"])
    assert (cfg.data.source, cfg.data.flip, cfg.data.resolution) == ("x", True, 0)
    with pytest.raises(ConfigError, match="unknown key 'data.flipp'. Did you mean 'data.flip'"):
        load_config(None, ["data={flipp=true}"])
    for item in ("data=5", "data.={flip=true}", "={flip=true}", "train.foo.bar=1"):
        with pytest.raises(ConfigError, match="the key must be section.key"):
            parse_override(item)


def test_a_set_key_without_its_section_names_the_section_it_belongs_in():
    """--set steps=3 is the new user's train.steps=3."""
    with pytest.raises(ConfigError, match=r"section\.key\. Did you mean 'data\.resolution'\?$"):
        parse_override("resolution=32")
    with pytest.raises(ConfigError, match="'train.steps' or 'preview.steps'"):
        parse_override("steps=3")


def test_bool_is_not_an_int():
    with pytest.raises(ConfigError, match="train.steps"):
        load_config(None, ["train.steps=true"])


def test_choice_fields_reject_other_values():
    with pytest.raises(ConfigError,
                       match=r"'train.precision' must be one of auto, no, fp32, fp16, bf16"):
        load_config(None, ["train.precision=fp8"])


def test_lora_targets_and_patterns_are_checked_when_the_config_loads(tmp_path, capsys):
    """`config show --set 'lora.targets=["bogus"]'` showed the config that `glidectl lora`
    then refused: unknown presets and invalid regexes are refused at load, in lora's words."""
    from glidectl.cli.app import main

    with pytest.raises(ConfigError) as info:
        load_config(None, ['lora.targets=["attention", "bogus"]'])
    assert str(info.value) == ("--set: lora.targets: unknown preset 'bogus'; use any of "
                               "attention, mlp, conv, all.")
    path = tmp_path / "glide.toml"
    path.write_text('[lora]\npatterns = ["(("]\n')
    with pytest.raises(ConfigError, match=re.escape(
            f"{path}:2: lora.patterns: '((' is not a valid regular expression")):
        load_config(path)
    with pytest.raises(SystemExit) as exit_info:
        main(["config", "show", "--set", 'lora.targets=["bogus"]'])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == ("Error: --set: lora.targets: unknown preset 'bogus'; use "
                                       "any of attention, mlp, conv, all.\n")
    assert load_config(None, ['lora.targets=["mlp", "all"]']).lora.targets == ["mlp", "all"]



def test_log_trackers_are_checked_when_the_config_loads(tmp_path, capsys):
    """`config show` printed a config with `trackers = ["tensorbord"]` and exit code 0, which
    train then refused with no line of the file: the names are checked at load, as lora's
    presets are."""
    from glidectl.cli.app import main

    path = tmp_path / "glide.toml"
    path.write_text('[log]\ntrackers = ["tensorboard",\n  "tensorbord"]\n')
    with pytest.raises(SystemExit) as exit_info:
        main(["config", "show", "--config", str(path)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        f"Error: {path}:2: log.trackers: unknown tracker 'tensorbord'; use any of "
        "tensorboard, wandb, mlflow, aim, comet_ml, clearml, dvclive, swanlab, trackio.\n")
    # a tracker's name in any case, kept as accelerate's lower-case word
    assert load_config(None, ['log.trackers=["TensorBoard"]']).log.trackers == ["tensorboard"]
    assert load_config(None, ['log.trackers=["mlflow", "wandb"]']).log.trackers == [
        "mlflow", "wandb"]

def test_degrade_jpeg_range_is_the_one_the_data_pipeline_takes():
    """`config keys` said 0 to 100 while the data pipeline refused 96..100 later on."""
    assert load_config(None, ["data.degrade_jpeg=95"]).data.degrade_jpeg == 95
    with pytest.raises(ConfigError, match=r"'data.degrade_jpeg' must be from 0 to 95"):
        load_config(None, ["data.degrade_jpeg=100"])


def test_override_values_are_read_as_toml_else_string():
    assert parse_override("train.lr=1e-5") == {"train": {"lr": 1e-5}}
    assert parse_override("data.source=demo:shapes") == {"data": {"source": "demo:shapes"}}
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("train.lr")
    with pytest.raises(ConfigError, match="section.key"):
        parse_override("lr=1")


def test_a_quoted_set_value_that_is_not_toml_is_an_error_not_text_with_quotes():
    for item in ('data.source="C:\\data"', "train.name='it's'", 'preview.prompts=["a", "b]'):
        with pytest.raises(ConfigError, match=r"the value is not valid TOML \("):
            parse_override(item)
    assert parse_override("data.source='C:\\data'") == {"data": {"source": "C:\\data"}}
    assert parse_override("train.name=it's") == {"train": {"name": "it's"}}


def test_bad_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nsteps=")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


def test_a_folder_as_config_file_says_it_is_a_folder(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert str(info.value) == (f"Config file {str(tmp_path)!r} is a folder; pass a .toml file "
                               "instead (e.g. glide.toml).")
    (tmp_path / "config.toml").write_text("")  # a run folder: point at its saved config
    with pytest.raises(ConfigError, match=r"is a folder; .*config\.toml'\)\.$"):
        load_config(tmp_path)


def test_an_empty_config_path_or_a_data_source_beside_the_config_is_said_so(
        tmp_path, capsys, monkeypatch):
    """``--config ''`` (an unset shell variable) said "'.' is a folder"; a relative
    data.source meant from the config's folder said only that it does not exist."""
    from cli_helpers import exit_code

    assert exit_code("train", "--config", "") == 2
    assert capsys.readouterr().err.startswith(
        "Error: Invalid value for '--config' / '-c': the path is empty ('');")
    for args, name in ((["eval", ""], "'prompts'"), (["eval", "p.txt", "--fid", ""], "'--fid'")):
        assert exit_code(*args) == 2  # the current folder; no FID without a word
        assert capsys.readouterr().err.startswith(
            f"Error: Invalid value for {name}: the path is empty ('');")
    (tmp_path / "proj" / "mydata").mkdir(parents=True)
    (tmp_path / "proj" / "glide.toml").write_text('[data]\nsource = "mydata"\n')
    monkeypatch.chdir(tmp_path)
    assert exit_code("train", "--config", "proj/glide.toml", "--steps", "1") == 2
    assert capsys.readouterr().err == (
        f"Error: data.source 'mydata' does not exist relative to the current folder "
        f"({tmp_path}), which relative paths are read from, but 'proj/mydata' beside the "
        "config file does; write that path (or an absolute one), or run from the config's "
        "folder.\n")


def test_a_config_changed_in_code_is_checked_as_a_file_is():
    """A notebook sets keys on a loaded config: validate() names a bad value's key and its
    range, a typo'd key (which Python would keep as a new attribute) and a wrong type."""
    cfg = load_config(None, ["train.steps=5"])
    validate(cfg)
    cfg.train.lr = -1.0
    with pytest.raises(ConfigError, match=r"^config: 'train.lr' must be from 0 to 1; got -1"):
        validate(cfg)
    cfg = GlideConfig()
    cfg.train.learning_rate = 1e-3
    typo = r"^config: unknown key 'train.learning_rate'\. Did you mean 'train\.lr'\?$"
    with pytest.raises(ConfigError, match=typo):
        validate(cfg)
    cfg = GlideConfig()
    cfg.train.steps = "10"
    with pytest.raises(ConfigError, match=r"'train.steps' must be int, got '10'"):
        validate(cfg)
    cfg = GlideConfig()
    cfg.train = {"lr": 1e-4}
    with pytest.raises(ConfigError, match=r"'train' must be a TrainConfig, got dict"):
        validate(cfg)


def test_one_override_string_is_one_override_not_its_characters():
    assert load_config(None, "train.lr=3e-5").train.lr == 3e-5


def test_text_with_unicode_line_separators_round_trips_in_a_saved_config():
    """Short lists were joined with str.splitlines, which also splits at U+2028, U+2029 and
    U+0085 inside their strings: ["red\\u2029circle"] was saved as ["red, circle"]."""
    cfg = GlideConfig()
    cfg.preview.prompts = ["a\u2028b", "x\x85y", "p\u2029q"]
    cfg.data.skip_words = ["one", "t\u2028wo"]
    assert from_dict(tomllib.loads(to_toml(cfg))) == cfg


def test_text_that_is_not_utf8_is_refused_when_the_config_loads(tmp_path):
    """A shell argument or folder name of Latin-1 bytes reached Python as lone surrogates and
    failed only when the run folder's config.toml was written, after the model was built."""
    with pytest.raises(ConfigError, match=r"^--set: 'train.output_dir' holds bytes that are "
                                          r"not UTF-8 text \(runs/caf\\udce9\)"):
        load_config(None, ["train.output_dir=runs/caf\udce9"])
    cfg = GlideConfig()
    cfg.preview.prompts = ["ok", "bad\udcff"]
    with pytest.raises(ConfigError, match="'preview.prompts' holds bytes that are not UTF-8"):
        validate(cfg)


def test_numbers_too_large_and_values_holding_two_lines_are_one_sentence(tmp_path):
    with pytest.raises(ConfigError, match=r"'train.lr' must be a finite number, got an integer "
                                          r"of 401 digits\.$"):
        load_config(None, ["train.lr=1" + "0" * 400])
    with pytest.raises(ConfigError, match="the number has more digits than any setting takes"):
        load_config(None, ["train.steps=1" + "0" * 5000])
    path = tmp_path / "big.toml"
    path.write_text("[train]\nsteps = 1" + "0" * 5000 + "\n")
    with pytest.raises(ConfigError, match="a number in it has more digits than any setting"):
        load_config(path)
    for item in ("train.steps=5\nlr=3", "train.steps=5\n[train]\nlr=0.5"):
        with pytest.raises(ConfigError, match="holds more than one TOML value"):
            parse_override(item)
    assert parse_override('preview.prompts=["a",\n"b"]') == {"preview": {"prompts": ["a", "b"]}}


def test_a_config_set_in_code_takes_paths_and_numpy_numbers_and_names_a_section_typo():
    """cfg.train.output_dir = Path("runs") was refused with TOML's "quote it" advice,
    np.float32 learning rates as "must be float", and cfg.trian = 5 passed unseen."""
    from pathlib import Path

    import numpy as np

    cfg = GlideConfig()
    cfg.train.output_dir, cfg.data.source = Path("runs"), Path("photos")
    cfg.train.lr, cfg.train.steps = np.float64(1e-3), np.int64(3)
    validate(cfg)
    assert (cfg.train.output_dir, cfg.data.source, cfg.train.lr, cfg.train.steps) == (
        "runs", "photos", 1e-3, 3)
    assert "output_dir = \"runs\"" in to_toml(cfg)
    cfg.trian = 5
    with pytest.raises(ConfigError, match=r"unknown section 'trian'\. Did you mean 'train'\?"):
        validate(cfg)


def test_from_dict_takes_numpy_numbers_and_names_what_is_not_a_dict_of_sections():
    """from_dict(None), a list or {1: {...}} was an AttributeError from inside, and
    {"train": {"steps": np.int64(10)}} was "must be int" where validate() takes it."""
    import numpy as np

    from glidectl.errors import GlidectlError

    data = {"train": {"steps": np.int64(10), "lr": np.float32(0.5)}}
    cfg = from_dict(data)
    assert (cfg.train.steps, cfg.train.lr) == (10, 0.5)
    assert type(cfg.train.steps) is int and type(cfg.train.lr) is float
    assert type(data["train"]["steps"]) is np.int64  # the caller's dict as it was
    assert "steps = 10\n" in to_toml(cfg)
    for bad, said in [
        (None, "from_dict() takes a dict of sections such as {'train': {'lr': 1e-4}}, got None "
               "(NoneType)."),
        ([1], "from_dict() takes a dict of sections such as {'train': {'lr': 1e-4}}, got [1] "
              "(list)."),
        ({1: {}}, "config: section names are text, got 1 (int); use one of model, data, train, "
                  "preview, checkpoint, validation, log, lora."),
        ({"train": {2: 3}}, "config: 'train' keys are text, got 2 (int)."),
    ]:
        with pytest.raises(GlidectlError) as info:
            from_dict(bad)
        assert str(info.value) == said


def test_a_config_set_in_code_keeps_its_values_as_a_file_would():
    """validate() took cfg.model.kind = "Base" (a file's kind = "Base" reads as base) but
    left it as typed, so train(cfg) then stopped with "Unknown model kind 'Base'"."""
    cfg = GlideConfig()
    cfg.model.kind, cfg.train.precision, cfg.train.lr = "Base", "FP32", 1
    cfg.log.trackers = ["TensorBoard"]
    validate(cfg)
    assert (cfg.model.kind, cfg.train.precision, cfg.log.trackers) == (
        "base", "fp32", ["tensorboard"])
    assert isinstance(cfg.train.lr, float)


def test_lora_alpha_0_is_refused_when_the_config_loads():
    """`config keys` said "from 0" and `config show` took 0, which glidectl lora refuses."""
    with pytest.raises(ConfigError, match=r"'lora.alpha' must be above 0 and at most 100000; "
                                          r"got 0"):
        load_config(None, ["lora.alpha=0"])
    assert load_config(None, ["lora.alpha=0.5"]).lora.alpha == 0.5


LOCATED = [  # (file text, the error's start): the line is the key's, found by structure
    ("# lr = 5, a comment\n[model]\nkind = 'base'\n\n[train]  # [data]\nlr = -1\n",
     "glide.toml:6: 'train.lr' must be from 0 to 1"),
    ('[preview]\nprompts = [\n  "lr = 3",\n  """two\nlines""",\n]\n[train]\nbatch_size = "32"\n',
     "glide.toml:8: 'train.batch_size' must be int, got '32' (str); drop the quotes: "
     "batch_size = 32."),
    ("[data]\nflip = true\n[train]\nlr = 1e-4\n  batchsize = 4\n",
     "glide.toml:5: unknown key 'train.batchsize'. Did you mean 'train.batch_size'?"),
    ("model.kind = 'base'\ntrain.steps = 2\n\ntrain . 'lr' = 2.0\n",
     "glide.toml:4: 'train.lr' must be from 0 to 1"),
    ("[data]\nsource = 'x'\n[model]\n\n# train = {}\ntrain = {steps = 1, lr = 2.0}\n",
     "glide.toml:6: unknown key 'model.train'"),  # [model] took it, not a comment
    ("[model]\nkind = 'base'\n\n[trian]\nsteps = 4\n", "glide.toml:4: unknown section 'trian'"),
    ("[data]\nflip = true\ntrain = {steps = 1, lr = 2.0}\n",
     "glide.toml:3: unknown key 'data.train'"),
    ("train = {steps = 1, lr = 2.0}\n", "glide.toml:1: 'train.lr' must be from 0 to 1"),
    ("[lora]\ntargets = ['attention',\n  'mpl']\n", "glide.toml:2: "),
]


@pytest.mark.parametrize(("text", "start"), LOCATED)
def test_a_bad_value_in_a_config_file_names_its_file_and_line(tmp_path, monkeypatch, text, start):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "glide.toml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config("glide.toml")
    assert str(info.value).startswith(start), str(info.value)


def test_a_bad_set_value_says_it_came_from_set_not_a_line_of_the_file(tmp_path):
    path = tmp_path / "glide.toml"
    path.write_text("[train]\nlr = 1e-4\n")
    with pytest.raises(ConfigError, match=r"^--set: 'train.lr' must be from 0 to 1; got -1\.$"):
        load_config(path, ["train.lr=-1"])
    with pytest.raises(ConfigError, match=r"^--set: 'train.steps' must be int, got '3' \(str\); "
                                          r"drop the quotes: --set train.steps=3\.$"):
        load_config(path, ["train.steps='3'"])


def test_a_boolean_written_as_python_or_a_word_says_to_write_true_or_false(tmp_path):
    """``--set data.flip=True`` said only "must be bool, got 'True' (str)", though True is
    Python's boolean; Python's, yes/no, on/off and 1/0 now say TOML's spelling."""
    with pytest.raises(ConfigError, match=r"^--set: 'data.flip' must be bool, got 'True' "
                                          r"\(str\); write true or false: --set data.flip=true\.$"):
        load_config(None, ["data.flip=True"])
    with pytest.raises(ConfigError, match=r"--set data\.flip=false\.$"):
        load_config(None, ["data.flip=no"])
    with pytest.raises(ConfigError, match=r"got 'maybe' \(str\)\.$"):  # no guess
        load_config(None, ["data.flip=maybe"])
    path = tmp_path / "glide.toml"
    path.write_text("[data]\nflip = 0\n")
    with pytest.raises(ConfigError, match=r"glide\.toml:2: 'data.flip' must be bool, got 0 "
                                          r"\(int\); write true or false: flip = false\.$"):
        load_config(path)


def test_a_whole_float_for_an_int_key_says_to_write_it_whole(tmp_path):
    """``--set train.steps=1e3`` (or ``steps = 1000.0`` in the file) said only "must be
    int, got 1000.0 (float)"; it says how to write the number."""
    path = tmp_path / "glide.toml"
    path.write_text("[train]\nsteps = 10\n")
    with pytest.raises(ConfigError, match=r"^--set: 'train.steps' must be int, got 1000\.0 "
                                          r"\(float\); write it whole: --set train.steps=1000\.$"):
        load_config(path, ["train.steps=1e3"])
    with pytest.raises(ConfigError, match=r"got 2\.5 \(float\)\.$"):  # no whole number
        load_config(path, ["train.steps=2.5"])
    path.write_text("[train]\nsteps = 1000.0\n")
    with pytest.raises(ConfigError, match=r"glide\.toml:2: 'train.steps' must be int, got "
                                          r"1000\.0 \(float\); write it whole: steps = 1000\.$"):
        load_config(path)


def test_a_number_python_reads_but_toml_does_not_says_how_toml_writes_it(tmp_path):
    """``--set train.lr=.1`` said only "must be float, got '.1' (str)", which reads as a
    float to anyone but TOML; the sentence says how to write it."""
    with pytest.raises(ConfigError, match=r"^--set: 'train.lr' must be float, got '\.1' "
                                          r"\(str\); write it as TOML does: --set "
                                          r"train\.lr=0\.1\.$"):
        load_config(None, ["train.lr=.1"])
    with pytest.raises(ConfigError, match=r"write it as TOML does: --set train\.steps=10\.$"):
        load_config(None, ["train.steps=10."])
    with pytest.raises(ConfigError, match=r"got '\.5' \(str\)\.$"):  # no whole number
        load_config(None, ["train.steps=.5"])
    path = tmp_path / "glide.toml"
    path.write_text('[train]\nlr = "1."\n')
    with pytest.raises(ConfigError, match=r"glide\.toml:2: .* write it as TOML does: "
                                          r"lr = 1\.0\.$"):
        load_config(path)


def test_key_lines_reads_the_structure_of_toml():
    from glidectl.toml_lines import key_lines

    text = ("a.b = 1\n[t]\nx = '''\ny = 1'''\nz = \"q\\\"\" # w = 1\n[[arr]]\nv = 1\n"
            "[u.deep]\nk = 1\n[u]\n'quoted key' = {i = [1,\n 2], j = 1979-05-27 07:32:00}\n")
    tomllib.loads(text)
    assert key_lines(text) == {
        ("a",): 1, ("a", "b"): 1, ("t",): 2, ("t", "x"): 3, ("t", "z"): 5, ("arr",): 6,
        ("arr", "v"): 7, ("u", "deep"): 8, ("u", "deep", "k"): 9, ("u",): 10,
        ("u", "quoted key"): 11, ("u", "quoted key", "i"): 11, ("u", "quoted key", "j"): 12}
    assert key_lines("a = [") == {}  # not TOML: no line rather than a wrong one
