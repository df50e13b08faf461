"""The Typer app, its command modules, and the one top-level error handler.

Start-up must stay light: no torch import here or in any command module's top level.
"""

from __future__ import annotations

import importlib
import sys

import typer

from .. import __version__
from ..errors import GlidectlError

# Each module exposes ``register(app)``; keep imports of torch inside command bodies.
COMMAND_MODULES: tuple[str, ...] = (
    "glidectl.cli.config_cmd",
    "glidectl.cli.plugins_cmd",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"glidectl {__version__}")
        raise typer.Exit()


def build_app() -> typer.Typer:
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
        version: bool = typer.Option(
            False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ) -> None:
        """Finetune and sample OpenAI's GLIDE text-to-image diffusion models."""

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)
    from .. import plugins

    plugins.register_commands(app)
    return app


def fail(message: str, code: int = 2) -> None:
    """Print one error line to stderr and exit."""
    sys.stderr.write(f"Error: {message}\n")
    raise SystemExit(code)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``glidectl`` console script."""
    try:
        app = build_app()
        app(args=argv, prog_name="glidectl", standalone_mode=True)
    except GlidectlError as exc:
        fail(str(exc), exc.exit_code)
