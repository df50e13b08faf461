"""``preview.prompt_file`` and ``preview.low_res``: what they read; a bad file is one sentence."""

from __future__ import annotations

import pytest

from glidectl.config import PreviewConfig
from glidectl.errors import GlidectlError
from glidectl.training.previews import _read_prompts


def test_the_file_lines_follow_the_listed_prompts(tmp_path) -> None:
    path = tmp_path / "p.txt"
    path.write_text("a red circle\n\n  a blue square  \n", encoding="utf-8")
    cfg = PreviewConfig(prompts=["a cat"], prompt_file=str(path))
    assert _read_prompts(cfg) == ["a cat", "a red circle", "a blue square"]


def test_a_tilde_is_the_home_folder(tmp_path, monkeypatch) -> None:
    """preview.prompt_file = "~/p.txt" and preview.low_res = ["~/low.png"] said the file
    "does not exist" (data.source and model.init read '~' as the home folder)."""
    from PIL import Image

    from glidectl.training.previews import _load_low_res

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "p.txt").write_text("a red circle\n", encoding="utf-8")
    Image.new("RGB", (4, 4), (255, 0, 0)).save(tmp_path / "low.png")
    assert _read_prompts(PreviewConfig(prompt_file="~/p.txt")) == ["a red circle"]
    assert _load_low_res(["~/low.png"], 4).shape == (1, 3, 4, 4)


@pytest.mark.parametrize("make, message", [
    (lambda p: p.mkdir(), "preview.prompt_file '.*' is a folder"),
    (lambda p: None, "preview.prompt_file '.*' does not exist"),
    (lambda p: p.write_bytes(b"\xff\xfe\x00bad"), "preview.prompt_file '.*' is not UTF-8"),
])
def test_a_bad_file_is_one_sentence(tmp_path, make, message) -> None:
    path = tmp_path / "p.txt"
    make(path)
    with pytest.raises(GlidectlError, match=message):
        _read_prompts(PreviewConfig(prompt_file=str(path)))


def _truncated_png(path) -> None:
    import numpy as np
    from PIL import Image

    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path)
    path.write_bytes(path.read_bytes()[:600])


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_text("not an image"), "Cannot read preview.low_res image"),
    (_truncated_png, "Cannot read preview.low_res image"),
    (lambda p: p.mkdir(), "is a folder; fix the path"),
])
def test_a_bad_low_res_file_is_one_sentence(tmp_path, make, message) -> None:
    """An upsampler's preview.low_res file that is no image was a PIL traceback."""
    from glidectl.training.previews import _load_low_res

    path = tmp_path / "low.png"
    make(path)
    with pytest.raises(GlidectlError, match=message):
        _load_low_res([str(path)], 8)


def test_low_res_files_are_read_as_their_centre_square(tmp_path) -> None:
    from PIL import Image

    from glidectl.training.previews import _load_low_res

    image = Image.new("RGB", (24, 8), (255, 0, 0))
    image.paste((0, 0, 255), (8, 0, 16, 8))  # the centre 8×8 square is blue
    image.save(tmp_path / "wide.png")
    low = _load_low_res([str(tmp_path / "wide.png")], 4)
    assert low.shape == (1, 3, 4, 4)
    assert low[0, 2].min() > 0.5 and low[0, 0].max() < -0.5


def test_a_low_res_file_of_another_size_is_resized_with_a_note(tmp_path) -> None:
    """A preview.low_res image larger than the upsampler's input was shrunk without a word."""
    from PIL import Image

    from glidectl.training.previews import _load_low_res

    Image.new("RGB", (32, 32), (255, 0, 0)).save(tmp_path / "big.png")
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "fits.png")
    notes: list[str] = []
    low = _load_low_res([str(tmp_path / "big.png"), str(tmp_path / "fits.png")], 8, notes)
    assert low.shape == (2, 3, 8, 8)
    assert notes == [f"preview.low_res image {str(tmp_path / 'big.png')!r} is 32 px across, "
                     "but this upsampler takes 8 px input: it is resized to 8×8 (bicubic) "
                     "for the previews."]
