"""glide.toml loaded, overridden, checked and saved; its schema (typed sections, defaults,
one-line docs) lives in :mod:`glidectl.config_schema` and is re-exported here.

Precedence: defaults < file < ``--set section.key=value`` < dedicated command-line flags.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import sys
import types
import typing
import unicodedata
from pathlib import Path
from typing import Any, Union

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

import tomli_w

from . import atomic
from .config_schema import (
    SECTIONS,
    WANDB_MODES,
    CheckpointConfig,
    DataConfig,
    GlideConfig,
    LogConfig,
    LoraConfig,
    ModelConfig,
    PreviewConfig,
    TrainConfig,
    ValidationConfig,
    opt,
    wandb_init_mode,
)
from .errors import ConfigError, GlidectlError, canonical_word, from_here, takes
from .toml_lines import key_lines

# The schema's names (config_schema) are re-exported: glidectl.config is its front door.
__all__ = ["SECTIONS", "WANDB_MODES", "CheckpointConfig", "DataConfig", "GlideConfig", "LogConfig",
           "LoraConfig", "ModelConfig", "PreviewConfig", "TrainConfig", "ValidationConfig",
           "describe", "from_dict", "is_saved_config", "load_config", "merge", "opt", "override",
           "pair_problem", "parse_override", "save_config", "to_dict", "to_toml", "validate",
           "wandb_init_mode"]


def _section_types() -> dict[str, type]:
    hints = typing.get_type_hints(GlideConfig)
    return {name: hints[name] for name in SECTIONS}


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if tp is list:
        return "list"
    return getattr(tp, "__name__", str(tp))


def _is_list(tp: Any) -> bool:
    return tp is list or typing.get_origin(tp) is list


def _check_value(key: str, tp: Any, value: Any, where: str, raw: str | None = None) -> Any:
    """``value`` checked (and an int made a float) for a key of type ``tp``; ``raw``: the
    value as typed after ``--set key=``, which the "quote it" hint repeats."""
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            raise ConfigError(f"{where}: '{key}' must be a finite number, got an integer of "
                              f"{len(str(abs(value)))} digits.") from None
    ok = (
        (tp is bool and isinstance(value, bool))
        or (tp is int and isinstance(value, int) and not isinstance(value, bool))
        or (tp is float and isinstance(value, float))
        or (tp is str and isinstance(value, str))
        or (_is_list(tp) and isinstance(value, list))
    )
    if not ok:
        # as typed in a shell for --set (the outer quotes keep the inner ones), else as in TOML
        text = f"'{raw}'" if raw is not None and "'" not in raw else \
            f"'{str(value).lower() if isinstance(value, bool) else value}'"
        quote = ("" if tp is not str or isinstance(value, list | dict)
                 else f"; quote it: --set \"{key}={text}\"" if where == "--set"
                 else f"; quote it: {text}")
        def write(how: str, text: str) -> str:  # the hint, as --set takes it or as TOML has it
            return (f"; {how}: --set {key}={text}" if where == "--set"
                    else f"; {how}: {key.split('.')[1]} = {text}")

        meant = {"true": "true", "yes": "true", "on": "true", "1": "true", "false": "false",
                 "no": "false", "off": "false", "0": "false"}.get(str(value).strip().lower())
        if tp is bool and isinstance(value, str | int) and meant:  # flip = True, yes, 1
            quote = write("write true or false", meant)
        if (number := _toml_number(tp, value)) is not None:  # lr = .1 or 1.: not TOML
            quote = write("write it as TOML does", number)
        if _unquoted(tp, value) is not None:  # batch_size = "32"
            quote = write("drop the quotes", value.strip())
        if tp is int and isinstance(value, float) and value.is_integer() and abs(value) < 1e18:
            whole = int(value)  # steps = 1e3 or 1000.0: a float in TOML and in --set
            quote = write("write it whole", str(whole))
        if typing.get_args(tp) == (str,) and isinstance(value, str):  # a list of one
            listed = f"[{override('v', value).removeprefix('v=')}]"
            quote = (f"; write a list: {key.split('.')[1]} = {listed}" if where != "--set"
                     else f"; write a list: --set '{key}={listed}'" if "'" not in listed
                     else f"; write a list: {key}={listed}")
        raise ConfigError(
            f"{where}: '{key}' must be {_type_name(tp)}, got {value!r} "
            f"({type(value).__name__}){quote}."
        )
    item = typing.get_args(tp)[0] if typing.get_origin(tp) is list else None
    for i, v in enumerate(value if item else ()):
        if not isinstance(v, item):
            raise ConfigError(
                f"{where}: '{key}' must be {_type_name(tp)}, but item {i + 1} is {v!r} "
                f"({type(v).__name__}); quote it: [\"...\"].")
    return value


def _unquoted(tp: Any, value: Any) -> Any:
    """What text ``value`` reads as without its quotes when that is what a number or
    boolean key ``tp`` takes (``"32"`` for an int key: 32), else None."""
    if tp not in (int, float, bool) or not isinstance(value, str) or "\n" in value:
        return None
    try:
        read = tomllib.loads(f"v = {value.strip()}")["v"]
    except (tomllib.TOMLDecodeError, ValueError):
        return None
    fits = isinstance(read, bool) if tp is bool else (
        isinstance(read, tp if tp is int else int | float) and not isinstance(read, bool))
    return read if fits else None


def _toml_number(tp: Any, value: Any) -> str | None:
    """How TOML writes the number that text ``value`` spells as Python does but TOML does not
    (``.1``: ``0.1``, ``1.``: ``1.0``) when that number fits a number key ``tp``, else None."""
    if tp not in (int, float) or not isinstance(value, str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    if not math.isfinite(number) or (tp is int and not number.is_integer()):
        return None
    return str(int(number)) if tp is int else repr(number)


def _utf8(text: str) -> bool:
    """Whether ``text`` is UTF-8 text (a shell argument or path of other bytes reaches Python
    as lone surrogates, which no file can hold)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _nearest(name: str, options: list[str], prefix: str = "", what: str = "keys") -> str:
    """' Did you mean ...?' with the option closest to ``name`` (in any case: 'LR' → 'lr'),
    else the valid options."""
    close = [o for o in options if o.lower() == name.lower()] or difflib.get_close_matches(
        name, options, n=1, cutoff=0.6)
    if close:
        return f" Did you mean '{prefix}{close[0]}'?"
    return f" Valid {what}: {', '.join(prefix + o for o in options)}."


