"""What an eval run starts from: its options, settings, folder, and the checks before it starts.

Those checks include that a run may keep an earlier run's images (``--resume``,
``--skip-existing``)."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import GlidectlError, keyword_errors, takes
from .eval_outputs import (
    EVAL_OUT,
    GRID_FILE,
    KILLED,
    check_wandb,
    check_wandb_mode,
    foreign_files,
    holds_files,
    killed_run,
    latest_eval_dir,
    missing_record,
    next_eval_dir,
    read_metadata,
    recorded_run,
    refuse_foreign_files,
    refuse_if_busy,
)
from .eval_plan import read_prompts
from .eval_setting_kinds import lora_specs, model_spec, whole_number
from .eval_settings import (
    FLAG_NAMES,
    META_FILE,
    NEW_RUN,
    SCHEDULE_KEYS,
    EvalSettings,
    check_resume,
    check_same_run,
    recorded_paths,
    recorded_vocab_dir,
    refuse_upsampler_eval,
    resolve_settings,
)
from .out_dir import check_out_dir

# settings_for()'s ``flags`` keys and RunOptions' fields for the flags of glidectl eval
KEYWORDS = {flag: key for key, flag in FLAG_NAMES.items()} | {
    "--out": "out", "--resume": "resume=True", "--skip-existing": "skip_existing=True",
    "--dry-run": "dry_run=True", "--device": "device", "--compile": "compile=True",
    "--grid-max": "grid_max",
    "--fid": "fid_reference", "--fid-weights": "fid_weights", "--clip-model": "clip_model",
    "--clip-weights": "clip_weights", "--wandb-mode": "wandb_mode",
    "--wandb-project": "wandb_project", "--wandb-entity": "wandb_entity"}
SAID_AS_KEYWORDS = keyword_errors(KEYWORDS, {  # a setting's value, quoted as Python's
    r"(?<![\w-])(--[a-z][a-z-]*) ([a-z][\w+.:-]*)(?= (?:would change|differs from))": r"\1 '\2'"})


@dataclass
class RunOptions:
    """How a run is carried out; none of these change the pictures."""

    out: Path | None = None
    eval_root: Path = Path("eval")
    resume: bool = False
    skip_existing: bool = False
    dry_run: bool = False
    device: str = "auto"
    compile: bool = False
    clip_model: str = "ViT-B-32"
    clip_weights: str | None = None
    fid_reference: str | None = None  # images (folder, data source) or an .npz of stats
    fid_weights: str | None = None  # local Inception weights (glidectl.fid)
    vocab_dir: str | None = None  # GPT-2 vocabulary folder (None: the default one)
    wandb_project: str = ""
    wandb_entity: str = ""
    wandb_mode: str = "auto"  # glidectl.config.WANDB_MODES; auto: WANDB_MODE, else online
    # grid.png: the first prompts' images, at most this many (None: with --resume the
    # run's recorded value, else GRID_MAX)
    grid_max: int | None = None

    @SAID_AS_KEYWORDS
    def __post_init__(self) -> None:
        from .ranges import FLAGS, check

        if self.grid_max is not None:
            whole_number("--grid-max", self.grid_max)
            check("--grid-max", self.grid_max, FLAGS["--grid-max"])


def unused_options(options: RunOptions) -> list[str]:
    """A warning for each option that needs another one not given: ``--fid-weights``
    without ``--fid``, ``--wandb-entity`` or ``--wandb-mode`` without ``--wandb-project``."""
    notes = []
    if options.fid_weights and not options.fid_reference:
        notes.append("Warning: --fid-weights not used: there is no --fid reference to score "
                     "against.")
    wandb = [flag for flag, given in (("--wandb-entity", bool(options.wandb_entity)),
                                      ("--wandb-mode", options.wandb_mode != "auto")) if given]
    if wandb and not options.wandb_project:
        notes.append(f"Warning: {', '.join(wandb)} not used: nothing is logged to W&B without "
                     "--wandb-project.")
    return notes


def check_run_call(prompts_file: Any, settings: Any, options: Any, on_event: Any,
                   notes: Any, pipeline: Any) -> None:
    """One sentence for a ``run_eval`` argument of the wrong kind, naming it."""
    from .errors import check_callback

    if not isinstance(prompts_file, str | os.PathLike):
        raise takes("run_eval()", "a prompts file's path as its prompts_file", prompts_file)
    if not isinstance(settings, EvalSettings):
        raise takes("run_eval()", "an EvalSettings (from settings_for(), or built by hand) as "
                    "its settings", settings)
    if options is not None and not isinstance(options, RunOptions):
        raise takes("run_eval(options=...)", "a RunOptions(out=...) or None", options)
    check_callback(on_event, "run_eval(on_event=...)", "on_event(kind, **info)")
    if isinstance(notes, str | bytes) or not isinstance(notes, Iterable) or not all(
            isinstance(n, str) for n in notes):
        raise takes("run_eval(notes=...)", "a list of note strings (settings_for()'s notes)",
                    notes)
    if pipeline is not None and not callable(getattr(pipeline, "generate", None)):
        raise takes("run_eval(pipeline=...)", "a loaded GlidePipeline or None", pipeline)


def resolve_out(prompts: list[str], options: RunOptions) -> Path:
    """The output folder, checking it is free (or that --resume / --skip-existing apply)."""
    out = options.out
    if out is None:
        if options.resume:
            out = latest_eval_dir(options.eval_root)
            if out is None:
                raise GlidectlError(
                    f"--resume: no numbered run under {str(options.eval_root)!r}; pass --out DIR."
                )
        else:
            out = next_eval_dir(options.eval_root)
    out = Path(out)
    check_out_dir(out, holds=EVAL_OUT)
    if not options.dry_run:  # a plan only reads
        refuse_if_busy(out)
    busy = holds_files(out)
    if busy and not (options.resume or options.skip_existing):
        raise held_files_error(out)
    if options.skip_existing and not options.resume:
        refuse_foreign_files(out)
    if options.resume and not busy:
        raise GlidectlError(f"--resume: {str(out)!r} holds no run to continue; drop --resume.")
    return out


def held_files_error(out: Path, held: bool = False) -> GlidectlError:
    """The sentence for an eval without --resume or --skip-existing into an ``out`` that
    holds files. A run whose record says it is running though no eval holds the folder
    (``held``: this process does) is named as one that stopped without recording (a
    ``kill -9``): a prompts eval is offered --resume, an upsampler eval (however it ended)
    a new folder."""
    meta = killed_run(out, held)
    recorded = recorded_run(out) or {}
    if recorded.get("mode") == "upsampler":
        ended = KILLED if meta is not None else _ENDED.get(recorded.get("status"))
        return GlidectlError(
            f"--out {str(out)!r} holds an upsampler eval (eval --low-res)"
            f"{f' that {ended}' if ended else ''}, whose images a prompts eval neither "
            "continues nor reuses; pass a new or empty --out.")
    if meta is not None:
        return GlidectlError(
            f"--out {str(out)!r} holds an eval that {KILLED}; continue it with --resume, "
            "keep its finished prompts with --skip-existing, or pass another --out.")
    if (shown := foreign_files(out)) is not None:  # neither flag takes it
        return GlidectlError(
            f"--out {str(out)!r} holds files no eval writes ({shown}) and "
            f"{missing_record(out)}, so it is no eval's output; pass an empty or new --out.")
    if not (out / META_FILE).exists():  # an eval's images, but no run --resume continues
        return GlidectlError(
            f"--out {str(out)!r} holds an eval's images but no {META_FILE}, so there is no "
            "run to continue; keep them with --skip-existing, or pass another --out.")
    if not recorded:  # --resume and --skip-existing refuse it too
        return GlidectlError(
            f"--out {str(out)!r} holds a {META_FILE} glidectl cannot read (damaged or edited), "
            f"so there is no run to continue; delete {str(out / META_FILE)!r} to keep its "
            "images with --skip-existing, or pass another --out.")
    return GlidectlError(
        f"--out {str(out)!r} already holds files; pass --resume to continue that run, "
        "--skip-existing to keep finished prompts, or another --out.")


# how a run whose metadata.json holds "status" ended, as held_files_error says it
_ENDED = {"complete": "finished", "interrupted": "was interrupted", "failed": "failed"}


@SAID_AS_KEYWORDS
def settings_for(prompts_file: str | Path, flags: dict[str, Any], options: RunOptions,
                 precision: str | None = None) -> tuple[EvalSettings, list[str]]:
    """The run's settings from the flags the user gave (None = not given; keys as in
    :data:`glidectl.eval_settings.FLAG_NAMES`) and notes saying where defaults came from:
    with --resume the run's recorded settings, else the base model's recommendations.
    :func:`run_eval` checks what the run needs and says the notes (its ``notes``) once it
    can start, so a run that cannot start says nothing about itself first. With --resume
    it sets ``options.out`` to the run it read and, unless given, ``options.vocab_dir`` to
    the GPT-2 vocabulary folder that run recorded. Without ``base`` (nor --resume) it is
    the one the first base-model adapter of ``loras`` records, else openai:base."""
    from .devices import pick_device, pick_precision
    from .model_cost import local_weights
    from .pipeline import recommended_settings, resolve_upsampler
    from .sampling_defaults import with_adapter_grey

    if not isinstance(flags, Mapping):
        raise takes("settings_for()", "a dict of settings by their FLAG_NAMES keys as its "
                    "flags ({} for none)", flags)
    if not isinstance(options, RunOptions):
        raise takes("settings_for()", "a RunOptions(out=...) as its options", options)
    flags = dict(flags)
    for key in flags.keys() - FLAG_NAMES.keys():
        near = [k for k in FLAG_NAMES if k.split(".")[-1] == key] or difflib.get_close_matches(
            str(key), list(FLAG_NAMES), n=1, cutoff=0.6)
        raise GlidectlError(f"settings_for(): unknown setting {key!r}"
                            f"{f' (did you mean {near[0]!r}?)' if near else ''}; its keys "
                            "are those of glidectl.eval_settings.FLAG_NAMES.")
    for key, flag in (("base", "--base"), ("upsampler", "--upsampler")):
        flags[key] = model_spec(flag, flags.get(key))
    if flags.get("loras") is not None:
        flags["loras"] = list(lora_specs(flags["loras"]))
    chosen = pick_precision(precision or "auto", pick_device(options.device))
    notes = [chosen.line()] if precision in (None, "auto") else []
    notes += unused_options(options)
    if options.resume:
        prompts = read_prompts(prompts_file)
        out = resolve_out(prompts, options)  # the run to continue: its recorded settings
        prior = read_metadata(out / META_FILE)
        if prior is None or "settings" not in prior:
            check_resume(prior, out, prompts, {}, {})
        refuse_upsampler_eval(prior, out, "--resume")  # before its settings are compared
        if precision is None:
            notes = unused_options(options)
        options.out = out  # the run read here, even if a newer one appears before run_eval
        if options.vocab_dir is None:
            options.vocab_dir = recorded_vocab_dir(prior, out)
        paths = recorded_paths(prior, out)
        settings, more = resolve_settings(flags, chosen.name if precision else None,
                                          recorded=prior["settings"], out=out, paths=paths)
        return settings, notes + more
    base = flags.get("base")
    if not base and flags.get("loras"):  # as `sample --lora` without --base
        from .lora import base_for_loras

        base, note = base_for_loras(flags["loras"], EvalSettings.base)
        if note:
            notes.append(note)
    base = base or EvalSettings.base
    if base == "none":  # `sample --base none --low-res` has no eval counterpart
        raise GlidectlError("eval needs a base model (--base); --base none works only in "
                            "glidectl sample with --low-res IMAGE.")
    flags["base"] = base
    flags["upsampler"] = resolve_upsampler(base, flags.get("upsampler") or "auto")
    unused = [FLAG_NAMES[k] for k, v in flags.items()
              if k.startswith("upsample_stage.") and v is not None]
    if unused and not flags["upsampler"]:
        notes.append(f"Warning: {', '.join(unused)} not used: this run has no upsampler.")
    recommended = recommended_settings(local_weights(base))
    up = recommended_settings(local_weights(flags["upsampler"])) if flags["upsampler"] else {}
    if flags.get("loras"):  # a greyscale-trained adapter: its model's recommendation
        from .lora import grey_stages

        grey = grey_stages(flags["loras"])
        recommended = with_adapter_grey(recommended, "base" in grey)
        up = with_adapter_grey(up, "upsample" in grey and bool(flags["upsampler"]))
    settings, more = resolve_settings(flags, chosen.name, recommended=recommended,
                                      upsampler_recommended=up)
    return settings, notes + more


def check_inputs(settings: EvalSettings, options: RunOptions, models: bool = True,
                 prompts: int | None = None) -> None:
    """One sentence, before anything about the run is said or a model loads, for what it
    needs and cannot use: its models (found on disk, headers read; ``models=False``: loaded
    already) and LoRA adapters, and but for a dry run W&B and the ``--fid`` reference (and
    enough images to score: ``prompts`` × n)."""
    if models:
        from .lora import parse_lora_spec, read_adapter
        from .model_cost import check_models

        check_models(settings.where("base"), settings.where("upsampler"))
        for spec in settings.where("loras"):
            read_adapter(parse_lora_spec(spec).path)
    # a typo'd mode, whether or not W&B logs; WandB_Mode reads as wandb_mode
    options.wandb_mode = check_wandb_mode(options.wandb_mode)
    if options.dry_run:
        return
    if options.wandb_project:
        check_wandb(options.wandb_mode, options.wandb_project)  # not after every image
    if options.fid_reference:
        from .fid import INCEPTION_FEATURES, check_reference

        check_reference(str(options.fid_reference),
                        None if prompts is None else prompts * settings.n,
                        INCEPTION_FEATURES if options.fid_weights else None)


def continues(options: RunOptions, prior: dict[str, Any] | None, out: Path) -> bool:
    """Whether this run adds to images an earlier run made (--resume, or --skip-existing in
    a folder with a metadata.json and images: those it keeps, and those it would leave
    beside its own under other names, as with another --n, must share its settings)."""
    return options.resume or (options.skip_existing and prior is not None and any(
        p.name != GRID_FILE for p in out.glob("*.png")))


def check_continues(options: RunOptions, prior: dict[str, Any] | None, out: Path,
                    prompts: list[str], settings: EvalSettings, models: dict[str, Any],
                    header: dict[str, Any]) -> None:
    """Raise unless the earlier run made its images with these prompts (--resume),
    settings, models and schedule files (their sha256 in ``header``)."""
    schedules = {k: header[k] for k in SCHEDULE_KEYS.values() if k in header}
    if prior is not None and "plugins" in prior and prior["plugins"] != header["plugins"]:
        def code(plugins: list[str] | None) -> str:
            return ", ".join(plugins) if plugins else "glidectl's own samplers and schedules"

        flag = "--resume" if options.resume else "--skip-existing"
        raise GlidectlError(
            f"{str(out)!r} was made with {code(prior['plugins'])}, but this run would use "
            f"{code(header['plugins'])}, so {flag} would mix their images; install what it "
            "was made with, or pass a new --out.")
    _check_kernels(options, prior or {}, out, header)
    if options.resume:
        check_resume(prior, out, prompts, settings.fingerprint(), models, schedules,
                     settings.located())
    else:
        check_same_run(prior, out, settings.fingerprint(), models, schedules,
                       "--skip-existing", settings.located())
    _check_vocab(options, prior or {}, out, header)


def _check_kernels(options: RunOptions, prior: dict[str, Any], out: Path,
                   header: dict[str, Any]) -> None:
    """Raise when the images kept were made on another device type or with(out)
    torch.compile: kernels differ, so pixels do, and metadata.json records one of each."""
    def said(device: Any, compiled: Any) -> str:
        return f"{str(device).split(':')[0]}{' with --compile' if compiled else ''}"

    was = said(prior.get("device", header["device"]), prior.get("compile", header["compile"]))
    now = said(header["device"], header["compile"])
    if was != now:
        flag = "--resume" if options.resume else "--skip-existing"
        raise GlidectlError(
            f"{str(out)!r} was made on {was}, but this run would run on {now}; kernels and so "
            f"pixels differ, and {flag} would mix both in one folder; run it as it was made "
            "(--device, --compile), or pass a new --out.")


def _check_vocab(options: RunOptions, prior: dict[str, Any], out: Path,
                 header: dict[str, Any]) -> None:
    """Raise when the GPT-2 vocabulary differs from the one that made the images kept
    (runs from before it was recorded, and dry runs, which load none, are not checked)."""
    was, now = prior.get("vocab_sha256"), header.get("vocab_sha256")
    if not (was and now) or was == now:
        return
    flag = "--resume" if options.resume else "--skip-existing"
    here = f"in {header['vocab_dir']!r}" if header.get("vocab_dir") else "found by default"
    made = f"the one in {prior['vocab_dir']!r}" if prior.get("vocab_dir") else "the default one"
    raise GlidectlError(
        f"{flag}: the GPT-2 vocabulary {here} (sha256 {now[:12]}…) is not {made} that made "
        f"the images in {str(out)!r} (sha256 {was[:12]}…); pass --vocab-dir DIR with that "
        f"vocabulary, or {NEW_RUN}.")


def pinned_models(settings: EvalSettings, prior: dict[str, Any] | None
                  ) -> tuple[dict[str, Any], list[str]]:
    """For ``--resume``: the weights file of each model whose spec names another file now (a
    training run folder whose latest step moved on) while the file that made the images is
    still there unchanged (its recorded path and sha256), so the run goes on with it; under
    ``"loras"`` the same for LoRA adapters ({PATH as given: the adapter folder read}); and a
    note for each."""
    from .file_hashes import file_sha256
    from .glide.loading import resolve_spec

    pins: dict[str, Any] = {}
    recorded = (prior or {}).get("models") or {}
    pins["loras"], notes = _pinned_loras(recorded)
    for key, stage in (("base", "base"), ("upsampler", "upsample")):
        info, spec = recorded.get(stage) or {}, settings.where(key)
        path, sha = info.get("path"), info.get("sha256")
        if not (spec and isinstance(path, str) and isinstance(sha, str)):
            continue
        try:
            now = resolve_spec(spec, download=False)
        except GlidectlError:
            now = None
        if now is not None and now.resolve() == Path(path).resolve():
            continue
        if Path(path).is_file() and file_sha256(path) == sha:
            pins[key] = path
            notes.append(f"--resume: {spec!r} names other weights now; continuing with "
                         f"{path!r}, which made the images.")
    return pins, notes


def _pinned_loras(recorded: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    """{PATH as given: the adapter folder that made the images} for each LoRA whose PATH (a
    LoRA run whose latest step moved on) holds another adapter now while that folder still
    holds the recorded one (weights and settings), and a note for each."""
    from .lora import read_adapter

    pins, notes = {}, []
    for info in recorded.values():
        for lora in (info or {}).get("loras") or []:
            path, where = lora.get("path"), lora.get("dir")
            if not (isinstance(path, str) and isinstance(where, str) and lora.get("sha256")
                    and lora.get("config_sha256")):
                continue
            try:
                now, then = read_adapter(path), read_adapter(where)
            except GlidectlError:
                continue
            made = (lora["sha256"], lora["config_sha256"])
            if (now.sha256, now.config_sha256) != made and (
                    then.sha256, then.config_sha256) == made:
                pins[path] = where
                notes.append(f"--resume: LoRA {path!r} holds another adapter now; continuing "
                             f"with {where!r}, which made the images.")
    return pins, notes
