"""A failing plugin is one line naming it (exit 2), never a traceback, and never stops a
training run: previews that fail are reported and counted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from test_pipeline import tiny_glide
from tiny_configs import tiny_config

from glidectl import plugin_guards, plugins
from glidectl.errors import PluginError
from glidectl.hookspecs import hookimpl
from glidectl.samplers import Sampler


def sample_exploding(denoiser, x, sigmas, extra=None, callback=None, eta=0.0):
    """Calls the model once, then fails like a buggy third-party sampler."""
    denoiser(x, float(sigmas[0]), **(extra or {}))
    raise ZeroDivisionError("float division by zero")


class Exploding:
    @hookimpl
    def register_samplers(self, register):
        register("exploding", Sampler(sample_exploding), aliases=("boom",))


@pytest.fixture
def exploding():
    plugins.load_plugins()
    plugins.pm.register(Exploding(), name="exploding-plugin")
    plugins._dists["exploding-plugin"] = "glidectl-exploding 0.3"
    plugins.refresh()
    yield
    plugins.pm.unregister(name="exploding-plugin")
    plugins._dists.pop("exploding-plugin")
    plugins.refresh()


def test_plugin_sampler_error_names_plugin_distribution_and_exception(exploding):
    sampler = plugins.samplers().get("boom")
    assert sampler.accepts("eta")  # the guard keeps the signature the pipeline inspects
    with pytest.raises(PluginError) as info:
        sampler(lambda x, sigma: x, torch.zeros(2), torch.tensor([1.0, 0.0]))
    assert str(info.value) == (
        "Plugin 'exploding-plugin' (glidectl-exploding 0.3) failed in sampler 'exploding': "
        "ZeroDivisionError: float division by zero; switch it off with "
        "GLIDECTL_LOAD_PLUGINS=\"\"."
    )


def test_a_plugin_sampler_calling_sys_exit_is_named_not_a_silent_exit():
    """`sys.exit(3)` in a plugin's sampler ended `glidectl sample` with exit 3 and no word."""
    def sample_exiting(denoiser, x, sigmas, extra=None, callback=None):
        sys.exit(3)

    class Exiting:
        @hookimpl
        def register_samplers(self, register):
            register("exiting", Sampler(sample_exiting))

    plugins.load_plugins()
    plugins.pm.register(Exiting(), name="exiting-plugin")
    plugins.refresh()
    try:
        with pytest.raises(PluginError) as info:
            plugins.samplers().get("exiting")(lambda x, sigma: x, torch.zeros(2),
                                              torch.tensor([1.0, 0.0]))
    finally:
        plugins.pm.unregister(name="exiting-plugin")
        plugins.refresh()
    assert str(info.value) == (
        "Plugin 'exiting-plugin' failed in sampler 'exiting': SystemExit: 3; switch it off "
        "with GLIDECTL_LOAD_PLUGINS=\"\".")


def test_a_plugin_sampler_raising_keyboardinterrupt_in_a_worker_is_named(register_plugin):
    """In the web UI's worker thread it escaped to the server, whose thread died (every tab
    hung); no Ctrl-C reaches a worker, so it is the plugin's. In the main thread it is
    still taken for the user's Ctrl-C, and one our own callback raises stays ours."""
    import threading

    def registered(name, fn):
        class Plugin:
            @hookimpl
            def register_samplers(self, register):
                register(name, Sampler(fn))

        register_plugin(Plugin(), f"{name}-plugin")
        return plugins.samplers().get(name)

    def in_a_worker(fn, *args):  # what reaches the server's thread
        caught = []

        def worker():
            try:
                fn(*args)
            except BaseException as exc:  # noqa: BLE001
                caught.append(exc)

        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        return caught[0]

    def sample_interrupting(denoiser, x, sigmas, extra=None, callback=None):
        raise KeyboardInterrupt

    def sample_calling_back(denoiser, x, sigmas, extra=None, callback=None):
        callback({"i": 0})
        return x

    def stop(info):  # an app cancelling from its own callback in a worker
        raise KeyboardInterrupt

    args = (lambda x, sigma: x, torch.zeros(2), torch.tensor([1.0, 0.0]))
    fn = registered("interrupting", sample_interrupting)
    caught = in_a_worker(fn, *args)
    assert isinstance(caught, PluginError) and str(caught).startswith(
        "Plugin 'interrupting-plugin' failed in sampler 'interrupting': KeyboardInterrupt")
    with pytest.raises(KeyboardInterrupt):
        fn(*args)
    caught = in_a_worker(registered("calling-back", sample_calling_back), *args, None, stop)
    assert type(caught) is KeyboardInterrupt  # ours, not the plugin's


