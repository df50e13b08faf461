"""kohya-ss's DreamBooth layout: a train folder that holds only ``N_words`` folders (and no
images of its own). Each image in ``10_sks dog/`` (at any depth) is read 10 times per epoch
and, without a caption of its own, is captioned "sks dog"; a ``0_`` folder is left out, as
kohya's trainers leave it out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import GlidectlError
from .records import IMAGE_EXTENSIONS

FOLDER_NAME = re.compile(r"(\d+)_(\S.*)")  # "10_sks dog": 10 repeats, class words "sks dog"
MAX_REPEATS = 1000  # above it a name is more likely a date ("2023_trip") than a repeat count


@dataclass
class KohyaFolder:
    """One ``N_words`` folder: its repeats per epoch, class words and what it holds."""

    name: str
    repeats: int
    words: str
    images: int = 0
    named: int = 0  # images captioned by the folder's words (no caption of their own)

    def to_dict(self) -> dict[str, int | str]:
        return {"folder": self.name, "repeats": self.repeats, "images": self.images,
                "per_epoch": self.repeats * self.images, "caption_from_name": self.named}


def kohya_like(dirnames: Sequence[str]) -> bool:
    """Whether every one of these (at least one) folder names reads as ``N_words``."""
    return bool(dirnames) and all(FOLDER_NAME.fullmatch(d) for d in dirnames)


def has_images(filenames: Sequence[str]) -> bool:
    return any(n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith(".")
               for n in filenames)


def parse_folder(name: str, root: Path) -> KohyaFolder:
    """The folder ``name`` (an ``N_words`` name) at the top of ``root``, read as kohya's."""
    match = FOLDER_NAME.fullmatch(name)
    assert match is not None
    digits, words = match.groups()
    repeats = int(digits)  # a file name's 255 bytes keep it far below int()'s digit limit
    if repeats > MAX_REPEATS:
        raise GlidectlError(
            f"Folder {name!r} in {str(root)!r} asks, by kohya's naming, for each of its images "
            f"{repeats} times per epoch, and glidectl takes at most {MAX_REPEATS}: "
            "rename it with a smaller count, or set data.kohya_folders = false to read the "
            "folder as any other (each image once)."
        )
    return KohyaFolder(name, repeats, words)


def _shown(names: Sequence[str]) -> str:
    return ", ".join(repr(n) for n in names[:3]) + ", …" * (len(names) > 3)


def layout_notes(root: Path, folders: Sequence[KohyaFolder]) -> list[str]:
    """What a kohya reading of ``root`` did, in sentences (folders left out too)."""
    used = [f for f in folders if f.repeats > 0]
    out = []
    if used:
        named = sum(f.named for f in used)
        shown = ", ".join(f"{f.name!r} ×{f.repeats}" for f in used[:3]) + ", …" * (len(used) > 3)
        many = named != 1
        out.append(f"{str(root)!r} is read in kohya's layout: each image of an 'N_words' "
                   f"folder N times per epoch ({shown}), and {named} image{'s' * many} without "
                   f"a caption of {'their' if many else 'its'} own {'are' if many else 'is'} "
                   "captioned with the folder's words; set data.kohya_folders = false to read "
                   "every image once.")
    left = [f for f in folders if f.repeats == 0]
    if n := sum(f.images for f in left):
        out.append(f"{n} image{'s' * (n != 1)} in {_shown([f.name for f in left])} under "
                   f"{str(root)!r} {'are' if n != 1 else 'is'} left out: a count of 0 leaves a "
                   "folder out, as in kohya's trainers; rename it (e.g. '1_reg') to train on "
                   f"{'them' if n != 1 else 'it'}.")
    return out


def beside_images_note(root: Path, dirnames: Sequence[str]) -> str:
    """Why ``root``, with ``N_words`` folders and images beside them, is read as any folder."""
    return (f"{str(root)!r} has kohya-style folders ({_shown(dirnames)}) but also images at "
            "its top, so it is read as an ordinary folder (each image once, no captions from "
            "folder names); move those images into an 'N_words' folder to read it in kohya's "
            "layout.")
