"""What the README, the example configs, the plugin example's README and
benchmarks/MEASUREMENTS.md tell a user to type exists: every glidectl command line parses,
every flag is its command's, every config key named is in the schema, every TOML snippet
loads, every benchmark flag is its script's."""

from __future__ import annotations

import ast
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from glidectl.cli.app import build_app
from glidectl.config import describe, load_config
from glidectl.data.kohya_config import read_dataset_config
from glidectl.unused_keys import unused_keys

try:  # typer >= 0.26 vendors click
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover
    from click.exceptions import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))
PLUGIN = ROOT / "plugins" / "glidectl-dpm3m"
DOCS = [
    ROOT / "README.md",
    ROOT / "benchmarks" / "MEASUREMENTS.md",
    PLUGIN / "README.md",
    *EXAMPLES,
]
CLI = typer.main.get_command(build_app())


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(ROOT)) for p in paths]


def _text(path: Path) -> str:
    """A doc's prose; for a TOML file its comments, where the commands to run are."""
    if path.suffix != ".toml":
        return path.read_text()
    return "\n".join(
        line.split("#", 1)[1][1:]
        for line in path.read_text().splitlines()
        if line.lstrip().startswith("#")
    )


def _command_lines(path: Path) -> tuple[list[str], list[str]]:
    """The doc's ``glidectl ...`` lines to run as written (code blocks; a TOML file's
    comments), and those named in `backticks` (which may hold placeholders)."""
    text = _text(path)
    blocks = re.findall(r"```(?:bash)?\n(.*?)```", text, re.S) if path.suffix == ".md" else [text]
    # a line starting with glidectl, after a label ("Then: glidectl ...") or a launcher's -m
    line_re = re.compile(r"^(?:\w+: |.*\s-m )?(glidectl\s.*)$")
    whole = [
        found.group(1)
        for block in blocks
        for line in block.replace("\\\n", " ").splitlines()
        for part in line.split("&&")
        if (found := line_re.match(part.strip()))
    ]
    named = re.findall(r"`(glidectl [^`]+)`", text.replace("\n", " "))
    return whole, named


def _command(words: list[str]) -> tuple[Any, list[str], list[str]]:
    """The (sub)command ``glidectl WORDS...`` names, its path and the remaining words."""
    command, path = CLI, []
    for word in words:
        subcommands = getattr(command, "commands", {})
        if word not in subcommands:
            break
        command, path = subcommands[word], [*path, word]
    return command, path, words[len(path) :]


def _options(command: Any) -> set[str]:
    return {"--help", "-h"} | {
        o
        for p in command.params
        for o in (*p.opts, *getattr(p, "secondary_opts", []))
        if o.startswith("-")
    }


def _check_command_lines(path: Path) -> None:
    whole, named = _command_lines(path)
    for line in whole:
        command, sub, args = _command(shlex.split(line, comments=True)[1:])
        assert sub or args[:1] in ([], ["--help"], ["--version"]), f"no such command: {line}"
        if not {"--help", "-h", "--version"} & set(args):
            # parse as the command would (types, choices, required options), running nothing
            command.make_context(" ".join(["glidectl", *sub]), args)
    for line in named:
        command, sub, args = _command(line.split()[1:])
        assert sub or not args or args[0].startswith("-"), f"no such command: {line}"
        flags = {a.split("=")[0] for a in args if re.fullmatch(r"--?[a-zA-Z][\w-]*(=.*)?", a)}
        assert flags <= _options(command), (line, flags - _options(command))


@pytest.mark.parametrize("path", DOCS, ids=_ids(DOCS))
def test_every_glidectl_command_line_in_a_doc_parses(path):
    _check_command_lines(path)


