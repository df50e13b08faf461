"""Grids a person can read: small tiles enlarged (nearest neighbour) and captioned."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from glidectl.images import captioned_grid, enlarge


def test_tiles_are_enlarged_by_whole_factors_with_sharp_pixels():
    tile = Image.new("RGB", (16, 16), "white")
    tile.putpixel((0, 0), (255, 0, 0))
    big = enlarge(tile, 64)
    assert big.size == (64, 64)
    arr = np.asarray(big)
    assert (arr[:4, :4] == [255, 0, 0]).all() and (arr[4:, 4:] == 255).all()
    assert enlarge(Image.new("RGB", (80, 80)), 64).size == (80, 80)


def test_every_tile_is_kept_with_its_caption_under_it():
    colours = ["red", "blue", "green", "yellow", "purple"]
    tiles = [Image.new("RGB", (16, 16), c) for c in colours]
    captions = [f"a {c} circle on a white background" for c in colours]
    grid = captioned_grid(tiles, captions)
    arr = np.asarray(grid)
    cell_w = (grid.width - 2 * 4) // 3  # 3 columns, 4 px gaps
    assert cell_w == 64
    cell_h = (grid.height - 4) // 2
    assert cell_h > 64  # room for the caption
    first_caption = arr[64:cell_h, :cell_w]
    assert (first_caption.sum(axis=2) < 200).any()  # dark text was drawn
    assert (arr[:64, :64] == [255, 0, 0]).all()  # the tile itself is untouched
    lonely = captioned_grid([tiles[0]], [""])  # an empty caption says so
    assert (np.asarray(lonely)[64:].sum(axis=2) < 200).any()


def test_smaller_tiles_are_centred_with_their_caption_right_under_them():
    big, small = Image.new("RGB", (80, 80), "green"), Image.new("RGB", (16, 16), "red")
    arr = np.asarray(captioned_grid([big, small], ["big", "small"], cols=2))
    x = 80 + 4  # the second cell: 80 px wide like the widest tile, after a 4 px gap
    assert (arr[:64, x + 8:x + 72] == [255, 0, 0]).all()  # 16 px x4, centred
    assert (arr[:64, x:x + 8] == 255).all() and (arr[64:80, x + 8:x + 72] != [255, 0, 0]).any()
    assert (arr[64:80, x:x + 80].sum(axis=2) < 200).any()  # its caption starts at y = 64


def test_a_grid_of_thousands_is_drawn_one_tile_at_a_time(monkeypatch):
    """eval's grid of every image: no enlarged copy of each held until the grid is done."""
    import weakref

    from glidectl import images

    real, made, alive = images.enlarge, [], []

    def enlarge_(image, min_size=64):
        alive.append(sum(ref() is not None for ref in made))
        tile = real(image, min_size)
        made.append(weakref.ref(tile))
        return tile

    monkeypatch.setattr(images, "enlarge", enlarge_)
    tiles = [Image.new("RGB", (16, 16), (5 * i, 0, 0)) for i in range(40)]
    grid = captioned_grid(tiles, [f"tile {i}" for i in range(40)])
    assert len(made) == 40 and max(alive) <= 1  # before: 39 enlarged copies at the end
    assert grid.getpixel((0, 0)) == (0, 0, 0) and grid.getpixel((6 * 68, 0)) == (30, 0, 0)


def test_a_png_that_must_not_replace_a_file_never_does(tmp_path, monkeypatch):
    """save_png(replace=False) refuses a taken name and leaves no temp file, with hard
    links and, on a filesystem without them (exFAT), through an exclusive claim."""
    import errno
    import os

    import pytest

    from glidectl.images import save_png

    red, blue = Image.new("RGB", (4, 4), "red"), Image.new("RGB", (4, 4), "blue")
    for links in (True, False):
        if not links:
            def no_link(src, dst):
                raise OSError(errno.EPERM, "Operation not permitted")

            monkeypatch.setattr(os, "link", no_link)
        path = tmp_path / f"{links}" / "00000.png"
        save_png(red, path, {"prompt": "red"}, replace=False)
        with pytest.raises(FileExistsError):
            save_png(blue, path, {"prompt": "blue"}, replace=False)
        assert Image.open(path).text["prompt"] == "red"
        assert [p.name for p in path.parent.iterdir()] == ["00000.png"]


@pytest.mark.timeout(60)
def test_a_caption_word_far_wider_than_its_tile_is_cut_at_once():
    """A 20,000-character word (a URL, a run-on caption) is cut to what fits with "...":
    measured one character shorter at a time, a 5,000-character one held a preview minutes."""
    from PIL import ImageFont

    from glidectl.images import _wrap

    font = ImageFont.load_default()
    (line,) = _wrap("y" * 20000, 64, font, 3)
    kept = len(line) - 3
    assert line == "y" * kept + "..." and kept >= 1
    assert font.getlength(line) <= 64 < font.getlength("y" * (kept + 1) + "...")
    assert captioned_grid([Image.new("RGB", (16, 16))], ["y" * 20000]).width == 64


def test_a_grid_of_more_columns_than_images_is_one_row():
    """make_grid(images, cols=10**9) was an OverflowError from PIL, cols=10**6 a canvas of
    empty columns that ran out of memory, and cols=100 for 4 images a strip of 96 blanks."""
    from glidectl.images import make_grid

    tiles = [Image.new("RGB", (64, 64), c) for c in ("red", "blue", "green", "yellow")]
    one_row = make_grid(tiles, cols=4)
    assert one_row.size == (4 * 64 + 3 * 2, 64)
    for cols in (5, 100, 10**6, 10**9, np.int64(10**9)):
        assert make_grid(tiles, cols=cols).tobytes() == one_row.tobytes()
    assert make_grid(tiles).size == make_grid(tiles, cols=2).size == (130, 130)
