"""What ``glidectl eval --upsampler SPEC --low-res DIR`` (:mod:`glidectl.eval_upsampler`)
checks before any model loads, each problem one sentence: the flags it cannot use, its
settings, DIR's images and captions, the upsampler and its LoRAs, --out."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import GlidectlError
from .eval_inputs import RunOptions, unused_options
from .eval_outputs import (
    EVAL_OUT,
    KILLED,
    holds_files,
    killed_run,
    next_eval_dir,
    refuse_if_busy,
)
from .eval_settings import EvalSettings, resolve_settings
from .out_dir import check_out_dir

# flags of glidectl eval that only a base model's sampling uses
BASE_ONLY_FLAGS = ("--sampler", "--steps", "--schedule", "--guidance", "--rerank")
# flags this mode does not carry out (yet), each with the reason its refusal gives
UNSUPPORTED_FLAGS = {
    "--resume": "an upsampler eval runs whole, into a new --out",
    "--skip-existing": "an upsampler eval runs whole, into a new --out",
    "--dry-run": "an upsampler eval has no dry run",
    "--wandb-project": "an upsampler eval logs nothing to W&B",
    "--wandb-entity": "an upsampler eval logs nothing to W&B",
    "--wandb-mode": "an upsampler eval logs nothing to W&B",
    "--clip-model": "an upsampler eval computes no CLIP score: the reference picture is known",
    "--clip-weights": "an upsampler eval computes no CLIP score: the reference picture is known",
}


def refuse_flags(given: Sequence[str], prompts: Path | None, upsampler: str | None) -> None:
    """One sentence when ``--low-res DIR`` comes with what this mode cannot use: no
    upsampler, a PROMPTS file, a base model's flags, or ones it does not carry out."""
    if upsampler in (None, "none", "auto"):
        raise GlidectlError("--low-res DIR scores an upsampler on its own; name it with "
                            "--upsampler RUN_OR_FILE (not none or auto).")
    if prompts is not None:
        raise GlidectlError(f"--low-res DIR takes its captions from DIR, so the PROMPTS file "
                            f"{str(prompts)!r} is not used; drop it (or drop --low-res to "
                            "sample a base model).")
    if "--base" in given:
        raise GlidectlError("--low-res DIR upsamples DIR's images, so no base model runs; "
                            "drop --base (or drop --low-res to sample a base model).")
    base_only = [f for f in BASE_ONLY_FLAGS if f in given]
    if base_only:
        raise GlidectlError(f"{', '.join(base_only)} set{'s' * (len(base_only) == 1)} the "
                            "base model's sampling, and with --low-res DIR no base model "
                            "runs; drop it, or use --upsample-sampler, --upsample-steps, "
                            "--upsample-schedule, --upsample-guidance.")
    unsupported = [f for f in UNSUPPORTED_FLAGS if f in given]
    if unsupported:  # the flags sharing the first one's reason, said with that reason
        reason = UNSUPPORTED_FLAGS[unsupported[0]]
        named = [f for f in unsupported if UNSUPPORTED_FLAGS[f] == reason]
        raise GlidectlError(f"{', '.join(named)} cannot be used with --low-res DIR "
                            f"({reason}); drop {'it' if len(named) == 1 else 'them'}.")


def check_loras(loras: Sequence[str]) -> str | None:
    """One sentence, before any model loads, for a ``--lora`` trained for a model that is no
    upsampler (with ``--low-res DIR`` only the upsampler runs), or for adapters trained with
    different ``data.low_res_resample`` filters. Returns the adapters' filter (None: none
    records one), which wins over the upsampler's own."""
    from .errors import a_or_an
    from .lora import parse_lora_spec
    from .lora.files import read_adapter

    filters: dict[str, str] = {}
    for spec in map(parse_lora_spec, loras):
        adapter = read_adapter(spec.path)
        kind = adapter.meta.get("model_kind")
        if kind and not str(kind).startswith("upsample"):
            raise GlidectlError(
                f"LoRA {spec.path!r} was trained for {a_or_an(repr(kind))} model, and with "
                "--low-res DIR only the upsampler runs; drop this --lora (a base model's "
                "adapter is evaluated with glidectl eval PROMPTS.txt --lora PATH).")
        if (resample := adapter_resample(adapter.path, adapter.meta)) is not None:
            filters[spec.path] = resample
    pairs = list(filters.items())
    other = next(((p, f) for p, f in pairs if f != pairs[0][1]), None)
    if other is not None:
        raise GlidectlError(
            f"LoRA {pairs[0][0]!r} was trained on inputs downscaled with {pairs[0][1]!r} "
            f"(data.low_res_resample) and LoRA {other[0]!r} with {other[1]!r}, so no one "
            "downscaling of DIR's references suits both; evaluate them in separate runs.")
    return pairs[0][1] if pairs else None


