"""Built-in data sources (a default plugin): demo data, image folders, kohya dataset configs,
OneTrainer concepts files, webdataset shards, Parquet files and Hugging Face datasets,
registered through ``register_data_sources``.

Only the recognisers live here; each source module but the light ``shards`` (whose
suffixes and URL prefixes the recognisers read) is imported when it is opened, so
``glidectl --help`` stays light.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import GlidectlError
from ..hookspecs import hookimpl
from .records import IMAGE_EXTENSIONS
from .shards import REMOTE_PREFIXES, SHARD_SUFFIXES, ShardSource
from .source_api import Source, SourceType
from .walk import walk

PATTERN_CHARS = "{*?["


def _files(folder: Path) -> tuple[bool, bool, bool]:
    """(has images, has shards, has Parquet files) anywhere under ``folder``."""
    images = shards = parquet = False
    for _, _, files in walk(folder):
        for name in files:
            low = name.lower()
            images = images or low.endswith(IMAGE_EXTENSIONS)
            shards = shards or low.endswith(SHARD_SUFFIXES)
            parquet = parquet or low.endswith(".parquet")
        if images:
            break
    return images, shards, parquet


def claims_parquet(spec: str) -> bool:
    if spec.lower().endswith(".parquet") and not spec.startswith(REMOTE_PREFIXES):
        return True
    if os.path.isdir(spec):
        top = [p for p in Path(spec).iterdir()  # by name first: no stat of every image
               if p.name.lower().endswith((".parquet", *SHARD_SUFFIXES)) and p.is_file()]
        tables = sorted(p for p in top if p.name.lower().endswith(".parquet"))
        images, shards, parquet = _files(Path(spec))
        if tables and (images or shards):
            # tables at the top, their images beside them (paths in the rows); beside tar
            # shards, or without an image column, they are img2dataset's index of the data
            return (not any(p.name.lower().endswith(SHARD_SUFFIXES) for p in top)
                    and _has_image_column(tables[0]))
        return parquet and not images and not shards
    return False


def _has_image_column(table: Path) -> bool:
    """Whether a Parquet file has one of the default image columns (its schema only); a file
    that cannot be read counts as having one, so the Parquet source reports it."""
    from .tables import IMAGE_COLUMNS

    try:
        import pyarrow.parquet as pq

        names = pq.read_schema(table).names
    except ImportError:
        return True  # the Parquet source says to install pyarrow
    except Exception:  # pyarrow raises several error types for a damaged file
        return True
    return any(name in names for name in IMAGE_COLUMNS)


def claims_hf(spec: str) -> bool:
    """A folder written by Hugging Face's ``save_to_disk`` (its JSON markers at the top)."""
    from .hf import is_saved

    return is_saved(spec)


def claims_shards(spec: str) -> bool:
    if os.path.isdir(spec):
        images, shards, _ = _files(Path(spec))
        return shards and not images
    return (spec.startswith(REMOTE_PREFIXES) or "::" in spec
            or any(c in spec for c in PATTERN_CHARS) or spec.lower().endswith(SHARD_SUFFIXES))


def open_demo(spec: str, cfg: Any, resolution: int) -> Source:
    from .demo import check_demo_name
    from .sources import DemoSource

    size = int(getattr(cfg, "demo_size", 4096))
    if size < 1:
        raise GlidectlError(f"data.demo_size must be at least 1, got {size}.")
    return DemoSource(check_demo_name(spec), size, resolution)


def _given(spec: Any, kind: str, example: str) -> Any:
    """``spec``, unless ``kind:`` was written with nothing after it (not the current folder)."""
    if isinstance(spec, str) and not spec.strip():
        raise GlidectlError(f"data.source '{kind}:' names no path; write {kind}:{example}.")
    return spec


def open_folder(spec: str, cfg: Any, resolution: int) -> Source:
    from .folder import FolderSource

    source = FolderSource.scan(os.path.expanduser(_given(spec, "folder", "images/")),
                               kohya=bool(getattr(cfg, "kohya_folders", True)),
                               caption_column=str(getattr(cfg, "caption_column", "") or ""))
    if (reg := getattr(cfg, "reg_source", "")) and source.files:  # none: "holds no images"
        source.add_reg(os.path.expanduser(reg))
    return source