def _returning(result):
    def sample_bad(denoiser, x, sigmas, extra=None, callback=None):
        denoiser(x, float(sigmas[0]))
        return result(x)
    return sample_bad


@pytest.mark.parametrize("result, problem", [
    (lambda x: x * float("nan"), "it returned NaN or infinite values"),
    (lambda x: x[:, :1], "it returned shape (2, 1, 4, 4), not x's (2, 3, 4, 4)"),
    (lambda x: [x], "it returned list, not a tensor shaped like x"),
])
def test_a_plugin_sampler_returning_no_image_is_named(result, problem):
    class BadResult:
        @hookimpl
        def register_samplers(self, register):
            register("bad-result", Sampler(_returning(result)))

    plugins.load_plugins()
    plugins.pm.register(BadResult(), name="bad-result-plugin")
    plugins.refresh()
    try:
        with pytest.raises(PluginError) as info:
            plugins.samplers().get("bad-result")(lambda x, sigma: x, torch.zeros(2, 3, 4, 4),
                                                 torch.tensor([1.0, 0.0]))
    finally:
        plugins.pm.unregister(name="bad-result-plugin")
        plugins.refresh()
    assert str(info.value) == (
        f"Plugin 'bad-result-plugin' failed in sampler 'bad-result': {problem}; switch it off "
        "with GLIDECTL_LOAD_PLUGINS=\"\"."
    )


def test_errors_of_our_own_model_pass_through_a_plugin_sampler(exploding):
    def broken_model(x, sigma):
        raise RuntimeError("CUDA out of memory")

    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        plugins.samplers().get("exploding")(broken_model, torch.zeros(2),
                                            torch.tensor([1.0, 0.0]))


def test_builtin_samplers_are_not_wrapped():
    from glidectl.samplers.discrete import sample_ddim

    assert plugins.samplers().get("ddim").fn is sample_ddim


@pytest.fixture
def base_file(tmp_path_factory) -> Path:
    from glidectl.glide import save_weights

    return save_weights(tiny_glide("base", 0),
                        tmp_path_factory.mktemp("w") / "base.safetensors")


def _main(capsys, *args: str) -> tuple[int, str]:
    from glidectl.cli.app import main

    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def test_sample_with_a_failing_plugin_sampler_is_one_line(exploding, base_file, tmp_path,
                                                          capsys):
    code, err = _main(capsys, "sample", "a cube", "--base", str(base_file), "--upsampler",
                      "none", "--sampler", "exploding", "--steps", "2", "--device", "cpu",
                      "--quiet", "--out", str(tmp_path / "out"))
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.startswith("Error:")]
    assert lines == [ln for ln in err.splitlines() if ln.strip()][-1:]
    assert "Plugin 'exploding-plugin' (glidectl-exploding 0.3) failed in sampler" in lines[0]
    assert "ZeroDivisionError" in lines[0] and "Traceback" not in err
    assert not list((tmp_path / "out").glob("*.png")) if (tmp_path / "out").exists() else True


