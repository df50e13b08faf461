"""``glidectl dataset inspect``: counts, caption and image statistics, rejections, previews."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer

from ..ranges import FLAGS


def _bounds(flag: str) -> dict[str, Any]:
    """The flag's range as typer's min and max (shown in --help, checked as it parses)."""
    return {"min": FLAGS[flag].min, "max": FLAGS[flag].max}


MODEL_KEYS = ("kind", "init", "size", "tokenizer")  # what names the model inspected for


def _resolve_tokenizer(name: str, cfg: Any, from_file: bool) -> Any:
    """--tokenizer, else model.tokenizer, else the training rule when a config was given (a
    scratch model: its size preset's, byte for tiny and quickstart, gpt2 for small and
    official; other weights: gpt2), else GPT-2 (OpenAI's models) if its vocabulary is
    available. A GPT-2 vocabulary folder that was named (model.vocab_dir,
    $GLIDECTL_GPT2_VOCAB) but cannot be used is its one sentence, as train says it, not a
    quiet fall back to bytes."""
    from ..errors import GlidectlError
    from ..tokenizer import CONFIG_VOCAB, VocabFolderError, get_tokenizer, vocab_named

    if name == "auto":
        name = cfg.model.tokenizer
    if name == "auto" and from_file:
        from ..glide.options import preset_options

        model = cfg.model
        name = preset_options(model.kind, model.size).tokenizer if model.init == "scratch" \
            else "gpt2"
    with vocab_named(*CONFIG_VOCAB):
        if name != "auto":
            return get_tokenizer(name, cfg.model.vocab_dir or None)
        try:
            return get_tokenizer("gpt2", cfg.model.vocab_dir or None)
        except VocabFolderError:
            raise
        except GlidectlError:  # no folder named and tiktoken cannot load GPT-2's here
            return get_tokenizer("byte")


def _model_options(cfg: Any, from_file: bool) -> Any:
    """The options of the config's model (a scratch preset's or OpenAI's), else None (no
    config file, or an OpenAI name the training run will say is wrong)."""
    from ..errors import GlidectlError
    from ..glide.options import official_options, preset_options

    model = cfg.model
    if from_file and model.init == "scratch":
        tok = None if model.tokenizer == "auto" else model.tokenizer
        return preset_options(model.kind, model.size, tok)
    if from_file and model.init.startswith("openai:"):
        try:
            return official_options(model.init.split(":", 1)[1])
        except GlidectlError:
            return None
    return None


def _model_text_ctx(cfg: Any, from_file: bool) -> int:
    """The tokens the config's model reads, else 128: a quickstart model reads 40 bytes, and
    128 called its longer captions untruncated."""
    options = _model_options(cfg, from_file)
    return options.text_ctx if options is not None else 128


def _training_size(cfg: Any, from_file: bool) -> int:
    """The size training resizes images to: data.resolution, else (0) the config's model's
    own, else 64."""
    if cfg.data.resolution:
        return int(cfg.data.resolution)
    options = _model_options(cfg, from_file)
    return options.image_size if options is not None else 64


def _concepts_table(rows: list[dict[str, Any]]) -> Any:
    """OneTrainer's concepts: type, repeats or samples, images, reads per epoch, weight."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="OneTrainer concepts")
    for name in ("#", "concept", "type", "repeats", "images", "per epoch", "loss weight"):
        table.add_column(name, justify="left" if name in ("concept", "type") else "right")
    for i, row in enumerate(rows, start=1):
        balancing = (f"×{row['balancing']:g}" if row["strategy"] == "REPEATS"
                     else f"{row['balancing']:g} samples")
        kind = row["type"] if row["enabled"] else f"{row['type']} (off)"
        table.add_row(str(i), escape(row["concept"]), kind, balancing, str(row["images"]),
                      str(row["per_epoch"]), f"{row['loss_weight']:g}")
    return table


def _grey_text(report: Any) -> str:
    """How many valid images are grey, and what training on them samples."""
    text = f"{report.grey} of {report.valid} ({report.grey_share:.1%})"
    if report.grey == report.valid:
        scanned = "" if report.complete else " if the rest are grey too"
        return f"{text}: a run on them samples grey{scanned}"
    if report.grey:
        colour = report.valid - report.grey
        holds = "other holds" if colour == 1 else f"other {colour} hold"
        return f"{text}; the {holds} colour, so a run on them samples in colour"
    return text


def _examples(report: Any, reason: str) -> str:
    """The example keys of ``reason``, as rich markup that shows them as written."""
    from rich.markup import escape

    return ", ".join(map(escape, report.rejected_examples.get(reason, [])))


