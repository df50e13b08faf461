"""Help texts say what they were written to say: rich markup eats no words, flags show no
``<bool>`` value, and documented choices are complete."""

from __future__ import annotations

import pytest
import typer
from rich.text import Text
from typer.testing import CliRunner

from glidectl.cli.app import build_app


def _commands(command, path: tuple[str, ...] = ()):
    yield path, command
    if hasattr(command, "commands"):  # a group (typer vendors its own click)
        for name, sub in command.commands.items():
            yield from _commands(sub, (*path, name))


COMMANDS = list(_commands(typer.main.get_command(build_app())))


@pytest.mark.parametrize("path, command", COMMANDS, ids=[" ".join(p) or "glidectl"
                                                       for p, _ in COMMANDS])
def test_rich_markup_eats_no_words_of_a_help_text(path, command):
    texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
    for text in texts:
        assert Text.from_markup(text).plain == text, text


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=[" ".join(p) or "glidectl"
                                                               for p, _ in COMMANDS])
def test_help_shows_no_value_type_for_on_off_flags(path):
    result = CliRunner().invoke(build_app(), [*path, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output


def test_upsample_and_dataset_inspect_help_keep_every_word():
    runner = CliRunner()
    up = runner.invoke(build_app(), ["upsample", "--help"], env={"COLUMNS": "200"}).output
    assert "each preview row shows the low-res input, the output and the reference" in up
    inspect = runner.invoke(build_app(), ["dataset", "inspect", "--help"],
                            env={"COLUMNS": "200"}).output
    assert "A glide.toml whose data section sets the options." in inspect
    # --size also sizes the tiles the grey-image count judges, not only previews/benchmark
    assert "the benchmark's transform and the grey-image count" in " ".join(inspect.split())


def test_model_size_doc_names_every_size_preset():
    from glidectl.config import describe
    from glidectl.glide.options import SIZES

    doc = next(row[3] for row in describe() if row[0] == "model.size")
    assert all(size in doc for size in SIZES), doc
    from dataclasses import fields

    from glidectl.config import ModelConfig

    size = next(f for f in fields(ModelConfig) if f.name == "size")
    assert tuple(size.metadata["choices"]) == SIZES  # `config show` refuses others


def test_sample_help_points_to_the_plugins_listing():
    result = CliRunner().invoke(build_app(), ["sample", "--help"], env={"COLUMNS": "250"})
    assert "glidectl plugins" in result.output


GROUPS = [(p, c) for p, c in COMMANDS if hasattr(c, "commands")]


@pytest.mark.parametrize("path, group", GROUPS, ids=[" ".join(p) or "glidectl" for p, _ in GROUPS])
def test_command_lists_give_each_summary_on_one_line(path, group):
    """A docstring's line break does not break its summary in the command list."""
    out = CliRunner().invoke(build_app(), [*path, "--help"], env={"COLUMNS": "400"}).output
    for name, sub in group.commands.items():
        summary = " ".join((sub.help or "").split("\n\n")[0].split())
        assert any(name in line and summary in line for line in out.splitlines()), name


def test_plugins_help_names_every_kind_of_thing_a_plugin_registers():
    """`glidectl plugins` reports each register_* hook's registry; its help says so."""
    import inspect

    from glidectl import hookspecs

    kinds = [name.removeprefix("register_").replace("_", " ").removeprefix("dataset ")
             for name, _ in inspect.getmembers(hookspecs, inspect.isfunction)
             if name.startswith("register_")]
    summary = " ".join(
        CliRunner().invoke(build_app(), ["plugins", "--help"], env={"COLUMNS": "400"}).output
        .split())
    assert all(kind in summary for kind in kinds), (kinds, summary)


def test_download_help_names_the_cache_folder_it_uses(tmp_path, monkeypatch):
    """With $XDG_CACHE_HOME set, the cache is there, not in ~/.cache as the help said."""
    from glidectl.glide.download import cache_dir

    monkeypatch.delenv("GLIDECTL_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "glidectl"
    text = " ".join(CliRunner().invoke(build_app(), ["download", "--help"],
                                       env={"COLUMNS": "400"}).output.split())
    assert "$GLIDECTL_HOME, else $XDG_CACHE_HOME/glidectl, else ~/.cache/glidectl" in text


def test_table_column_docs_name_every_column_tried():
    """`config keys` said image_column defaults to "image, jpg or png"; jpeg and webp are
    tried too."""
    from glidectl.config import describe
    from glidectl.data.tables import CAPTION_COLUMNS, IMAGE_COLUMNS

    docs = {row[0]: row[3] for row in describe()}
    for key, columns in (("data.image_column", IMAGE_COLUMNS),
                         ("data.caption_column", CAPTION_COLUMNS)):
        assert f"the first of {', '.join(columns)})" in docs[key], docs[key]


#: ``lora merge -b`` is --base there, --batch-size in sample and eval; kept for its users
SPELLED_APART = {"--base"}


def test_a_flag_two_commands_share_is_spelled_the_same_in_both():
    """``glidectl eval -n 2`` works as ``sample -n 2`` does, ``fit-steps -o`` as
    ``sample -o``, ``sample --up-steps`` as ``eval --up-steps``."""
    spellings: dict[str, dict[str, tuple[str, ...]]] = {}
    for path, command in COMMANDS:
        for param in command.params:
            opts = tuple(getattr(param, "opts", ())) + tuple(getattr(param, "secondary_opts", ()))
            if opts and opts[0].startswith("--") and opts[0] not in SPELLED_APART:
                spellings.setdefault(opts[0], {})[" ".join(path)] = tuple(sorted(opts))
    apart = {flag: by_command for flag, by_command in spellings.items()
             if len(set(by_command.values())) > 1}
    assert apart == {}


def test_fit_steps_takes_force_as_export_and_lora_merge_do():
    fit = dict(COMMANDS)[("fit-steps",)]
    ctx = fit.make_context("fit-steps", ["runs/x", "-o", "s.json", "--force"])
    assert ctx.params["overwrite"] is True and str(ctx.params["out"]) == "s.json"
