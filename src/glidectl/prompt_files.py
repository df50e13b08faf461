"""Prompt files, read the same way by ``eval``, ``fit-steps`` and training previews: one
prompt a line, blank lines and ``#`` comments skipped, UTF-8 (a byte-order mark, which
Windows editors write, is not part of the first line; a NUL character, which UTF-16 text holds,
is refused)."""

from __future__ import annotations

import json
from pathlib import Path

from .errors import GlidectlError, cause, from_here


def read_prompt_file(path: str | Path, label: str, *, empty_ok: bool = False) -> list[str]:
    """The prompts of ``path``; a bad file is one sentence naming it as ``label`` (e.g.
    "Prompts file", "preview.prompt_file"). An empty file is an error unless ``empty_ok``; a
    leading ``~`` is the home folder."""
    path = Path(path).expanduser()
    where = f"{label} {str(path)!r}"
    if path.is_dir():
        raise GlidectlError(f"{where} is a folder; pass a text file with one prompt a line.")
    if not path.exists():
        raise GlidectlError(f"{where}{from_here(path)} does not exist; pass a text file with "
                            "one prompt a line.")
    if not path.is_file():  # a FIFO or device would block or read forever
        raise GlidectlError(f"{where} is not a regular file; pass a text file with one "
                            "prompt a line.")
    try:
        lines = text_lines(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError:
        if _is_image(path):
            raise GlidectlError(f"{where} is an image, not a text file; pass a text file "
                                "with one prompt a line.") from None
        raise GlidectlError(f"{where} is not UTF-8 text; save it as UTF-8.") from None
    except OSError as exc:
        raise GlidectlError(f"Cannot read {where} ({cause(exc)}); check its "
                            "permissions.") from None
    if (nul := next((n for n, ln in enumerate(lines, 1) if "\0" in ln), None)) is not None:
        raise GlidectlError(f"{where} holds a NUL character (line {nul}), as UTF-16 text "
                            "saved without a byte-order mark does; save it as UTF-8.")
    prompts = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
    if prompts and all(_json_object(p) for p in prompts):  # {"prompt": ...} lines
        raise GlidectlError(f"{where} holds JSON objects, one a line; prompts are read as "
                            "plain text, one a line: write each prompt as a line of its own "
                            "(without quotes or keys).")
    if not prompts and not empty_ok:
        raise GlidectlError(f"{where} has no prompts (blank lines and # comments are "
                            "skipped); write one a line.")
    return prompts


def _json_object(line: str) -> bool:
    """Whether ``line`` is a JSON object (a JSON-lines record, not a prompt)."""
    if not (line.startswith("{") and line.endswith("}")):
        return False
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def text_lines(text: str) -> list[str]:
    """``text`` cut at its line ends (``\\n``, ``\\r\\n``, ``\\r``) and nowhere else:
    ``str.splitlines`` also cuts at form feeds, U+2028 and other separators that prompts,
    captions and JSON strings may hold."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _is_image(path: Path) -> bool:
    """Whether ``path`` opens as a picture (a PNG or JPEG given where prompts go)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path):
            return True
    except (UnidentifiedImageError, OSError, ValueError):
        return False


def is_text(prompt: str) -> bool:
    """Whether ``prompt`` is text UTF-8 can hold: no lone surrogate (what undecodable bytes
    of a command-line argument, or JSON's ``"\\ud800"``, become). Tokenizers ask it of every
    caption: ASCII text, most of them, is not encoded to answer."""
    if prompt.isascii():
        return True
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_text(prompt: str) -> str:
    """``prompt``, if :func:`is_text`; else one sentence (a tokenizer would raise
    UnicodeEncodeError, or replace what it cannot read)."""
    if not is_text(prompt):
        raise GlidectlError(f"Prompt {prompt!r:.80} is not valid text: it holds half of a "
                            "UTF-16 pair (a lone surrogate, what bytes that are not UTF-8 in a "
                            "command-line argument become); give UTF-8 text.")
    return prompt