def upsampler_settings(flags: dict[str, Any], options: RunOptions,
                       precision: str | None = None) -> tuple[EvalSettings, list[str]]:
    """The run's settings (``flags`` keyed as :data:`glidectl.eval_settings.FLAG_NAMES`,
    None = not given; ``upsampler`` required): the upsample stage's as eval's defaults, grey
    when the upsampler (or a greyscale-trained adapter of it) recommends it; ``base`` is
    ``none``. Also notes."""
    from .devices import pick_device, pick_precision
    from .model_cost import local_weights
    from .sampling_defaults import recommended_settings, with_adapter_grey

    chosen = pick_precision(precision or "auto", pick_device(options.device))
    notes = [chosen.line()] if precision in (None, "auto") else []
    notes += unused_options(options)
    up = recommended_settings(local_weights(flags["upsampler"]))
    if flags.get("loras"):  # a greyscale-trained adapter: its model's recommendation
        from .lora import grey_stages

        up = with_adapter_grey(up, "upsample" in grey_stages(flags["loras"]))
    settings, more = resolve_settings({**flags, "base": "none"}, chosen.name,
                                      upsampler_recommended=up)
    return settings, notes + more


def check_folder(folder: Path) -> Any:
    """DIR's images as a data folder (:class:`glidectl.data.folder.FolderSource`); one
    sentence when it is no folder, holds no images, or holds images whose caption file
    cannot be read, is not UTF-8, or is not there."""
    from .data.captions import decode_caption, read_sidecar
    from .data.folder import CAPTION_SUFFIXES, FolderSource
    from .data.images import Rejected
    from .data.records import IMAGE_EXTENSIONS
    from .data.stats import RejectionCounter

    if not folder.is_dir():
        raise GlidectlError(f"--low-res {str(folder)!r} is not a folder; pass a folder of "
                            "reference images with a caption file (.txt) beside each.")
    source = FolderSource.scan(folder)
    if not source.files:
        raise GlidectlError(f"--low-res {str(folder)!r} holds no images "
                            f"({' '.join(IMAGE_EXTENSIONS)}); put the reference images there, "
                            "each with its caption in a .txt file of the same name.")
    counter, missing, not_utf8 = RejectionCounter(), [], []
    unreadable: list[tuple[Path, str]] = []
    for unit in source.units():
        for raw in source.read(unit, counter):
            try:
                text = decode_caption(raw.caption)
            except Rejected:
                not_utf8.append(unit)
                continue
            blank = not (text or "").strip()
            if (blank or raw.reject == "unreadable_caption") \
                    and (why := read_sidecar(folder / str(unit), CAPTION_SUFFIXES)[1]):
                unreadable.append(why)
            elif blank:
                missing.append(unit)
    if unreadable:
        path, reason = unreadable[0]
        raise GlidectlError(
            f"--low-res {str(folder)!r}: {len(unreadable)} of {len(source.files)} images have "
            f"a caption file that cannot be read (first: {str(path)!r}: {reason}); make each "
            "one's caption a readable UTF-8 text file.")
    if not_utf8:
        first = folder / str(not_utf8[0])
        raise GlidectlError(
            f"--low-res {str(folder)!r}: {len(not_utf8)} of {len(source.files)} images have a "
            f"caption file that is not UTF-8 text (first: {str(first)!r}); save each caption "
            "as UTF-8.")
    if missing:
        first = folder / str(missing[0])
        raise GlidectlError(
            f"--low-res {str(folder)!r}: {len(missing)} of {len(source.files)} images have no "
            f"caption (first: {str(first)!r}); write each one's caption into a UTF-8 .txt file "
            f"beside it ({str(first.with_suffix('.txt'))!r}), or a metadata.jsonl with "
            "file_name and text.")
    return source


