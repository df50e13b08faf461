"""``glidectl plugins``: what each installed plugin registers, its clashes and load errors."""

from __future__ import annotations

import json
import sys

import typer


def register(app: typer.Typer) -> None:
    @app.command("plugins")
    def plugins_command(
        all_: bool = typer.Option(False, "--all", help="Include the built-in default plugins, "
                                  "and the installed ones GLIDECTL_LOAD_PLUGINS leaves out."),
        as_json: bool = typer.Option(False, "--json", help="JSON even on a terminal."),
    ) -> None:
        """List installed plugins: distribution, version, the samplers, schedules, presets,
        data sources and model sources (with aliases) and commands each registers, name
        clashes and load errors.

        A table on a terminal; JSON when piped or with --json.
        """
        from ..plugin_report import plugin_info, table

        infos = plugin_info(include_defaults=all_)
        if as_json or not sys.stdout.isatty():
            typer.echo(json.dumps(infos, indent=2))
            return
        from rich.console import Console

        Console().print(table(infos) if infos else _none_listed())
        from .. import plugins

        if infos and plugins.left_out and not all_:
            typer.echo(f"{plugins.ALLOW_ENV} leaves out the installed "
                       f"{', '.join(sorted(plugins.left_out))} (--all lists them).")


def _none_listed() -> str:
    """What an empty table says: no plugin installed, or none of those installed loaded
    (``GLIDECTL_LOAD_PLUGINS`` left them out)."""
    from .. import plugins

    plugins.load_plugins()
    if plugins.left_out:
        return (f"No plugins loaded: {plugins.ALLOW_ENV} leaves out the installed "
                f"{', '.join(sorted(plugins.left_out))} (--all shows the built-in ones).")
    return "No plugins installed (--all shows the built-in ones)."
