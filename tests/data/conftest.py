"""Real image files of every odd kind, and real webdataset tar shards written by TarWriter."""

from __future__ import annotations

import io
import json
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from glidectl.config import DataConfig
from glidectl.tokenizer import get_tokenizer


def encode(img: Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def photo(w: int = 48, h: int = 40, seed: int = 0) -> Image.Image:
    """A small RGB picture with structure (so JPEG has something to encode)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (1, 1, 3))
    grad = np.linspace(0, 1, w)[None, :, None] * rng.integers(0, 255, (1, 1, 3))
    arr = (base * 0.5 + grad * 0.5 + rng.normal(0, 8, (h, w, 3))).clip(0, 255)
    return Image.fromarray(arr.astype(np.uint8), "RGB")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a huge size (a decompression bomb as PIL sees it)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def odd_images() -> dict[str, bytes]:
    """name → encoded bytes; the first group converts, the second is rejected."""
    good = encode(photo(64, 48, 1))
    palette = photo(40, 40, 2).convert("P", palette=Image.Palette.ADAPTIVE)
    palette.info["transparency"] = 0
    i16 = Image.fromarray((np.arange(40 * 40).reshape(40, 40) * 40).astype(np.uint16))
    return {
        # converted
        "cmyk": encode(photo(40, 40, 3).convert("CMYK"), "JPEG"),
        "palette": encode(palette, "PNG"),
        "la": encode(photo(40, 40, 4).convert("LA"), "PNG"),
        "i16": encode(i16, "PNG"),
        "gray": encode(photo(40, 40, 5).convert("L"), "PNG"),
        "bmp": encode(photo(40, 40, 6), "BMP"),
        # rejected
        "one_px": encode(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"),
        "zero": b"",
        "truncated": good[: len(good) // 2],
        "garbage": b"this is not an image at all" * 10,
        "bomb": png_header_only(30000, 30000),
    }


EXPECTED_REJECTIONS = {
    "one_px": "too_small", "zero": "empty_file", "truncated": "truncated_image",
    "garbage": "unreadable_image", "bomb": "decompression_bomb",
}


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
