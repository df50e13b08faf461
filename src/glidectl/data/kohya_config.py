"""kohya-ss sd-scripts' dataset config (``--dataset_config dataset.toml``, or JSON): a
``[general]`` table, then ``[[datasets]]``, each with its ``[[datasets.subsets]]``. A
subset's option is looked up in the subset, then its dataset, then ``[general]``, then
kohya's default (``num_repeats`` 1, ``caption_extension`` ".caption").

Relative ``image_dir`` and ``metadata_file`` paths are read from the config file's folder
(kohya reads them from the folder it runs in), so the file may travel with its images.
"""

from __future__ import annotations

import difflib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import GlidectlError
from .config_text import parse_json, read_text, wrong_kind
from .sample_rules import SampleRules

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MAX_REPEATS = 10_000  # an epoch lists each image this often: far beyond any real count
# kohya allows these in subsets only (its *_SUBSET_DISTINCT_SCHEMA)
SUBSET_ONLY = ("image_dir", "metadata_file", "is_reg", "alpha_mask", "conditioning_data_dir")
# the options glidectl applies: (type, kohya's default)
APPLIED: dict[str, tuple[type, Any]] = {
    "image_dir": (str, None), "metadata_file": (str, None), "is_reg": (bool, False),
    "num_repeats": (int, 1), "class_tokens": (str, None), "caption_extension": (str, ".caption"),
    "shuffle_caption": (bool, False), "keep_tokens": (int, 0),
    "keep_tokens_separator": (str, ""), "caption_separator": (str, ","),
    "secondary_separator": (str, ""), "caption_prefix": (str, ""), "caption_suffix": (str, ""),
    "enable_wildcard": (bool, False), "caption_dropout_rate": (float, 0.0),
    "caption_tag_dropout_rate": (float, 0.0), "flip_aug": (bool, None),
    "random_crop": (bool, None), "caption_dropout_every_n_epochs": (int, 0),
    "color_aug": (bool, False), "token_warmup_min": (int, 1), "token_warmup_step": (float, 0),
}
BUCKETS = "square crops (data.random_crop, data.crop_scale)"
# kohya's options glidectl does not apply, and what it does instead
IGNORED = {
    "resolution": "data.resolution", "batch_size": "train.batch_size",
    "enable_bucket": BUCKETS, "min_bucket_reso": BUCKETS, "max_bucket_reso": BUCKETS,
    "bucket_reso_steps": BUCKETS, "bucket_no_upscale": BUCKETS,
    "face_crop_aug_range": "data.crop_scale",
    "cache_info": "nothing cached", "alpha_mask": "alpha over white",
    "skip_image_resolution": "data.min_image_size", "resize_interpolation": "bicubic",
    "validation_split": "validation.holdout", "validation_seed": "validation.holdout",
    "network_multiplier": "a LoRA's scale at sampling (--lora PATH:SCALE)",
    "custom_attributes": "none",
    "conditioning_data_dir": "no ControlNet training",
}
# kohya's trainer options that its dataset config refuses (ConfigSanitizer's
# ARGPARSE_SPECIFIC_SCHEMA), and what to do instead
TRAINER_ONLY = {
    "prior_loss_weight": "remove it and set train.prior_loss_weight instead",
    "max_token_length": "remove it (glidectl reads up to the model's text_ctx tokens)",
    "debug_dataset": "remove it and run `glidectl dataset inspect` instead",
}
# kohya's dataset options its subsets refuse (DATASET_ASCENDABLE_SCHEMA)
DATASET_ONLY = ("resolution", "batch_size", "network_multiplier", "enable_bucket",
                "min_bucket_reso", "max_bucket_reso", "bucket_reso_steps", "bucket_no_upscale",
                "validation_split", "validation_seed", "skip_image_resolution")
# DreamBooth subsets' keys (DB_SUBSET_ASCENDABLE_SCHEMA, is_reg) that kohya refuses in a
# fine-tuning subset and in its [[datasets]] entry (not in [general]), and what to do
NOT_FINE_TUNING = {
    "class_tokens": " (the metadata_file captions its images)",
    "caption_extension": " (the metadata_file captions its images)",
    "cache_info": "",
    "is_reg": " (kohya reads regularisation images from DreamBooth subsets only)",
}
KNOWN = (*APPLIED, *IGNORED)