def test_doc_command_lines_are_found_and_checked(tmp_path):
    """The extraction above sees what it checks (a regex that finds nothing passes)."""
    whole, named = _command_lines(ROOT / "README.md")
    assert any(
        line.startswith("glidectl train --config examples/glide.toml --resume latest")
        for line in whole
    )
    assert any(
        line.startswith(
            'glidectl sample "a corgi in a field" --base openai:base --upsampler openai:upsample'
        )
        for line in whole
    )
    assert "glidectl config keys" in named
    zorblax, _ = _command_lines(ROOT / "examples" / "lora-zorblax.toml")
    assert any("--set model.init=runs/quickstart" in line for line in zorblax)
    laion, _ = _command_lines(ROOT / "examples" / "webdataset-laion.toml")
    assert laion == ["glidectl train --config examples/webdataset-laion.toml"] * 2
    for bad in (
        "```bash\nglidectl sample x --n four\n```",
        "```\nglidectl smaple x\n```",
        "Run `glidectl eval P --no-such-flag`.",
        "`glidectl lora merge A --bas B`",
    ):
        (tmp_path / "bad.md").write_text(bad)
        with pytest.raises((AssertionError, UsageError)):
            _check_command_lines(tmp_path / "bad.md")


KEY = re.compile(
    r"(?<![\w./-])((?:model|data|train|preview|checkpoint|validation|log|lora)"
    r"\.[a-z0-9_]+\*?)(?![\w(])"
)
NOT_KEYS = {"model.safetensors"}  # a file name


def _help_texts() -> str:
    def walk(command):
        yield command.help or ""
        yield from (getattr(p, "help", None) or "" for p in command.params)
        for sub in getattr(command, "commands", {}).values():
            yield from walk(sub)

    return "\n".join([*walk(CLI), *(row[3] for row in describe())])


@pytest.mark.parametrize("name", [*_ids(DOCS), "help texts"])
def test_every_config_key_a_doc_names_is_in_the_schema(name):
    text = _help_texts() if name == "help texts" else _text(ROOT / name)
    keys = [row[0] for row in describe()]
    named = set(KEY.findall(text)) - NOT_KEYS
    assert named or name != "README.md"
    unknown = {
        k
        for k in named
        if not (k in keys or k.endswith("*") and any(x.startswith(k[:-1]) for x in keys))
    }
    assert not unknown, unknown


def test_readme_config_snippet_loads(tmp_path):
    """glide.toml snippets load as configs; a kohya dataset.toml snippet as kohya's."""
    readme = (ROOT / "README.md").read_text()
    snippets = [s for s in re.findall(r"```toml\n(.*?)```", readme, re.S) if "[project" not in s]
    kohya = [s for s in snippets if s.lstrip().startswith("# dataset.toml")]
    assert snippets and kohya
    for i, snippet in enumerate(snippets):
        (tmp_path / f"{i}.toml").write_text(snippet)
        if snippet in kohya:
            assert read_dataset_config(tmp_path / f"{i}.toml").subsets
        else:
            load_config(tmp_path / f"{i}.toml")


def repeated_passages(text: str, length: int = 80) -> list[str]:
    """Passages of ``length`` characters (whitespace folded) that a text holds twice, apart."""
    text = re.sub(r"\s+", " ", text)
    first: dict[str, int] = {}
    found, last = [], -2
    for i in range(len(text) - length + 1):
        if i - first.setdefault(text[i:i + length], i) >= length:
            if i > last + 1:  # one entry per repeated stretch
                found.append(text[i:i + length])
            last = i
    return found


def test_the_readme_says_nothing_twice():
    """A merge that kept both sides of a sentence leaves it twice (the UI's paragraph did)."""
    assert repeated_passages("a b c d e f. " * 3, 12)
    assert repeated_passages((ROOT / "README.md").read_text()) == []


def test_readme_plugin_snippets_are_the_example_plugins():
    """The pyproject lines and imports the README shows are the example plugin's own."""
    readme = (ROOT / "README.md").read_text()
    pyproject = re.search(r"```toml\n# pyproject\.toml[^\n]*\n(.*?)```", readme, re.S).group(1)
    assert (
        tomllib.loads(pyproject)["project"]["entry-points"]
        == tomllib.loads((PLUGIN / "pyproject.toml").read_text())["project"]["entry-points"]
    )
    code = re.search(r"```python\n# glidectl_dpm3m\.py[^\n]*\n(.*?)```", readme, re.S).group(1)
    source = (PLUGIN / "glidectl_dpm3m.py").read_text()
    imports = [line for line in code.splitlines() if line.startswith(("from ", "import "))]
    assert imports and all(line in source.splitlines() for line in imports), imports


