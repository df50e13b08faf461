"""``glidectl plugins``: list installed plugins as JSON."""

from __future__ import annotations

import json

import typer


def register(app: typer.Typer) -> None:
    @app.command("plugins")
    def plugins_command(
        all_: bool = typer.Option(False, "--all", help="Include the built-in default plugins."),
    ) -> None:
        """List installed plugins as JSON: name, version, hooks."""
        from .. import plugins

        typer.echo(json.dumps(plugins.plugin_info(include_defaults=all_), indent=2))
