"""``glidectl lora`` (train LoRA adapters with the shared engine) and ``glidectl lora merge``.

Thin: parse flags, resolve the config like ``glidectl train``, call :mod:`glidectl.lora`.
"""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import GlidectlError
from .train_cmd import CONFIG, LIVE, NAME, OUTPUT_DIR, PRECISION, RESUME, SET, STEPS


def _train(config: Path | None, set_: list[str] | None, steps: int | None,
           output_dir: Path | None, name: str | None, resume: str | None,
           precision: str | None, live: bool | None) -> None:
    from ..lora import train_lora
    from .train_cmd import exit_interrupted, resolve_config

    cfg = resolve_config(config, set_, steps=steps, output_dir=output_dir, name=name,
                         precision=precision, resume=resume)
    result = train_lora(cfg, resume=resume, live=live)  # names the keys the run ignores first
    if result.interrupted:
        exit_interrupted(result, "glidectl lora --resume")


def _lora_run_as_base(base: str, adapter: Path, what: str = "a LoRA run: its checkpoints "
                      "hold adapters") -> str:
    """The sentence for a LoRA run (or, ``what``, an adapter) given as ``lora merge --base``
    (loading's own sentence is for ``sample``: it suggests --lora and merging first)."""
    from ..lora import read_adapter

    recorded = str(read_adapter(adapter).meta.get("base_model") or "")
    instead = (f", or leave --base out to use the one the adapter records ({recorded!r})"
               if recorded not in ("", "scratch") else "")
    return (f"--base {base!r} is {what}, not a model to merge into; pass the base model the "
            f"adapter was trained on as --base{instead}.")


def _check_no_scale_suffix(adapter: Path, output: Path) -> None:
    """One sentence for ``lora merge PATH:SCALE`` (``--lora``'s form, the adapter at PATH
    there and no PATH:SCALE): merge takes its scale as --scale, where "does not exist" sent
    the user looking for a folder that is there."""
    import os

    from ..lora import parse_lora_spec

    text = str(adapter)
    if os.path.exists(text):  # a folder whose name holds ':' is taken whole
        return
    try:
        spec = parse_lora_spec(text)
    except GlidectlError:  # no PATH:SCALE: reading the adapter says what is wrong
        return
    if spec.path != text and os.path.exists(os.path.expanduser(spec.path)):
        raise GlidectlError(
            f"lora merge takes the adapter's scale as --scale, not after ':' as --lora does; "
            f"run glidectl lora merge {spec.path} --scale {spec.scale:g} -o {output}.")


def register(app: typer.Typer) -> None:
    lora_app = typer.Typer(
        invoke_without_command=True, no_args_is_help=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    @lora_app.callback()
    def lora(
        ctx: typer.Context,
        config: Path | None = CONFIG,
        set_: list[str] | None = SET,
        steps: int | None = STEPS,
        output_dir: Path | None = OUTPUT_DIR,
        name: str | None = NAME,
        resume: str | None = RESUME,
        precision: str | None = PRECISION,
        live: bool | None = LIVE,
    ) -> None:
        """Train LoRA adapters on a base or upsampler model (the rest stays frozen).

        Same engine, config, previews, logging, resume and multi-process launch as
        `glidectl train`; the config's lora section picks targets, rank and alpha. Adapters are
        written in peft's format to runs/<name>/checkpoints/<step>/lora (and lora-ema).
        """
        if ctx.invoked_subcommand is not None:
            return
        _train(config, set_, steps, output_dir, name, resume, precision, live)

    @lora_app.command("merge")
    def merge(
        adapter: Path = typer.Argument(
            ..., help="An adapter folder, or a LoRA run / checkpoint folder (latest EMA adapter)."
        ),
        base: str | None = typer.Option(
            None, "--base", "-b",
            help="Base model spec (openai:base, a .pt/.safetensors file, a run dir); "
                 "default: the adapter's recorded base.",
        ),
        output: Path = typer.Option(..., "--output", "--out", "-o",
                                    help="The .safetensors file to write."),
        scale: float = typer.Option(1.0, "--scale", help="Adapter strength multiplier."),
        force: bool = typer.Option(False, "--force", help="Overwrite --output if it exists."),
    ) -> None:
        """Fold an adapter into its base model and write one full .safetensors checkpoint."""
        from ..glide.loading import LoraRunError
        from ..lora import merge_adapter, read_adapter, recorded_base
        from ..lora.apply import check_output
        from ..lora.files import names_adapter

        check_output(output, force)  # before the adapter and the base model are read
        _check_no_scale_suffix(adapter, output)
        if base is None:
            base = recorded_base(read_adapter(adapter), repr(str(adapter)))
            if not base:
                raise GlidectlError(
                    f"{str(adapter)!r} does not record a loadable base model; pass --base SPEC."
                )
        if names_adapter(base):  # loading's sentence would suggest this very command
            raise GlidectlError(_lora_run_as_base(base, adapter, "a LoRA adapter"))
        try:
            result = merge_adapter(adapter, base, output, scale, force=force)
        except LoraRunError:
            raise GlidectlError(_lora_run_as_base(base, adapter)) from None
        typer.echo(
            f"merged {result.modules} of {result.adapter_modules} adapter modules "
            f"(scale {scale:g}) into {base}: {result.path}"
        )

    app.add_typer(lora_app, name="lora")