def test_eval_with_a_failing_plugin_sampler_is_one_line(exploding, base_file, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cube\n")
    code, err = _main(capsys, "eval", str(prompts), "--base", str(base_file), "--sampler",
                      "exploding", "--steps", "2", "--device", "cpu", "--out",
                      str(tmp_path / "out"))
    assert code == 2, err
    assert "Traceback" not in err
    assert "Error: Plugin 'exploding-plugin' (glidectl-exploding 0.3) failed in sampler" in err


def test_training_goes_on_when_a_plugin_preview_fails(exploding, tmp_path):
    from glidectl.training.engine import Trainer
    from glidectl.training.metrics import read_metrics

    cfg = tiny_config(tmp_path, train=dict(steps=2), checkpoint=dict(every=2),
                      preview=dict(every=1, steps=2, sampler="exploding", prompts=["a cube"]))
    result = Trainer(cfg, quiet=True).run()
    records = read_metrics(result.run_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2]
    # a record is written after its step's preview: it counts the previews of steps 0..n
    assert [r["preview_failures"] for r in records] == [2, 3]
    assert (result.run_dir / "checkpoints" / "step-000002").is_dir()
    assert not (result.run_dir / "previews").exists() or not any(
        (result.run_dir / "previews").iterdir())


class RaisingSchedules:
    @hookimpl
    def register_schedules(self, register):
        raise RuntimeError("schedule table missing")


def test_a_plugin_whose_register_schedules_raises_is_named_without_the_schedule_list():
    from glidectl.samplers.schedules import build_sigmas

    plugins.load_plugins()
    plugins.pm.register(RaisingSchedules(), name="raising-schedules")
    plugins.refresh()
    try:
        with pytest.raises(PluginError) as info:
            build_sigmas("karras", 3, torch.linspace(0.01, 80.0, 10).numpy())
    finally:
        plugins.pm.unregister(name="raising-schedules")
        plugins.refresh()
    assert str(info.value) == (
        "Plugin 'raising-schedules' raised in register_schedules: RuntimeError: schedule "
        "table missing; switch it off with GLIDECTL_LOAD_PLUGINS=\"\"."
    )


def test_register_samplers_calls_are_traced():
    seen: list[str] = []
    plugins.load_plugins()
    plugins.pm.trace.root.setwriter(seen.append)
    undo = plugins.pm.enable_tracing()
    try:
        plugins.refresh()
        plugins.samplers()
    finally:
        undo()
        plugins.pm.trace.root.setwriter(None)
        plugins.refresh()
    calls = [s.strip().split("\n")[0] for s in seen if "register_samplers" in s]
    assert calls == ["register_samplers [hook]", "finish register_samplers --> [] [hook]"]


# ------------------------------------------------------------------ installed, broken plugins
@pytest.fixture
def broken_install(tmp_path):
    """An installed distribution whose module raises on import, next to a working one."""
    (tmp_path / "badplug.py").write_text("raise ImportError('missing dependency xyz')\n")
    bad = tmp_path / "badplug-0.1.dist-info"
    bad.mkdir()
    (bad / "METADATA").write_text("Metadata-Version: 2.1\nName: badplug\nVersion: 0.1\n")
    (bad / "entry_points.txt").write_text("[glidectl]\nbad = badplug\n")
    (tmp_path / "goodplug.py").write_text(textwrap.dedent("""
        from glidectl.data.preset_api import DatasetPreset
        from glidectl.hookspecs import hookimpl

        @hookimpl
        def register_dataset_presets(register):
            register("good", DatasetPreset("good", lambda meta, caption, options: caption),
                     aliases=("fine",))
    """))
    good = tmp_path / "goodplug-2.0.dist-info"
    good.mkdir()
    (good / "METADATA").write_text("Metadata-Version: 2.1\nName: goodplug\nVersion: 2.0\n")
    (good / "entry_points.txt").write_text("[glidectl]\ngood = goodplug\n")
    return tmp_path


def _cli(path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    pythonpath = os.pathsep.join(filter(None, (str(path), os.environ.get("PYTHONPATH"))))
    full = {**os.environ, "PYTHONPATH": pythonpath, "GLIDECTL_LOAD_PLUGINS": "bad,good", **env}
    return subprocess.run([sys.executable, "-m", "glidectl", *args], capture_output=True,
                          text=True, env=full, timeout=120)


def test_a_plugin_that_fails_to_import_leaves_help_version_and_plugins_working(broken_install):
    warning = ("Warning: plugin 'bad' (badplug 0.1) failed to load: ImportError: missing "
               "dependency xyz (see `glidectl plugins`).")
    for args in (["--help"], ["--version"], ["sample", "--help"]):
        out = _cli(broken_install, *args)
        assert out.returncode == 0, (args, out.stderr)
        assert out.stderr.strip() == warning
    out = _cli(broken_install, "plugins")
    assert out.returncode == 0 and out.stderr == ""
    by_name = {p["name"]: p for p in json.loads(out.stdout)}
    assert by_name["bad"]["status"] == "error"
    assert by_name["bad"]["error"] == "failed to load: ImportError: missing dependency xyz"
    assert by_name["good"]["registers"] == {
        "dataset_presets": [{"name": "good", "aliases": ["fine"]}]}


def test_other_commands_name_the_exception_and_how_to_switch_the_plugin_off(broken_install):
    out = _cli(broken_install, "config", "show")
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "Error: Plugin 'bad' (badplug 0.1) failed to load: ImportError: missing dependency "
        "xyz. Fix or uninstall it, or switch it off with GLIDECTL_LOAD_PLUGINS=good (the "
        "plugins to load, comma-separated)."
    )
    assert _cli(broken_install, "config", "show", GLIDECTL_LOAD_PLUGINS="good").returncode == 0
    # a second broken plugin: the allow-list offered kept it, to fail on the next run
    (broken_install / "worseplug.py").write_text("raise ImportError('missing abc')\n")
    worse = broken_install / "worseplug-0.2.dist-info"
    worse.mkdir()
    (worse / "METADATA").write_text("Metadata-Version: 2.1\nName: worseplug\nVersion: 0.2\n")
    (worse / "entry_points.txt").write_text("[glidectl]\nworse = worseplug\n")
    out = _cli(broken_install, "config", "show")
    assert out.returncode == 2 and out.stderr.strip().endswith(
        "switch it off with GLIDECTL_LOAD_PLUGINS=good (the plugins to load, "
        "comma-separated)."), out.stderr


def test_trace_env_prints_hook_calls(broken_install):
    out = _cli(broken_install, "plugins", GLIDECTL_LOAD_PLUGINS="good",
               GLIDECTL_TRACE_PLUGINS="1")
    assert out.returncode == 0, out.stderr
    assert "  register_dataset_presets [hook]" in out.stderr


def test_trace_env_shows_where_a_plugin_failed_to_import(broken_install):
    """It said "imported in 0.00 s" and the author had no line number to go on."""
    out = _cli(broken_install, "--version", GLIDECTL_TRACE_PLUGINS="1")
    assert out.returncode == 0, out.stderr
    assert "plugin 'bad' (badplug 0.1) imported" not in out.stderr
    assert "plugin 'bad' (badplug 0.1) failed to import after " in out.stderr
    assert f'File "{broken_install / "badplug.py"}", line 1' in out.stderr


def test_trace_env_shows_where_a_plugin_raised_at_run_time(monkeypatch, capsys):
    def schedule(n, sigma_min, sigma_max):
        raise ValueError("no table")

    monkeypatch.setenv("GLIDECTL_TRACE_PLUGINS", "1")
    with pytest.raises(PluginError, match="ValueError: no table"):
        plugin_guards.guard(schedule, "tracer", "schedule 'x'")(3, 0.1, 80.0)
    err = capsys.readouterr().err
    assert err.startswith("plugin 'tracer' raised:\nTraceback")
    assert 'raise ValueError("no table")' in err
    for off in ("0", "false", "OFF", "no", ""):  # "0" printed every traceback: it is set
        monkeypatch.setenv("GLIDECTL_TRACE_PLUGINS", off)
        with pytest.raises(PluginError):
            plugin_guards.guard(schedule, "tracer", "schedule 'x'")(3, 0.1, 80.0)
        assert capsys.readouterr().err == "", off
    monkeypatch.delenv("GLIDECTL_TRACE_PLUGINS")
    with pytest.raises(PluginError):
        plugin_guards.guard(schedule, "tracer", "schedule 'x'")(3, 0.1, 80.0)
    assert capsys.readouterr().err == ""


def install_plugin(folder: Path, name: str, source: str, entry: str | None = None) -> None:
    """A distribution ``name`` 0.1 (on PYTHONPATH=folder) whose ``glidectl`` entry point
    ``entry`` (default ``name``) is the module ``source``."""
    (folder / f"{name}mod.py").write_text(textwrap.dedent(source))
    dist = folder / f"{name}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[glidectl]\n{entry or name} = {name}mod\n")


