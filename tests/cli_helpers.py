"""Running glidectl's CLI in the test's own process."""

from __future__ import annotations


def exit_code(*args: object) -> int:
    """``glidectl ARGS`` run in-process (``main``); its exit code."""
    from glidectl.cli.app import main

    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
