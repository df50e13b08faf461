"""The Typer app, its command modules, and the one top-level error handler.

Start-up must stay light: no torch import here or in any command module's top level.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import inspect
import os
import re
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import typer

from .. import __version__
from ..errors import (
    OUTPUT_FULL,
    GlidectlError,
    flags_named,
    is_own_warning,
    one_line,
    output_full,
)
from . import checks
from .other_names import glidectl_name

# Each module exposes ``register(app)``; keep imports of torch inside command bodies.
COMMAND_MODULES: tuple[str, ...] = (
    "glidectl.cli.train_cmd",
    "glidectl.cli.lora_cmd",
    "glidectl.cli.sample_cmd",
    "glidectl.cli.eval_cmd",
    "glidectl.cli.fit_cmd",
    "glidectl.cli.ui_cmd",
    "glidectl.cli.dataset_cmd",
    "glidectl.cli.download_cmd",
    "glidectl.cli.config_cmd",
    "glidectl.cli.plugins_cmd",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"glidectl {__version__}")
        raise typer.Exit()


def _flags_without_a_type_column() -> None:
    """Typer prints ``<bool>`` beside on/off flags, which take no value: show nothing there."""
    from typer.core import TyperOption

    shown = getattr(TyperOption, "display_type_rich", None)  # typer >= 0.29
    if shown is None or getattr(shown, "_glidectl", False):
        return

    def display_type_rich(self: TyperOption, ctx: object) -> str | None:
        return None if self.is_flag and self.metavar is None else shown(self, ctx)

    display_type_rich._glidectl = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


def build_app() -> typer.Typer:
    _flags_without_a_type_column()
    app = typer.Typer(
        name="glidectl",
        help="Finetune and sample OpenAI's GLIDE text-to-image diffusion models.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    @app.callback()
    def root(
        ctx: typer.Context,
        version: bool = typer.Option(
            False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ) -> None:
        """Finetune and sample OpenAI's GLIDE text-to-image diffusion models."""
        ctx.with_resource(flags_named())  # errors name the flags given, not library keywords

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)
    from .. import plugins

    plugins.register_commands(app)
    checks.install(app)
    _one_line_summaries(app)
    return app


def _one_line_summaries(app: typer.Typer) -> None:
    """Rich keeps a docstring's line breaks in the command list: give each command the first
    paragraph of its help as one line."""
    for info in app.registered_commands:
        text = info.help or (info.callback.__doc__ if info.callback else None)
        if info.short_help is None and text:
            info.short_help = " ".join(inspect.cleandoc(text).split("\n\n")[0].split())
    for group in app.registered_groups:
        if group.typer_instance is not None:
            _one_line_summaries(group.typer_instance)


def fail(message: str, code: int = 2) -> None:
    """Print one error line to stderr and exit. The command has ended: a SIGTERM now (a
    launcher stopping the other processes) is ignored instead of cutting the line."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # main restores its handler after
    sys.stderr.write(f"Error: {one_line(message)}\n")
    raise SystemExit(code)


def _plugins_still_work(argv: list[str]) -> bool:
    """``--help``, ``--version`` and ``glidectl plugins`` work with a broken plugin."""
    words = [a for a in argv if not a.startswith("-")]
    return not argv or bool({"-h", "--help", "--version"} & set(argv)) or (
        bool(words) and words[0] == "plugins")


def _check_plugins(argv: list[str]) -> None:
    from .. import plugins

    unmatched = plugins.unmatched_warning()
    if unmatched:
        sys.stderr.write(f"Warning: {unmatched}\n")
    if "plugins" not in argv:  # `glidectl plugins` shows them
        for warning in plugins.load_warnings():
            sys.stderr.write(f"Warning: {warning}\n")
    if not plugins.broken:
        return
    if not _plugins_still_work(argv):
        plugins.check_loaded()
    if "plugins" not in argv:
        for name, error in sorted(plugins.broken.items()):
            sys.stderr.write(f"Warning: plugin {plugins.who(name)} failed to load: {error} "
                             "(see `glidectl plugins`).\n")


def _one_line_warnings(shown: Callable[..., None]) -> Callable[..., None]:
    """A ``warnings.showwarning`` that prints glidectl's own warnings (a LoRA trained on other
    weights, ...) as one ``Warning:`` line like every other; other libraries' go to
    ``shown``, Python's format."""

    def show(message: Warning | str, category: type[Warning], *args: object,
             **kwargs: object) -> None:
        if is_own_warning(category):
            sys.stderr.write(f"Warning: {one_line(str(message))}\n")
        else:
            shown(message, category, *args, **kwargs)

    return show


