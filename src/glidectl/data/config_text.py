"""The dataset files other trainers write (kohya's TOML and JSON, OneTrainer's concepts
JSON), read as text and JSON with one sentence for a file that cannot be, and their values'
types checked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import GlidectlError


def read_text(path: Path, kind: str) -> str:
    """``path`` as UTF-8 text (a byte-order mark dropped); ``kind``: the file it should be
    ("kohya's dataset config (the .toml or .json file of its --dataset_config)"), named
    when ``path`` is a folder or a pipe (:func:`~glidectl.data.captions.read_regular`)."""
    from .captions import read_regular

    name = repr(str(path))
    raw, why = read_regular(path)
    if why == "a folder":
        raise GlidectlError(f"{name} is a folder; give {kind}.")
    if why == "not a regular file":  # a pipe would wait for a writer
        raise GlidectlError(f"{name} is not a regular file (a pipe or a device); give "
                            f"{kind}.")
    if raw is None:
        raise GlidectlError(f"{name} cannot be read ({why or 'No such file or directory'}); "
                            "check that it exists and is readable.")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise GlidectlError(f"{name} is not UTF-8 text; save it as UTF-8.") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")  # as read_text's newlines


def parse_json(text: str, path: Path) -> Any:
    """``text`` (of ``path``) as JSON; an error names its line and column."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise GlidectlError(f"{str(path)!r} is not valid JSON ({exc.msg} at line "
                            f"{exc.lineno}, column {exc.colno}); fix it there.") from None


KIND_WORDS = {float: "a number", int: "a whole number", bool: "true or false", str: "text"}


def wrong_kind(value: Any, kind: type) -> str | None:
    """What ``value`` should be ("a number", ...) when it is not a ``kind`` (a bool is no
    number), else None."""
    if kind in (float, int):
        numeric = (int, float) if kind is float else int
        ok = isinstance(value, numeric) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    return None if ok else KIND_WORDS[kind]