# What other trainers (diffusers, kohya, guided-diffusion) call a key: the spelling closest
# to these names is often another key ('image_size' → min_image_size, 'save_steps' → steps).
KNOWN_AS = {
    "learning_rate": "train.lr", "max_train_steps": "train.steps",
    "num_train_epochs": "train.epochs", "gradient_accumulation_steps": "train.grad_accum",
    "max_grad_norm": "train.grad_clip", "ema": "train.ema_decay", "use_ema": "train.ema_decay",
    "ema_rate": "train.ema_decay", "image_size": "data.resolution",
    "random_flip": "data.flip", "center_crop": "data.random_crop",
    "train_data_dir": "data.source", "data_dir": "data.source", "dataset": "data.source",
    "caption_dropout_rate": "data.uncond_p", "dataloader_num_workers": "data.workers",
    "save_steps": "checkpoint.every", "checkpointing_steps": "checkpoint.every",
    "save_every": "checkpoint.every", "save_total_limit": "checkpoint.keep_last",
    "checkpoints_total_limit": "checkpoint.keep_last", "model_type": "model.kind",
    "type": "model.kind", "pretrained_model_name_or_path": "model.init",
    "num_inference_steps": "preview.steps", "validation_prompt": "preview.prompts",
    "validation_prompts": "preview.prompts", "network_dim": "lora.rank",
    "lora_rank": "lora.rank", "network_alpha": "lora.alpha", "lora_alpha": "lora.alpha",
    "report_to": "log.trackers",
}


# Keys an earlier version read, since removed (2026-11-30: measured on the quickstart, each
# hurt colour): the value that did nothing, which a run's config.toml of that time holds.
REMOVED_KEYS: dict[str, Any] = {"train.mean_loss_weight": 0.0, "train.t_sampling": "uniform"}