def test_hooks_that_do_not_fit_glidectl_are_named_like_an_import_failure(tmp_path):
    install_plugin(tmp_path, "badargs", """
        from glidectl.hookspecs import hookimpl

        @hookimpl
        def register_samplers(reg):
            pass
    """)
    install_plugin(tmp_path, "typo", """
        from glidectl.hookspecs import hookimpl

        @hookimpl
        def register_sampler(register):
            pass
    """)
    out = _cli(tmp_path, "--help", GLIDECTL_LOAD_PLUGINS="badargs")
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    out = _cli(tmp_path, "config", "show", GLIDECTL_LOAD_PLUGINS="badargs")
    assert (out.returncode, out.stderr) == (2, (
        "Error: Plugin 'badargs' (badargs 0.1) failed to load: its hook register_samplers(reg) "
        "takes arguments glidectl does not pass; it must be register_samplers(register). Fix "
        "or uninstall it, or switch it off with GLIDECTL_LOAD_PLUGINS=\"\" (the plugins to "
        "load, comma-separated).\n"))
    out = _cli(tmp_path, "plugins", GLIDECTL_LOAD_PLUGINS="typo")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[0]["error"] == (
        "failed to load: 'register_sampler' is not a glidectl hook (did you mean "
        "'register_samplers'?)")
    # the entry point names the hook function itself: it was told it names no @hookimpl one
    install_plugin(tmp_path, "pointed", """
        from glidectl.hookspecs import hookimpl

        @hookimpl
        def register_samplers(register):
            pass
    """, entry="pointed")
    entries = tmp_path / "pointed-0.1.dist-info" / "entry_points.txt"
    entries.write_text("[glidectl]\npointed = pointedmod:register_samplers\n")
    out = _cli(tmp_path, "plugins", GLIDECTL_LOAD_PLUGINS="pointed")
    assert json.loads(out.stdout)[0]["error"] == (
        "failed to load: its entry point names the function 'register_samplers'; name the "
        "module that holds it (module, not module:function)")


