"""Decoding images defensively: every failure becomes a counted reason, never a crash.

Truncated, unreadable, empty, tiny and decompression-bomb images are rejected; CMYK,
palette, alpha, 16-bit and other modes are converted to 8-bit RGB (alpha over white;
16-bit greyscale by its bit depth, or the significant bits a PNG's sBIT names).
"""

from __future__ import annotations

import io
import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import not_a_file

EXIF_ORIENTATION = 0x0112
# the img.info keys Pillow's getexif reads an orientation from (ImageOps.exif_transpose's)
ORIENTATION_INFO = ("exif", "Raw profile type exif", "xmp", "XML:com.adobe.xmp")
PILLOW_DEFAULT_PIXELS = 89_478_485  # Image.MAX_IMAGE_PIXELS as Pillow ships it
_LIMIT_LOCK = threading.Lock()  # held while Image.MAX_IMAGE_PIXELS is raised


class Rejected(Exception):
    """A sample that cannot be used; ``reason`` is a short snake_case counter name,
    ``short_side`` the image's shorter side in px where that is why (``too_small``)."""

    def __init__(self, reason: str, short_side: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.short_side = short_side


def read_bytes(source: bytes | str | os.PathLike[str]) -> bytes:
    """File contents (or the bytes themselves); a missing file, or one that is no regular
    file, is rejected as ``unreadable_file``, not raised. A named pipe or a device is never
    opened (a pipe would wait for a writer, /dev/zero never ends)."""
    if isinstance(source, bytes):
        return source
    if not_a_file(source) is not None:
        raise Rejected("unreadable_file")
    try:
        return Path(source).read_bytes()
    except OSError:
        raise Rejected("unreadable_file") from None


def open_image(
    source: bytes | str | os.PathLike[str] | Image.Image,
    *,
    min_size: int = 1,
    max_pixels: int | None = None,
    draft_size: int = 0,
) -> tuple[Image.Image, tuple[int, int], str | None]:
    """Decode to RGB: ``(image, original (w, h) as displayed, converted-from mode or None)``.

    ``max_pixels``: the most pixels an image may have (``data.max_pixels``), above or below
    Pillow's own limit; None: Pillow's ``Image.MAX_IMAGE_PIXELS``. ``draft_size`` lets JPEGs
    decode at a reduced scale whose short side is still at least that many pixels (much
    faster for big photos). Raises :class:`Rejected`.
    """
    if max_pixels is None:
        with _LIMIT_LOCK:  # Pillow's own, not a limit another thread raised for a while
            max_pixels = Image.MAX_IMAGE_PIXELS or PILLOW_DEFAULT_PIXELS
    if isinstance(source, Image.Image):
        img = source
        original = img.size
    else:
        data = read_bytes(source)
        if not data:
            raise Rejected("empty_file")
        try:
            img, original = _decode(data, min_size, max_pixels, draft_size)
        except _PillowLimit:  # Pillow's own limit, which may lie below max_pixels
            with _pillow_limit(max_pixels):
                img, original = _decode(data, min_size, max_pixels, draft_size, final=True)
    _check_size(original, min_size, max_pixels)
    try:
        stored = img.size
        img = apply_orientation(img)
        if img.size != stored:  # turned by 90°: the size as displayed
            original = (original[1], original[0])
        rgb, converted = to_rgb(img)
    except Rejected:
        raise
    except Exception:
        raise Rejected("corrupt_image") from None
    return rgb, original, converted


class _PillowLimit(Exception):
    """Pillow refused an image under its own limit, which ``max_pixels`` may lie above."""


@contextmanager
def _pillow_limit(pixels: int) -> Iterator[None]:
    """Pillow's ``Image.MAX_IMAGE_PIXELS`` raised to ``pixels`` inside (never lowered: other
    threads' images keep at least Pillow's limit), restored after; one thread at a time, so
    no other decode here restores it under another's feet."""
    with _LIMIT_LOCK:
        before = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = max(pixels, before) if before is not None else None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = before


def _decode(data: bytes, min_size: int, max_pixels: int, draft_size: int,
            final: bool = False) -> tuple[Image.Image, tuple[int, int]]:
    """``data`` opened, size-checked and loaded: ``(image, size as stored)``. Pillow's
    decompression-bomb check raises :class:`_PillowLimit` (``final``, under
    :func:`_pillow_limit`: a rejection)."""
    bomb = Rejected("decompression_bomb") if final else _PillowLimit()
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise bomb from None
        except UnidentifiedImageError:
            raise Rejected("unreadable_image") from None
        except Exception as exc:  # PIL plugins raise many types for corrupt headers
            raise Rejected(_failure_reason(exc, "unreadable_image")) from None
        original = img.size
        _check_size(original, min_size, max_pixels)
        if img.format == "PNG" and img.mode.startswith("I"):
            img.info[SBIT_INFO] = png_significant_bits(data)
        if draft_size and img.format == "JPEG":
            try:
                img.draft("RGB", (draft_size, draft_size))
            except Exception:
                raise Rejected("unreadable_image") from None
        try:
            img.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise bomb from None  # a GIF frame or TIFF tile larger than the image
        except Exception as exc:
            raise Rejected(_failure_reason(exc, "corrupt_image")) from None
    return img, original


def _failure_reason(exc: BaseException, default: str) -> str:
    return "truncated_image" if "truncat" in str(exc).lower() else default


def _check_size(size: tuple[int, int], min_size: int, max_pixels: int) -> None:
    w, h = size
    if w * h > max_pixels:
        raise Rejected("decompression_bomb")
    if min(w, h) < max(1, min_size):
        raise Rejected("too_small", min(w, h))


def apply_orientation(img: Image.Image) -> Image.Image:
    """Honour the EXIF orientation tag, wherever Pillow's ``getexif`` finds it (an EXIF
    block, ImageMagick's PNG "Raw profile type exif" text, XMP's ``tiff:Orientation``);
    broken EXIF leaves the image as stored."""
    if not any(key in img.info for key in ORIENTATION_INFO):
        return img
    try:
        if img.getexif().get(EXIF_ORIENTATION, 1) in (0, 1):
            return img
        return ImageOps.exif_transpose(img)
    except Exception:
        return img


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SBIT_INFO = "glidectl_sbit"  # img.info key: a PNG's significant bits, read with its bytes


def png_significant_bits(data: bytes | io.BufferedIOBase | None) -> int | None:
    """The significant bits of a greyscale PNG's samples (its sBIT chunk, which Pillow does
    not read), or None: no PNG, no sBIT before the image data, or a damaged header."""
    stream = io.BytesIO(data) if isinstance(data, bytes) else data
    if stream is None or stream.read(8) != PNG_SIGNATURE:
        return None
    while len(head := stream.read(8)) == 8:
        length, kind = int.from_bytes(head[:4], "big"), head[4:]
        if kind in (b"IDAT", b"IEND", b"PLTE"):  # sBIT comes before all three
            return None
        if kind == b"sBIT":
            bits = stream.read(1)
            return bits[0] if bits and 1 <= bits[0] <= 16 else None
        stream.seek(length + 4, io.SEEK_CUR)  # the chunk's data and CRC
    return None


def _sbit(img: Image.Image) -> int | None:
    """A PNG's sBIT: noted in ``img.info`` by :func:`open_image`, else read from the file
    the image was opened from (``Image.open(path)``)."""
    if SBIT_INFO in img.info:
        return img.info[SBIT_INFO]
    name = getattr(img, "filename", "")
    if img.format != "PNG" or not name:
        return None
    try:
        with open(name, "rb") as f:
            return png_significant_bits(f)
    except OSError:
        return None


def integer_peak(img: Image.Image, arr: np.ndarray) -> float:
    """The level that reads as white in integer greyscale ``img`` (pixels ``arr``): its bit
    depth's top, 65535 for 16-bit PNG, PGM and TIFF (and for 32-bit TIFFs, which hold 16-bit
    levels far more often than 32-bit ones); a 12-bit TIFF's 4095, a signed 16-bit one's
    32767. A 16-bit PNG whose sBIT chunk names fewer bits (a 12-bit camera's) is read by
    those bits when its levels stay within them, not all multiples of the shift PNG asks
    encoders to scale such data up by (then they were scaled up: 65535)."""
    if img.format == "TIFF" and hasattr(img, "tag_v2"):
        bits = _first(img.tag_v2.get(258, 16))
        signed = _first(img.tag_v2.get(339, 1)) == 2
        if isinstance(bits, int) and 1 <= bits <= 16:
            return float(2 ** (bits - signed) - 1)
        return 65535.0
    sbit = _sbit(img)
    if sbit and sbit < 16 and arr.size:
        low = 2 ** sbit - 1
        unshifted = arr.max() <= low and (arr.astype(np.int64) % 2 ** (16 - sbit)).any()
        if unshifted:
            return float(low)
    return 65535.0


def _first(value: object) -> object:
    """A TIFF tag's first value (tags per sample come as tuples)."""
    return value[0] if isinstance(value, tuple) and value else value


def _over_white(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def to_rgb(img: Image.Image) -> tuple[Image.Image, str | None]:
    """8-bit RGB; the second value names the source mode when a conversion happened.
    Integer greyscale is scaled by its bit depth (:func:`integer_peak`), never by its
    brightest pixel, so a dark 16-bit picture stays dark; its transparent level (a 16-bit
    PNG's tRNS) is white, as alpha goes over white."""
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img, None
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(img).astype(np.float64)
        if mode == "F":
            peak = 1.0 if arr.size and np.nanmax(arr) <= 1.0 else 255.0
        else:
            peak = integer_peak(img, arr)
        grey = np.nan_to_num(arr * (255.0 / peak)).clip(0, 255).astype(np.uint8)
        key = img.info.get("transparency")  # a 16-bit PNG's tRNS: the transparent level
        if isinstance(key, int) and mode != "F":
            grey[arr == key] = 255  # over white, as alpha is
        return Image.fromarray(grey, "L").convert("RGB"), mode
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info:
        return _over_white(img), mode
    return img.convert("RGB"), mode
