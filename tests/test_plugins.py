"""The plugin seam: hooks, registries, allow-list, errors that name the plugin."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

from glidectl import plugins
from glidectl.data.preset_api import DatasetPreset
from glidectl.errors import GlidectlError, PluginError
from glidectl.hookspecs import hookimpl
from glidectl.registry import Registry


class _Presets:
    def __init__(self, *names):
        self.names = names

    @hookimpl
    def register_dataset_presets(self, register):
        for name in self.names:
            register(name, DatasetPreset(name, lambda meta, caption, options: caption))


class _Hub:
    """A model source offering one model, ``myhub:tiny``."""

    def names(self):
        return ["tiny"]

    def resolve(self, name, download=True):
        return "/models/tiny.safetensors"


class _Sources:
    @hookimpl
    def register_model_sources(self, register):
        register("myhub", _Hub())


class _Commands:
    @hookimpl
    def register_commands(self, app):
        @app.command("hello-plugin")
        def hello() -> None:
            """Say hello from a plugin."""
            print("hello from a plugin")


def test_registry_aliases_and_did_you_mean():
    reg: Registry[str] = Registry("sampler")
    reg.add("dpm++2m", "solver", plugin="builtin", aliases=("dpm++",))
    assert reg.get("DPM++") == "solver"
    assert reg.names() == ["dpm++2m"]
    with pytest.raises(GlidectlError, match=r"Unknown sampler 'dpm2m'. Did you mean 'dpm\+\+2m'"):
        reg.get("dpm2m")


def test_the_unknown_name_sentence_lists_the_aliases_it_may_suggest():
    """`--schedule bogus` said "Did you mean 'logsnr'?" and then listed the schedules
    without `logsnr` (an alias of `exponential`), so the suggestion looked like a name that
    does not exist."""
    with pytest.raises(GlidectlError) as info:
        plugins.schedules().get("bogus")
    assert "Did you mean 'logsnr'?" in str(info.value)
    assert "Available: exponential (also logsnr), karras, " in str(info.value)


def test_register_dataset_presets_duplicate_names_both_plugins(register_plugin):
    register_plugin(_Presets("mine"), "first-plugin")
    register_plugin(_Presets("mine"), "second-plugin")
    with pytest.raises(PluginError, match="by plugin .first-plugin. and by plugin .second-plugin."):
        plugins.dataset_presets()


def test_register_plugin_run_again_replaces_the_earlier_registration():
    """The README's in-process recipe run twice (a notebook cell) was pluggy's ValueError
    "Plugin name already registered"; a new object under the name, or the same object
    under a new name, replaces the earlier one."""
    try:
        plugins.register_plugin(_Presets("mine"), "cell")
        plugins.register_plugin(_Presets("mine"), "cell")  # the cell again: a new object
        assert plugins.dataset_presets().entry("mine").plugin == "cell"
        same = _Presets("mine")
        plugins.register_plugin(same, "cell")
        plugins.register_plugin(same, "renamed")
        assert plugins.dataset_presets().entry("mine").plugin == "renamed"
        assert plugins.pm.get_plugin("cell") is None
    finally:
        plugins.unregister_plugin("cell")
        plugins.unregister_plugin("renamed")
    assert "mine" not in plugins.dataset_presets()
    with pytest.raises(GlidectlError, match=r"register_plugin\(\): name= takes a plugin name"):
        plugins.register_plugin(_Presets("mine"), "")


class _TwoImpls:
    """One plugin implementing one hook twice (pluggy's ``specname``)."""

    @hookimpl(specname="register_dataset_presets")
    def first(self, register):
        register("first", DatasetPreset("first", lambda meta, caption, options: caption))

    @hookimpl(specname="register_dataset_presets")
    def second(self, register):
        register("second", DatasetPreset("second", lambda meta, caption, options: caption))


def test_a_plugin_implementing_a_hook_twice_registers_each_name_once(register_plugin):
    """Each implementation was called once per implementation of the plugin: 'first' was
    "registered twice: by plugin 'two' and by plugin 'two'"."""
    register_plugin(_TwoImpls(), "two")
    presets = plugins.dataset_presets()
    assert (presets.entry("first").plugin, presets.entry("second").plugin) == ("two", "two")


def test_a_name_one_plugin_registers_twice_is_named_as_its_mistake(register_plugin):
    register_plugin(_Presets("mine", "Mine"), "dup")
    with pytest.raises(PluginError) as info:
        plugins.dataset_presets()
    assert str(info.value) == ("Plugin 'dup' registers dataset preset 'mine' twice (as a name "
                               "or alias); register each name once.")


def _select_raising(meta, caption, options):
    return caption if caption == "kept" else meta["score"]


def _select_nothing(meta, caption, options):
    return None


class _FaultyPresets:
    @hookimpl
    def register_dataset_presets(self, register):
        register("raising", DatasetPreset("raising", _select_raising))
        register("nothing", DatasetPreset("nothing", _select_nothing))


def test_a_plugin_preset_that_raises_rejects_under_a_reason_naming_it(register_plugin):
    """It was counted as "error:KeyError" (or "preset_error"), with no word of the preset or
    its plugin, in the no-valid-samples error too."""
    import pickle

    from glidectl.data.preset_api import Reject

    register_plugin(_FaultyPresets(), "faulty")
    raising = plugins.dataset_presets().get("raising")
    assert raising.select({}, "kept", None) == "kept"
    assert raising.select({}, "other", None) == Reject(
        "preset 'raising' of plugin 'faulty' raised KeyError")
    assert plugins.dataset_presets().get("nothing").select({}, "a cat", None) == Reject(
        "preset 'nothing' of plugin 'faulty' returned NoneType, not a caption or Reject")
    assert pickle.loads(pickle.dumps(raising)).select({}, "kept", None) == "kept"  # workers


def test_register_model_sources_adds_a_source(register_plugin, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny.safetensors").write_bytes(b"")

    class Hub(_Hub):
        def resolve(self, name, download=True):
            return "models/tiny.safetensors"

    class Sources:
        @hookimpl
        def register_model_sources(self, register):
            register("myhub", Hub())

    register_plugin(Sources(), "hub-plugin")
    entry = plugins.model_sources().entry("myhub")
    assert entry.obj.names() == ["tiny"]
    assert entry.obj.resolve("tiny", download=False) == "models/tiny.safetensors"
    assert entry.plugin == "hub-plugin"


def test_download_fetches_a_plugin_sources_model(register_plugin, tmp_path, capsys):
    """``resolve(name, download=True)`` had no command: `glidectl download` knew OpenAI's."""
    from glidectl.cli.app import main

    fetched = []

    class Fetching(_Hub):
        def resolve(self, name, download=True):
            fetched.append((name, download))
            (tmp_path / f"{name}.safetensors").write_bytes(b"\0" * 2**20)
            return tmp_path / f"{name}.safetensors"

    class Sources:
        @hookimpl
        def register_model_sources(self, register):
            register("myhub", Fetching())

    register_plugin(Sources(), "hub-plugin")
    with pytest.raises(SystemExit) as info:
        main(["download", "myhub:tiny"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"myhub:tiny  {tmp_path / 'tiny.safetensors'}  (1.0 MiB)\n"
    assert fetched == [("tiny", True)]
    with pytest.raises(SystemExit) as info:
        main(["download", "myhb:tiny"])
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith(
        "Error: Unknown model source 'myhb'. Did you mean 'myhub'?")


@pytest.mark.parametrize("names, path, problem", [
    (["tiny"], None, "resolve() returned NoneType, not the path of a weights file"),
    (["tiny"], "missing.safetensors",
     "resolve() returned 'missing.safetensors', which is not a file"),
    ("tiny", "", "names() returned str, not a list of model names"),
])
def test_a_plugin_model_source_returning_no_weights_file_is_named(register_plugin, tmp_path,
                                                                  monkeypatch, names, path,
                                                                  problem):
    from glidectl.glide.loading import resolve_spec

    monkeypatch.chdir(tmp_path)

    class Wrong:
        def names(self):
            return names

        def resolve(self, name, download=True):
            return path

    class Sources:
        @hookimpl
        def register_model_sources(self, register):
            register("wrong", Wrong())

    register_plugin(Sources(), "wrong-plugin")
    with pytest.raises(PluginError) as info:
        plugins.model_sources().get("wrong").names()
        resolve_spec("wrong:tiny")
    assert str(info.value) == (f"Plugin 'wrong-plugin' failed in model source 'wrong': "
                               f"{problem}; switch it off with GLIDECTL_LOAD_PLUGINS=\"\".")


def test_register_samplers_error_names_the_plugin(register_plugin):
    class Broken:
        @hookimpl
        def register_samplers(self, register):
            raise RuntimeError("boom")

    register_plugin(Broken(), "broken-plugin")
    with pytest.raises(PluginError, match="Plugin 'broken-plugin' raised in register_samplers"):
        plugins.samplers()


class _WrongObjects:
    """Registers, through each hook, an object that is not what the hook takes."""

    @hookimpl
    def register_dataset_presets(self, register):
        register("not-a-preset", "hello")

    @hookimpl
    def register_data_sources(self, register):
        register("not-a-source", 42)

    @hookimpl
    def register_model_sources(self, register):
        register("not-a-hub", 3.5)

    @hookimpl
    def register_schedules(self, register):
        register("not-a-schedule", [1.0, 0.0])


@pytest.mark.parametrize("registry, expected", [
    (plugins.dataset_presets, "register_dataset_presets: TypeError: a DatasetPreset "
                              "(glidectl.data.preset_api) is expected, got str"),
    (plugins.data_sources, "register_data_sources: TypeError: a SourceType "
                           "(glidectl.data.source_api) is expected, got int"),
    (plugins.model_sources, "register_model_sources: TypeError: a model source must have "
                            "names() and resolve(name, download=True), got float"),
    (plugins.schedules, "register_schedules: TypeError: a schedule must be a function "
                        "fn(n, sigma_min, sigma_max), got list"),
])
def test_a_registered_object_of_the_wrong_kind_is_named_when_the_registry_fills(
        register_plugin, registry, expected):
    register_plugin(_WrongObjects(), "wrong-plugin")
    with pytest.raises(PluginError) as info:
        registry()
    assert str(info.value).startswith(f"Plugin 'wrong-plugin' raised in {expected};")


def _one_sampler(sampler):
    class Plugin:
        @hookimpl
        def register_samplers(self, register):
            register("mine", sampler)

    return Plugin()


@pytest.mark.parametrize("field, value, wanted", [
    ("schedule", None, "a schedule name, got None (NoneType)"),
    ("min_steps", "3", "a whole number >= 1, got '3' (str)"),
    ("calls_per_step", 0, "a whole number >= 1, got 0 (int)"),
    ("calls", 2, "None or a function calls(steps) -> model calls, got 2 (int)"),
])
def test_a_sampler_with_a_field_of_the_wrong_kind_is_named_when_the_registry_fills(
        register_plugin, field, value, wanted):
    from glidectl.samplers.spec import Sampler

    register_plugin(_one_sampler(Sampler(lambda *a, **k: None, **{field: value})), "p")
    with pytest.raises(PluginError) as info:  # was a traceback once sampling began
        plugins.samplers()
    assert f"raised in register_samplers: TypeError: Sampler({field}=...) takes {wanted};" \
        in str(info.value)


@pytest.mark.parametrize("calls, problem", [
    (lambda steps: 1 // 0, "ZeroDivisionError: integer division or modulo by zero"),
    (lambda steps: steps * 1.5, "its calls(steps) returned 6.0 (float), not a whole number of "
                                "model calls >= 0"),
])
def test_a_sampler_whose_calls_fails_is_named(register_plugin, calls, problem):
    from glidectl.samplers.spec import Sampler, model_calls

    register_plugin(_one_sampler(Sampler(lambda *a, **k: None, calls=calls)), "p")
    with pytest.raises(PluginError) as info:  # was a traceback or a progress bar of 6.0
        model_calls("mine", 4)
    assert str(info.value).startswith(f"Plugin 'p' failed in sampler 'mine': {problem};")


def test_plugins_reports_a_registered_object_of_the_wrong_kind_as_an_error(register_plugin):
    from glidectl.plugin_report import plugin_info

    register_plugin(_WrongObjects(), "wrong-plugin")
    info = {p["name"]: p for p in plugin_info()}["wrong-plugin"]
    assert info["status"] == "error"
    assert info["error"].startswith("raised while registering: TypeError: a SourceType")


def test_a_plugin_model_source_that_raises_is_named(register_plugin):
    class Flaky(_Hub):
        def resolve(self, name, download=True):
            raise KeyError(name)

    class Sources:
        @hookimpl
        def register_model_sources(self, register):
            register("flaky", Flaky())

    register_plugin(Sources(), "flaky-plugin")
    with pytest.raises(PluginError, match=r"^Plugin 'flaky-plugin' failed in model source "
                                          r"'flaky': KeyError: 'tiny'; switch it off"):
        plugins.model_sources().get("flaky").resolve("tiny", download=False)


def test_register_commands_adds_a_cli_command(register_plugin):
    from typer.testing import CliRunner

    from glidectl.cli.app import build_app

    register_plugin(_Commands(), "cmd-plugin")
    result = CliRunner().invoke(build_app(), ["hello-plugin"])
    assert result.exit_code == 0
    assert "hello from a plugin" in result.stdout


class _Shadowing:
    @hookimpl
    def register_commands(self, app):
        @app.command("sample")
        def sample() -> None:
            print("not glidectl's sample")

        @app.command("hello-plugin")
        def hello() -> None:
            print("another hello")


def test_a_plugin_command_never_replaces_glidectls_or_an_earlier_plugins(register_plugin,
                                                                          capsys):
    """A plugin's ``sample`` command silently replaced glidectl's."""
    from glidectl.cli.app import main
    from glidectl.plugin_report import plugin_info

    register_plugin(_Commands(), "cmd-plugin")
    register_plugin(_Shadowing(), "shadow")
    with pytest.raises(SystemExit) as info:
        main(["hello-plugin"])
    out = capsys.readouterr()
    assert (info.value.code, out.out) == (0, "hello from a plugin\n")
    assert out.err.splitlines() == [
        "Warning: plugin 'shadow' adds the command 'sample', which glidectl has: it is left "
        "out; rename it in the plugin.",
        "Warning: plugin 'shadow' adds the command 'hello-plugin', which plugin 'cmd-plugin' "
        "adds first: it is left out; rename it in the plugin."]
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    assert "Generate images for PROMPT(s)" in capsys.readouterr().out
    clashes = {i["name"]: i["clashes"] for i in plugin_info()}["shadow"]
    assert {"kind": "commands", "name": "sample", "with": ["glidectl"]} in clashes
    assert {"kind": "commands", "name": "hello-plugin", "with": ["cmd-plugin"]} in clashes


class _CrashingCommands:
    @hookimpl
    def register_commands(self, app):
        import typer

        @app.command("crash")
        def crash(key: str = "boom") -> None:
            {}[key]

        @app.command("leave")
        def leave() -> None:
            raise typer.Exit(3)

        group = typer.Typer()

        @group.command("deep")
        def deep() -> None:
            raise ValueError("deep down")

        app.add_typer(group, name="grp")


def test_a_plugin_command_that_raises_is_one_line_naming_the_plugin(register_plugin, capsys):
    """It ended in a traceback that did not say whose command it was."""
    from glidectl.cli.app import main

    register_plugin(_CrashingCommands(), "crasher")
    for args, code, line in (
            (["crash", "--key", "k"], 2, "Error: Plugin 'crasher' failed in command 'crash': "
             "KeyError: 'k'; switch it off with GLIDECTL_LOAD_PLUGINS=\"\"."),
            (["grp", "deep"], 2, "Error: Plugin 'crasher' failed in command 'grp deep': "
             "ValueError: deep down; switch it off with GLIDECTL_LOAD_PLUGINS=\"\"."),
            (["leave"], 3, "")):
        with pytest.raises(SystemExit) as info:
            main(args)
        assert (info.value.code, capsys.readouterr().err.strip()) == (code, line)


def _sigmas_halving(n, sigma_min, sigma_max):
    """σ halving from σ_max each step (not below
    σ_min), then 0.

    The second paragraph is not shown."""
    return [max(sigma_max / 2**i, sigma_min) for i in range(n)] + [0.0]


class _Schedules:
    @hookimpl
    def register_schedules(self, register):
        register("halving", _sigmas_halving)


def test_plugin_info_shows_a_schedules_docstring_as_its_description(register_plugin):
    from glidectl.plugin_report import plugin_info

    register_plugin(_Schedules(), "halver")
    info = {i["name"]: i for i in plugin_info()}["halver"]
    assert info["registers"]["schedules"] == [{
        "name": "halving", "aliases": [],
        "description": "σ halving from σ_max each step (not below σ_min), then 0."}]


def test_a_bare_sampler_functions_docstring_is_its_description_and_blanks_are_none(
        register_plugin):
    """A sampler function whose docstring held only blanks failed the plugin with
    "IndexError: list index out of range"; one with a docstring was listed without it."""
    from glidectl.plugin_report import plugin_info

    def documented(denoiser, x, sigmas, extra=None, callback=None):
        """Euler, bare.

        Not shown."""
        return x

    def blank(denoiser, x, sigmas, extra=None, callback=None):
        """   """
        return x

    class Bare:
        @hookimpl
        def register_samplers(self, register):
            register("documented", documented)
            register("blank", blank)

    register_plugin(Bare(), "bare-plugin")
    info = {p["name"]: p for p in plugin_info()}["bare-plugin"]
    assert (info["status"], info["registers"]["samplers"]) == ("ok", [
        {"name": "documented", "aliases": [], "description": "Euler, bare."},
        {"name": "blank", "aliases": []}])
    assert plugins.samplers().get("blank").description == ""


def test_plugin_info_lists_what_each_plugin_registers(register_plugin):
    from glidectl.plugin_report import _registers_text, plugin_info

    class Samplers:
        @hookimpl
        def register_samplers(self, register):
            register("Halfway", lambda den, x, sigmas, extra=None, callback=None: x,
                     aliases=("half",))

    register_plugin(_Sources(), "hub-plugin")
    register_plugin(_Commands(), "cmd-plugin")
    register_plugin(Samplers(), "sampler-plugin")
    info = {p["name"]: p for p in plugin_info()}
    assert "glidectl.samplers.builtin" not in info
    assert info["hub-plugin"]["hooks"] == ["register_model_sources"]
    assert info["hub-plugin"]["registers"] == {"model_sources": [{"name": "myhub", "aliases": []}]}
    assert info["cmd-plugin"]["registers"] == {"commands": ["hello-plugin"]}
    assert info["sampler-plugin"]["registers"] == {
        "samplers": [{"name": "halfway", "aliases": ["half"]}]}
    assert all(i["clashes"] == [] and i["status"] == "ok" for i in info.values())
    builtin = {p["name"]: p for p in plugin_info(include_defaults=True)}[
        "glidectl.samplers.builtin"]
    assert {"name": "dpm++2m", "aliases": ["dpm++", "dpmpp_2m"],  # a Sampler's description
            "description": "DPM-Solver++(2M), second-order multistep."} \
        in builtin["registers"]["samplers"]
    assert "  dpm++2m: DPM-Solver++(2M), second-order multistep." in _registers_text(builtin)


def test_plugin_info_marks_a_name_two_plugins_register(register_plugin):
    from glidectl.plugin_report import plugin_info, table

    class Clash:
        @hookimpl
        def register_samplers(self, register):
            register("mine", lambda denoiser, x, sigmas, extra=None, callback=None: x)
            register("plain", lambda denoiser, x, sigmas, extra=None, callback=None: x,
                     aliases=("EULER",))

    register_plugin(_Presets("mine"), "first-plugin")
    register_plugin(_Presets("mine", "other"), "second-plugin")
    register_plugin(Clash(), "clash-plugin")
    info = {p["name"]: p for p in plugin_info()}
    assert info["first-plugin"]["clashes"] == [
        {"kind": "dataset_presets", "name": "mine", "with": ["second-plugin"]}]
    assert info["second-plugin"]["clashes"] == [
        {"kind": "dataset_presets", "name": "mine", "with": ["first-plugin"]}]
    assert info["clash-plugin"]["clashes"] == [  # an alias against a built-in sampler
        {"kind": "samplers", "name": "euler", "with": ["glidectl.samplers.builtin"]}]
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(table(list(info.values())))
    text = console.export_text()
    assert "CLASH: samplers 'euler' also from glidectl.samplers.builtin" in text
    assert "dataset_presets: mine, other" in text


@pytest.fixture
def installed_plugin(tmp_path):
    """A real installed distribution (dist-info with an entry point) on a PYTHONPATH folder."""
    (tmp_path / "shinyplug.py").write_text(textwrap.dedent("""
        from glidectl.data.preset_api import DatasetPreset
        from glidectl.hookspecs import hookimpl

        @hookimpl
        def register_dataset_presets(register):
            register("shiny", DatasetPreset("shiny", lambda meta, caption, options: caption))
    """))
    dist = tmp_path / "shinyplug-1.2.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: shinyplug\nVersion: 1.2.3\n")
    (dist / "entry_points.txt").write_text("[glidectl]\nshiny = shinyplug\n")
    (tmp_path / "badplug.py").write_text("raise ImportError('missing dependency xyz')\n")
    bad = tmp_path / "badplug-0.1.dist-info"
    bad.mkdir()
    (bad / "METADATA").write_text("Metadata-Version: 2.1\nName: badplug\nVersion: 0.1\n")
    (bad / "entry_points.txt").write_text("[glidectl]\nbad = badplug\n")
    return tmp_path


def _plugins_cli(path, allow):
    env = {**os.environ, "PYTHONPATH": str(path), "GLIDECTL_LOAD_PLUGINS": allow}
    return subprocess.run([sys.executable, "-m", "glidectl", "plugins"],
                          capture_output=True, text=True, env=env, timeout=120)


def test_installed_plugin_is_listed_with_version(installed_plugin):
    out = _plugins_cli(installed_plugin, "shiny")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [
        {"name": "shiny", "status": "ok", "hooks": ["register_dataset_presets"],
         "registers": {"dataset_presets": [{"name": "shiny", "aliases": []}]}, "clashes": [],
         "distribution": "shinyplug", "version": "1.2.3"}
    ]


def test_plugins_prints_a_table_on_a_terminal(installed_plugin):
    import pty

    env = {**os.environ, "PYTHONPATH": str(installed_plugin), "GLIDECTL_LOAD_PLUGINS": "shiny",
           "COLUMNS": "120"}
    leader, follower = pty.openpty()
    proc = subprocess.run([sys.executable, "-m", "glidectl", "plugins"], stdout=follower,
                          stderr=subprocess.PIPE, env=env, timeout=120)
    os.close(follower)
    text = os.read(leader, 65536).decode()
    os.close(leader)
    assert proc.returncode == 0, proc.stderr
    assert "shinyplug 1.2.3" in text and "dataset_presets: shiny" in text
    assert not text.lstrip().startswith("[")


def test_allow_list_empty_loads_no_plugin(installed_plugin):
    out = _plugins_cli(installed_plugin, "")
    assert out.returncode == 0
    assert json.loads(out.stdout) == []
    # --all lists the installed plugins the allow-list leaves out, as well as the built-ins
    env = {**os.environ, "PYTHONPATH": str(installed_plugin), "GLIDECTL_LOAD_PLUGINS": "bad"}
    out = subprocess.run([sys.executable, "-m", "glidectl", "plugins", "--all"],
                         capture_output=True, text=True, env=env, timeout=120)
    listed = {p["name"]: p for p in json.loads(out.stdout)}
    assert listed["shiny"] == {
        "name": "shiny", "status": "left out", "hooks": [], "registers": {}, "clashes": [],
        "note": "not loaded: GLIDECTL_LOAD_PLUGINS leaves it out", "distribution": "shinyplug",
        "version": "1.2.3"}
    assert listed["bad"]["status"] == "error" and "glidectl.samplers.builtin" in listed


def test_an_empty_table_names_the_plugins_the_allow_list_left_out(monkeypatch):
    """`GLIDECTL_LOAD_PLUGINS=nosuch glidectl plugins` on a terminal said "No plugins
    installed" under the warning that listed the installed ones."""
    from glidectl.cli.plugins_cmd import _none_listed

    plugins.load_plugins()
    monkeypatch.setattr(plugins, "left_out", ["shiny", "dpm3m"])
    assert _none_listed() == ("No plugins loaded: GLIDECTL_LOAD_PLUGINS leaves out the "
                              "installed dpm3m, shiny (--all shows the built-in ones).")
    monkeypatch.setattr(plugins, "left_out", [])
    assert _none_listed() == "No plugins installed (--all shows the built-in ones)."


def test_an_allow_list_name_no_plugin_has_is_warned_about(installed_plugin):
    out = _plugins_cli(installed_plugin, "shinny,shiny")
    assert out.returncode == 0
    assert [p["name"] for p in json.loads(out.stdout)] == ["shiny"]
    assert out.stderr.startswith("Warning: GLIDECTL_LOAD_PLUGINS names 'shinny', which no "
                                 "installed plugin is called; installed: ")
    assert "shiny" in out.stderr.split("installed: ")[1]


def test_plugin_that_fails_to_load_is_named(installed_plugin):
    out = _plugins_cli(installed_plugin, "shiny,bad")
    assert out.returncode == 0, out.stderr
    bad = {p["name"]: p for p in json.loads(out.stdout)}["bad"]
    assert (bad["status"], bad["error"]) == ("error", "failed to load: ImportError: missing "
                                             "dependency xyz")


def test_an_unknown_name_says_which_installed_plugins_the_allow_list_leaves_out() -> None:
    """A plugin's sampler left out by GLIDECTL_LOAD_PLUGINS was only "Unknown sampler"."""
    from importlib import metadata

    installed = sorted({ep.name for ep in metadata.entry_points(group="glidectl")})
    if "dpm3m" not in installed:
        pytest.skip("example plugin not installed: pip install -e plugins/glidectl-dpm3m")
    left_out = re.escape(", ".join(installed))  # every one: a developer may have others
    with pytest.raises(GlidectlError, match=r"GLIDECTL_LOAD_PLUGINS leaves out the installed "
                       rf"plugin\(s\) {left_out}; name them there to load them\."):
        plugins.samplers().get("dpm++3m_sde")  # the tests run with GLIDECTL_LOAD_PLUGINS=""


def test_tracing_shows_how_long_each_plugin_took_to_import(tmp_path):
    from test_plugin_failures import install_plugin

    install_plugin(tmp_path, "slowplug", "import time\ntime.sleep(0.3)  # like `import torch`\n",
                   entry="slow")
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "GLIDECTL_LOAD_PLUGINS": "slow",
           "GLIDECTL_TRACE_PLUGINS": "1"}
    out = subprocess.run([sys.executable, "-m", "glidectl", "--version"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stderr.splitlines() if ln.startswith("plugin 'slow'"))
    seconds = float(line.removeprefix("plugin 'slow' (slowplug 0.1) imported in ").split()[0])
    assert 0.3 <= seconds < 5


def test_threads_that_look_up_plugins_first_at_once_both_see_them_loaded():
    """Loading was marked done before the plugins were imported: a second thread of a fresh
    process (two web UI requests, a notebook's workers) saw no sampler at all."""
    code = textwrap.dedent("""
        import threading
        from glidectl import plugins

        barrier, seen = threading.Barrier(4), []

        def look():
            barrier.wait()
            seen.append(plugins.samplers().entry("ddim").name)

        threads = [threading.Thread(target=look) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(seen)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == str(["ddim"] * 4), out.stderr


def test_one_helper_says_which_keywords_a_plugin_function_takes(tmp_path):
    """Samplers, `download`'s plugin resolve and a training adapter's save_checkpoint ask
    one helper (each had its own inspect.signature): it reads what it can, holds no bound
    method's object alive, and passes `meta` only to a writer that names it."""
    import gc
    import weakref

    from glidectl.callables import takes_keyword
    from glidectl.training.checkpoint_weights import write_weights

    class Adapter:
        def __init__(self):
            self.got = None

        def save_checkpoint(self, model, folder, step, ema):
            self.got = (step, "meta")

    class MetaAdapter(Adapter):
        def save_checkpoint(self, model, folder, step, ema, meta=None):
            self.got = (step, meta)

    def resolve(name, download=True, **options):
        return name

    assert not takes_keyword(resolve, "progress") and takes_keyword(resolve, "download")
    assert not takes_keyword(min, "key")  # no signature inspect can read: none passed
    old, new = Adapter(), MetaAdapter()
    for adapter, got in ((old, (3, "meta")), (new, (3, {"k": "v"}))):
        write_weights(tmp_path, 3, None, adapter, None, None, {"k": "v"})
        assert adapter.got == got
    assert takes_keyword(new.save_checkpoint, "meta")
    gone = weakref.ref(new)
    del new, adapter
    gc.collect()
    assert gone() is None  # the cache keeps plain functions, not a run's adapter


def test_the_plugins_table_prints_brackets_as_written() -> None:
    """A plugin's description or error holding "[…]" lost it in `glidectl plugins` on a
    terminal (rich markup), or stopped the listing with a MarkupError ("[/x]")."""
    import io

    from rich.console import Console

    from glidectl.plugin_report import table

    info = {"name": "my [beta] plugin", "distribution": "my-plugin", "version": "1.0",
            "registers": {}, "clashes": [], "error": "ImportError: no module [/x]"}
    console = Console(file=io.StringIO(), width=200, force_terminal=True, color_system=None)
    console.print(table([info]))
    text = console.file.getvalue()
    assert "my [beta] plugin" in text and "no module [/x]" in text, text