def _removed(dotted: str, value: Any, here: str) -> bool:
    """Whether ``dotted`` is a removed key at the value that did nothing (skipped); one
    sentence for one set to anything else."""
    if dotted not in REMOVED_KEYS:
        return False
    off = REMOVED_KEYS[dotted]
    if value == off and not isinstance(value, bool):
        return True
    raise ConfigError(f"{here}: '{dotted}' was removed on 2026-11-30 (measured on the "
                      "quickstart, it hurt colour); delete it: glidectl trains as with "
                      f"{dotted} = {off!r} did.")


def _elsewhere(key: str) -> str | None:
    """The hint for a key of other sections ('resolution' → data.resolution) or another
    trainer's name for a key ('learning_rate' → train.lr), else None."""
    homes = [f"'{s}.{key}'" for s, cls in _section_types().items() if key in _field_types(cls)]
    if not homes and key.lower() in KNOWN_AS:
        homes = [f"'{KNOWN_AS[key.lower()]}'"]
    if not homes:
        return None
    return f" Did you mean {' or '.join(homes)}?"


def from_dict(data: dict[str, Any], where: str = "config") -> GlideConfig:
    """Build and validate a config from nested dicts (TOML tables)."""
    if not isinstance(data, dict):
        raise takes("from_dict()", "a dict of sections such as {'train': {'lr': 1e-4}}", data)
    cfg = GlideConfig()
    merge(cfg, data, where)
    return cfg


def merge(cfg: GlideConfig, data: dict[str, Any], where: str,
          raw: str | None = None, lines: dict[tuple[str, ...], int] | None = None
          ) -> GlideConfig:
    """Apply nested ``data`` onto ``cfg`` with full key and type checking (``raw``: one
    ``--set`` value as typed; ``lines``: each key's line in the file ``where`` names, which
    its errors then say as ``FILE:LINE``)."""
    section_types = _section_types()
    for sec_name, sec_values in data.items():
        here = _at(where, lines, sec_name)
        if not isinstance(sec_name, str):  # a dict built in code: {1: {...}}
            raise ConfigError(f"{here}: section names are text, got {sec_name!r:.40} "
                              f"({type(sec_name).__name__}); use one of {', '.join(SECTIONS)}.")
        if sec_name not in section_types:
            raise ConfigError(f"{here}: unknown section '{sec_name}'." + (
                _elsewhere(sec_name) or _nearest(sec_name, list(SECTIONS), what="sections")))
        if not isinstance(sec_values, dict):
            raise ConfigError(f"{here}: '{sec_name}' must be a table like [{sec_name}].")
        section = getattr(cfg, sec_name)
        ftypes = _field_types(type(section))
        for key, value in sec_values.items():
            if not isinstance(key, str):
                raise ConfigError(f"{here}: '{sec_name}' keys are text, got {key!r:.40} "
                                  f"({type(key).__name__}).")
            value = _plain(value)
            dotted, here = f"{sec_name}.{key}", _at(where, lines, sec_name, key)
            if key not in ftypes and _removed(dotted, value, here):
                continue
            if key not in ftypes:
                raise ConfigError(f"{here}: unknown key '{dotted}'." + (
                    _elsewhere(key) or _nearest(key, list(ftypes), f"{sec_name}.")))
            value = _check_value(dotted, ftypes[key], value, here, raw)
            texts = [v for v in (value if isinstance(value, list) else [value])
                     if isinstance(v, str)]
            if any("\x00" in v for v in texts):
                raise ConfigError(f"{here}: '{dotted}' holds a NUL character (\\u0000), which "
                                  "no path, name or text may hold; remove it.")
            if bad := next((v for v in texts if not _utf8(v)), None):
                raise ConfigError(f"{here}: '{dotted}' holds bytes that are not UTF-8 text "
                                  f"({ascii(bad)[1:-1]:.60}), which no run folder can record; "
                                  "rename the file or folder, or pass UTF-8 text.")
            meta = _field(type(section), key).metadata
            if meta.get("name_like") and (bad := _control_character(value)):
                raise ConfigError(f"{here}: '{dotted}' holds a control character ({bad}), "
                                  "which a name may not hold (it garbles folder names and "
                                  "terminal output); remove it.")
            choices = meta.get("choices")
            value = canonical_word(value, choices or ())
            if meta.get("words") and isinstance(value, list):
                value = [canonical_word(v, meta["words"]) for v in value]
            problem = meta["range"].problem(value) if meta.get("range") else None
            if not problem and meta.get("pair"):
                problem = pair_problem(value)
            if problem:
                raise ConfigError(f"{here}: '{dotted}' {problem}.")
            if choices and value not in choices:
                raise ConfigError(
                    f"{here}: '{dotted}' must be one of {', '.join(map(str, choices))}; "
                    f"got {value!r}."
                )
            _run_check(meta.get("check"), value, here)
            setattr(section, key, value)
    return cfg


