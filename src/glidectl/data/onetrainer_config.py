"""OneTrainer's concepts file (its ``concept_file_name``, e.g. ``training_concepts/
concepts.json``): a JSON list of concept objects, each an image folder with its balancing,
loss weight and ``image`` and ``text`` options.

The field names, defaults and meanings are those of OneTrainer's
``modules/util/config/ConceptConfig.py`` (with its migrations: an old ``repeats`` is
``balancing``, an old ``validation_concept`` is ``type`` VALIDATION), its enums
``ConceptType`` and ``BalancingStrategy``, and the mgds pipeline modules OneTrainer reads
concepts with (``CollectPaths``, ``ShuffleTags``, ``DropTags``, ``DiskCache``). A relative
``path`` or ``prompt_path`` is read from the concepts file's folder (OneTrainer reads it
from the folder it runs in), so the file may travel with its images.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import GlidectlError
from .config_text import parse_json, read_text, wrong_kind
from .sample_rules import SampleRules

TYPES = ("STANDARD", "VALIDATION", "PRIOR_PREDICTION")
STRATEGIES = ("REPEATS", "SAMPLES")
PROMPT_SOURCES = ("sample", "concept", "filename")
MAX_BALANCING = 1_000_000  # repeats or samples per epoch: far beyond any real count

# the keys glidectl applies: (type, OneTrainer's default)
CONCEPT: dict[str, tuple[type, Any]] = {
    "name": (str, ""), "path": (str, ""), "enabled": (bool, True), "type": (str, "STANDARD"),
    "include_subdirectories": (bool, False), "balancing": (float, 1.0),
    "balancing_strategy": (str, "REPEATS"), "loss_weight": (float, 1.0),
}
IMAGE: dict[str, tuple[type, Any]] = {
    "enable_random_flip": (bool, True), "enable_crop_jitter": (bool, True),
}
TEXT: dict[str, tuple[type, Any]] = {
    "prompt_source": (str, "sample"), "prompt_path": (str, ""),
    "enable_tag_shuffling": (bool, False), "tag_delimiter": (str, ","),
    "keep_tags_count": (int, 1), "tag_dropout_enable": (bool, False),
    "tag_dropout_mode": (str, "FULL"), "tag_dropout_probability": (float, 0.0),
    "tag_dropout_special_tags_mode": (str, "NONE"),
}
# bookkeeping OneTrainer writes into every concept: nothing to apply, nothing to say
# (``seed``, random in every concept it writes, only keys its disk cache and labels a
# concept's validation loss; mgds draws augmentations from the run's seed, as glidectl does)
QUIET = ("__version", "concept_stats", "validation_concept", "repeats", "seed")
COLOUR = "no colour jitter"
# keys glidectl does not apply: (what it uses instead, the value at which they change nothing)
IGNORED: dict[str, tuple[str, Any]] = {
    "image_variations": ("fresh augmentation every draw", 1),
    "text_variations": ("a fresh caption draw every read", 1),
    "image.enable_fixed_flip": ("image.enable_random_flip, data.flip", False),
    "image.enable_random_rotate": ("no rotation", False),
    "image.enable_fixed_rotate": ("no rotation", False),
    "image.enable_random_brightness": (COLOUR, False),
    "image.enable_fixed_brightness": (COLOUR, False),
    "image.enable_random_contrast": (COLOUR, False),
    "image.enable_fixed_contrast": (COLOUR, False),
    "image.enable_random_saturation": (COLOUR, False),
    "image.enable_fixed_saturation": (COLOUR, False),
    "image.enable_random_hue": (COLOUR, False),
    "image.enable_fixed_hue": (COLOUR, False),
    "image.enable_resolution_override": ("data.resolution", False),
    "image.enable_random_circular_mask_shrink": ("no masked training", False),
    "image.enable_random_mask_rotate_crop": ("no masked training", False),
    "text.caps_randomize_enable": ("captions as written", False),
}
TAG_DROPOUT = ("text.tag_dropout_enable", "glidectl drops tags only in tag_dropout_mode "
               "RANDOM with tag_dropout_special_tags_mode NONE, each tag alone")
# the strengths and settings that belong to a switch above: quiet while it is off
SETTINGS = ("random_rotate_max_angle", "random_brightness_max_strength",
            "random_contrast_max_strength", "random_saturation_max_strength",
            "random_hue_max_strength", "resolution_override", "caps_randomize_probability",
            "caps_randomize_mode", "caps_randomize_lowercase", "tag_dropout_special_tags",
            "tag_dropout_special_tags_regex")
KNOWN = {"": (*CONCEPT, *QUIET, "image", "text", *(k for k in IGNORED if "." not in k)),
         # OneTrainer writes "__version" into each nested config too (BaseConfig.to_dict)
         "image": (*IMAGE, *(k[6:] for k in IGNORED if k.startswith("image.")), *SETTINGS,
                   "__version"),
         "text": (*TEXT, *(k[5:] for k in IGNORED if k.startswith("text.")), *SETTINGS,
                  "__version")}


@dataclass
class ConceptSpec:
    """One concept with its options resolved (OneTrainer's defaults where not given)."""

    index: int  # 1-based, in file order: its units are "index/relative path"
    name: str
    path: Path | None
    path_text: str  # as written, for messages and tables
    enabled: bool
    type: str
    include_subdirectories: bool
    balancing: float
    strategy: str
    loss_weight: float
    prompt_source: str
    prompt_path: Path | None
    rules: SampleRules

    @property
    def where(self) -> str:
        return f"concept {self.index}" + (f" ({self.name!r})" if self.name else "")

    def read_as(self, types: tuple[str, ...]) -> bool:
        """Whether it is enabled and of one of ``types``: OneTrainer's training data loader
        reads STANDARD and PRIOR_PREDICTION concepts, its validation one VALIDATION ones
        (``DataLoaderMgdsMixin._create_mgds``)."""
        return self.enabled and self.type in types

    def per_epoch(self, images: int) -> int:
        """Reads per epoch of a concept of ``images`` images, as OneTrainer's mgds counts
        them (``DiskCache``): floor(images × balancing) with REPEATS, int(balancing) with
        SAMPLES."""
        if self.strategy == "SAMPLES":
            return int(self.balancing)
        return int(math.floor(images * self.balancing))


@dataclass
class ConceptsFile:
    """The concepts of a OneTrainer concepts file, and what glidectl does not apply."""

    path: Path
    concepts: list[ConceptSpec] = field(default_factory=list)
    ignored: dict[str, str] = field(default_factory=dict)  # key or type → what instead
    unknown: list[str] = field(default_factory=list)

    def notes(self) -> list[str]:
        """One warning for the keys and types that change nothing here, one for unknown
        keys."""
        out = []
        name = repr(str(self.path))
        if self.ignored:
            keys = "; ".join(f"{k} ({v})" for k, v in self.ignored.items())
            out.append(f"{name}: glidectl does not apply these OneTrainer settings (what it "
                       f"does instead in brackets): {keys}.")
        if self.unknown:
            many = len(self.unknown) != 1
            out.append(f"{name}: {', '.join(self.unknown)} "
                       f"{'are not keys' if many else 'is not a key'} of OneTrainer's "
                       f"concepts that glidectl knows, and {'are' if many else 'is'} ignored.")
        return out


def read_concepts(path: str | Path) -> ConceptsFile:
    """Parse and check the concepts file at ``path`` (its folders are not looked at)."""
    path = Path(path)
    name = repr(str(path))
    raw = parse_json(read_text(path, "OneTrainer's concepts file (the .json file of its "
                                     "concepts list)"), path)
    if isinstance(raw, dict) and "datasets" in raw:
        raise GlidectlError(f"{name} holds kohya's dataset config, not OneTrainer's list of "
                            f"concepts; pass it as kohya:{path} (or without a prefix).")
    if not isinstance(raw, list) or not raw:
        what = "an empty list" if raw == [] else f"a JSON {type(raw).__name__}"
        raise GlidectlError(f"{name} holds {what}, not a list of concepts; write OneTrainer's "
                            "concepts file ([{\"name\": ..., \"path\": ...}, ...]).")
    out = ConceptsFile(path)
    for i, concept in enumerate(raw, start=1):
        if not isinstance(concept, dict):
            raise GlidectlError(f"{name}: concept {i} is {concept!r}, not an object; write "
                                "it as {\"name\": ..., \"path\": ...}.")
        out.concepts.append(_concept(out, i, concept))
    return out


def _concept(out: ConceptsFile, index: int, raw: dict[str, Any]) -> ConceptSpec:
    label = raw.get("name")
    where = f"{str(out.path)!r}: concept {index}" + (
        f" ({label!r})" if isinstance(label, str) and label else "")
    raw = _migrated(raw)
    image = _table(raw.get("image", {}), where, "image")
    text = _table(raw.get("text", {}), where, "text")
    for prefix, table in (("", raw), ("image", image), ("text", text)):
        _check_keys(out, table, prefix, where)

    def get(table: dict[str, Any], key: str, spec: dict[str, tuple[type, Any]],
            shown: str) -> Any:
        value = table.get(key)
        if value is None:
            return spec[key][1]
        return _checked(value, spec[key][0], shown, where)

    c = {k: get(raw, k, CONCEPT, k) for k in CONCEPT}
    im = {k: get(image, k, IMAGE, f"image.{k}") for k in IMAGE}
    tx = {k: get(text, k, TEXT, f"text.{k}") for k in TEXT}
    _choice(c["type"], TYPES, "type", where)
    _choice(c["balancing_strategy"], STRATEGIES, "balancing_strategy", where)
    _choice(tx["prompt_source"], PROMPT_SOURCES, "text.prompt_source", where)
    for key, value, top in (("balancing", c["balancing"], MAX_BALANCING),
                            ("loss_weight", c["loss_weight"], 1000)):
        if not 0 <= value <= top:
            raise GlidectlError(f"{where}: {key} must be between 0 and {top}, not {value!r}.")
    if tx["keep_tags_count"] < 0:
        raise GlidectlError(f"{where}: text.keep_tags_count must be 0 or more, not "
                            f"{tx['keep_tags_count']}.")
    if not tx["tag_delimiter"]:
        raise GlidectlError(f"{where}: text.tag_delimiter must not be empty; write e.g. \",\".")
    enabled = c["enabled"]
    if enabled and not c["path"]:
        raise GlidectlError(f"{where} has no path; give it the folder of its images.")
    if enabled and tx["prompt_source"] == "concept" and not tx["prompt_path"]:
        raise GlidectlError(f"{where}: text.prompt_source is \"concept\" but text.prompt_path "
                            "is empty; give the text file of its prompts, one a line.")
    dropout = 0.0
    if tx["tag_dropout_enable"] and tx["tag_dropout_probability"] > 0:
        if tx["tag_dropout_mode"] == "RANDOM" and tx["tag_dropout_special_tags_mode"] == "NONE":
            dropout = float(tx["tag_dropout_probability"])  # mgds DropTags: each tag alone
        else:
            out.ignored.setdefault(*TAG_DROPOUT)
    # mgds DropTags joins the tags it keeps with tag_delimiter, ShuffleTags (run after it)
    # joins them with ", " whatever the delimiter
    joiner = ", " if tx["enable_tag_shuffling"] else tx["tag_delimiter"]
    rules = SampleRules(
        any_line=True, wildcards=False, separator=tx["tag_delimiter"], joiner=joiner,
        keep_tokens=tx["keep_tags_count"], shuffle=tx["enable_tag_shuffling"],
        tag_dropout=min(dropout, 1.0), flip=im["enable_random_flip"],
        random_crop=im["enable_crop_jitter"],
    )
    spec = ConceptSpec(
        index, c["name"], _path(out.path.parent, c["path"]), c["path"], enabled, c["type"],
        c["include_subdirectories"], float(c["balancing"]), c["balancing_strategy"],
        float(c["loss_weight"]), tx["prompt_source"], _path(out.path.parent, tx["prompt_path"]),
        rules,
    )
    return spec


def _migrated(raw: dict[str, Any]) -> dict[str, Any]:
    """OneTrainer's concept migrations: ``repeats`` (version 0) is ``balancing``,
    ``validation_concept`` (version 1) is ``type``."""
    raw = dict(raw)
    if "balancing" not in raw and "repeats" in raw:
        raw["balancing"] = raw["repeats"]
    if "type" not in raw and isinstance(raw.get("validation_concept"), bool):
        raw["type"] = "VALIDATION" if raw["validation_concept"] else "STANDARD"
    return raw


def _table(value: Any, where: str, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise GlidectlError(f"{where}: {key} must be an object of options, not {value!r}; "
                            "write it as OneTrainer writes it.")
    return value


def _check_keys(out: ConceptsFile, table: dict[str, Any], prefix: str, where: str) -> None:
    """Unapplied keys that would change something are noted, unknown keys too (a likely
    typo of a known key is an error). OneTrainer's ``BaseConfig.from_dict`` reads only the
    keys it knows and ignores the rest without a word, so a file it loads (one written by a
    newer OneTrainer, say) is not refused here; the note names what that ignores."""
    known = KNOWN[prefix]
    for key, value in table.items():
        full = f"{prefix}.{key}" if prefix else key
        if full in IGNORED:
            quiet = IGNORED[full][1]
            if quiet is None or value != quiet:
                _ignore(out, full)
        elif key not in known:
            close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.8)
            if close:
                raise GlidectlError(f"{where}: unknown key {full!r}; did you mean "
                                    f"{close[0]!r}?")
            if full not in out.unknown:
                out.unknown.append(full)


def _ignore(out: ConceptsFile, key: str) -> None:
    out.ignored.setdefault(key, IGNORED[key][0])


def _checked(value: Any, kind: type, key: str, where: str) -> Any:
    if what := wrong_kind(value, kind):
        example = {float: "1.0", int: "1", bool: "true", str: '"..."'}[kind]
        raise GlidectlError(f"{where}: {key} must be {what}, not {value!r}; write e.g. "
                            f"\"{key.rpartition('.')[2]}\": {example}.")
    if kind is float and not math.isfinite(value):
        raise GlidectlError(f"{where}: {key} must be a finite number, not {value!r}.")
    return value


def _choice(value: str, choices: tuple[str, ...], key: str, where: str) -> None:
    if value not in choices:
        raise GlidectlError(f"{where}: {key} must be one of {', '.join(choices)}, not "
                            f"{value!r}.")


def _path(base: Path, text: str) -> Path | None:
    if not text:
        return None
    path = Path(text).expanduser()
    return path if path.is_absolute() else base / path