def _json_shape(spec: str) -> str | None:
    """What a ``.json`` file holds: "object", "list" or "invalid" (not JSON, so a reader
    can say where); None for any other path, a file that cannot be read or a huge one."""
    if not spec.lower().endswith(".json") or not os.path.isfile(spec):
        return None
    try:
        if os.path.getsize(spec) > 64 * 2**20:  # far beyond any dataset config
            return None
        raw = json.loads(Path(spec).read_text(encoding="utf-8-sig"))
    except OSError:
        return None
    except ValueError:  # bad JSON or not UTF-8
        return "invalid"
    return {dict: "object", list: "list"}.get(type(raw))


def claims_kohya(spec: str) -> bool:
    """A ``.toml`` file, or a ``.json`` file holding an object: kohya's dataset config
    (``--dataset_config``) in its TOML or JSON form."""
    return ((spec.lower().endswith(".toml") and os.path.isfile(spec))
            or _json_shape(spec) == "object")


def open_kohya(spec: str, cfg: Any, resolution: int) -> Source:
    from .kohya_source import KohyaConfigSource

    return KohyaConfigSource.open(os.path.expanduser(_given(spec, "kohya", "dataset.toml")),
                                  float(getattr(cfg, "uncond_p", 0.0)),
                                  bool(getattr(cfg, "resampled", False)))


def claims_onetrainer(spec: str) -> bool:
    """A ``.json`` file holding a list, OneTrainer's concepts, or no valid JSON (its reader
    names the line and column)."""
    return _json_shape(spec) in ("list", "invalid")


def open_onetrainer(spec: str, cfg: Any, resolution: int) -> Source:
    from .onetrainer_source import OneTrainerSource

    return OneTrainerSource.open(os.path.expanduser(_given(spec, "onetrainer", "concepts.json")))


def open_onetrainer_validation(spec: str, cfg: Any, resolution: int) -> Source:
    from .onetrainer_source import OneTrainerSource

    path = _given(spec, "onetrainer-validation", "concepts.json")
    return OneTrainerSource.open(os.path.expanduser(path), validation=True)


def open_shards(spec: Any, cfg: Any, resolution: int) -> Source:
    return ShardSource.open(_given(spec, "wds", "shards/"), cfg.image_key, cfg.caption_key,
                            cfg.metadata_key, str(getattr(cfg, "caption_column", "") or ""))


def open_parquet(spec: str, cfg: Any, resolution: int) -> Source:
    from .parquet import ParquetSource

    return ParquetSource.open(os.path.expanduser(_given(spec, "parquet", "data.parquet")), cfg)


def open_hf(spec: str, cfg: Any, resolution: int) -> Source:
    from .hf import HFSource

    return HFSource.open(spec, cfg)


BUILTIN_SOURCES = (
    SourceType("demo", open_demo, "demo:NAME, generated pictures (shapes, colors)."),
    SourceType("parquet", open_parquet, "A .parquet file, glob or folder of them.",
               claims_parquet, priority=10),
    SourceType("webdataset", open_shards, "webdataset .tar shards: dir, glob, brace pattern.",
               claims_shards, priority=20),
    SourceType("folder", open_folder,
               "A folder of images with .txt, .caption or metadata.jsonl captions (kohya's "
               "N_words folders: N repeats, 'words' captions).",
               os.path.isdir, priority=30),
    SourceType("kohya", open_kohya,
               "kohya-ss sd-scripts' dataset config (.toml, or its .json form): subsets "
               "with num_repeats, class_tokens and caption options.", claims_kohya, priority=15),
    SourceType("onetrainer", open_onetrainer,
               "OneTrainer's concepts file (a .json list of concepts, or onetrainer:FILE): "
               "folders with balancing, loss_weight and prompt options.", claims_onetrainer,
               priority=16),
    SourceType("onetrainer-validation", open_onetrainer_validation,
               "The VALIDATION concepts of a OneTrainer concepts file "
               "(onetrainer-validation:FILE): a run on the file validates on them."),
    SourceType("hf", open_hf, "hf:NAME_OR_PATH, a Hub dataset (streamed) or save_to_disk folder.",
               claims_hf, priority=5),
)
ALIASES = {"webdataset": ("wds",)}


@hookimpl
def register_data_sources(register):
    """The built-in sources."""
    for kind in BUILTIN_SOURCES:
        register(kind.name, kind, ALIASES.get(kind.name, ()))
