"""``glidectl download``: fetch OpenAI's GLIDE checkpoints into the cache (resumable)."""

from __future__ import annotations

from pathlib import Path

import typer

CHOICES = ("base", "upsample", "base-inpaint", "upsample-inpaint", "all")
NOTES = {"cache": "already cached", "this process": "downloaded",
         "another process": "downloaded by another glidectl process while this one waited"}


def register(app: typer.Typer) -> None:
    @app.command("download")
    def download_command(
        models: list[str] = typer.Argument(
            ..., help=f"Which checkpoints: {', '.join(CHOICES)}, or SOURCE:NAME of a plugin's "
            "model source (several allowed)."
        ),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    ) -> None:
        """Download OpenAI's GLIDE checkpoints into the local cache.

        The cache is $GLIDECTL_HOME, else $XDG_CACHE_HOME/glidectl, else ~/.cache/glidectl;
        files already there are not fetched again (but checked as a download is) and partial
        downloads resume. A file enters the cache only whole and checked: the size the
        server announced, and OpenAI's checkpoint of that name (its zip checksums, keys and
        shapes). A plugin's models
        (SOURCE:NAME) are fetched where the plugin keeps them.
        """
        from .. import plugins
        from ..errors import GlidectlError
        from ..glide.options import KINDS
        from ..glide.sources import OpenAISource

        wanted: list[str] = []
        others: list[tuple[str, str, object]] = []  # (source name, model, its source)
        for name in models:
            if name[:7].lower() == "openai:":  # the model-spec spelling works too
                name = name[7:]
            source_name, colon, model = name.partition(":")
            if colon:
                # an unknown source: one line with the list, before anything is fetched
                others.append((source_name, model, plugins.model_sources().get(source_name)))
                continue
            if name not in CHOICES:
                raise GlidectlError(
                    f"Unknown model {name!r} for download; use one of {', '.join(CHOICES)}, "
                    "or SOURCE:NAME of a plugin's model source."
                )
            for kind in KINDS if name == "all" else (name,):
                if kind not in wanted:
                    wanted.append(kind)
        source = OpenAISource()
        for kind in wanted:
            path, by = source.fetch(kind, download=True, progress=not quiet, as_spec=False,
                                    check_cached=True)
            size = path.stat().st_size / 2**20
            note = NOTES[by]
            typer.echo(f"openai:{kind}  {path}  ({size:,.1f} MiB, {note})")
        for source_name, model, model_source in others:
            from ..callables import takes_keyword  # a plugin's resolve may take no progress

            quietly = {"progress": False} if quiet and takes_keyword(
                model_source.resolve, "progress") else {}
            path = Path(model_source.resolve(model, download=True, **quietly))
            typer.echo(f"{source_name}:{model}  {path}  ({path.stat().st_size / 2**20:,.1f} MiB)")