class _NoRegister:
    @hookimpl
    def register_samplers(self):
        pass


def test_a_hook_without_its_argument_is_named_like_an_import_failure():
    """pluggy calls ``register_samplers()`` happily: it registered nothing, silently."""
    assert plugins.hook_problem(_NoRegister()) == (
        "its hook register_samplers() takes no 'register', so it adds nothing; it must be "
        "register_samplers(register)")


def test_hooks_not_marked_hookimpl_are_warned_about(tmp_path):
    install_plugin(tmp_path, "unmarked", """
        def register_samplers(register):
            register("never", lambda denoiser, x, sigmas, extra=None, callback=None: x)
    """)
    out = _cli(tmp_path, "plugins", GLIDECTL_LOAD_PLUGINS="unmarked")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[0]["error"] == (
        "it adds nothing: mark register_samplers with @hookimpl (from glidectl.hookspecs "
        "import hookimpl)")
    out = _cli(tmp_path, "--version", GLIDECTL_LOAD_PLUGINS="unmarked")
    assert (out.returncode, out.stderr) == (0, (
        "Warning: plugin 'unmarked' (unmarked 0.1): it adds nothing: mark register_samplers "
        "with @hookimpl (from glidectl.hookspecs import hookimpl).\n"))


class _HalfMarked:
    @hookimpl
    def register_samplers(self, register):
        pass

    def register_schedules(self, register):
        pass


def test_a_hook_left_unmarked_beside_marked_ones_is_named():
    plugins.load_plugins()
    plugins.pm.register(_HalfMarked(), name="half")
    try:
        assert plugins.idle_problem(plugins.pm.get_plugin("half")) == (
            "glidectl never calls its register_schedules: mark it with @hookimpl (from "
            "glidectl.hookspecs import hookimpl)")
    finally:
        plugins.pm.unregister(name="half")