def _command_of(example: Path) -> str:
    """The command an example's header runs it with."""
    found = re.search(
        r"glidectl (train|upsample|lora) --config examples/" + example.name, example.read_text()
    )
    assert found, f"{example.name}'s header shows no glidectl command that runs it"
    return found.group(1)


@pytest.mark.parametrize("example", EXAMPLES, ids=_ids(EXAMPLES))
def test_every_example_loads_for_its_command_and_sets_nothing_it_ignores(example):
    command = _command_of(example)
    cfg = load_config(example)
    assert cfg.model.kind.startswith("upsample") == (command == "upsample"), command
    assert unused_keys(cfg, lora=command == "lora") == []


def _script_flags(script: Path) -> set[str]:
    """The options a benchmark script's argparse parser takes (read from its source)."""
    flags = {"--help", "-h"}
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            flags |= {
                a.value
                for a in node.args
                if isinstance(a, ast.Constant) and str(a.value).startswith("-")
            }
    return flags


@pytest.mark.parametrize("path", DOCS, ids=_ids(DOCS))
def test_every_benchmark_a_doc_runs_exists_and_takes_its_flags(path):
    """`bench_x.py --flag ...` in backticks: the script and each flag."""
    text = _text(path).replace("\n", " ")
    for span in re.findall(r"`([^`]*\b\w+\.py\b[^`]*)`", text):
        for name, rest in re.findall(
            r"(?<![\w/])(?:benchmarks/)?(\w+\.py)"
            r"((?:\s+(?!\S+\.py)[^\s;,]+)*)",
            span,
        ):
            script = ROOT / "benchmarks" / name
            if name == "glidectl_dpm3m.py":  # the plugin example's module
                continue
            assert script.is_file(), f"{path.name} names benchmarks/{name}, which is missing"
            flags = set(re.findall(r"(?<![\w-])(--[a-z][\w-]*)", rest))
            assert flags <= _script_flags(script), (span, flags - _script_flags(script))


def test_every_extra_a_doc_installs_is_in_pyproject():
    """`pip install ... -e ".[clip]"`: each extra named is one pyproject declares."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    text = " ".join(_text(path) for path in DOCS).replace("\n", " ")
    named = {
        e.strip() for group in re.findall(r"\"\.\[([\w, -]+)\]\"", text) for e in group.split(",")
    }
    assert {"clip", "fid", "hf", "ui", "test"} <= named
    assert named <= set(extras), named - set(extras)


@pytest.mark.parametrize("script", sorted(  # the scripts, not bench_args.py, which they share
    p for p in (ROOT / "benchmarks").glob("*.py") if "__main__" in p.read_text()),
    ids=lambda p: p.name)
def test_every_benchmark_help_opens_with_whole_sentences(script):
    """`--help` shows the description a script gives argparse: not a docstring line cut
    mid-sentence."""
    module = ast.parse(script.read_text())
    calls = [
        node
        for node in ast.walk(module)
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "ArgumentParser"
    ]
    assert calls, f"{script.name} has no argparse parser"
    for call in calls:
        expr = next(k.value for k in call.keywords if k.arg == "description")
        text = eval(
            compile(ast.Expression(expr), script.name, "eval"),
            {"__doc__": ast.get_docstring(module, clean=False)},
        )
        assert text.rstrip().endswith((".", ":", ")")), (script.name, text[-60:])


def test_the_modules_the_readme_gives_plugin_authors_import_no_torch():
    """README: the types come from torch-free modules, and the example imports torch only
    inside its function (a plugin importing torch slows every command by seconds)."""
    import subprocess

    readme = " ".join((ROOT / "README.md").read_text().split())
    modules = re.search(r"come from torch-free modules: (.*?)\. ", readme).group(1)
    named = re.findall(r"`(glidectl\.[\w.]+)`", modules)
    assert len(named) == 6, named
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in [*named, "glidectl_dpm3m"])
        + "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=PLUGIN, timeout=60
    )
    assert out.stdout == "[]\n", out.stdout + out.stderr
