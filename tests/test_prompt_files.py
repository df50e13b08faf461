"""One prompt-file reader for eval, fit-steps and training previews."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from data_helpers import without_root_powers

from glidectl.config import PreviewConfig
from glidectl.errors import GlidectlError
from glidectl.prompt_files import read_prompt_file


def test_comments_blank_lines_crlf_and_a_byte_order_mark_are_not_prompts(tmp_path) -> None:
    path = tmp_path / "p.txt"
    path.write_bytes("\ufeff# tuning captions\r\na red circle\r\n\r\n  a blue square \r\n"
                     .encode("utf-8"))
    assert read_prompt_file(path, "Prompts file") == ["a red circle", "a blue square"]


def test_a_prompt_is_cut_only_at_line_ends_and_json_lines_are_refused(tmp_path) -> None:
    """str.splitlines cut a prompt at a form feed or U+2028 (text pasted from the web); a
    .jsonl file of {"prompt": ...} records was sampled as its JSON text."""
    path = tmp_path / "p.txt"
    path.write_text("a red\u2028circle\nform\x0cfeed\n", encoding="utf-8")
    assert read_prompt_file(path, "Prompts file") == ["a red\u2028circle", "form\x0cfeed"]
    path.write_text('{"prompt": "a red circle"}\n{"prompt": "a blue square"}\n')
    with pytest.raises(GlidectlError, match="holds JSON objects, one a line; prompts are read "
                                            "as plain text"):
        read_prompt_file(path, "Prompts file")
    path.write_text("{curly} prompt {here}\n")  # a prompt that is no JSON stays a prompt
    assert read_prompt_file(path, "Prompts file") == ["{curly} prompt {here}"]


def test_utf16_without_a_byte_order_mark_is_refused_not_sampled(tmp_path) -> None:
    """UTF-16 without a BOM is valid UTF-8 holding NULs: eval drew '\x00a\x00 \x00r…'
    (saved as 000_a-r-e-d-c-i-r-c-l-e.png) for 'a red circle'."""
    path = tmp_path / "p.txt"
    for codec in ("utf-16-le", "utf-16-be"):
        path.write_bytes("# c\na red circle\n".encode(codec))
        with pytest.raises(GlidectlError, match=r"holds a NUL character \(line 1\), as UTF-16 "
                                                r"text .*; save it as UTF-8\.$"):
            read_prompt_file(path, "Prompts file")


def test_fit_steps_and_previews_read_prompt_files_as_eval_does(tmp_path) -> None:
    """fit-steps and preview.prompt_file took '# ...' lines (and a BOM) as prompts."""
    from glidectl.cli.fit_cmd import read_prompts as fit_prompts
    from glidectl.evaluation import read_prompts as eval_prompts
    from glidectl.training.previews import _read_prompts as preview_prompts

    path = tmp_path / "p.txt"
    path.write_text("\ufeff# captions\na cat\n", encoding="utf-8")
    assert eval_prompts(path) == fit_prompts([], path) == ["a cat"]
    assert preview_prompts(PreviewConfig(prompt_file=str(path))) == ["a cat"]


def test_a_fifo_is_named_as_not_a_regular_file(tmp_path) -> None:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    with pytest.raises(GlidectlError, match="is not a regular file"):  # was "does not exist"
        read_prompt_file(path, "Prompts file")


def test_an_unreadable_or_empty_file_is_one_sentence(tmp_path) -> None:
    path = tmp_path / "p.txt"
    path.write_text("# only a comment\n\n", encoding="utf-8")
    with pytest.raises(GlidectlError, match="has no prompts"):
        read_prompt_file(path, "Prompts file")
    assert read_prompt_file(path, "preview.prompt_file", empty_ok=True) == []
    path.write_text("a cat\n", encoding="utf-8")
    path.chmod(0)
    code = ("from glidectl.prompt_files import read_prompt_file\n"
            "from glidectl.errors import GlidectlError\n"
            f"try: read_prompt_file({str(path)!r}, 'Prompts file')\n"
            "except GlidectlError as e: print(e)\n")
    res = subprocess.run([*without_root_powers(), sys.executable, "-c", code],
                         capture_output=True, text=True)
    assert res.stdout.startswith("Cannot read Prompts file"), res.stdout + res.stderr


def test_an_image_given_as_the_prompts_file_is_named_as_one(tmp_path) -> None:
    """`glidectl eval picture.png` said "is not UTF-8 text; save it as UTF-8"."""
    from PIL import Image

    Image.new("RGB", (8, 8), (200, 0, 0)).save(tmp_path / "00.png")
    with pytest.raises(GlidectlError, match=r"is an image, not a text file; pass a text file "
                                            r"with one prompt a line\.$"):
        read_prompt_file(tmp_path / "00.png", "Prompts file")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(GlidectlError, match=r"is not UTF-8 text; save it as UTF-8\.$"):
        read_prompt_file(tmp_path / "latin1.txt", "Prompts file")
