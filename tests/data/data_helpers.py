"""Real image files of every odd kind for the data tests (imported by name; not a conftest)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


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


def publish_from_child(shared, slot):
    """Runs in a spawned process: publish one rejection and one acceptance."""
    from glidectl.data.stats import RejectionCounter

    counter = RejectionCounter()
    counter.reject("truncated_image", "child.jpg")
    counter.accept()
    shared.publish(slot, counter)


def without_root_powers() -> list[str]:
    """A command prefix under which file permissions apply, root included (it drops the
    capabilities that let root read anything); skips the test when that cannot be done."""
    import os
    import shutil

    import pytest

    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root and setpriv is absent: root reads any file")
    return ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search"]


def replays_after_resume(stream, taken: int = 4, total: int = 9):
    """Check that ``stream()`` (a new DataStream each call) resumed from the state after
    ``taken`` batches gives batches ``taken..total`` of an uninterrupted one — keys, images
    and, where batches carry them, captions and tokens — and return the uninterrupted one
    and the resumed one."""
    import torch

    straight = stream()
    batches = [straight.next() for _ in range(total)]
    first = stream()
    for _ in range(taken):
        first.next()
    resumed = stream()
    resumed.load_state_dict(first.state_dict())
    for expected in batches[taken:]:
        got = resumed.next()
        assert got["key"] == expected["key"] and torch.equal(got["image"], expected["image"])
        assert got.get("caption") == expected.get("caption")
        if "tokens" in expected:
            assert torch.equal(got["tokens"], expected["tokens"])
    return straight, resumed


def finishes(call, seconds: float = 20.0, fifos=()):
    """``call()``'s result, run in a thread: the test fails, instead of hanging, when it has
    not returned within ``seconds``, and a reader stuck opening one of ``fifos`` (named
    pipes) is then let go by opening it for writing."""
    import os
    import threading

    import pytest

    done: dict = {}

    def run() -> None:
        try:
            done["value"] = call()
        except BaseException as exc:  # raised again in the test's thread
            done["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        for fifo in fifos:
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:  # no reader waits on it
                pass
        pytest.fail(f"still running after {seconds:g} s (waiting on a named pipe?)")
    if "error" in done:
        raise done["error"]
    return done["value"]
