"""``glidectl ui``: the gradio web app (listens on 127.0.0.1 unless told otherwise)."""

from __future__ import annotations

import os
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("ui")
    def ui(
        models_dir: Path | None = typer.Option(
            None, "--models-dir", help="Folder of .safetensors/.pt files and run folders to "
            "offer (besides cached openai:* models)."),
        host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
        port: int | None = typer.Option(
            None, "--port", help="Port (default: gradio's, 7860, or the next free one)."),
        share: bool = typer.Option(
            False, "--share", help="Also open a public gradio.live link (needs internet)."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, mps."),
        output_dir: Path | None = typer.Option(
            None, "--output-dir", help="Where generated PNGs are kept (default: a temp dir)."),
    ) -> None:
        """Open a web UI to generate images: prompt, sampler, steps, guidance, seed, models."""
        from ..errors import GlidectlError

        os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
        try:
            import gradio  # noqa: F401
        except ImportError:
            raise GlidectlError(
                "glidectl ui needs gradio, which is not installed; pip install 'glidectl[ui]'."
            ) from None
        if models_dir is not None and not models_dir.is_dir():
            raise GlidectlError(
                f"--models-dir {str(models_dir)!r} is not a folder; pass a folder of weights."
            )
        from ..ui.app import launch
        from ..ui.backend import UiBackend

        launch(UiBackend(models_dir, device=device, output_dir=output_dir), host=host,
               port=port, share=share)
