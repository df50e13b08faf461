"""``glidectl config``: show the resolved config and document every key."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from rich.table import Table

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
        from ..errors import GlidectlError
        from ..training.setup import check_names

        cfg = load_config(config, set_ or [])
        typer.echo(to_toml(cfg), nl=False)
        try:
            check_names(cfg)  # what train and lora would refuse: a sampler no plugin has
        except GlidectlError as exc:
            typer.echo(f"Warning: train and lora refuse this config: {exc}", err=True)

    @config_app.command("keys")
    def keys(
        as_json: bool = typer.Option(False, "--json", help="JSON even on a terminal."),
    ) -> None:
        """List every config key with its type, default and meaning.

        A table on a terminal; one tab-separated line per key when piped (so `grep` finds
        whole keys), or JSON with --json.
        """
        import json
        import sys

        from ..config import describe

        rows = [dict(zip(("key", "type", "default", "meaning", "allowed"), row, strict=True))
                for row in describe()]
        if as_json:
            typer.echo(json.dumps(rows, indent=2, default=repr))
            return
        if not sys.stdout.isatty():
            for row in rows:
                typer.echo("\t".join(" ".join((repr(v) if k == "default" else str(v)).split())
                                     for k, v in row.items()))
            return
        from rich.console import Console

        Console().print(keys_table(rows))


def keys_table(rows: list[dict[str, Any]]) -> Table:
    """``config keys``' terminal table of ``rows`` (one dict a key): no cell is cut short
    (``model.tokeni…``) however narrow the terminal; keys stay whole, the rest fold."""
    from rich.markup import escape
    from rich.table import Table

    table = Table()
    table.add_column("key", no_wrap=True, min_width=max(len(row["key"]) for row in rows))
    for name in ("type", "default", "meaning", "allowed"):
        table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(*(escape(text) for text in (  # "[min, max]" as written, no markup
            row["key"], row["type"], repr(row["default"]), row["meaning"], row["allowed"])))
    return table
