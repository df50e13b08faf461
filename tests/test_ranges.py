"""Every number is range-checked when read: config keys (file, --set) and flags, one line."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from glidectl.cli.app import build_app
from glidectl.cli.checks import numeric_options
from glidectl.config import describe, load_config
from glidectl.errors import ConfigError, GlidectlError
from glidectl.ranges import COUNT, FLAGS, SEED, SEED_MAX, Range


def test_every_numeric_flag_of_every_command_has_a_range():
    seen = {(command, flag) for command, flag, _, _ in numeric_options(build_app())}
    assert ("sample", "--seed") in seen and ("eval", "--guidance") in seen
    assert sorted(f"{c} {f}" for c, f in seen if f not in FLAGS) == []
    for _, flag, info, _ in numeric_options(build_app()):
        assert info.callback is not None, flag


@pytest.mark.parametrize("args, message", [
    (["lora", "merge", "--scale", "1_0", "a", "b", "-o", "c"],
     "Invalid value for '--scale': '1_0' is not a plain decimal number"),
    (["sample", "x", "--guidance", "1_5"], "'1_5' is not a plain decimal number"),
    (["sample", "x", "--n", "1_0"], "'1_0' is not a whole number; write digits only"),
    (["sample", "x", "--n", "1.5"], "'1.5' is not a whole number"),
    (["sample", "x", "--seed", "\u0663"], "'\u0663' is not a whole number"),
    (["eval", "x", "--guidance", "\u0661.5"], "is not a plain decimal number"),
])
def test_numeric_flags_take_plain_decimal_numbers_only(args, message):
    # int() and float() read "1_0" as 10 and other scripts' digits as digits
    result = _cli(*args)
    assert result.exit_code == 2 and message in result.output
    assert "Traceback" not in result.output


def test_plain_numbers_still_parse():
    from glidectl.cli.checks import plain

    assert plain(float)(" 1e-3") == 0.001 and plain(float)("-.5") == -0.5
    assert plain(int)("+12") == 12 and plain(float)(2.0) == 2.0


def test_every_numeric_config_key_has_a_range():
    missing = [key for key, tp, _default, _doc, allowed in describe()
               if tp in ("int", "float") and not allowed]
    assert missing == []


@pytest.mark.parametrize("item, message", [
    ("train.lr=-1", "--set: 'train.lr' must be from 0 to 1; got -1."),
    ("train.batch_size=0", "--set: 'train.batch_size' must be from 1 to 65536; got 0."),
    ("train.seed=-1", "--set: 'train.seed' must be from 0 to 2**63-1; got -1."),
    ("train.adam_eps=0", "--set: 'train.adam_eps' must be above 0 and at most 1; got 0."),
    ("train.seed=9223372036854775808", "--set: 'train.seed' must be from 0 to 2**63-1; got "
                                      "9223372036854775808."),
    ("preview.guidance=nan", "--set: 'preview.guidance' must be from 0 to 100 (a finite "
                             "number); got nan."),
    ("train.adam_beta2=1.0", "--set: 'train.adam_beta2' must be from 0 to below 1; got 1."),
    ("data.crop_scale=[0.0, 1.0]", "--set: 'data.crop_scale' must be from 0.01 to 1; got 0."),
    ("data.crop_scale=[0.5]", "--set: 'data.crop_scale' must be a list of two numbers "
                              "[min, max]; got [0.5]."),
    ("data.crop_scale=[0.9,0.1]", "--set: 'data.crop_scale' must be [min, max] with min <= max; "
                                  "got [0.9, 0.1]."),
    ("data.crop_scale=['a', 'b']", "--set: 'data.crop_scale' must be a list of two numbers "
                                   "[min, max]; got ['a', 'b']."),
    ("data.aspect_range=[4.0, 0.25]", "--set: 'data.aspect_range' must be [min, max] with "
                                      "min <= max; got [4.0, 0.25]."),
    ("data.similarity_range=[]", "--set: 'data.similarity_range' must be a list of two numbers "
                                 "[min, max]; got []."),
])
def test_out_of_range_config_values_name_the_key_and_the_range(item, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, [item])
    assert str(info.value) == message


def test_pairs_the_config_accepts_are_the_pairs_training_accepts(tmp_path):
    from glidectl.data.dataset import validate

    cfg = load_config(None, ["data.crop_scale=[0.5, 1]", "data.aspect_range=[1, 1]"])
    assert cfg.data.crop_scale == [0.5, 1] and cfg.data.aspect_range == [1, 1]
    validate(cfg.data)  # training takes what the config took
    path = tmp_path / "glide.toml"
    path.write_text("[data]\ncrop_scale = [0.9, 0.1]\n")
    with pytest.raises(ConfigError, match=r"'data.crop_scale' must be \[min, max\] with min"):
        load_config(path)


def test_ranges_are_checked_in_config_files_too(tmp_path):
    path = tmp_path / "glide.toml"
    path.write_text("[train]\nlr = inf\n")
    with pytest.raises(ConfigError, match=r"'train.lr' must be from 0 to 1 \(a finite number\)"):
        load_config(path)


def test_seed_range_edges():
    assert SEED.problem(0) is None and SEED.problem(SEED_MAX) is None
    assert SEED.problem(-1) and SEED.problem(2**64 - 1) and SEED.problem(2**70)
    assert Range(0, 1).problem(True) is None  # bools are not numbers here
    # a web form's 1e308, made a whole number, was said in its 309 digits
    assert COUNT.problem(int(1e308)) == "must be from 1 to 1000000; got 1.00e+308"
    assert SEED.problem(2**64) == "must be from 0 to 2**63-1; got 18446744073709551616"


def _cli(*args: str):
    return CliRunner().invoke(build_app(), list(args), env={"COLUMNS": "250"})


@pytest.mark.parametrize("args, flag", [
    (["sample", "x", "--seed", str(2**70)], "--seed"),
    (["sample", "x", "--seed", "-1"], "--seed"),
    (["sample", "x", "--guidance", "nan"], "--guidance"),
    (["sample", "x", "--guidance", "inf"], "--guidance"),
    (["sample", "x", "--eta", "-0.5"], "--eta"),
    (["eval", "p.txt", "--guidance", "inf"], "--guidance"),
    (["eval", "p.txt", "--n", "0"], "--n"),
    (["eval", "p.txt", "--grid-max", "0"], "--grid-max"),
    (["train", "--steps", "-3"], "--steps"),
    (["train", "--steps", "0"], "--steps"),  # was "train.steps must be positive (or set epochs)"
    (["lora", "--steps", "0"], "--steps"),
    (["lora", "merge", "a.safetensors", "-o", "b.safetensors", "--scale", "nan"], "--scale"),
])
def test_out_of_range_flags_are_refused_before_anything_runs(args, flag):
    result = _cli(*args)
    assert result.exit_code == 2
    assert isinstance(result.exception, SystemExit) or result.exception is None
    assert f"Invalid value for '{flag}'" in result.output
    assert "must be" in result.output


def test_config_keys_shows_the_allowed_ranges():
    result = _cli("config", "keys")
    assert result.exit_code == 0, result.output
    line = next(ln for ln in result.output.splitlines() if ln.startswith("train.lr\t"))
    assert "from 0 to 1" in line
    seed = next(ln for ln in result.output.splitlines() if ln.startswith("train.seed\t"))
    assert "2**63-1" in seed


def test_config_keys_piped_is_one_whole_line_per_key():
    """Piped, the table wrapped at 80 columns and cut keys short (`model.tokeni…`), so
    `glidectl config keys | grep KEY` missed them."""
    from glidectl.config import describe

    lines = _cli("config", "keys").output.splitlines()
    assert [ln.split("\t")[0] for ln in lines] == [row[0] for row in describe()]
    assert all(len(ln.split("\t")) == 5 for ln in lines)
    rows = json.loads(_cli("config", "keys", "--json").output)
    assert rows[0].keys() == {"key", "type", "default", "meaning", "allowed"}


def test_config_keys_on_an_80_column_terminal_cuts_no_cell_short():
    """On a terminal the table cut keys and values to fit (`model.tokeni…`, three rows of
    `data.degrade…`, `upsample-inp…`), so the keys could not be read off it."""
    import io

    from rich.console import Console

    from glidectl.cli.config_cmd import keys_table

    rows = [dict(zip(("key", "type", "default", "meaning", "allowed"), row, strict=True))
            for row in describe()]
    console = Console(file=io.StringIO(), width=80)
    console.print(keys_table(rows))
    text = console.file.getvalue()
    assert "…" not in text
    assert all(f"│ {row['key']} " in text for row in rows)


@pytest.mark.parametrize("kwargs, message", [
    # one sentence for a seed out of range and for text that is none (they differed)
    ({"seed": -2}, "Seed must be a whole number from 0 to 2**63-1, or -1 for a random one; "
     "got -2."),
    ({"seed": 2**64 - 1}, "Seed must be a whole number from 0 to 2**63-1, or -1 for a random "
     "one; got 18446744073709551615."),
    ({"seed": "abc"}, "Seed must be a whole number from 0 to 2**63-1, or -1 for a random "
     "one; got 'abc'."),
    ({"guidance": float("nan")}, "Guidance must be from 0 to 100 (a finite number); got nan."),
    # a fraction typed in a box the page marks invalid ran at its whole part without a word
    ({"base_steps": 2.5}, "Base steps must be a whole number; got 2.5."),
    ({"n": 2.5}, "Images per run must be a whole number; got 2.5."),
    # the last image's seed, before any model loads (it failed after, naming a seed not typed)
    ({"seed": 2**63 - 1, "n": 3}, "Seed 9223372036854775807 with 3 images gives the last one "
     "seed 9223372036854775809 (image i takes seed + i), past 2**63-1; pass a seed of at most "
     "9223372036854775805."),
])
def test_the_web_ui_checks_the_same_ranges(tmp_path, kwargs, message):
    from glidectl.ui.backend import UiBackend

    with pytest.raises(GlidectlError) as info:
        UiBackend(tmp_path, output_dir=tmp_path / "out").generate("a cube", **kwargs)
    assert str(info.value) == message


def test_seeds_past_2_63_are_refused_naming_the_seed_given(tmp_path, capsys):
    """`sample --seed 2**63-1 --n 3` loaded the model, then said "seed must be from 0 to
    2**63-1; got 9223372036854775808", a seed no one typed; the library did the same."""
    from test_sample_cmd import in_process
    from tiny_configs import tiny_base_weights

    from glidectl import generate

    tiny_base = tiny_base_weights(tmp_path / "base.safetensors")
    res = in_process(capsys, "sample", "a cube", "--base", tiny_base, "--seed",
                     str(2**63 - 2), "--n", "3", "--out", tmp_path / "o")
    assert res.returncode == 2 and res.stderr == (
        "Error: --seed 9223372036854775806 with 3 images gives the last one seed "
        "9223372036854775808 (image i takes seed + i), past 2**63-1; pass a seed of at most "
        "9223372036854775805.\n")
    assert not (tmp_path / "o").exists()
    with pytest.raises(GlidectlError, match="^seed 9223372036854775807 with 2 images gives"):
        generate("a cube", base=str(tiny_base), upsampler="none", n=2, seed=2**63 - 1, steps=1)


