"""Output folders of sample and eval: checked before any model loads; prompts kept bounded."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .atomic import probe_writable
from .errors import GlidectlError
from .runs import pruned_step_dir

PROMPT_EXCERPT_CHARS = 200


def broken_link(path: Path) -> str | None:
    """How ``path``, or the nearest folder above it that is not there, is a symbolic link
    that leads nowhere (``"is a broken symbolic link (to '/gone')"``, or ``"is under
    'runs/old', a broken …"``); None when neither is. A folder cannot be made through one."""
    path = Path(path)
    for link in (path, *path.parents):
        if link.is_symlink() and not link.exists():
            where = "is" if link == path else f"is under {str(link)!r},"
            return f"{where} a broken symbolic link (to {os.readlink(link)!r})"
        if link.exists():
            return None
    return None


def check_out_dir(out: Path, flag: str = "--out", holds: str = "") -> None:
    """Raise unless ``out`` is (or can become) a writable folder; creates nothing. ``holds``:
    what the folder holds (``the folder images are written to (00000.png, …)``), said when a
    new ``out`` is named like an image file (``--out x.png`` made a folder ``x.png``)."""
    out = Path(out)
    if holds:
        _check_not_an_image_name(out, flag, holds)
    if (link := broken_link(out)) is not None:
        raise GlidectlError(f"{flag} {str(out)!r} {link}; remove the link or point it at a "
                            "folder.")
    probe_dir = out
    while not probe_dir.exists() and probe_dir.parent != probe_dir:
        probe_dir = probe_dir.parent
    if probe_dir.exists() and not probe_dir.is_dir():
        what = "is a file" if probe_dir == out else f"is under {str(probe_dir)!r}, a file"
        raise GlidectlError(f"{flag} {str(out)!r} {what}; pass a folder.")
    if (step_dir := pruned_step_dir(out)) is not None:  # pruning deletes what is written
        raise GlidectlError(f"{flag} {str(out)!r} is in checkpoint folder {step_dir!r}, which "
                            "training deletes when it prunes old checkpoints; pass a folder "
                            "outside checkpoints/.")
    try:
        probe_writable(probe_dir)
    except OSError as exc:
        raise GlidectlError(
            f"{flag} {str(out)!r} is not writable ({exc.strerror or exc}); pass another "
            "folder or fix its permissions."
        ) from None


def _check_not_an_image_name(out: Path, flag: str, holds: str) -> None:
    """One sentence when ``out``, not there yet, ends with an image file's extension."""
    from .data.records import IMAGE_EXTENSIONS

    if out.suffix.lower() in IMAGE_EXTENSIONS and not out.exists() and not out.is_symlink():
        raise GlidectlError(f"{flag} {str(out)!r} names an image file, but {flag} is {holds}; "
                            f"pass a folder (e.g. {str(out.with_suffix(''))!r}).")


def prompt_record(prompt: str, used: str | None = None, cut: bool = False) -> dict[str, str]:
    """A prompt as stored in outputs: itself when short, else a bounded excerpt and the sha256
    of the full text. ``used`` (the text the model read) is stored too, as ``prompt_used``,
    when the prompt is long or the model dropped tokens of it (``cut``)."""
    if len(prompt) <= PROMPT_EXCERPT_CHARS:
        record = {"prompt": prompt}
    else:
        record = {"prompt": prompt[:PROMPT_EXCERPT_CHARS - 3] + "...",
                  "prompt_sha256": hashlib.sha256(prompt.encode()).hexdigest(),
                  "prompt_chars": str(len(prompt))}
    if used is not None and (cut or len(prompt) > PROMPT_EXCERPT_CHARS):
        record["prompt_used"] = used[:PROMPT_EXCERPT_CHARS * 4]
    return record