@dataclass
class SubsetSpec:
    """One ``[[datasets.subsets]]`` entry with its options resolved."""

    dataset: int  # 1-based, in file order
    number: int  # 1-based over the whole file: the subset's units are "number/name"
    image_dir: Path | None
    image_dir_text: str  # as written, for messages and tables
    metadata_file: Path | None
    repeats: int
    class_tokens: str | None
    caption_extension: str
    is_reg: bool
    rules: SampleRules
    metadata_file_text: str = ""  # as written

    @property
    def same_as(self) -> tuple[int, str, str]:
        """What kohya compares to find a subset repeated in its dataset (``__eq__`` of
        ``DreamBoothSubset``/``FineTuningSubset``, ``library/train_util.py``): the
        ``metadata_file`` of a fine-tuning subset, else the ``image_dir``, as written."""
        if self.metadata_file is not None:
            return self.dataset, "metadata_file", self.metadata_file_text
        return self.dataset, "image_dir", self.image_dir_text

    @property
    def where(self) -> str:
        return f"dataset {self.dataset}, subset {self.number}"

    @property
    def shown(self) -> str:
        return self.image_dir_text or str(self.metadata_file)


@dataclass
class DatasetConfig:
    """The subsets of a dataset config, and the keys it sets that glidectl does not apply."""

    path: Path
    subsets: list[SubsetSpec] = field(default_factory=list)
    ignored: dict[str, str] = field(default_factory=dict)  # key → what glidectl does instead

    def notes(self) -> list[str]:
        """One warning for the keys that change nothing here."""
        if not self.ignored:
            return []
        keys = "; ".join(f"{k} ({v})" for k, v in self.ignored.items())
        return [f"{str(self.path)!r}: glidectl does not apply these kohya keys (what it uses "
                f"instead in brackets): {keys}."]


def read_dataset_config(path: str | Path) -> DatasetConfig:
    """Parse and check the dataset config at ``path`` (its folders are not looked at). A
    key kohya's trainers refuse is refused too (a misspelt key would train otherwise)."""
    path = Path(path)
    raw = _load(path)
    name = repr(str(path))
    config = DatasetConfig(path)
    datasets = raw.get("datasets")
    if "datasets" not in raw and raw and all(
            isinstance(v, dict) and ("caption" in v or "tags" in v) for v in raw.values()):
        raise GlidectlError(
            f"{name} is kohya's fine-tuning metadata (image → caption/tags), which kohya reads "
            "through a dataset config; write a dataset.toml with [[datasets.subsets]] "
            f"image_dir = \"FOLDER\" and metadata_file = \"{path.name}\", and pass that.")
    if not isinstance(datasets, list) or not datasets:
        raise GlidectlError(
            f"{name} has no [[datasets]] table, so it is not a kohya dataset config; add "
            "[[datasets]] with [[datasets.subsets]] entries, or point data.source at images.")
    for key, value in raw.items():
        if key not in ("general", "datasets"):
            _top_level(name, key, value)
    general = _table(raw.get("general", {}), f"{name}: [general]")
    _check_level(config, general, f"{name}: [general]", "general")
    for d, dataset in enumerate(datasets, start=1):
        dataset = _table(dataset, f"{name}: dataset {d}")
        _check_level(config, dataset, f"{name}: dataset {d}", "dataset")
        subsets = dataset.get("subsets")
        if not isinstance(subsets, list) or not subsets:
            raise GlidectlError(f"{name}: dataset {d} has no [[datasets.subsets]]; give it "
                                "at least one with an image_dir.")
        first = len(config.subsets) + 1
        for subset in subsets:
            number = len(config.subsets) + 1
            where = f"{name}: dataset {d}, subset {number}"
            subset = _table(subset, where)
            _check_level(config, subset, where, "subset")
            config.subsets.append(_subset(path.parent, d, number, [subset, dataset, general],
                                          where))
        _check_kind(f"{name}: dataset {d}", dataset, subsets, first)
    return config