def sample_kdiffusion_euler(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """k-diffusion's sample_euler as written there: σ batched as ``sigmas[i] * s_in``."""
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        x = x + (x - denoised) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
    return x


def sample_per_image_sigma(denoiser, x, sigmas, extra=None, callback=None):
    ramp = torch.linspace(1.0, 2.0, x.shape[0], dtype=x.dtype)
    return denoiser(x, sigmas[0] * ramp, **(extra or {}))


class KDiffusionPorts:
    @hookimpl
    def register_samplers(self, register):
        register("kd_euler", sample_kdiffusion_euler)
        register("per_image", sample_per_image_sigma)


def test_a_kdiffusion_sampler_copied_verbatim_runs_like_the_builtin(base_file, tmp_path,
                                                                     capsys):
    """``model(x, sigmas[i] * s_in)`` ended in a traceback ("only one element tensors can be
    converted to Python scalars") that did not name the plugin."""
    from PIL import Image

    plugins.load_plugins()
    plugins.pm.register(KDiffusionPorts(), name="ports")
    plugins.refresh()
    try:
        pixels = {}
        for sampler in ("kd_euler", "euler", "per_image"):
            code, err = _main(capsys, "sample", "a cube", "--base", str(base_file),
                              "--upsampler", "none", "--sampler", sampler, "--schedule",
                              "karras", "--steps", "3", "--n", "2", "--device", "cpu",
                              "--quiet", "--out", str(tmp_path / sampler))
            if sampler != "per_image":
                assert code == 0, err
                pixels[sampler] = [np.asarray(Image.open(tmp_path / sampler / f"0000{i}.png"))
                                   for i in range(2)]
    finally:
        plugins.pm.unregister(name="ports")
        plugins.refresh()
    for ported, builtin in zip(pixels["kd_euler"], pixels["euler"], strict=True):
        assert np.array_equal(ported, builtin)
    assert (code, err.strip().splitlines()[-1]) == (2, (
        "Error: Plugin 'ports' failed in sampler 'per_image': it called the denoiser with 2 "
        "different σ's; it takes one σ for the whole batch (a number, or k-diffusion's "
        "sigma * s_in); switch it off with GLIDECTL_LOAD_PLUGINS=\"\"."))


def _misuses(how: str):
    def sample(denoiser, x, sigmas, extra_args=None, callback=None, disable=None):
        if how == "shape":
            return denoiser(x[..., :5, :5], sigmas[0])
        if how == "nan":
            return denoiser(x, float("nan"))
        return denoiser(x, sigmas[0], foo=1)
    return sample


class Misusers:
    @hookimpl
    def register_samplers(self, register):
        for how in ("shape", "nan", "keyword"):
            register(f"bad_{how}", _misuses(how))


@pytest.mark.parametrize("how, said", [
    ("shape", "it called the denoiser with x of (1, 3, 5, 5); it takes a tensor [1, 3, 8, 8]"),
    ("nan", "it called the denoiser with σ nan; it takes one finite σ >= 0"),
    ("keyword", "it called the denoiser with arguments it does not take (got an unexpected "
                "keyword argument 'foo'); it takes (x, sigma, *, t=None, variance=False)"),
])
def test_a_sampler_that_calls_the_denoiser_wrongly_is_named_not_a_traceback(
        base_file, tmp_path, capsys, how, said):
    """x of another shape, a NaN σ or a keyword the denoiser has not met torch's or Python's
    own error deep in glidectl (exit 1, a traceback): the plugin's mistake, in one line."""
    plugins.load_plugins()
    plugins.pm.register(Misusers(), name="misusers")
    plugins.refresh()
    try:
        code, err = _main(capsys, "sample", "a cube", "--base", str(base_file), "--upsampler",
                          "none", "--sampler", f"bad_{how}", "--steps", "2", "--device", "cpu",
                          "--quiet", "--out", str(tmp_path / "o"))
    finally:
        plugins.pm.unregister(name="misusers")
        plugins.refresh()
    assert (code, err.strip().splitlines()[-1]) == (2, (
        f"Error: Plugin 'misusers' failed in sampler 'bad_{how}': {said}; switch it off with "
        "GLIDECTL_LOAD_PLUGINS=\"\"."))


def test_two_distributions_with_one_plugin_name_are_an_error_naming_both(tmp_path):
    """The first on sys.path was loaded and the other vanished, unmentioned."""
    for dist in ("firstdist", "seconddist"):
        install_plugin(tmp_path, dist, "from glidectl.hookspecs import hookimpl\n",
                       entry="shared")
    out = _cli(tmp_path, "plugins", GLIDECTL_LOAD_PLUGINS="shared")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[0]["error"] == (
        "failed to load: 2 installed distributions have a plugin called 'shared' (firstdist "
        "0.1, seconddist 0.1), so neither is loaded; uninstall one, or rename its entry point")


def sample_feeding_nan(denoiser, x, sigmas, extra=None, callback=None):
    """A broken step (σ_up from a negative root) leaves NaN in x before the next model call."""
    x = x * float("nan")
    return denoiser(x, sigmas[0], **(extra or {}))


class NaNFeeder:
    @hookimpl
    def register_samplers(self, register):
        register("nan_feeder", sample_feeding_nan)


def test_a_plugin_sampler_feeding_the_model_nan_is_blamed_not_the_model(base_file, tmp_path,
                                                                        capsys):
    """It said "The base model returned NaN or infinite values ... its weights may be
    damaged" about a model that had only been given NaN."""
    plugins.load_plugins()
    plugins.pm.register(NaNFeeder(), name="feeder")
    plugins.refresh()
    try:
        code, err = _main(capsys, "sample", "a cube", "--base", str(base_file), "--upsampler",
                          "none", "--sampler", "nan_feeder", "--steps", "2", "--device", "cpu",
                          "--quiet", "--out", str(tmp_path / "out"))
    finally:
        plugins.pm.unregister(name="feeder")
        plugins.refresh()
    assert (code, err.strip().splitlines()[-1]) == (2, (
        "Error: Plugin 'feeder' failed in sampler 'nan_feeder': it returned NaN or infinite "
        "values; switch it off with GLIDECTL_LOAD_PLUGINS=\"\"."))


def test_entry_points_pluggy_cannot_register_are_named_and_leave_the_cli_working(tmp_path):
    """Two entry points naming one module, one naming a glidectl module, and one naming a
    list crashed every command, --help and --version too (pluggy's ValueError or TypeError
    traceback); one naming None was dropped without a word (pluggy blocks that name)."""
    install_plugin(tmp_path, "twice", """
        from glidectl.hookspecs import hookimpl

        LIST = []
        NOTHING = None

        @hookimpl
        def register_schedules(register):
            register("twice-linear", lambda n, lo, hi: [hi - (hi - lo) * i / max(n - 1, 1)
                                                        for i in range(n)] + [0])
    """)
    (tmp_path / "twice-0.1.dist-info" / "entry_points.txt").write_text(
        "[glidectl]\nmine = twicemod\nmine-too = twicemod\nbuiltins = glidectl.samplers.builtin"
        "\nlisted = twicemod:LIST\nnothing = twicemod:NOTHING\n")
    load = "mine,mine-too,builtins,listed,nothing"
    out = _cli(tmp_path, "--version", GLIDECTL_LOAD_PLUGINS=load)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    out = _cli(tmp_path, "plugins", GLIDECTL_LOAD_PLUGINS=load)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    errors = {p["name"]: p.get("error") for p in json.loads(out.stdout)}
    assert errors["mine"] is None, errors
    assert errors["mine-too"] == ("failed to load: it names the same module as the plugin "
                                  "'mine', which is loaded; remove one of the two entry points")
    assert errors["builtins"].startswith("failed to load: it names the same module as the "
                                         "plugin 'glidectl.samplers.builtin'"), errors
    for name, kind in (("listed", "a list"), ("nothing", "a NoneType")):
        assert errors[name] == (f"failed to load: its entry point names {kind}, not a module "
                                "or an object with @hookimpl functions"), errors


def test_a_plugin_changing_torchs_default_dtype_at_import_is_set_back_and_named(tmp_path):
    """A plugin's top-level ``torch.set_default_dtype(torch.float64)`` made every model built
    afterwards float64 (``train`` wrote float64 checkpoints), with no word of it."""
    install_plugin(tmp_path, "globby", """
        import torch
        torch.set_default_dtype(torch.float64)
        torch.set_grad_enabled(False)
        from glidectl.hookspecs import hookimpl

        @hookimpl
        def register_schedules(register):
            register("flat", lambda n, sigma_min, sigma_max: [sigma_max] * n + [0.0])
    """)
    script = ("from glidectl import plugins; plugins.load_plugins(); import torch; "
              "print(torch.get_default_dtype(), torch.is_grad_enabled()); "
              "print(*plugins.load_warnings(), sep='\\n')")
    pythonpath = os.pathsep.join(filter(None, (str(tmp_path), os.environ.get("PYTHONPATH"))))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": pythonpath,
                                           "GLIDECTL_LOAD_PLUGINS": "globby"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "torch.float32 True",
        "plugin 'globby' (globby 0.1) changed torch's default dtype to torch.float64 (set back "
        "to torch.float32) and grad mode to off (set back to on) when imported; change torch's "
        "global settings only inside the plugin's functions, and restore them."]
    listed = json.loads(_cli(tmp_path, "plugins", GLIDECTL_LOAD_PLUGINS="globby").stdout)
    assert listed[0]["status"] == "ok" and listed[0]["warning"].startswith(
        "its import changed torch's default dtype to torch.float64")