def _plain(value: Any) -> Any:
    """A numpy number (``np.int64(10)``, ``np.float32(1e-3)``) as Python's own; anything
    else as it is."""
    if type(value).__module__ == "numpy" and callable(getattr(value, "item", None)):
        return value.item()
    return value


def _at(where: str, lines: dict[tuple[str, ...], int] | None, *path: str) -> str:
    """``where`` with the line ``path`` is on (``glide.toml:14``) when ``lines`` knows it."""
    line = (lines or {}).get(path)
    return where if line is None else f"{where}:{line}"


def _run_check(check: Any, value: Any, where: str) -> None:
    """A key's own check (:func:`~glidectl.config_schema.opt`'s ``check``), its sentence
    said as the config's other errors are, after ``where``."""
    if check is None:
        return
    try:
        check(value)
    except GlidectlError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def validate(cfg: GlideConfig, where: str = "config") -> None:
    """Check a config changed in code (``cfg.train.lr = ...``) as a file is checked: each
    value's type and range, and no attribute that is not a key (a typo such as
    ``cfg.train.learning_rate``, or ``cfg.trian``, which would otherwise be ignored). A path
    given as a ``Path`` and a numpy number are taken as the text and number they are, and
    each value is then kept as a file's would be (a choice word in lower case, an int of a
    float key as a float)."""
    sections = _section_types()
    for name in vars(cfg):
        if name not in sections:
            raise ConfigError(f"{where}: unknown section '{name}'." + (
                _elsewhere(name) or _nearest(name, list(sections), what="sections")))
    for sec_name, sec_type in sections.items():
        section = getattr(cfg, sec_name)
        if not isinstance(section, sec_type):
            raise ConfigError(f"{where}: '{sec_name}' must be a {sec_type.__name__}, got "
                              f"{type(section).__name__}; change its keys instead "
                              f"(cfg.{sec_name}.KEY = ...).")
        fields = _field_types(type(section))
        for key, value in vars(section).items():
            if key not in fields:
                raise ConfigError(f"{where}: unknown key '{sec_name}.{key}'." + (
                    _elsewhere(key) or _nearest(key, list(fields), f"{sec_name}.")))
            if fields[key] is str and isinstance(value, os.PathLike):
                setattr(section, key, os.fspath(value))  # saved as the text it is
            elif _plain(value) is not value:
                setattr(section, key, _plain(value))  # np.float32(1e-3): a float
    checked = merge(GlideConfig(), to_dict(cfg), where)
    for sec_name in sections:  # as a file's values are kept: "Base" → "base", lr = 1 → 1.0
        for key, value in vars(getattr(checked, sec_name)).items():
            setattr(getattr(cfg, sec_name), key, value)


def _control_character(value: Any) -> str | None:
    """The first control character (Unicode category Cc) in a text value, as ``\\uXXXX``."""
    if not isinstance(value, str):
        return None
    found = next((c for c in value if unicodedata.category(c) == "Cc"), None)
    return None if found is None else f"\\u{ord(found):04x}"


def pair_problem(value: Any) -> str | None:
    """None when ``value`` is ``[min, max]``: two numbers, min <= max (what training needs)."""
    if not isinstance(value, list | tuple) or len(value) != 2 or any(
            isinstance(v, bool) or not isinstance(v, int | float) for v in value):
        return f"must be a list of two numbers [min, max]; got {value!r}"
    if value[0] > value[1]:
        return f"must be [min, max] with min <= max; got {value!r}"
    return None


