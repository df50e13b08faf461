"""Bad images never crash: each is converted to RGB or rejected with a named reason."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import zlib

import numpy as np
import pytest
from data_helpers import EXPECTED_REJECTIONS, encode, finishes, odd_images, photo
from PIL import Image

from glidectl.data.captions import decode_caption, pick_line
from glidectl.data.images import Rejected, open_image, png_significant_bits, to_rgb

CONVERTED = {"cmyk": "CMYK", "palette": "P", "la": "LA", "i16": "I;16", "gray": "L", "bmp": None}


@pytest.mark.parametrize("name", sorted(CONVERTED))
def test_odd_modes_are_converted_to_8bit_rgb(name):
    image, size, converted = open_image(odd_images()[name], min_size=8)
    assert image.mode == "RGB" and size == (40, 40)
    if name == "i16":
        assert converted in ("I;16", "I")  # Pillow version decides how 16-bit PNGs open
        assert image.getextrema()[0][1] > 200  # scaled from 16 bits, not clipped to 255s
    else:
        assert converted == CONVERTED[name]


def _with_sbit(png: bytes, bits: int) -> bytes:
    """``png`` with an sBIT chunk of ``bits`` significant bits right after its IHDR."""
    chunk = b"sBIT" + bytes([bits])
    sbit = (1).to_bytes(4, "big") + chunk + zlib.crc32(chunk).to_bytes(4, "big")
    return png[:33] + sbit + png[33:]  # signature (8) + IHDR (25)


def _grey16(levels: np.ndarray, path, fmt: str = "PNG", sbit: int | None = None) -> str:
    """A 16-bit greyscale file of ``levels`` (written by Pillow, as users' files are)."""
    data = encode(Image.fromarray(levels.astype(np.uint16)), fmt)
    path.write_bytes(_with_sbit(data, sbit) if sbit else data)
    return str(path)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16bit_greyscale_is_read_by_its_bit_depth_however_dark(tmp_path, fmt):
    """A dark 16-bit picture (levels up to 199 of 65535) stays dark: it was read as 8-bit
    (up to 257x too bright) whenever its brightest pixel was at most 255."""
    levels = np.tile(np.arange(0, 200, 5), (40, 1))
    dark = _grey16(levels, tmp_path / f"dark.{fmt.lower()}", fmt)
    bright = _grey16(levels * 300, tmp_path / f"bright.{fmt.lower()}", fmt)
    assert Image.open(dark).mode in ("I;16", "I")  # what Pillow reports for such files
    image, _, converted = open_image(dark, min_size=8)
    assert converted in ("I;16", "I") and image.getextrema()[0] == (0, 0)  # 195/65535*255
    image, _, _ = open_image(bright, min_size=8)
    assert image.getextrema()[0] == (0, 195 * 300 * 255 // 65535)  # one scale for both
    assert to_rgb(Image.open(dark))[0].getextrema()[0] == (0, 0)  # --low-res, masks


def test_16bit_png_with_sbit_is_read_by_its_significant_bits(tmp_path):
    """A 12-bit camera's PNG (sBIT 12, levels 0-4095 stored as they are) reads 4095 as
    white, from bytes and from a file opened by Pillow; one scaled up as PNG asks (levels
    shifted left by 4) still reads by 65535."""
    raw = np.tile(np.arange(0, 4096, 105), (40, 1))  # 0 … 4095, not multiples of 16
    path = _grey16(raw, tmp_path / "raw12.png", sbit=12)
    for source in (path, open(path, "rb").read()):
        image, _, _ = open_image(source, min_size=8)
        assert image.getextrema()[0] == (0, 255)
    assert to_rgb(Image.open(path))[0].getextrema()[0] == (0, 255)
    shifted = _grey16(raw << 4, tmp_path / "shifted12.png", sbit=12)
    assert open_image(shifted, min_size=8)[0].getextrema()[0] == (0, 254)  # 65520 / 257
    assert png_significant_bits(b"not a png") is None


def test_16bit_greyscale_transparency_goes_over_white(tmp_path):
    """A 16-bit greyscale PNG whose tRNS makes one level transparent: those pixels were
    read as that (black) level, not put over white as every other transparency is."""
    levels = np.full((40, 40), 40000)
    levels[10:30, 10:30] = 5  # the transparent level
    path = tmp_path / "t16.png"
    Image.fromarray(levels.astype(np.uint16)).save(path, transparency=5)
    assert Image.open(path).info["transparency"] == 5  # as Pillow reads the tRNS chunk
    for image in (open_image(str(path), min_size=8)[0], to_rgb(Image.open(path))[0]):
        assert image.getpixel((20, 20)) == (255, 255, 255)  # transparent: white
        assert image.getpixel((0, 0)) == (155,) * 3  # 40000 / 65535 * 255, as before


def test_alpha_is_composited_over_white():
    img = Image.new("RGBA", (20, 20), (255, 0, 0, 0))
    rgb, _, converted = open_image(encode(img, "PNG"), min_size=8)
    assert converted == "RGBA" and rgb.getpixel((5, 5)) == (255, 255, 255)


@pytest.mark.parametrize("name", sorted(EXPECTED_REJECTIONS))
def test_bad_images_are_rejected_by_reason(name):
    with pytest.raises(Rejected) as info:
        open_image(odd_images()[name], min_size=8)
    assert info.value.reason == EXPECTED_REJECTIONS[name]


def test_max_pixels_rejects_large_images_before_decoding():
    with pytest.raises(Rejected, match="decompression_bomb"):
        open_image(encode(photo(100, 100)), max_pixels=5000)


def test_pil_decompression_bomb_warning_is_a_rejection(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(Rejected, match="decompression_bomb"):
        open_image(encode(photo(40, 40), "PNG"))  # 1600 px: PIL warns (> MAX, < 2 MAX)


def test_missing_file_is_a_rejection(tmp_path):
    with pytest.raises(Rejected, match="unreadable_file"):
        open_image(tmp_path / "nope.jpg")


def test_a_named_pipe_named_as_an_image_is_rejected_unopened(tmp_path):
    """A pipe 'pipe.png' was opened and read: it waited for a writer for good."""
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)

    def reason() -> str:
        with pytest.raises(Rejected) as info:
            open_image(fifo)
        return info.value.reason

    assert finishes(reason, fifos=[fifo]) == "unreadable_file"
    assert fifo.is_fifo()


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_a_link_to_a_device_is_rejected_unread(tmp_path):
    """'zero.png -> /dev/zero' was read until memory ran out. Run apart, with 1 GiB of address
    space, so that reading it fails fast rather than taking the machine's memory."""
    (tmp_path / "zero.png").symlink_to("/dev/zero")
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
            "from glidectl.data.images import Rejected, open_image, png_significant_bits, to_rgb\n"
            "try:\n    open_image(sys.argv[1])\nexcept Rejected as exc:\n    print(exc.reason)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "zero.png")],
                         capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout) == (0, "unreadable_file\n"), out.stderr


def test_max_pixels_above_pillows_limit_is_the_limit(monkeypatch):
    """data.max_pixels above Pillow's own limit did nothing: Pillow's warning (over its
    limit) and error (over twice it) rejected the image first."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    warned, failed = encode(photo(40, 40), "PNG"), encode(photo(60, 40), "PNG")  # 1600, 2400
    for data in (warned, failed):
        image, original, _ = open_image(data, max_pixels=2400)
        assert image.size == original and original[0] * original[1] <= 2400
        with pytest.raises(Rejected, match="decompression_bomb"):
            open_image(data, max_pixels=1500)
    assert Image.MAX_IMAGE_PIXELS == 1000  # Pillow's own limit is as it was
    with pytest.warns(Image.DecompressionBombWarning):
        Image.open(io.BytesIO(warned))


def test_max_pixels_holds_in_threads_decoding_at_once(monkeypatch):
    """Threads raising Pillow's limit for their own images neither reject another's image
    nor leave the limit raised."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    data = encode(photo(60, 40), "PNG")  # 2400 px: over twice Pillow's limit
    wrong: list[str] = []

    def decode(limit: int) -> None:
        for _ in range(25):
            try:
                open_image(data, max_pixels=limit)
                if limit < 2400:
                    wrong.append(f"accepted at {limit}")
            except Rejected as exc:
                if limit >= 2400:
                    wrong.append(f"{exc.reason} at {limit}")

    threads = [threading.Thread(target=decode, args=(limit,))
               for limit in (2400, 1000, 5000, 2399) * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert wrong == [] and Image.MAX_IMAGE_PIXELS == 1000


def test_jpeg_draft_decodes_big_photos_at_reduced_scale():
    big = encode(photo(512, 400), quality=90)
    image, original, _ = open_image(big, draft_size=64)
    assert original == (512, 400)
    assert min(image.size) >= 64 and image.size[0] < 512


def test_exif_orientation_is_applied():
    img = photo(60, 40)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    rotated, original, _ = open_image(encode(img, "JPEG", exif=exif), min_size=8)
    assert rotated.size == (40, 60)
    assert original == (40, 60)  # inspect's aspect histogram reads it
    drafted, original, _ = open_image(encode(photo(600, 400), "JPEG", exif=exif),
                                      draft_size=64)
    assert drafted.size[0] < drafted.size[1] and original == (400, 600)


def test_orientation_outside_an_exif_block_is_applied(tmp_path):
    """ImageMagick 6 keeps a photo's EXIF in a PNG as "Raw profile type exif" text, and
    some editors write the orientation to XMP only: both were read as stored (sideways),
    where Pillow's exif_transpose turns them upright."""
    from PIL import PngImagePlugin

    from glidectl.sampling import as_image_tensor

    exif = Image.Exif()
    exif[0x0112] = 6
    raw = exif.tobytes()
    text = f"\nexif\n{len(raw):8d}\n{raw.hex()}\n"
    info = PngImagePlugin.PngInfo()
    info.add_text("Raw profile type exif", text, zip=True)
    magick = tmp_path / "magick.png"
    photo(60, 40).save(magick, pnginfo=info)
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999'
           b'/02/22-rdf-syntax-ns#"><rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/"'
           b' tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>')
    for data in (magick.read_bytes(), encode(photo(60, 40), "JPEG", xmp=xmp)):
        rotated, original, _ = open_image(data, min_size=8)
        assert rotated.size == original == (40, 60)
    upright = np.asarray(photo(60, 40).transpose(Image.Transpose.ROTATE_270), np.float32)
    tensor = as_image_tensor(str(magick), 40)  # --low-res, --inpaint-image: its centre
    assert np.allclose(tensor[0].permute(1, 2, 0).numpy(), upright[10:50] / 127.5 - 1)


def test_captions_non_utf8_rejected_bom_dropped():
    with pytest.raises(Rejected, match="caption_not_utf8"):
        decode_caption(b"\xff\xfe\xfa caf\xe9")
    with pytest.raises(Rejected, match="caption_not_utf8"):  # JSON's "\ud800" in metadata.jsonl
        decode_caption("a red \ud800 circle")
    with pytest.raises(Rejected, match="caption_not_utf8"):  # UTF-16 without a BOM: was
        decode_caption("a blue square".encode("utf-16-le"))  # a caption of NULs and letters
    assert decode_caption("\ufeffhello".encode()) == "hello"
    assert decode_caption(None) is None


def test_pick_line_chooses_among_non_blank_lines():
    import random

    rng = random.Random(0)
    picks = {pick_line("first\n\n  second \n", rng) for _ in range(50)}
    assert picks == {"first", "second"}
    assert pick_line(" \n ", rng) == ""
