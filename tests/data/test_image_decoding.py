"""Bad images never crash: each is converted to RGB or rejected with a named reason."""

from __future__ import annotations

import pytest
from data_helpers import EXPECTED_REJECTIONS, encode, odd_images, photo
from PIL import Image

from glidectl.data.captions import decode_caption, pick_line
from glidectl.data.images import Rejected, open_image

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


def test_captions_non_utf8_rejected_bom_dropped():
    with pytest.raises(Rejected, match="caption_not_utf8"):
        decode_caption(b"\xff\xfe\xfa caf\xe9")
    assert decode_caption("\ufeffhello".encode()) == "hello"
    assert decode_caption(None) is None


def test_pick_line_chooses_among_non_blank_lines():
    import random

    rng = random.Random(0)
    picks = {pick_line("first\n\n  second \n", rng) for _ in range(50)}
    assert picks == {"first", "second"}
    assert pick_line(" \n ", rng) == ""
