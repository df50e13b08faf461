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
        """A row of ``dataset inspect``'s table (a dataset config's subsets share it:
        ``class_captions`` counts the images captioned by their ``class_tokens``)."""
        per_epoch = max(self.repeats, 0) * self.images
        return {"folder": self.name, "repeats": self.repeats, "images": self.images,
                "per_epoch": per_epoch, "class_captions": self.named}


def kohya_like(dirnames: Sequence[str]) -> bool:
    """Whether every one of these (at least one) folder names reads as ``N_words``."""
    return bool(dirnames) and all(FOLDER_NAME.fullmatch(d) for d in dirnames)


def has_images(filenames: Sequence[str]) -> bool:
    return any(n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith(".")
               for n in filenames)


def parse_folder(name: str) -> KohyaFolder:
    """The top folder ``name`` (an ``N_words`` name) read as kohya's."""
    match = FOLDER_NAME.fullmatch(name)
    assert match is not None
    digits, words = match.groups()
    return KohyaFolder(name, int(digits), words)  # a name's 255 bytes: far below int()'s limit


def counted_past_max(folders: Sequence[KohyaFolder]) -> list[str]:
    """Folders whose count is past :data:`MAX_REPEATS`: names (``2023_trip``), not repeats."""
    return [f.name for f in folders if f.repeats > MAX_REPEATS]


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


def ordinary_folder_note(root: Path, dirnames: Sequence[str], past_max: Sequence[str]) -> str:
    """Why ``root``, with ``N_words`` folders at its top, is read as any folder: images
    beside them, or counts past :data:`MAX_REPEATS` (``past_max``)."""
    if past_max:
        why = (f"{_shown(past_max)} count{'s' * (len(past_max) == 1)} past {MAX_REPEATS}, "
               "more likely a year or a name than repeats")
        fix = f"rename {'them' if len(past_max) > 1 else 'it'} with a count of at most " \
              f"{MAX_REPEATS} to read it in kohya's layout."
    else:
        why = "it also holds images at its top"
        fix = "move those images into an 'N_words' folder to read it in kohya's layout."
    return (f"{str(root)!r} has kohya-style folders ({_shown(dirnames)}) but {why}, so it is "
            f"read as an ordinary folder (each image once, no captions from folder names); "
            f"{fix}")