def _field(cls: type, name: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(cls) if f.name == name)


def parse_override(item: str) -> dict[str, Any]:
    """``a.b=value`` → ``{"a": {"b": value}}`` (``a={b=value, ...}`` too, as in TOML); the
    value is read as TOML, else as a string (unless it starts like TOML text, a list or a
    table: then it is an error)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. train.lr=1e-5.")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    table = len(parts) == 1 and raw.strip().startswith("{")  # TOML's section = {k = v, ...}
    if not all(parts) or not (table or len(parts) == 2):
        home = _elsewhere(parts[0]) if len(parts) == 1 and parts[0] else None  # steps=3
        hint = home or (", e.g. train.lr (or a section set to a table, e.g. "
                        "'data={source=\"x\", flip=true}').")
        raise ConfigError(f"--set {item!r}: the key must be section.key{'.' if home else ''}"
                          + hint)
    try:
        doc = tomllib.loads(f"v = {raw.strip()}")
        value = doc["v"]
    except tomllib.TOMLDecodeError as exc:
        if raw.strip()[:1] in ("'", '"', "[", "{"):  # meant as TOML: never keep its quotes
            raise ConfigError(
                f"--set {item!r}: the value is not valid TOML ({_without_position(exc)}); "
                "write text as '...' (taken as is) or \"...\" (with \\\\ for a backslash)."
            ) from None
        doc, value = {"v": raw.strip()}, raw.strip()
    except ValueError:  # an integer of thousands of digits
        raise ConfigError(f"--set {item[:60]!r}...: the number has more digits than any "
                          "setting takes; pass a number within the key's range.") from None
    if len(doc) > 1:  # "5\nlr=3": the line after the break would be dropped
        raise ConfigError(f"--set {item!r}: the value holds more than one TOML value (a line "
                          "break in it); pass one value per --set.")
    return {parts[0]: value} if table else {parts[0]: {parts[1]: value}}


def override(key: str, value: Any) -> str:
    """The ``--set`` item that sets ``key`` to exactly ``value`` (a string quoted as TOML, so
    backslashes and quotes in it survive)."""
    return f"{key}={_dumps({'v': value}).removeprefix('v = ').strip()}"


def _without_position(exc: Exception) -> str:
    """tomllib's message without "(at line 1, column N)", which counts in our wrapper."""
    return str(exc).split(" (at ", 1)[0]


def load_config(
    path: str | Path | None = None, overrides: str | list[str] | None = None
) -> GlideConfig:
    """Defaults, then the TOML file, then ``--set`` overrides (``"section.key=value"``
    items; one such string alone is one override)."""
    if isinstance(overrides, str):  # not its characters, one by one
        overrides = [overrides]
    if path is not None and not isinstance(path, str | os.PathLike):
        raise takes("load_config()", "a glide.toml's path (or None: the defaults)", path)
    if overrides is not None and (not isinstance(overrides, list | tuple) or not all(
            isinstance(item, str) for item in overrides)):
        raise takes("load_config(overrides=...)", "a 'section.key=value' string or a list of "
                    "them, as --set takes them", overrides)
    cfg = GlideConfig()
    if path is not None:
        p = Path(path)
        text = _read_toml_text(p)
        merge(cfg, _parse_toml(p, text), str(p), lines=key_lines(text))
    for item in overrides or []:
        key, _, raw = item.partition("=")
        merge(cfg, parse_override(item), "--set", raw.strip() if "." in key else None)
    return cfg


CONFIG_LIMIT = 16 << 20  # bytes: a glide.toml is a few kB


