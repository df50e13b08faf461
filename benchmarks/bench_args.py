"""What the benchmark scripts' command lines share: counts that must be positive, a
``--json`` file checked before the work, and bad input said in one line with exit code 2,
as glidectl's own commands say it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _whole(text: str, least: int) -> int:
    """``text`` as a whole number of at least ``least``, else argparse's error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"{value} is below {least}")
    return value


def _wholes(text: str, least: int) -> list[int]:
    """A comma-separated list of whole numbers of at least ``least``."""
    return [_whole(part.strip(), least) for part in text.split(",") if part.strip()] or \
        [_whole(text, least)]


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    return _whole(text, 1)


def at_least(least: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``least`` (``--reference-steps``: 10,
    as ``glidectl fit-steps`` takes it)."""
    def whole(text: str) -> int:
        return _whole(text, least)
    whole.__name__ = f"whole number of at least {least}"
    return whole


def positive_ints(text: str) -> list[int]:
    """An argparse type: a comma-separated list of whole numbers of at least 1 ("16,32")."""
    return _wholes(text, 1)


def nonnegative_int(text: str) -> int:
    """An argparse type: a whole number of at least 0 (a seed; a thread count where 0 is
    torch's default)."""
    return _whole(text, 0)


def nonnegative_ints(text: str) -> list[int]:
    """An argparse type: a comma-separated list of whole numbers of at least 0 ("0,1,2")."""
    return _wholes(text, 0)


def fraction(text: str) -> float:
    """An argparse type: a number from 0 up to (not including) 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not from 0 up to 1")
    return value


def json_out(text: str) -> str:
    """An argparse type: a file the figures can be written to, checked before the run (a
    run of minutes is not to end in a missing folder)."""
    path = Path(text).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder; name a file in it")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"the folder {str(path.parent)!r} does not exist")
    return str(path)


def write_json(path: str, data: Any) -> None:
    """Write ``data`` to ``path`` whole (a temporary file renamed over it) and say so."""
    from glidectl import atomic

    atomic.write_json(path, data)
    print(f"\nwrote {path}")


def run(main: Callable[[], Any]) -> None:
    """Run a script's ``main``: glidectl's one-sentence errors (a missing model, …) go to
    stderr as one line with exit code 2, not a traceback."""
    from glidectl.errors import GlidectlError, one_line

    try:
        code = main()
    except GlidectlError as exc:
        print(f"Error: {one_line(str(exc))}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)