def _abort_on_ctrl_c(command: typer.core.TyperGroup) -> None:
    """Ctrl-C inside a command becomes ``typer.Abort``, which :func:`main` reports in one
    line; typer itself turns it into a silent exit 130."""
    invoke = command.invoke

    def invoke_or_abort(ctx: typer.Context) -> object:
        try:
            return invoke(ctx)
        except KeyboardInterrupt:
            raise typer.Abort() from None

    command.invoke = invoke_or_abort  # type: ignore[method-assign]


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised as Ctrl-C is."""


def _interrupt(signum: int, frame: object) -> None:
    """The first SIGTERM stops the command as Ctrl-C does; later ones find it stopping
    already (a launcher's or service manager's repeats) and are ignored, so the stop and its
    line are not cut short."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise _Terminated


def _aborted(exc: BaseException) -> str:
    """The line for a command stopped by Ctrl-C or SIGTERM (``exc``, or what it replaced).
    Under a launcher (torchrun, ``accelerate launch``) SIGTERM is the launcher's: it sends
    it on Ctrl-C, and to every process when one of them fails."""
    terminated = isinstance(exc, _Terminated) or isinstance(exc.__context__, _Terminated)
    if terminated and os.environ.get("WORLD_SIZE", "1").strip() not in ("", "1"):
        return ("Stopped by the launcher's SIGTERM (sent on Ctrl-C, or to every process when "
                "one of them fails: its report then names which).")
    return "Aborted."


@contextmanager
def _sigterm_as_ctrl_c() -> Iterator[None]:
    """SIGTERM (``kill``, ``timeout``, a service manager or batch scheduler) stops a command
    as Ctrl-C does: what it finished is kept and said, exit 130, instead of dying on the spot
    (training's own handler takes over while it trains). Off the main thread: nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


TYPER_MIN = (0, 29)  # pyproject.toml's bound: older ones pass `Path | None` options as str


def _check_typer(version: str) -> None:
    """One sentence instead of a traceback where an older typer is installed (pip keeps the
    bound; an install with --no-deps, or into an image that pins typer, does not)."""
    parts = re.match(r"(\d+)\.(\d+)", version)
    if parts and tuple(map(int, parts.groups())) < TYPER_MIN:
        fail(f"glidectl needs typer >= {'.'.join(map(str, TYPER_MIN))}, and typer {version} "
             "is installed: run pip install -U 'typer>=0.29'.", 2)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``glidectl`` console script.

    User-caused errors (bad flags, configs, files) become one line on stderr and exit code 2;
    anything else is a bug and keeps its traceback.
    """
    _reopen_closed_streams()
    # SIGTERM stays Ctrl-C until the error line is written: one that came between the
    # command's end and its line (torchrun stopping the other processes) killed it silently.
    with _sigterm_as_ctrl_c():
        try:
            _check_typer(typer.__version__)
            _run(argv)
        except KeyboardInterrupt as exc:  # while an error line was being written
            fail(_aborted(exc), 130)
        finally:
            if argv is None:  # the process's own command (not a caller's in-process one)
                _ignore_late_ctrl_c()


def _reopen_closed_streams() -> None:
    """A standard stream the caller closed (``>&-``, ``2>&-``, ``<&-``: Python makes it
    None) is opened on /dev/null, as if redirected there. Else ``train``, ``config keys``
    and ``plugins`` stopped on a traceback, an error's line was lost with its exit code
    (1, not 2), and the next file opened took the stream's descriptor, so a child process
    or library writing to it wrote into that file."""
    for fd, name in enumerate(("stdin", "stdout", "stderr")):
        if getattr(sys, name) is not None:
            continue
        try:
            os.fstat(fd)
            continue  # open, though Python has no stream on it (an embedding)
        except OSError:
            pass
        null = os.open(os.devnull, os.O_RDONLY if fd == 0 else os.O_WRONLY)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
        setattr(sys, name, open(fd, "r" if fd == 0 else "w", encoding="utf-8",  # noqa: SIM115
                                errors="backslashreplace", closefd=False))


def _usage_message(exc: Exception, click_exc: Any) -> str:
    """Click's usage error as a sentence; an option another tool names so
    (:mod:`.other_names`) is told the command's own in place of click's spelling guess."""
    if isinstance(exc, click_exc.NoSuchOption) and exc.ctx is not None:
        path = "glidectl " + exc.ctx.command_path.split(" ", 1)[-1]
        if ours := glidectl_name(exc.option_name, exc.ctx.command, path):
            return f"No such option: {exc.option_name}; {ours}"
    return exc.format_message().rstrip(".")