def _render(report: Any) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    total = report.total_samples if report.total_samples is not None else "unknown"
    summary = Table(title=f"{escape(report.source)} ({report.kind}, preset {report.preset})",
                    show_header=False)
    summary.add_row("samples in source", str(total))
    if report.samples_per_epoch is not None:
        summary.add_row("samples per epoch", f"{report.samples_per_epoch} (with repeats)")
    scanned = f"{report.scanned}" + ("" if report.complete else f" (limit {report.limit})")
    summary.add_row("scanned", scanned)
    summary.add_row("valid", str(report.valid))
    summary.add_row("rejected", str(sum(report.rejected.values())))
    if report.damaged:
        summary.add_row("damaged shards/files", str(sum(report.damaged.values())))
    if report.caption_tokens:
        t = report.caption_tokens
        summary.add_row(
            f"caption tokens ({report.tokenizer})",
            f"min {t['min']}  median {t['median']}  mean {t['mean']}  p95 {t['p95']}  "
            f"max {t['max']}",
        )
    summary.add_row(f"truncated at {report.text_ctx}", f"{report.truncated_share:.1%}")
    summary.add_row("empty captions", f"{report.empty_share:.1%}")
    if report.valid:
        summary.add_row("greyscale", _grey_text(report))
    console.print(summary)
    if report.kohya_folders:
        subsets = report.kind == "kohya"  # a dataset config's subsets, else N_words folders
        title = "kohya subsets" if subsets else "kohya folders (data.kohya_folders)"
        words = "caption from class_tokens" if subsets else "caption from name"
        reg = any(row.get("reg") for row in report.kohya_folders)  # regularisation images
        table = Table(title=title)
        if subsets:
            table.add_column("subset", justify="right")
        for name in ("folder", "repeats", "images", "per epoch", words, *["reg"] * reg):
            table.add_column(name, justify="left" if name == "folder" else "right")
        for i, row in enumerate(report.kohya_folders, start=1):
            table.add_row(*([str(i)] if subsets else []), escape(row["folder"]), *(
                str(row[k]) for k in ("repeats", "images", "per_epoch", "class_captions")),
                *(["yes" if row.get("reg") else ""] if reg else []))
        console.print(table)
    if report.concepts:
        console.print(_concepts_table(report.concepts))
    for title, hist in (("short side (px)", report.size_histogram),
                        ("aspect (w/h)", report.aspect_histogram)):
        if hist:
            table = Table(title=title)
            table.add_column("bucket")
            table.add_column("images", justify="right")
            table.add_column("")
            peak = max(hist.values())
            for bucket, n in hist.items():
                table.add_row(bucket, str(n), "█" * max(1, round(24 * n / peak)))
            console.print(table)
    if report.rejected or report.damaged or report.converted:
        table = Table(title="rejections and conversions")
        table.add_column("reason")
        table.add_column("count", justify="right")
        table.add_column("examples")
        for reason, n in report.rejected.items():  # keys are file names: '[/b]' is text
            table.add_row(escape(reason), str(n), _examples(report, reason))
        for reason, n in report.damaged.items():
            table.add_row(f"{escape(reason)} (shard/file)", str(n), _examples(report, reason))
        for mode, n in report.converted.items():
            table.add_row(f"converted from {mode}", str(n), "")
        console.print(table)
    for note in report.notes:
        console.print(f"[yellow]Warning:[/] {escape(note)}", highlight=False)
    for note in report.batching:  # a small dataset in batches of train.batch_size
        console.print(f"Batches (train.batch_size = {report.batch_size}): {escape(note)}",
                      highlight=False)
    if report.preview:
        console.print(f"preview grid: {escape(report.preview)}", highlight=False)
    if report.benchmark:
        b = report.benchmark
        console.print(
            f"decode+transform+tokenize: {b['images_per_s_per_worker']} images/s per worker "
            f"({b['images']} images in {b['seconds']} s)"
        )


