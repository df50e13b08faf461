"""``glidectl config``: show the resolved config and document every key."""

from __future__ import annotations

from pathlib import Path

import typer

SetOption = typer.Option(
    None, "--set", "-s", help="Override a key: section.key=value (repeatable)."
)


def register(app: typer.Typer) -> None:
    config_app = typer.Typer(help="Show and document glide.toml configs.", no_args_is_help=True)
    app.add_typer(config_app, name="config")

    @config_app.command("show")
    def show(
        config: Path | None = typer.Option(None, "--config", "-c", help="A glide.toml file."),
        set_: list[str] | None = SetOption,
    ) -> None:
        """Print the resolved config (defaults < file < --set) as TOML."""
        from ..config import load_config, to_toml

        typer.echo(to_toml(load_config(config, set_ or [])), nl=False)

    @config_app.command("keys")
    def keys() -> None:
        """List every config key with its type, default and meaning."""
        from rich.console import Console
        from rich.table import Table

        from ..config import describe

        table = Table("key", "type", "default", "meaning", "allowed")
        for key, tp, default, doc, allowed in describe():
            table.add_row(key, tp, repr(default), doc, allowed)
        Console().print(table)