def _ignore_late_ctrl_c() -> None:
    """The command has ended, its work written and its line said. A Ctrl-C in the
    interpreter's exit (atexit handlers, or after Python has put the default action back)
    printed an "Exception ignored" traceback or ended the process by the signal with no word
    (130 after a success, stopping ``train … && export …``); from here on it is ignored."""
    with contextlib.suppress(ValueError, OSError):  # not the main thread: nothing to do
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run(argv: list[str] | None) -> None:
    """:func:`main`'s command run, each error turned into its line and exit code."""
    from typer import exceptions as typer_exc
    from typer._click import exceptions as click_exc  # typer >= 0.26 vendors click

    try:
        command = typer.main.get_command(build_app())
        _abort_on_ctrl_c(command)
        _check_plugins(sys.argv[1:] if argv is None else list(argv))
        with warnings.catch_warnings():  # restored at the end
            warnings.showwarning = _one_line_warnings(warnings.showwarning)
            code = command.main(args=argv, prog_name="glidectl", standalone_mode=False)
    except GlidectlError as exc:
        fail(str(exc), exc.exit_code)
    except click_exc.NoArgsIsHelpError as exc:
        typer.echo(exc.ctx.get_help())
        raise SystemExit(2) from None
    except click_exc.UsageError as exc:
        where = f" (see 'glidectl {exc.ctx.command_path.split(' ', 1)[1]} --help')" if (
            exc.ctx and " " in exc.ctx.command_path) else " (see 'glidectl --help')"
        fail(_usage_message(exc, click_exc) + where + ".", exc.exit_code)
    except click_exc.ClickException as exc:
        fail(exc.format_message(), exc.exit_code)
    except (typer_exc.Abort, KeyboardInterrupt) as exc:  # Ctrl-C in a command, or starting
        fail(_aborted(exc), 130)
    except RuntimeError as exc:  # Path.resolve() of a link to itself (Python < 3.13)
        if str(exc) == HOME_UNKNOWN:  # Path.expanduser() of ~NAME: no such user here
            fail(_home_unknown(exc), 2)
        if not str(exc).startswith("Symlink loop from "):
            raise
        fail(f"{str(exc).removeprefix('Symlink loop from ')} {PATH_UNUSABLE[errno.ELOOP]}", 2)
    except OSError as exc:
        if exc.errno in PATH_UNUSABLE:  # a path of the user's that no file can have
            name = str(exc.filename)  # a 300-byte name: its start and its end
            shown = name if len(name) <= 120 else f"{name[:80]}…{name[-30:]}"
            fail(f"{shown!r} {PATH_UNUSABLE[exc.errno]}", 2)
        if exc.errno not in OUTPUT_FULL:  # glidectl's own files say so as WriteError
            raise
        _drop_stdout()
        fail(output_full(exc), 1)
    raise SystemExit(code if isinstance(code, int) else 0)


# a path given that no file can have, whichever check of the command's meets it first
PATH_UNUSABLE = {
    errno.ENAMETOOLONG: "has a name longer than the filesystem allows (255 bytes a name); "
                        "pick a shorter name.",
    errno.ELOOP: "is a symbolic link that leads back to itself; remove the link or pass "
                 "another path.",
}


# pathlib's expanduser() of a path starting with ~NAME (no user NAME), or ~ with no HOME
HOME_UNKNOWN = "Could not determine home directory."


def _home_unknown(exc: RuntimeError) -> str:
    """The sentence for :data:`HOME_UNKNOWN`: the path given (``--base ~runs/x``, its '/'
    missing; the path is found in ``expanduser``'s frame) and the variable holding it."""
    path = None
    frame = exc.__traceback__
    while frame is not None:
        if frame.tb_frame.f_code.co_name == "expanduser":
            path = frame.tb_frame.f_locals.get("self")
        frame = frame.tb_next
    if not isinstance(path, os.PathLike):
        return ("A path starting with ~NAME names no user of this machine (or ~ with HOME "
                "unset); write that path in full.")
    first = os.fspath(path).split("/", 1)[0]
    held = next((f" (${name})" for name in ("GLIDECTL_HOME", "XDG_CACHE_HOME")
                 if os.environ.get(name) and os.path.normpath(os.environ[name]) ==
                 os.fspath(path)), "")
    why = ("HOME is not set and this user has no home folder" if first == "~" else
           f"this machine has no user {first[1:]!r} (a '/' missing after '~'?)")
    return f"{os.fspath(path)!r}{held} starts with {first}, but {why}; write the path in full."


def _drop_stdout() -> None:
    """Standard output pointed at /dev/null: what its buffer still holds would fail again
    at exit, as an "Exception ignored" traceback after the error line."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (OSError, ValueError, AttributeError):  # no real stdout (a test's capture)
        pass