def _check_kind(where: str, dataset: dict[str, Any], subsets: list[dict[str, Any]],
                first: int) -> None:
    """kohya's ConfigSanitizer takes a [[datasets]] entry of DreamBooth subsets or one of
    fine-tuning subsets (each with a ``metadata_file``), not both; the fine-tuning one
    refuses the DreamBooth keys (:data:`NOT_FINE_TUNING`) in itself and its subsets."""
    ft = [n for n, s in enumerate(subsets, start=first) if "metadata_file" in s]
    if not ft:
        return
    if len(ft) < len(subsets):
        db = [n for n in range(first, first + len(subsets)) if n not in ft]

        def numbers(ns: list[int]) -> str:
            return f"subset{'s' * (len(ns) > 1)} {', '.join(map(str, ns))}"

        raise GlidectlError(f"{where} mixes DreamBooth subsets (no metadata_file: "
                            f"{numbers(db)}) and fine-tuning subsets (with a metadata_file: "
                            f"{numbers(ft)}), which kohya's trainers refuse; split them into "
                            "two [[datasets]] entries.")
    tables = [(where, dataset, "a [[datasets]] entry of fine-tuning subsets (those with a "
               "metadata_file)")]
    tables += [(f"{where}, subset {n}", s, "a fine-tuning subset (one with a metadata_file)")
               for n, s in enumerate(subsets, start=first)]
    for at, table, kind in tables:
        for key, fix in NOT_FINE_TUNING.items():
            if key in table:
                raise GlidectlError(f"{at}: {key} is an option of DreamBooth subsets, which "
                                    f"kohya's trainers refuse in {kind}; remove it{fix}.")


def _load(path: Path) -> dict[str, Any]:
    name = repr(str(path))
    text = read_text(path, "the file of kohya's dataset config (what its --dataset_config "
                           "takes: a .toml, or its .json form); a kohya folder layout is read "
                           "without the kohya: prefix")
    if path.suffix.lower() == ".json":
        raw = parse_json(text, path)
        if isinstance(raw, list) and raw and all(isinstance(c, dict) for c in raw):
            raise GlidectlError(f"{name} holds a list like OneTrainer's concepts file, not "
                                "kohya's dataset config (an object with \"datasets\"); pass "
                                f"it as onetrainer:{path} (or without a prefix).")
        if not isinstance(raw, dict):
            raise GlidectlError(f"{name} holds a JSON {type(raw).__name__}, not an object "
                                "with \"datasets\"; write kohya's dataset config.")
        return raw
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise GlidectlError(f"{name} is not valid TOML ({exc}); fix it there.") from None


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise GlidectlError(f"{where} must be a table of options, not {value!r}; write it as "
                            "in kohya's config_README.")
    return value


def _top_level(name: str, key: str, value: Any) -> None:
    """Refuse what stands outside [general] and [[datasets]] (kohya's schema refuses it): a
    known key is told where it goes, a trainer option what sets it."""
    if key in TRAINER_ONLY:
        raise GlidectlError(f"{name}: {key} is a trainer option, not a key of kohya's dataset "
                            f"config (kohya's trainers refuse it there too); "
                            f"{TRAINER_ONLY[key]}.")
    table = isinstance(value, dict | list)
    if key in KNOWN and not table:
        home = ("each [[datasets.subsets]] entry" if key in SUBSET_ONLY
                else "[general] (every dataset) or a [[datasets]] entry")
        raise GlidectlError(f"{name}: {key} stands outside any table, where kohya's trainers "
                            f"refuse it; move it into {home}.")
    _unknown(key, f"{name}: unknown {'table' if table else 'key'} {key!r}",
             ("general", "datasets"),
             "remove it (kohya's dataset config holds [general] and [[datasets]] only)")


def _unknown(key: str, where: str, options: Any, fix: str) -> None:
    """Refuse a key kohya's schema refuses: "did you mean" a close one, else ``fix``."""
    close = difflib.get_close_matches(key, list(options), n=1, cutoff=0.8)
    if close:
        raise GlidectlError(f"{where}; did you mean {close[0]!r}?")
    raise GlidectlError(f"{where}, which kohya's trainers refuse too; {fix}.")


