"""What decides an eval run's pictures: the settings, how flags, a model's recommendations and
a recorded run combine into them, and the check that ``--resume`` continues the same run.

Precedence: flags > (with ``--resume``) the run's recorded settings > the base model's
recommended sampling settings > built-in defaults. Under ``--resume`` a flag may only repeat
a recorded value; one that would change the images is a one-line error.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .devices import PRECISIONS, check_precision
from .errors import GlidectlError, cause, keyword_errors, keywords_named
from .sampling_defaults import (
    BASE_GUIDANCE,
    BASE_SAMPLER,
    BASE_STEPS,
    BATCH_SIZE,
    UPSAMPLE_SAMPLER,
    UPSAMPLE_STEPS,
    recommended_line,
    upsample_steps_for,
)

META_FILE = "metadata.json"
# flag → settings field (stage fields are "base_stage.sampler" and so on)
FLAG_NAMES = {
    "base": "--base", "upsampler": "--upsampler", "n": "--n", "batch_size": "--batch-size",
    "seed": "--seed", "rerank": "--rerank", "precision": "--precision", "loras": "--lora",
    "base_stage.sampler": "--sampler", "base_stage.steps": "--steps",
    "base_stage.guidance": "--guidance", "base_stage.schedule": "--schedule",
    "upsample_stage.sampler": "--upsample-sampler",
    "upsample_stage.steps": "--upsample-steps", "upsample_stage.guidance": "--upsample-guidance",
    "upsample_stage.schedule": "--upsample-schedule", "grey": "--grey",
}
# settings that may name files or folders: metadata.json records where those are ("paths"),
# so --resume and --skip-existing find them from any working directory
PATH_KEYS = ("base", "upsampler", "base_stage.schedule", "upsample_stage.schedule", "loras")


def _absolute(spec: str | None, schedule: bool = False, root: Path | None = None
              ) -> str | None:
    """The absolute path of a spec naming a file or folder that is there (None: a name such
    as ``openai:base`` or ``karras``, or nothing there); relative to ``root`` when given,
    else to the working directory."""
    from .samplers.tuned import is_schedule_file

    if not spec or (schedule and not is_schedule_file(spec)):
        return None
    path = Path(spec).expanduser()
    path = root / path if root is not None and not path.is_absolute() else path
    return str(path.resolve()) if path.exists() else None


def _absolute_lora(text: str, root: Path | None = None) -> str | None:
    from .lora.spec import parse_lora_spec

    spec = parse_lora_spec(text)
    path = _absolute(spec.path, root=root)
    return f"{path}:{spec.scale}" if path else None


def resolve_path(key: str, value: Any, root: Path | None = None) -> Any:
    """``value`` of setting ``key`` (:data:`PATH_KEYS`) with each spec naming a file or folder
    that is there (relative to ``root``, else the working directory) made absolute; other
    values as they are."""
    if key == "loras":
        return [_absolute_lora(t, root) or t for t in value or ()]
    return _absolute(value, key.endswith("schedule"), root) or value


#: how to leave a run that --resume / --skip-existing cannot take: a new folder (an eval
#: without either flag refuses one that holds files, so "drop --resume" leads nowhere)
NEW_RUN = "use another --out for a new run"


def recorded_vocab_dir(meta: dict[str, Any], out: Path) -> str | None:
    """The GPT-2 vocabulary folder the run in ``out`` recorded (None: the default one), for
    --resume; one sentence naming the record when it is no vocabulary folder now (gone,
    lacking its files, or holding files that are not GPT-2's)."""
    from .tokenizer import VocabFolderError, load_gpt2_encoding, vocab_folder_error

    folder = meta.get("vocab_dir")
    if not isinstance(folder, str):
        return None
    try:  # loaded once here: the pipeline's tokenizer reads it from the cache
        load_gpt2_encoding(folder)
    except VocabFolderError as exc:
        raise vocab_folder_error(
            folder, exc.problem, f"that the run in {str(out)!r} recorded ({META_FILE})",
            "pass --vocab-dir DIR with that vocabulary (GPT-2's encoder.json and vocab.bpe), "
            f"or {NEW_RUN}") from None
    return folder


def recorded_paths(meta: dict[str, Any], out: Path) -> dict[str, Any]:
    """Where the files a run's settings name are (metadata.json's ``paths``). A run recorded
    before glidectl kept them named its files relative to the folder it was started in: the
    folder its relative ``out`` leads from to ``out`` ({} when that cannot be told)."""
    if isinstance(meta.get("paths"), dict):
        return meta["paths"]
    recorded, settings = meta.get("out"), meta.get("settings")
    if not (isinstance(recorded, str) and isinstance(settings, dict)):
        return {}
    rel, here = Path(recorded), Path(out).resolve()
    if rel.is_absolute() or not rel.parts or ".." in rel.parts \
            or here.parts[-len(rel.parts):] != rel.parts:
        return {}
    start = here.parents[len(rel.parts) - 1]
    flat = _flat_dict(settings)
    paths = {}
    for key in PATH_KEYS:
        try:
            found = resolve_path(key, flat.get(key), start)
        except (GlidectlError, TypeError, ValueError):  # a damaged entry: compared as it is
            continue
        if found != flat.get(key):
            paths[key] = found
    return paths


def moved_model(key: str, recorded: Any, given: Any) -> bool:
    """Whether ``given`` (a --base or --upsampler path, made absolute) may stand for the model
    a run recorded at ``recorded``, which is not there any more (its training run moved or
    renamed): the weights' sha256, compared once loaded, tells whether it is the same."""
    return key in ("base", "upsampler") and isinstance(recorded, str) and \
        Path(recorded).expanduser().is_absolute() and isinstance(given, str) and \
        not _is_there(key, recorded) and _is_there(key, given)


def _is_there(key: str, value: Any) -> bool:
    from .lora.spec import parse_lora_spec

    specs = [parse_lora_spec(t).path for t in value] if key == "loras" else [value]
    return bool(value) and all(Path(p).exists() for p in specs)


@dataclass(frozen=True)
class Stage:
    """Sampling settings of one stage: sampler, steps (or a respacing like "fast27"),
    classifier-free guidance (None = off), and the step schedule (None = the sampler's own,
    recorded by name when the settings are made, so a resumed run keeps it even if a later
    release changes that sampler's own)."""

    sampler: str = BASE_SAMPLER
    steps: int | str = BASE_STEPS
    guidance: float | None = BASE_GUIDANCE
    schedule: str | None = None


def own_schedule(sampler: str) -> str:
    """The schedule a sampler uses when none is given (a plugin's bare function: karras)."""
    from . import plugins
    from .samplers.spec import as_sampler

    return as_sampler(plugins.samplers().get(sampler)).schedule


def schedule_before(sampler: str) -> str | None:
    """The schedule ``sampler`` used when none was given before 2026-12-01 (None: a sampler
    no loaded plugin registers): its own of now, except that the built-in samplers now on
    exponential σ's (dpm++2m, dpm++3m, unipc) were on karras."""
    from . import plugins

    if sampler not in plugins.samplers():
        return None
    own = own_schedule(sampler)
    builtin = plugins.samplers().entry(sampler).plugin == "glidectl.samplers.builtin"
    return "karras" if builtin and own == "exponential" else own


def _recorded_stage(data: dict[str, Any]) -> Stage:
    """A stage as metadata.json recorded it. Runs from before the schedule was recorded
    sampled on the sampler's own of that time (:func:`schedule_before`)."""
    data = dict(data)
    if "schedule" not in data and data.get("sampler"):
        data["schedule"] = schedule_before(data["sampler"])
    return stage_words(Stage(**data))


def stage_words(stage: Stage) -> Stage:
    """``stage`` with its sampler and schedule names as the registered names they are or
    alias (a run that recorded ``DDIM`` or ``dpm++`` resumes under ``--sampler ddim`` or
    ``dpm++2m``)."""
    return replace(stage, sampler=stage_name("sampler", stage.sampler),
                   schedule=stage_name("schedule", stage.schedule))


def stage_name(key: str, value: Any) -> Any:
    """A stage's ``sampler`` or ``schedule`` (``key``) as the name it is registered under
    (an alias as its name, any case as lower case); a schedule file, ``respaced`` and a name
    no plugin registers as :func:`glidectl.sampling.stage_word` gives them."""
    from . import plugins
    from .sampling import stage_word

    word = stage_word(key, value)
    registry = plugins.samplers() if key == "sampler" else plugins.schedules()
    return registry.entry(word).name if isinstance(word, str) and word in registry else word


UPSAMPLE_STAGE = Stage(UPSAMPLE_SAMPLER, UPSAMPLE_STEPS, None)


@dataclass
class EvalSettings:
    """Everything that decides the pictures (and so must match on ``--resume``).

    ``precision`` is the resolved word (fp32, bf16 or fp16), never ``auto``: a run resumed
    on another machine computes in the precision it started with.
    """

    base: str = "openai:base"
    upsampler: str | None = None
    base_stage: Stage = field(default_factory=Stage)
    upsample_stage: Stage = field(default_factory=lambda: UPSAMPLE_STAGE)
    n: int = 1
    batch_size: int = BATCH_SIZE
    seed: int = 0
    rerank: int = 0
    precision: str = "fp32"
    loras: tuple[str, ...] = ()
    grey: bool = False  # both stages draw grey pictures (x0 projected onto grey)
    # where a recorded run's files are (PATH_KEYS → absolute paths); not a setting
    paths: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @keyword_errors({flag: key for key, flag in FLAG_NAMES.items()})  # built by hand: fields
    def __post_init__(self) -> None:
        from .eval_setting_kinds import check_counts, check_stage, lora_specs, model_spec

        self.base = model_spec("--base", self.base, none_ok=False)
        self.upsampler = model_spec("--upsampler", self.upsampler)
        check_counts(self.n, self.batch_size, self.seed, self.rerank, self.grey)
        for key in ("base_stage", "upsample_stage"):
            check_stage(getattr(self, key), {f: FLAG_NAMES[f"{key}.{f}"] for f in (
                "sampler", "steps", "guidance", "schedule")}, key)
        self.loras = lora_specs(self.loras)
        if self.n < 1:
            raise GlidectlError(f"--n must be at least 1 (got {self.n}).")
        if self.batch_size < 1:
            raise GlidectlError(f"--batch-size must be at least 1 (got {self.batch_size}).")
        if self.rerank and self.rerank < self.n:
            raise GlidectlError(
                f"--rerank {self.rerank} must be at least --n {self.n} (it draws K candidates "
                "per prompt and keeps the best n)."
            )
        self.precision = check_precision(self.precision)
        if self.precision == "auto":
            raise GlidectlError("EvalSettings.precision must be resolved (fp32, bf16, fp16); "
                                f"use one of {', '.join(PRECISIONS[1:])}.")
        self.base_stage, self.upsample_stage = (
            stage if stage.schedule else replace(stage, schedule=own_schedule(stage.sampler))
            for stage in map(stage_words, (self.base_stage, self.upsample_stage)))

    @property
    def candidates(self) -> int:
        """Images drawn per prompt: K with --rerank K, else n."""
        return max(self.rerank, self.n)

    def stage_options(self) -> dict[str, Any]:
        """The pipeline's StageOptions of each stage (base, upsample) for these settings."""
        from .sampling import BASE_DEFAULTS, UPSAMPLE_DEFAULTS

        b, u = self.base_stage, self.upsample_stage
        return {"base": replace(BASE_DEFAULTS, sampler=b.sampler, steps=b.steps,
                                guidance=b.guidance, grey=self.grey,
                                schedule=self.where("base_stage.schedule")),
                "upsample": replace(UPSAMPLE_DEFAULTS, sampler=u.sampler, steps=u.steps,
                                    guidance=u.guidance, grey=self.grey,
                                    schedule=self.where("upsample_stage.schedule"))}

    def fingerprint(self) -> dict[str, Any]:
        """The settings as saved in metadata.json and compared on --resume."""
        d = asdict(self)
        del d["paths"]
        d["loras"] = list(self.loras)
        return d

    def where(self, key: str) -> Any:
        """What to load for setting ``key`` (:data:`PATH_KEYS`): the absolute path the run
        recorded while it is there, else the setting with a file it names here made
        absolute (a model or schedule name as it is)."""
        recorded = self.paths.get(key)
        if recorded and _is_there(key, recorded):
            return recorded
        return resolve_path(key, _flat(self)[key])

    def recorded_at(self, key: str) -> str | None:
        """The absolute path of the file or folder setting ``key`` names, as the run recorded
        it (None: a name such as ``openai:base``, or not told)."""
        value = self.paths.get(key) or _flat(self).get(key)
        return value if isinstance(value, str) and Path(value).expanduser().is_absolute() \
            else None

    def located(self) -> dict[str, Any]:
        """The absolute paths of the settings naming files or folders (metadata.json's
        ``paths``)."""
        flat = _flat(self)
        return {k: v for k in PATH_KEYS if (v := self.where(k)) != flat[k]}

    @classmethod
    def from_fingerprint(cls, data: dict[str, Any],
                         paths: dict[str, Any] | None = None) -> EvalSettings:
        """Settings as a run recorded them in metadata.json (``paths``: where its files
        were, for runs that recorded it)."""
        known = {f.name for f in fields(cls)} - {"paths"}
        values = {k: v for k, v in data.items() if k in known}
        for key in ("base_stage", "upsample_stage"):
            if isinstance(values.get(key), dict):
                values[key] = _recorded_stage(values[key])
        values["loras"] = tuple(values.get("loras") or ())
        return cls(**values, paths=dict(paths or {}))


def prompts_digest(prompts: list[str]) -> str:
    """sha256 of a run's prompts (metadata.json keeps long prompts only as excerpts)."""
    import hashlib

    return hashlib.sha256(json.dumps(prompts).encode()).hexdigest()


def _same(a: Any, b: Any) -> bool:
    return json.loads(json.dumps(a)) == json.loads(json.dumps(b))


def _flat(settings: EvalSettings) -> dict[str, Any]:
    return _flat_dict(settings.fingerprint())


def _flat_dict(fingerprint: dict[str, Any]) -> dict[str, Any]:
    """A fingerprint with its stage dicts spread out as ``base_stage.sampler`` and so on."""
    d = dict(fingerprint)
    for key in ("base_stage", "upsample_stage"):
        if isinstance(d.get(key), dict):
            for name, value in d.pop(key).items():
                d[f"{key}.{name}"] = value
    return d


def _apply(settings: EvalSettings, flat: dict[str, Any]) -> EvalSettings:
    top = {k: v for k, v in flat.items() if "." not in k}
    stages = {}
    for key in ("base_stage", "upsample_stage"):
        changes = {k.split(".", 1)[1]: v for k, v in flat.items() if k.startswith(key + ".")}
        if "sampler" in changes:  # another sampler: its own schedule, unless one is given
            changes.setdefault("schedule", None)
        if changes:
            stages[key] = replace(getattr(settings, key), **changes)
    return replace(settings, **top, **stages)


def resolve_settings(
    flags: dict[str, Any], precision: str | None, recommended: dict[str, Any] | None = None,
    recorded: dict[str, Any] | None = None, out: Path | None = None,
    paths: dict[str, Any] | None = None, upsampler_recommended: dict[str, Any] | None = None,
) -> tuple[EvalSettings, list[str]]:
    """The run's settings from the flags given (``{field: value}``, None = not given; keys
    as in :data:`FLAG_NAMES`), the resolved ``precision`` word (None: not given, for
    --resume), the base model's ``recommended`` sampling (and the upsampler's, whose
    ``grey`` makes both stages grey) and, for --resume, the ``recorded`` settings and
    ``paths``. Also notes."""
    given = {k: v for k, v in flags.items() if v is not None}
    if recorded is not None:
        try:
            with keywords_named():  # the file's keys, not flags no one passed
                settings = EvalSettings.from_fingerprint(recorded, paths)
        except (GlidectlError, TypeError, ValueError, AttributeError) as exc:
            meta = str(out / META_FILE) if out else META_FILE
            raise GlidectlError(f"{meta!r} records settings glidectl cannot take "
                                f"({cause(exc).rstrip('.')}), so it is not a metadata.json "
                                "glidectl wrote (damaged or edited); delete it or pick another "
                                "--out.") from None
        old = _flat(settings)
        if precision is not None:  # --precision given: it must resolve to the recorded one
            given["precision"] = precision
        for key, value in given.items():
            if key.endswith((".sampler", ".schedule")):  # an alias is the same setting
                value = stage_name(key.split(".")[1], value)
            if key == "upsampler":  # `none` and `auto` name what the run would use
                from .pipeline import resolve_upsampler

                if (resolved := resolve_upsampler(settings.base, value)) is None:
                    if old.get(key) is None:
                        continue
                else:
                    value = resolved
            if key in PATH_KEYS and _same(resolve_path(key, value), settings.where(key)):
                continue  # another spelling of the same file or folder
            if key in PATH_KEYS and moved_model(key, settings.recorded_at(key),
                                                resolve_path(key, value)):
                settings.paths[key] = resolve_path(key, value)  # its sha256 is checked later
                continue
            if key in old and not _same(old[key], value):
                given_flag = _given(key, value)
                raise GlidectlError(
                    f"--resume: {given_flag} would change the images of the run in "
                    f"{str(out)!r}, recorded with {_show(old[key])}; drop "
                    f"{given_flag.split()[0]} to continue it, or {NEW_RUN} with it."
                )
        for key in ("base", "upsampler"):
            if (at := settings.recorded_at(key)) and not _is_there(key, settings.where(key)):
                raise GlidectlError(
                    f"--resume: the model {at!r} ({FLAG_NAMES[key]}) that "
                    f"made the images in {str(out)!r} is not there (moved or deleted); pass "
                    f"its new path to {FLAG_NAMES[key]} (the same weights), or {NEW_RUN}.")
        return settings, [f"--resume: continuing with the settings recorded in "
                          f"{str(out / META_FILE) if out else META_FILE}."]
    notes = []
    used = {f"base_stage.{k}": v for k, v in (recommended or {}).items()
            if k in ("sampler", "steps", "schedule", "guidance")
            and f"base_stage.{k}" not in given}
    if "base_stage.sampler" in used:  # a plugin's, gone: not "Unknown sampler" for no flag
        from .pipeline_settings import check_recommended_sampler

        check_recommended_sampler(used["base_stage.sampler"])
    if (recommended or {}).get("grey") is True and "grey" not in given:
        used["grey"] = True
    if "base_stage.steps" not in given:  # a bespoke file's own count, as sample takes it
        _file_steps(given, used)
    # a grey-trained upsampler has seen only grey 64 px inputs: both stages draw grey
    up = {"grey": True} if "grey" not in (given | used) and (
        upsampler_recommended or {}).get("grey") is True else {}
    if used or up:
        def text(settings: dict[str, Any]) -> str:
            return ", ".join(k.split(".")[-1] if v is True else f"{k.split('.')[1]} {v}"
                             for k, v in settings.items())

        flags_text = " / ".join("--no-grey" if k == "grey" else FLAG_NAMES[k]
                                for k in {**used, **up})
        notes.append(recommended_line(text(used), text(up), flags_text))
    settings = _apply(EvalSettings(precision=precision),
                      {**used, **up, **given, "precision": precision})
    if "upsample_stage.steps" not in given:  # fast27 on respaced steps, else 27
        u = settings.upsample_stage
        settings.upsample_stage = replace(u, steps=upsample_steps_for(u.schedule))
    return settings, notes


def _file_steps(given: dict[str, Any], used: dict[str, Any]) -> None:
    """Set ``given``'s base steps to the count a bespoke schedule file holds coefficients
    for when no --steps was given and the recommended or default count is not among them
    (dropping the recommendation from ``used``); as ``sample`` and the UI pick it."""
    from .pipeline_settings import coefficient_file_steps

    merged = {**used, **given}
    steps = merged.get("base_stage.steps", BASE_STEPS)
    found = coefficient_file_steps(merged.get("base_stage.sampler", BASE_SAMPLER),
                                   merged.get("base_stage.schedule"), steps)
    if found != steps:
        used.pop("base_stage.steps", None)
        given["base_stage.steps"] = found


def _given(key: str, value: Any) -> str:
    """The flag that sets ``key`` to ``value``, as typed: ``--steps 50``, ``--no-grey``."""
    if isinstance(value, bool):
        return f"--{'' if value else 'no-'}{FLAG_NAMES.get(key, key).removeprefix('--')}"
    return f"{FLAG_NAMES.get(key, key)} {_show(value)}"


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "(none)"
    return "(none)" if value is None else str(value)


# metadata.json key of each stage's schedule file sha256
SCHEDULE_KEYS = {"base_stage": "schedule_sha256", "upsample_stage": "upsample_schedule_sha256"}


def schedule_digests(settings: EvalSettings) -> dict[str, str]:
    """sha256 of each stage's schedule file (a refit under the same name changes the images)
    by its metadata.json key (:data:`SCHEDULE_KEYS`); stages on a named schedule, and the
    upsample stage of a run without an upsampler, have none."""
    from .samplers.schedule_files import schedule_bytes
    from .samplers.tuned import is_schedule_file

    digests = {}
    for stage, key in SCHEDULE_KEYS.items():
        schedule = settings.where(f"{stage}.schedule")
        if (stage == "upsample_stage" and not settings.upsampler) or not (
                schedule and is_schedule_file(schedule)):
            continue
        try:
            digests[key] = hashlib.sha256(schedule_bytes(schedule)).hexdigest()
        except OSError as exc:
            raise GlidectlError(
                f"Cannot read schedule file {schedule!r} ({exc}); pass the file glidectl "
                "fit-steps wrote, or a schedule name.") from exc
    return digests


def check_resume(meta: dict[str, Any] | None, out: Path, prompts: list[str],
                 fingerprint: dict[str, Any], models: dict[str, Any],
                 schedules: dict[str, str] | None = None,
                 paths: dict[str, Any] | None = None) -> None:
    """Raise unless ``out`` holds an interrupted run with these prompts, settings (files at
    ``paths``), models and schedule file contents."""
    if meta is None:
        raise GlidectlError(
            f"--resume: {str(out)!r} has no {META_FILE}, so there is no run to continue; keep "
            "its images with --skip-existing instead of --resume, or pass another --out."
        )
    refuse_upsampler_eval(meta, out, "--resume")
    recorded = meta.get("prompts_sha256") or prompts_digest(meta.get("prompts") or [])
    if recorded != prompts_digest(prompts):
        raise GlidectlError(
            f"--resume: the prompts differ from the run in {str(out)!r}; use the same prompts "
            "file, or --skip-existing to reuse finished prompts."
        )
    check_same_run(meta, out, fingerprint, models, schedules or {}, "--resume", paths)


def check_plugins_loaded(meta: dict[str, Any] | None, out: Path, settings: EvalSettings
                         ) -> None:
    """--resume of a run on a sampler or schedule that no loaded plugin registers (its plugin
    uninstalled or left out): one sentence naming it and the plugins the run recorded, not
    "Unknown sampler 'x'. Did you mean ...?" of a flag no one passed."""
    from . import plugins
    from .samplers.tuned import is_schedule_file

    stages = ("base_stage", "upsample_stage") if settings.upsampler else ("base_stage",)
    for stage in stages:
        for key in ("sampler", "schedule"):
            name = getattr(getattr(settings, stage), key)
            registry = plugins.schedules() if key == "schedule" else plugins.samplers()
            if not isinstance(name, str) or name in registry or (
                    key == "schedule" and (name in plugins.RESERVED["schedule"]
                                           or is_schedule_file(name))):
                continue
            recorded = (meta or {}).get("plugins")
            made = f" of {', '.join(map(str, recorded))}" if isinstance(recorded, list) and \
                recorded else ""
            raise GlidectlError(
                f"--resume: the run in {str(out)!r} was made with the {key} {name!r}{made}, "
                "which no loaded plugin registers (not installed, or left out by "
                f"{plugins.ALLOW_ENV}); install it to continue the run, or {NEW_RUN}.")


def refuse_upsampler_eval(meta: dict[str, Any], out: Path, flag: str) -> None:
    """One sentence when ``out`` holds an upsampler eval (``eval --low-res``): a prompts
    eval neither continues nor reuses its images."""
    if meta.get("mode") == "upsampler":
        raise GlidectlError(
            f"{flag}: {str(out)!r} holds an upsampler eval (eval --low-res), whose images a "
            "prompts eval neither continues nor reuses; pass a new or empty --out.")


def check_same_run(meta: dict[str, Any], out: Path, fingerprint: dict[str, Any],
                   models: dict[str, Any], schedules: dict[str, str], flag: str,
                   paths: dict[str, Any] | None = None) -> None:
    """Raise unless the run recorded in ``meta`` used these settings (files at ``paths``, as
    :meth:`EvalSettings.located` gives them), models and schedule files (``schedules``, as
    :func:`schedule_digests` gives them): images ``flag`` keeps must be what the new
    metadata.json will say they are."""
    refuse_upsampler_eval(meta, out, flag)
    leave = NEW_RUN
    saved = {"grey": False, **meta.get("settings", {})}  # runs from before it: colour
    for key in ("base_stage", "upsample_stage"):
        if isinstance(saved.get(key), dict):
            saved[key] = asdict(_recorded_stage(saved[key]))
    old, new = _flat_dict(saved), _flat_dict(fingerprint)
    was = recorded_paths(meta, out)
    for key, value in new.items():
        if key in PATH_KEYS and _same(was.get(key, resolve_path(key, old.get(key))),
                                      (paths or {}).get(key, value)):
            continue  # the same file or folder, spelled from another working directory
        if key in PATH_KEYS and moved_model(key, was.get(key, old.get(key)),
                                            (paths or {}).get(key, value)):
            continue  # the model moved: its weights' sha256 is compared below
        if not _same(old.get(key), value):
            raise GlidectlError(
                f"{flag}: {_given(key, value)} differs from {_show(old.get(key))}, which made "
                f"the images in {str(out)!r}; pass the same options or {leave}."
            )
    for stage, key in SCHEDULE_KEYS.items():
        # runs from before the upsampler's file was hashed recorded only the base's
        if meta.get(key) != schedules.get(key) and (key in meta or stage == "base_stage"):
            raise GlidectlError(
                f"{flag}: the schedule file {fingerprint[stage]['schedule']!r} "
                f"({FLAG_NAMES[stage + '.schedule']}) changed since the run in "
                f"{str(out)!r}; {leave}, or restore the file.")
    for stage, info in models.items():
        old = meta.get("models", {}).get(stage, {}).get("sha256")
        if old != info.get("sha256"):
            raise GlidectlError(
                f"{flag}: the {stage} model's weights changed since the run in {str(out)!r} "
                f"(sha256 {str(old)[:12]} → {str(info.get('sha256'))[:12]}); {leave}."
            )
        # an adapter's weights, and its settings (lora_alpha, ...) where the run recorded them
        recorded = meta.get("models", {}).get(stage, {}).get("loras") or []
        settings = all(isinstance(lora, dict) and "config_sha256" in lora for lora in recorded)
        old_loras = [(lora.get("sha256"), lora.get("config_sha256")) if settings
                     else lora.get("sha256") for lora in recorded]
        new_loras = [(lora.get("sha256"), lora.get("config_sha256")) if settings
                     else lora.get("sha256") for lora in info.get("loras") or []]
        if "loras" in info and old_loras and new_loras and old_loras != new_loras:
            # the same paths (the flags matched above), other weights
            raise GlidectlError(
                f"{flag}: a LoRA adapter of the {stage} model changed since the run in "
                f"{str(out)!r} (the sha256 of its weights or settings differs); {leave}, or "
                "restore it.")
