"""``glidectl ui``: the gradio web app (listens on 127.0.0.1 unless told otherwise)."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import typer

from ..ui.models import KEEP_MODELS

AUTH_ENV = "GLIDECTL_UI_AUTH"


def parse_auth(text: str | None, where: str = "--auth") -> tuple[str, str] | None:
    """``user:password`` → (user, password); empty → None; anything else one clear error."""
    from ..errors import GlidectlError

    if not text:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise GlidectlError(f"{where} must be USER:PASSWORD (both non-empty), e.g. "
                            "alice:s3cret.")
    return user, password


def is_loopback(host: str) -> bool:
    """True for localhost and 127.x / ::1 addresses (reachable from this machine only)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]")).is_loopback
    except ValueError:
        return False


def check_listen(host: str, port: int | None) -> None:
    """One clear error unless this machine can listen on ``host`` (and ``port``, if given;
    without one, gradio takes the first free port from 7860)."""
    import errno
    import socket

    from ..errors import GlidectlError

    try:
        family, kind, proto, _, addr = socket.getaddrinfo(
            host.removeprefix("[").removesuffix("]"), port or 0, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError):
        raise GlidectlError(
            f"--host {host!r} is neither an address nor a host name this machine can resolve; "
            "pass 127.0.0.1 (this machine only) or 0.0.0.0 (every interface).") from None
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(addr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise GlidectlError(
                    f"Port {port} on {host} is in use (another glidectl ui?); pass another "
                    "--port, or leave --port out to take the first free one from 7860."
                ) from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise GlidectlError(
                    f"--host {host!r} is not an address of this machine; pass 127.0.0.1 "
                    "(this machine only), 0.0.0.0 (every interface) or one of its own."
                ) from None
            raise GlidectlError(
                f"Cannot listen on {host} port {port} ({exc.strerror or exc}); pass another "
                "--port (ports below 1024 need root) or --host.") from None


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
        precision: str = typer.Option(
            "auto", "--precision", help="Default precision in the page: auto (bf16 where "
            "native, else fp32), fp32, bf16 or fp16."),
        auth: str | None = typer.Option(
            None, "--auth", help=f"Ask for a login USER:PASSWORD (or set {AUTH_ENV}); "
            "recommended with --share or a --host beyond this machine."),
        output_dir: Path | None = typer.Option(
            None, "--output-dir", "-o",
            help="Where generated PNGs are kept (default: a temp dir)."),
        keep_models: int = typer.Option(
            KEEP_MODELS, "--keep-models", help="Loaded models kept in memory: the last N model, "
            "upsampler and LoRA (and LoRA scale) combinations used; older ones are unloaded."),
        vocab_dir: str | None = typer.Option(None, "--vocab-dir", help="GPT-2 vocabulary "
                                             "folder (encoder.json, vocab.bpe)."),
    ) -> None:
        """Open a web UI to generate images: prompt, sampler, steps, guidance, seed, models."""
        from ..errors import GlidectlError

        if models_dir is not None and not models_dir.is_dir():  # before the slow import
            raise GlidectlError(
                f"--models-dir {str(models_dir)!r} is not a folder; pass a folder of weights."
            )
        if output_dir is not None:
            from ..out_dir import check_out_dir

            check_out_dir(output_dir, "--output-dir", holds="the folder each click's "
                          "images are saved in (0001/00_seed7.png, …)")
        if vocab_dir is not None:  # now, not at the first click
            from ..tokenizer import FLAG_VOCAB, vocab_folder_error, vocab_folder_problem

            if problem := vocab_folder_problem(vocab_dir):
                raise vocab_folder_error(vocab_dir, problem, *FLAG_VOCAB[:2])
        check_listen(host, port)
        os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
        try:
            import gradio  # noqa: F401
        except ImportError:
            from ..extras import install_hint

            raise GlidectlError(
                "glidectl ui needs gradio, which is not installed; "
                f"{install_hint('ui')}."
            ) from None
        from ..devices import check_precision, pick_device
        from ..ui.app import launch
        from ..ui.backend import UiBackend

        pick_device(device)  # the backend picks it in any case, as here
        precision = check_precision(precision)  # FP32 → the page's fp32
        login = parse_auth(auth) or parse_auth(os.environ.get(AUTH_ENV), AUTH_ENV)
        if share or not is_loopback(host):
            reach = "anyone with the gradio.live link" if share else f"other machines ({host})"
            guard = "a login is required" if login else (
                f"there is NO login: pass --auth USER:PASSWORD or set {AUTH_ENV}")
            typer.echo(f"Warning: the UI is reachable by {reach}; {guard}.", err=True)
        backend = UiBackend(models_dir, device=device, output_dir=output_dir,
                            precision=precision, keep_models=keep_models, vocab_dir=vocab_dir)
        # SIGTERM stops it as Ctrl-C does (glidectl's main): gradio closes the server and the
        # empty temp output folder is removed
        try:
            launch(backend, host=host, port=port, share=share, auth=login)
        finally:
            backend.close()