def _check_level(config: DatasetConfig, table: dict[str, Any], where: str, level: str) -> None:
    """A key kohya refuses at this level is an error, a mistyped value too; keys not
    applied are noted."""
    for key, value in table.items():
        if key == "subsets" and level == "dataset":
            continue
        if key in SUBSET_ONLY and level != "subset":
            raise GlidectlError(f"{where}: {key} belongs in each [[datasets.subsets]] entry, "
                                "not here; move it there.")
        if key in DATASET_ONLY and level == "subset":
            raise GlidectlError(f"{where}: {key} belongs in [general] or [[datasets]], not in "
                                "a subset (kohya's trainers refuse it there); move it up, or "
                                f"remove it (glidectl uses {IGNORED[key]} instead).")
        if key in TRAINER_ONLY:
            raise GlidectlError(f"{where}: {key} is a trainer option, not a key of kohya's "
                                "dataset config (kohya's trainers refuse it there too); "
                                f"{TRAINER_ONLY[key]}.")
        if key in IGNORED:
            config.ignored.setdefault(key, IGNORED[key])
        elif key not in APPLIED:
            _unknown(key, f"{where}: unknown key {key!r}",
                     (*KNOWN, "subsets") if level == "dataset" else KNOWN,
                     "remove it, or spell it as kohya's docs/config_README-en.md does")
        elif value is not None:
            _check_type(key, value, where)


def _check_type(key: str, value: Any, where: str) -> None:
    kind = APPLIED[key][0]
    if what := wrong_kind(value, kind):
        example = {float: "0.1", int: "10", bool: "true", str: "'...'"}[kind]
        raise GlidectlError(f"{where}: {key} must be {what}, not {value!r}; write e.g. "
                            f"{key} = {example}.")
    if key == "token_warmup_step":  # steps, or below 1 a fraction of the run's
        if value < 0:
            raise GlidectlError(f"{where}: token_warmup_step must be 0 (off) or more, not "
                                f"{value}; write e.g. token_warmup_step = 0.2.")
    elif kind is float and not 0 <= value <= 1:
        raise GlidectlError(f"{where}: {key} must be between 0 and 1, not {value!r}.")
    if key in ("keep_tokens", "caption_dropout_every_n_epochs", "token_warmup_min") \
            and value < 0:
        raise GlidectlError(f"{where}: {key} must be 0 or more, not {value}.")
    if key == "num_repeats" and value > MAX_REPEATS:
        raise GlidectlError(f"{where}: num_repeats = {value} is more than {MAX_REPEATS}; "
                            "give a smaller count.")
    if key in ("caption_separator", "caption_extension") and not value:
        raise GlidectlError(f"{where}: {key} must not be empty; write e.g. "
                            f"{key} = {'.txt' if key == 'caption_extension' else ','!r}.")


def _subset(base: Path, dataset: int, number: int, levels: list[dict[str, Any]],
            where: str) -> SubsetSpec:
    def get(key: str) -> Any:
        return next((t[key] for t in levels if t.get(key) is not None), APPLIED[key][1])

    image_dir, metadata = levels[0].get("image_dir"), levels[0].get("metadata_file")
    if image_dir is None and metadata is None:
        raise GlidectlError(f"{where} has no image_dir; give it the folder of its images "
                            "(or a metadata_file for a fine-tuning subset).")
    for key, text in (("image_dir", image_dir), ("metadata_file", metadata)):
        if isinstance(text, str) and not text.strip():  # Path("") is the config's folder
            raise GlidectlError(f"{where}: {key} is empty; give the "
                                + ("folder that holds the subset's images ('.' for the "
                                   "config's folder)." if key == "image_dir" else
                                   "path of its metadata JSON, or remove the key."))
    rules = SampleRules(
        any_line=get("enable_wildcard"), prefix=get("caption_prefix"),
        suffix=get("caption_suffix"), separator=get("caption_separator"),
        keep_tokens=get("keep_tokens"), keep_separator=get("keep_tokens_separator"),
        secondary_separator=get("secondary_separator"), shuffle=get("shuffle_caption"),
        tag_dropout=float(get("caption_tag_dropout_rate")),
        dropout=float(get("caption_dropout_rate")),
        dropout_every=get("caption_dropout_every_n_epochs"), flip=get("flip_aug"),
        random_crop=get("random_crop"), color_aug=get("color_aug"),
        warmup_min=get("token_warmup_min"), warmup_step=get("token_warmup_step"),
    )
    extension = get("caption_extension")  # "txt" reads ".txt", as kohya's DreamBoothSubset
    return SubsetSpec(
        dataset, number, _path(base, image_dir), image_dir or "", _path(base, metadata),
        get("num_repeats"), get("class_tokens"),
        extension if extension.startswith(".") else f".{extension}",
        bool(levels[0].get("is_reg", False)), rules, metadata or "",
    )


def _path(base: Path, text: str | None) -> Path | None:
    if text is None:
        return None
    path = Path(text).expanduser()
    return path if path.is_absolute() else base / path
