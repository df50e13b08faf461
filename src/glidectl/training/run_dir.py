"""A new run's name and the checks made before training (the layout: :mod:`glidectl.runs`)."""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path

from ..errors import GlidectlError

MIN_FREE_BYTES = 64 * 1024 * 1024


def next_run_name(output_dir: Path, prefix: str = "run") -> str:
    """The first free ``<prefix>-NNN`` under ``output_dir``."""
    taken = set()
    if output_dir.is_dir():
        for child in output_dir.iterdir():
            match = re.fullmatch(rf"{re.escape(prefix)}-(\d+)", child.name)
            if match:
                taken.add(int(match.group(1)))
    n = 1
    while n in taken:
        n += 1
    return f"{prefix}-{n:03d}"


def check_writable(directory: Path, needed_bytes: int = MIN_FREE_BYTES) -> None:
    """Raise GlidectlError unless ``directory`` can be created, written and has free space."""
    probe_parent = directory
    while not probe_parent.exists():
        if probe_parent.parent == probe_parent:
            break
        probe_parent = probe_parent.parent
    if probe_parent.exists() and not probe_parent.is_dir():
        raise GlidectlError(
            f"Output path {str(probe_parent)!r} is a file, not a folder; "
            "choose another --output-dir."
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-test-{uuid.uuid4().hex}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise GlidectlError(
            f"Output folder {str(directory)!r} is not writable ({exc.strerror or exc}); "
            "choose another --output-dir or fix its permissions."
        ) from None
    free = shutil.disk_usage(directory).free
    if free < needed_bytes:
        raise GlidectlError(
            f"Output folder {str(directory)!r} has only {free / 2**20:.0f} MiB free but a "
            f"checkpoint needs about {needed_bytes / 2**20:.0f} MiB; free space or choose "
            "another --output-dir."
        )