def _read_toml_text(p: Path) -> str:
    """The text of the TOML file at ``p``; a folder, a missing or unreadable file is a
    ConfigError."""
    if p.is_dir():
        inside = next((p / n for n in ("glide.toml", "config.toml") if (p / n).is_file()),
                      None)  # config.toml: a run folder's saved config
        hint = f"e.g. {str(inside)!r}" if inside else "e.g. glide.toml"
        raise ConfigError(
            f"Config file {str(p)!r} is a folder; pass a .toml file instead ({hint})."
        )
    if not p.exists():
        raise ConfigError(
            f"Config file {str(p)!r}{from_here(p)} does not exist; pass an existing .toml "
            "file."
        )
    try:  # a pipe (--config <(...)) reads too; Notepad's byte-order mark is dropped
        with p.open("rb") as f:
            raw = f.read(CONFIG_LIMIT + 1)  # /dev/zero, or a disk image: not read to the end
        if len(raw) > CONFIG_LIMIT:
            raise ConfigError(f"Config file {str(p)!r} is over {CONFIG_LIMIT >> 20} MiB, far "
                              "more than any glide.toml (a device, or another kind of file); "
                              "pass a .toml file.")
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: is not UTF-8 text; save it as a UTF-8 TOML file.") from None
    except PermissionError:
        raise ConfigError(
            f"Config file {str(p)!r} cannot be read (permission denied); make it readable "
            "by this user or copy it somewhere that is."
        ) from None
    except OSError as exc:  # an I/O error, a pipe already read
        raise ConfigError(f"Config file {str(p)!r} cannot be read ({exc.strerror}); check "
                          "that it is a readable file.") from None


def _parse_toml(p: Path, text: str) -> dict[str, Any]:
    """The TOML ``text`` of the file ``p`` parsed; bad TOML is a ConfigError."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}.") from None
    except ValueError:  # an integer of thousands of digits
        raise ConfigError(f"{p}: a number in it has more digits than any setting takes; "
                          "write a number within the key's range.") from None


def to_dict(cfg: GlideConfig) -> dict[str, Any]:
    """The config as nested dicts, section by section (:func:`from_dict` reads them back)."""
    return dataclasses.asdict(cfg)


_SCALAR_ARRAY = re.compile(r'\[\n((?: {4}(?:"(?:[^"\\\n]|\\.)*"|[^\[\]"\n]+),\n)+)\]')


def _dumps(data: dict[str, Any]) -> str:
    """TOML as tomli_w writes it, with arrays of scalars on one line (``[1.0, 1.0]``, not
    one element a line) where the array stays within 80 characters."""

    def inline(m: re.Match) -> str:
        one = "[" + ", ".join(e.strip().removesuffix(",") for e in m[1].split("\n")[:-1]) + "]"
        return one if len(one) <= 80 else m[0]

    return _SCALAR_ARRAY.sub(inline, tomli_w.dumps(data))


def to_toml(cfg: GlideConfig) -> str:
    """Serialise a config; ``from_dict(tomllib.loads(to_toml(c))) == c``."""
    return _dumps(to_dict(cfg))


def save_config(cfg: GlideConfig, path: str | Path) -> None:
    """Write ``cfg`` as TOML atomically: a kill mid-write keeps the previous file whole."""
    atomic.write_text(path, to_toml(cfg))


def is_saved_config(path: str | Path) -> bool:
    """True when ``path`` is laid out as :func:`save_config` writes a config (no comments,
    its serialiser's order and spacing; an earlier release's keys too, and its arrays one
    element a line): a run's own config.toml, not a file of the user's kept in the run
    folder). It holds every section a resolved config has always held: a short file of the
    user's in the serialiser's layout (``[train]`` / ``steps = 1``) is not one."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        data = tomllib.loads(text)
        resolved = all(isinstance(data.get(name), dict) for name in ("model", "data", "train"))
        return resolved and text in (_dumps(data), tomli_w.dumps(data))
    except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError, TypeError, ValueError):
        return False


def describe() -> list[tuple[str, str, Any, str, str]]:
    """Every key as (dotted key, type, default, doc, allowed values), for ``config keys``."""
    rows = []
    for sec_name, sec_cls in _section_types().items():
        ftypes = _field_types(sec_cls)
        defaults = sec_cls()
        for f in dataclasses.fields(sec_cls):
            rng, choices = f.metadata.get("range"), f.metadata.get("choices")
            allowed = rng.describe() if rng else ", ".join(map(str, choices or ()))
            rows.append(
                (f"{sec_name}.{f.name}", _type_name(ftypes[f.name]),
                 getattr(defaults, f.name), f.metadata["doc"], allowed)
            )
    return rows
