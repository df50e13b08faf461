"""The command shell: start-up cost, version, config show, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from glidectl import __version__

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "glidectl", *args],
        capture_output=True, text=True, env=full_env, timeout=120,
    )


def test_help_lists_commands_without_importing_torch():
    """Nor numpy, PIL or urllib (a third of `glidectl --help`'s time when they were)."""
    heavy = ("torch", "numpy", "PIL", "urllib.request", "http.client")
    code = (
        "import sys\n"
        "from glidectl.cli.app import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print('LOADED', [m for m in {heavy!r} if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "LOADED []" in out.stdout, out.stdout + out.stderr
    for command in ("plugins", "config"):
        assert command in out.stdout


def test_version():
    out = run("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"glidectl {__version__}"


def test_a_ctrl_c_after_the_command_ended_changes_nothing():
    """A Ctrl-C in the interpreter's exit, after the work was written, printed an "Exception
    ignored" traceback, or ended a successful command by the signal with no word (130)."""
    code = ("import atexit, os, signal\n"
            "atexit.register(lambda: os.kill(os.getpid(), signal.SIGINT))  # runs last\n"
            "from glidectl.cli.app import main\n"
            "main()\n")
    out = subprocess.run([sys.executable, "-c", code, "--version"], capture_output=True,
                         text=True, timeout=60)
    assert (out.returncode, out.stdout, out.stderr) == (0, f"glidectl {__version__}\n", "")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
@pytest.mark.parametrize("args", [["--version"], ["config", "show"], ["plugins", "--json"]])
def test_output_to_a_full_disk_is_one_line(args):
    """``glidectl config show > /dev/full`` (any command whose output meets a full disk) was
    an OSError traceback, and Python's "Exception ignored" at exit after it."""
    import os

    with open("/dev/full", "w") as full:
        out = subprocess.run([sys.executable, "-m", "glidectl", *args], stdout=full,
                             stderr=subprocess.PIPE, text=True, env=dict(os.environ),
                             timeout=120)
    assert (out.returncode, out.stderr) == (1, (
        "Error: Cannot write glidectl's output (No space left on device): the disk where "
        "standard output (or a file it writes) goes is full or failing; free space there, or "
        "send the output elsewhere.\n"))


@pytest.mark.parametrize(("args", "closed", "code"), [
    (["config", "keys"], 1, 0),       # was an AttributeError traceback (isatty of None)
    (["plugins"], 1, 0),              # the same
    (["sample", "x", "--base", "nowhere"], 2, 2),  # its line lost and exit 1, not 2
])
def test_a_closed_standard_stream_is_read_as_dev_null(args, closed, code):
    """``glidectl … >&-`` (or ``2>&-``) in a script: the stream is /dev/null's, no
    traceback, and an error keeps its exit code."""
    import os

    out = subprocess.run([sys.executable, "-m", "glidectl", *args], capture_output=True,
                         text=True, timeout=120, preexec_fn=lambda: os.close(closed))
    assert out.returncode == code, out.stderr
    assert "Traceback" not in out.stdout + out.stderr


def test_config_show_prints_resolved_toml():
    out = run("config", "show", "--config", str(ROOT / "examples" / "glide.toml"),
              "--set", "train.steps=3")
    assert out.returncode == 0, out.stderr
    assert "[train]" in out.stdout and "steps = 3" in out.stdout
    assert out.stderr == ""
    # a sampler no plugin registers: shown, with what train would say (it said nothing)
    out = run("config", "show", "--config", str(ROOT / "examples" / "glide.toml"),
              "--set", "preview.sampler=eulr")
    assert out.returncode == 0 and 'sampler = "eulr"' in out.stdout, out.stderr
    assert out.stderr.startswith("Warning: train and lora refuse this config: preview.sampler: "
                                 "Unknown sampler 'eulr'. Did you mean 'euler'?"), out.stderr


MALFORMED = [
    ("[train]\nbatchsize = 4\n", [], "unknown key 'train.batchsize'"),
    ("[trian]\n", [], "unknown section 'trian'"),
    ('[train]\nsteps = "x"\n', [], "'train.steps' must be int"),
    ("[train]\nlr = true\n", [], "'train.lr' must be float"),
    ("[train\n", [], "invalid TOML"),
    ("train = 3\n", [], "'train' must be a table"),
    ("", ["train.steps"], "expected section.key=value"),
    ("", ["nosection=1"], "must be section.key"),
    ("", ["train.precision=fp8"], "must be one of"),
    ("", ["model.nope=1"], "unknown key 'model.nope'"),
]


@pytest.mark.parametrize(("text", "sets", "message"), MALFORMED)
def test_malformed_config_is_one_line_and_exit_2(tmp_path, text, sets, message):
    path = tmp_path / "glide.toml"
    path.write_text(text)
    args = ["config", "show", "--config", str(path)]
    for item in sets:
        args += ["--set", item]
    out = run(*args)
    assert out.returncode == 2
    assert message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "Traceback" not in out.stderr


def test_missing_config_file_is_one_line(tmp_path):
    out = run("config", "show", "--config", str(tmp_path / "nope.toml"))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"Error: Config file {str(tmp_path / 'nope.toml')!r} does not exist; "
        "pass an existing .toml file."
    ]


def test_plugins_prints_json():
    out = run("plugins", "--all")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert isinstance(data, list)
    for item in data:
        assert {"name", "hooks"} <= set(item)


@pytest.mark.parametrize("version", ["0.27.2", "0.12.5"])
def test_an_older_typer_is_one_sentence_not_a_traceback(monkeypatch, capsys, version):
    """Typer < 0.29 (as a CUDA image with typer 0.27.2 has) crashed while building the app:
    an AttributeError there, `Path | None` options passed as str by older ones."""
    import typer

    from glidectl.cli import app

    monkeypatch.setattr(typer, "__version__", version)
    with pytest.raises(SystemExit) as done:
        app.main(["plugins"])
    assert done.value.code == 2
    assert capsys.readouterr().err == (
        f"Error: glidectl needs typer >= 0.29, and typer {version} is installed: run pip "
        "install -U 'typer>=0.29'.\n")


def test_ctrl_c_while_starting_is_one_line_and_exit_130(monkeypatch, capsys):
    """Ctrl-C before a command runs (loading plugins, building the app) is no traceback."""
    from glidectl.cli import app

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(app, "build_app", interrupted)
    with pytest.raises(SystemExit) as done:
        app.main(["plugins"])
    assert done.value.code == 130
    assert capsys.readouterr().err == "Error: Aborted.\n"


def test_ctrl_c_inside_a_command_is_one_line_and_exit_130(monkeypatch, capsys):
    """A real SIGINT while a command runs: one line, not typer's silent exit 130."""
    import os
    import signal
    import time

    from glidectl import config
    from glidectl.cli import app

    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the handler raises KeyboardInterrupt before this ends

    monkeypatch.setattr(config, "load_config", interrupted)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as at start-up
    try:
        with pytest.raises(SystemExit) as done:
            app.main(["config", "show"])
    finally:
        signal.signal(signal.SIGINT, previous)
    assert done.value.code == 130
    assert capsys.readouterr().err == "Error: Aborted.\n"


@pytest.mark.parametrize("world", ["", "2"])
def test_a_sigterm_under_a_launcher_says_it_was_the_launchers(monkeypatch, capsys, world):
    """torchrun SIGTERMs every process when one fails (and on Ctrl-C): one stopped that way
    while setting up said "Aborted.", as if someone had pressed Ctrl-C at it. Under a
    launcher (WORLD_SIZE > 1) the line says whose SIGTERM it was; alone, "Aborted." as
    before."""
    import os
    import signal

    from glidectl import config
    from glidectl.cli import app

    def terminated(*args, **kwargs):
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, signal.SIG_IGN, None):
            pytest.fail("main() did not turn SIGTERM into Ctrl-C")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends

    monkeypatch.setattr(config, "load_config", terminated)
    monkeypatch.setenv("WORLD_SIZE", world)
    with pytest.raises(SystemExit) as done:
        app.main(["config", "show"])
    assert done.value.code == 130
    assert capsys.readouterr().err == ("Error: Stopped by the launcher's SIGTERM (sent on "
                                       "Ctrl-C, or to every process when one of them fails: "
                                       "its report then names which).\n" if world else
                                       "Error: Aborted.\n")


def test_a_sigterm_while_the_error_line_is_written_does_not_cut_it(tmp_path):
    """A command's error line was written after SIGTERM's handler was put back: a SIGTERM
    in between (torchrun stopping the other processes when one fails) killed the process
    without its line. Two SIGTERMs arrive as the line is written: it is written, exit 2."""
    script = (
        "import os, signal\n"
        "from glidectl.cli import app\n"
        "line = app.one_line\n"
        "def one_line(message):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return line(message)\n"
        "app.one_line = one_line\n"
        f"app.main(['config', 'show', '--config', {str(tmp_path / 'nope.toml')!r}])\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert out.stderr.startswith(f"Error: Config file {str(tmp_path / 'nope.toml')!r} does "
                                 "not exist"), out.stderr


def test_a_second_sigterm_finds_the_command_stopping_already():
    """The first SIGTERM stops a command as Ctrl-C does; a repeat (a launcher or service
    manager sending it again) no longer interrupts the stop's own clean-up and line."""
    import os
    import signal

    from glidectl.cli import app

    before = signal.getsignal(signal.SIGTERM)
    with app._sigterm_as_ctrl_c():
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises before this ends
        try:
            os.kill(os.getpid(), signal.SIGTERM)  # ignored: the command is stopping
            time.sleep(0.05)
        except KeyboardInterrupt:
            pytest.fail("a second SIGTERM interrupted the stop the first one began")
    assert signal.getsignal(signal.SIGTERM) is before


def test_train_warns_that_it_ignores_the_lora_section(tmp_path):
    out = run("train", "--config", str(ROOT / "examples" / "lora.toml"),
              "--set", f"data.source={tmp_path / 'missing'}")
    assert out.returncode == 2  # the missing data stops it; the warning comes first
    assert out.stderr.splitlines()[0] == (
        "Warning: this command trains every weight and ignores lora.rank, lora.alpha; to "
        "train LoRA adapters, run glidectl lora with this config.")
    out = run("train", "--config", str(ROOT / "examples" / "glide.toml"),
              "--set", f"data.source={tmp_path / 'missing'}")
    assert out.returncode == 2 and "lora" not in out.stderr


@pytest.mark.parametrize(("argv", "told"), [
    (["sample", "a cat", "--model", "m.pt"], "--model; glidectl sample takes it as --base"),
    (["sample", "--prompt", "a cat"],
     "--prompt; PROMPTS is glidectl sample's argument, not an option"),
    (["sample", "--prompts-file", "p.txt"],  # not `sample p.txt`: it draws "p.txt"
     "--prompts-file; glidectl sample's PROMPTS are prompt texts, not a file; glidectl eval "
     "PROMPTS.txt samples each line of a prompts file"),
    (["eval", "--prompt-file", "p.txt"],
     "--prompt-file; PROMPTS is glidectl eval's argument, not an option"),
    (["fit-steps", "runs/x", "--prompts_file", "p.txt"],
     "--prompts_file; glidectl fit-steps takes it as --prompts"),
    (["eval", "p.txt", "--guidance_scale", "3"],
     "--guidance_scale; glidectl eval takes it as --guidance"),
    (["sample", "a", "--num_inference_steps", "9"],
     "--num_inference_steps; glidectl sample takes it as --steps"),
    (["train", "--learning_rate", "1e-4"],
     "--learning_rate; glidectl train takes it as --set train.lr=..."),
    (["train", "--model", "openai:base"],
     "--model; glidectl train takes it as --set model.init=..."),
    (["train", "--output_dir", "runs"], "--output_dir; glidectl train takes it as --output-dir"),
    (["fit-steps", "--model", "runs/x"],
     "--model; MODEL is glidectl fit-steps's argument, not an option"),
])
def test_an_option_named_as_other_tools_name_it_is_told_glidectls(argv, told, capsys):
    """Click guesses by spelling (``--model`` → ``--help``); a name that diffusers' scripts,
    k-diffusion or a web UI use for one of ours is told which one it is."""
    from glidectl.cli.app import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    command = argv[0]
    assert capsys.readouterr().err == (
        f"Error: No such option: {told} (see 'glidectl {command} --help').\n")


def test_an_unknown_option_with_no_other_meaning_keeps_clicks_suggestion(capsys):
    from glidectl.cli.app import main

    with pytest.raises(SystemExit) as info:
        main(["sample", "a cat", "--bsae", "m.pt"])
    assert info.value.code == 2
    assert "No such option: --bsae (Possible options: --base" in capsys.readouterr().err
