"""``preview.prompt_file``: its lines join ``preview.prompts``; a bad file is one sentence."""

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


@pytest.mark.parametrize("make, message", [
    (lambda p: p.mkdir(), "is a folder; name a text file"),
    (lambda p: None, "does not exist; name a text file"),
    (lambda p: p.write_bytes(b"\xff\xfe\x00bad"), "Cannot read preview.prompt_file"),
])
def test_a_bad_file_is_one_sentence(tmp_path, make, message) -> None:
    path = tmp_path / "p.txt"
    make(path)
    with pytest.raises(GlidectlError, match=message):
        _read_prompts(PreviewConfig(prompt_file=str(path)))