def _is_png(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def _check_preview(path: Path, source: str) -> None:
    """Refuse a --preview path that cannot be written, or that lies in the folder of
    ``source`` (data.source), where training would read the grid as data, before the scan."""
    from ..data.inspection import is_preview_grid
    from ..data.sources import source_type
    from ..errors import GlidectlError
    from ..out_dir import check_out_dir

    if path.is_dir():
        raise GlidectlError(f"--preview {str(path)!r} is a folder; pass a file such as "
                            f"{str(path / 'preview.png')!r}.")
    if path.exists() and not path.is_file():
        raise GlidectlError(f"--preview {str(path)!r} is no file (a device or a pipe); pass a "
                            "new file such as 'preview.png'.")
    if path.is_file() and not _is_png(path):
        raise GlidectlError(f"--preview {str(path)!r} exists and is no PNG, which the grid "
                            "would replace; pass a new file such as 'preview.png'.")
    if path.is_file() and not is_preview_grid(path):
        raise GlidectlError(f"--preview {str(path)!r} is a PNG that dataset inspect did not "
                            "write (a picture of the data, a sample?), which the grid would "
                            "replace; pass a new file such as 'preview.png'.")
    if path.suffix.lower() != ".png":
        raise GlidectlError(f"--preview {str(path)!r} would hold a PNG under another name; "
                            f"pass a .png file such as {str(path.with_suffix('.png'))!r}.")
    check_out_dir(path.parent, "--preview folder")
    kind, folder = source_type(source)
    if isinstance(folder, str) and os.path.isdir(folder) and \
            path.resolve().is_relative_to(root := Path(folder).resolve()):
        shards = (" (a PNG beside shards makes their folder an image folder)"
                  if kind is not None and kind.name == "webdataset" else "")
        outside = root.parent / f"{root.name or 'data'}-preview.png"
        raise GlidectlError(
            f"--preview {str(path)!r} lies in the data source {source!r}: the grid would "
            f"become part of the data training reads{shards}; write it outside, such as "
            f"{str(outside)!r}.")


def register(app: typer.Typer) -> None:
    dataset_app = typer.Typer(help="Look into training data.", no_args_is_help=True)
    app.add_typer(dataset_app, name="dataset")

    @dataset_app.command("inspect")
    def inspect_command(
        source: str = typer.Argument(
            ..., help="Image folder, kohya dataset config (.toml/.json), OneTrainer concepts "
            "file (.json), webdataset shards (dir, glob, brace pattern), Parquet files, "
            "hf:NAME_OR_PATH or demo:NAME."
        ),
        preset: str | None = typer.Option(None, "--preset", "-p", help="Dataset preset."),
        limit: int = typer.Option(1000, "--limit", "-n", **_bounds("--limit"),
                                  help="Samples to scan."),
        as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
        preview: Path | None = typer.Option(
            None, "--preview", help="Write a PNG grid of images with their captions."
        ),
        benchmark: bool = typer.Option(
            False, "--benchmark", help="Measure decode+transform+tokenize images/s per worker."
        ),
        size: int | None = typer.Option(
            None, "--size", **_bounds("--size"),
            help="Image size of the preview tiles, the benchmark's transform and the "
            "grey-image count (default: data.resolution, else the --config's scratch or "
            "OpenAI model's own size, else 64), as training sizes them."),
        tokenizer: str = typer.Option(
            "auto", "--tokenizer",
            help="Tokenizer for caption lengths: auto (the config's, else gpt2 if available), "
            "gpt2 or byte.",
        ),
        text_ctx: int | None = typer.Option(
            None, "--text-ctx", **_bounds("--text-ctx"),
            help="Text context length (default: what the --config's scratch or OpenAI model "
            "reads, else 128).",
        ),
        config: Path | None = typer.Option(
            None, "--config", "-c", help="A glide.toml whose data section sets the options."
        ),
        set_: list[str] | None = typer.Option(
            None, "--set", "-s", help="Override a key: section.key=value (repeatable)."
        ),
    ) -> None:
        """Sample count, caption stats, image sizes, rejections by reason, preview, speed."""
        from ..config import load_config
        from ..errors import GlidectlError, canonical_word

        cfg = load_config(config, set_ or [])
        for key, given, flag in (("source", source, "SOURCE"), ("preset", preset, "--preset")):
            was = getattr(cfg.data, key)
            if given is not None and was not in (None, "", given) and any(
                    s.replace(" ", "").startswith(f"data.{key}=") for s in set_ or []):
                typer.echo(f"Warning: --set data.{key}={was} not used: {flag} {given!r} "
                           "is what is inspected.", err=True)
            if given is not None:
                setattr(cfg.data, key, given)
        tokenizer = canonical_word(tokenizer, ("auto", "gpt2", "byte"))
        if tokenizer not in ("auto", "gpt2", "byte"):
            raise GlidectlError(f"--tokenizer must be auto, gpt2 or byte, got {tokenizer!r}.")
        if preview is not None:
            _check_preview(preview, cfg.data.source)
        from ..data.inspection import inspect_source
        from ..training.validation import enabled as validates
        from ..unused_keys import unused_data_keys

        for note in unused_data_keys(cfg, validation=False):  # as train says them
            typer.echo(f"Warning: {note}", err=True)

        # a model named (a file, or --set of the model's kind, size or weights): it reads the
        # text; a --set model.vocab_dir alone names a vocabulary, not a model
        modelled = config is not None or any(
            item.split("=", 1)[0].strip() in ("model", *(f"model.{k}" for k in MODEL_KEYS))
            for item in set_ or [])
        from rich.console import Console

        from .bars import counting_bar

        if size is not None:  # the dataset sizes images by data.resolution first
            cfg.data.resolution = size
        err = Console(stderr=True)  # no bar in a log: a scan of 100,000 images takes minutes
        progress, on_scan = counting_bar("scanning", err, disable=not err.is_terminal,
                                         transient=True)
        with progress:
            report = inspect_source(
                cfg.data, tokenizer=_resolve_tokenizer(tokenizer, cfg, modelled), limit=limit,
                text_ctx=text_ctx or _model_text_ctx(cfg, modelled),
                image_size=size or _training_size(cfg, modelled),
                preview=preview, benchmark=benchmark, batch_size=cfg.train.batch_size,
                holdout=cfg.validation.holdout if validates(cfg) else 0, on_scan=on_scan,
            )
        if as_json:
            typer.echo(json.dumps(report.to_dict(), indent=2))
        else:
            _render(report)
        if report.refusal:  # the report helps find why; training would stop on this source
            raise GlidectlError(report.refusal)