@pytest.mark.parametrize("rng, value, got", [
    (Range(0, 1), 1.000001, "got 1.000001"), (Range(0, below=1), 1.0, "got 1"),
    (Range(0, 100), 100.0000001, "got 100.0000001"), (Range(-10, 10), -10.5, "got -10.5"),
    (Range(0, 1), 2.5, "got 2.5"), (Range(1, 10), 0, "got 0"),
])
def test_a_refused_value_is_not_written_as_the_bound_it_passes(rng, value, got):
    # "must be from 0 to 1; got 1": the value was rounded to six digits
    assert rng.problem(value).endswith(got)


def test_the_keys_table_prints_brackets_as_written() -> None:
    """On a terminal `glidectl config keys` printed "Random-resized-crop area range ; [1, 1]
    disables it" and "needs ": rich took "[min, max]" and "[validation]" for markup."""
    import io

    from rich.console import Console

    from glidectl.cli.config_cmd import keys_table

    rows = [dict(zip(("key", "type", "default", "meaning", "allowed"), row, strict=True))
            for row in describe() if row[0] in ("data.crop_scale", "checkpoint.keep_best")]
    console = Console(file=io.StringIO(), width=400, force_terminal=True, color_system=None)
    console.print(keys_table(rows))
    text = console.file.getvalue()
    assert "area range [min, max]; [1, 1] disables it." in text
    assert "(checkpoints/best; needs [validation])" in text