def resolve_out(options: RunOptions) -> Path:
    """``--out`` (else the next ``eval/NNNN``), checked before any model loads: writable,
    not being written by another eval, holding no files."""
    out = Path(options.out) if options.out is not None else next_eval_dir(options.eval_root)
    check_out_dir(out, holds=EVAL_OUT)
    refuse_if_busy(out, resumes=False)
    refuse_files(out)
    return out


def refuse_files(out: Path, held: bool = False) -> None:
    """One sentence when ``out`` holds files: an upsampler eval writes a new folder only. A
    run whose record says it is running though no eval holds the folder (``held``: this
    process does) is named as one that stopped without recording (a ``kill -9``)."""
    if not (out.is_dir() and holds_files(out)):
        return
    what = "already holds files, and"
    if killed_run(out, held) is not None:
        what = f"holds an eval that {KILLED}: its finished images are kept there, but"
    raise GlidectlError(f"--out {str(out)!r} {what} an upsampler eval neither resumes nor "
                        "adds to a folder; pass a new or empty --out (or none, for the next "
                        "eval/NNNN).")


#: the metadata key of an exported upsampler that records its run's data.low_res_resample
RESAMPLE_KEY = "glidectl.low_res_resample"
#: the key of an upsampler's LoRA adapter's glidectl metadata that records the same
LORA_RESAMPLE_KEY = "low_res_resample"


def training_resample(weights: Path | None) -> str:
    """``data.low_res_resample`` the upsampler in ``weights`` trained with: as its metadata
    records it (a step checkpoint's or an export's), else (a checkpoint written before steps
    recorded it) its run's config.toml, else the default."""
    from .config import DataConfig
    from .data.transforms import RESAMPLE
    from .glide.checkpoints import metadata_or_empty
    from .runs import is_step_dir, run_of_step_dir, run_setting

    default = DataConfig().low_res_resample
    if weights is None:
        return default
    value = metadata_or_empty(weights).get(RESAMPLE_KEY)
    if value is None and is_step_dir(Path(weights).parent):
        value = run_setting(run_of_step_dir(Path(weights).parent), "data", "low_res_resample")
    return value if isinstance(value, str) and value in RESAMPLE else default


def adapter_resample(directory: Path, meta: dict[str, Any]) -> str | None:
    """``data.low_res_resample`` an upsampler's LoRA adapter (folder ``directory``, glidectl
    metadata ``meta``) trained with: as it records it, else (an adapter written before
    adapters recorded it) its LoRA run's config.toml; None for neither (peft's own)."""
    from .data.transforms import RESAMPLE
    from .runs import is_step_dir, run_of_step_dir, run_setting

    value = meta.get(LORA_RESAMPLE_KEY)
    step = Path(directory).parent
    if value is None and is_step_dir(step):
        value = run_setting(run_of_step_dir(step), "data", "low_res_resample")
    return value if isinstance(value, str) and value in RESAMPLE else None


def check_inputs(folder: Path, settings: EvalSettings,
                 options: RunOptions) -> tuple[Any, str | None]:
    """What is checked before any model loads, one sentence each: DIR, the upsampler and its
    LoRAs, the sampler, --fid's reference. Returns DIR's source and the LoRAs' downscaling
    filter (:func:`check_loras`)."""
    from . import plugins
    from .model_cost import check_models

    source = check_folder(folder)
    check_models(None, settings.where("upsampler"), alone=True)
    resample = check_loras(settings.where("loras"))
    plugins.samplers().get(settings.upsample_stage.sampler)
    if options.fid_reference:
        from .fid import INCEPTION_FEATURES, check_reference

        check_reference(str(options.fid_reference), len(source.files) * settings.n,
                        INCEPTION_FEATURES if options.fid_weights else None)
    return source, resample
