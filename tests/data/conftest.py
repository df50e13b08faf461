"""Real image files of every odd kind, and real webdataset tar shards written by TarWriter."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile

# Hugging Face datasets read these when imported: no network, a cache of our own (removed
# when the test run ends).
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
if "HF_HOME" not in os.environ:
    os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="glidectl-hf-")
    atexit.register(shutil.rmtree, os.environ["HF_HOME"], ignore_errors=True)
from collections.abc import Callable
from pathlib import Path

import pytest
from data_helpers import encode, photo

from glidectl.config import DataConfig
from glidectl.tokenizer import get_tokenizer
from glidectl.training.data_stream import DataStream


@pytest.fixture(autouse=True)
def close_streams(monkeypatch):
    """Close every DataStream a test makes, so its DataLoader workers stop at the test's end
    (as the trainer does) instead of at some later garbage collection."""
    made: list[DataStream] = []
    init = DataStream.__init__

    def tracked(self, *args, **kwargs):
        init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(DataStream, "__init__", tracked)
    yield
    for stream in made:
        stream.close()


@pytest.fixture
def byte_tok():
    return get_tokenizer("byte")


@pytest.fixture
def data_cfg() -> Callable[..., DataConfig]:
    def make(**kw) -> DataConfig:
        cfg = DataConfig(uncond_p=0.0, shuffle_buffer=0, min_image_size=8)
        for k, v in kw.items():
            setattr(cfg, k, v)
        return cfg

    return make


@pytest.fixture
def write_shards(tmp_path: Path) -> Callable[..., list[Path]]:
    """``write_shards(n_shards, per_shard)`` → shard paths; sample ids are "s<shard>_<i>"."""
    import webdataset as wds

    def write(n_shards: int = 4, per_shard: int = 5, folder: str = "shards",
              extra: Callable[[int, int], dict] | None = None, size: int = 40) -> list[Path]:
        out = tmp_path / folder
        out.mkdir(exist_ok=True)
        paths = []
        for s in range(n_shards):
            path = out / f"shard-{s:05d}.tar"
            with wds.TarWriter(str(path)) as sink:
                for i in range(per_shard):
                    sample = {
                        "__key__": f"s{s}_{i:03d}",
                        "jpg": encode(photo(size + 8, size, s * 100 + i)),
                        "txt": f"caption {s} {i}",
                        "json": json.dumps({"similarity": 0.3}).encode(),
                    }
                    if extra:
                        sample.update(extra(s, i))
                    sink.write({k: v for k, v in sample.items() if v is not None})
            paths.append(path)
        return paths

    return write
