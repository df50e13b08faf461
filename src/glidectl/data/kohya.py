"""kohya-ss's DreamBooth layout: a train folder that holds only ``N_words`` folders (and no
images of its own). Each image directly in ``10_sks dog/`` (not in its sub-folders) is read
10 times per epoch and, without a caption of its own, is captioned "sks dog" (``10_``: the
empty caption); a ``0_`` folder is left out, as kohya's trainers leave it out (kohya-ss
sd-scripts, ``library/config_util.py``: ``generate_dreambooth_subsets_config_by_subdirs``;
``library/train_util.py``: ``glob_images``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .records import IMAGE_EXTENSIONS

FOLDER_NAME = re.compile(r"(\d+)_(.*)")  # "10_sks dog": 10 repeats, class words "sks dog"
MAX_REPEATS = 1000  # above it a name is more likely a date ("2023_trip") than a repeat count


@dataclass
class KohyaFolder:
    """One ``N_words`` folder: its repeats per epoch, class words and what it holds."""

    name: str
    repeats: int
    words: str
    images: int = 0
    named: int = 0  # images captioned by the folder's words (no caption of their own)
    deeper: int = 0  # images in its sub-folders, which kohya's trainers do not read
    reg: bool = False  # regularisation images (data.reg_source, or an is_reg subset)
    draws: int | None = None  # a reg folder's reads per epoch (see reg_draws)

    def to_dict(self) -> dict[str, int | str | bool]:
        """A row of ``dataset inspect``'s table (a dataset config's subsets share it:
        ``class_captions`` counts the images captioned by their ``class_tokens``)."""
        per_epoch = self.draws if self.draws is not None else max(self.repeats, 0) * self.images
        return {"folder": self.name, "repeats": self.repeats, "images": self.images,
                "per_epoch": per_epoch, "class_captions": self.named, "reg": self.reg}


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


def reg_draws(train_reads: int, repeats: Sequence[int]) -> list[int]:
    """Reads per epoch of each regularisation image (``repeats``: their own counts, in
    order), matched to the ``train_reads`` (training images × repeats) of their dataset as
    kohya-ss sd-scripts' ``DreamBoothDataset`` matches them (``library/train_util.py``): a
    first pass takes each image's own count, in order, until the total reaches
    ``train_reads`` (the image that reaches it may overshoot; the images after it are not
    read: kohya's "some of reg images are not used"); while the total falls short, further
    passes add one read to each image in order. The loss of these reads is weighted by
    ``prior_loss_weight`` (kohya's ``loss_weights``)."""
    draws = [0] * len(repeats)
    total = 0
    for i, count in enumerate(repeats):
        if total >= train_reads:
            break
        draws[i], total = count, total + count
    if repeats and total < train_reads:  # every image taken: one more read each, in turn
        per, extra = divmod(train_reads - total, len(repeats))
        draws = [d + per + (i < extra) for i, d in enumerate(draws)]
    return draws


def unread_reg_note(where: str, draws: Sequence[int], repeats: Sequence[int],
                    train_reads: int) -> str | None:
    """kohya's "some of reg images are not used", as a sentence (None: all are read)."""
    unread = sum(1 for d in draws if d == 0)
    if not unread:
        return None
    return (f"{where}: {unread} of {len(draws)} regularisation images are not read: their "
            f"{sum(repeats)} reads with repeats are more than the {train_reads} training "
            "reads per epoch they are matched to, so, as in kohya's trainers, only the first "
            "ones in name order are read, the same ones every epoch.")


def _shown(names: Sequence[str]) -> str:
    return ", ".join(repr(n) for n in names[:3]) + ", …" * (len(names) > 3)


def layout_notes(root: Path, folders: Sequence[KohyaFolder]) -> list[str]:
    """What a kohya reading of ``root`` did, in sentences (folders left out too)."""
    used = [f for f in folders if f.repeats > 0 and not f.reg]  # reg: inspect's table says it
    out = []
    if any(f.images for f in used):  # none: the "holds no images" error says why alone
        named = sum(f.named for f in used if f.words)
        shown = ", ".join(f"{f.name!r} ×{f.repeats}" for f in used[:3]) + ", …" * (len(used) > 3)
        many = named != 1
        out.append(f"{str(root)!r} is read in kohya's layout: each image of an 'N_words' "
                   f"folder N times per epoch ({shown}), and {named} image{'s' * many} without "
                   f"a caption of {'their' if many else 'its'} own {'are' if many else 'is'} "
                   "captioned with the folder's words; set data.kohya_folders = false to read "
                   "every image once.")
    wordless = [f for f in used if not f.words and f.named]
    if n := sum(f.named for f in wordless):
        out.append(f"{n} image{'s' * (n != 1)} without a caption of "
                   f"{'their' if n != 1 else 'its'} own in {_shown([f.name for f in wordless])} "
                   f"under {str(root)!r} {'train' if n != 1 else 'trains'} on the empty "
                   "caption, as in kohya's trainers: the folder has no words after its count; "
                   f"name it like '10_sks dog' to caption {'them' if n != 1 else 'it'}.")
    deep = [f for f in folders if f.deeper]
    if n := sum(f.deeper for f in deep):
        out.append(f"{n} image{'s' * (n != 1)} in sub-folders of {_shown([f.name for f in deep])} "
                   f"under {str(root)!r} {'are' if n != 1 else 'is'} not read: kohya's trainers "
                   "read only the images directly in each 'N_words' folder; move them up, or "
                   "into an 'N_words' folder of their own.")
    left = [f for f in folders if f.repeats == 0]
    if n := sum(f.images for f in left):
        out.append(f"{n} image{'s' * (n != 1)} in {_shown([f.name for f in left])} under "
                   f"{str(root)!r} {'are' if n != 1 else 'is'} left out: a count of 0 leaves a "
                   "folder out, as in kohya's trainers; rename it (e.g. '1_reg') to train on "
                   f"{'them' if n != 1 else 'it'}.")
    return out


def ordinary_folder_note(root: Path, dirnames: Sequence[str], past_max: Sequence[str],
                         others: Sequence[str] = ()) -> str:
    """Why ``root``, with ``N_words`` folders at its top, is read as any folder: images
    beside them, counts past :data:`MAX_REPEATS` (``past_max``), or ``others``, folders
    not named so (kohya's trainers skip them)."""
    if others:
        why = f"also {_shown(others)}, not named 'N_words' (kohya's trainers skip such)"
        fix = f"move {'them' if len(others) > 1 else 'it'} out to read it in kohya's layout."
    elif past_max:
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


def kohya_below_note(root: Path, below: Sequence[str]) -> str:
    """Why ``root``, whose sub-folders ``below`` hold only ``N_words`` folders (kohya_ss's
    project layout: ``img``, ``reg``), is not read in kohya's layout, and what to point at."""
    many = len(below) > 1
    where = "the training one" if many else "it"
    reg = " and data.reg_source at the regularisation one" if many else ""
    return (f"{str(root)!r} is read as an ordinary folder (each image once, no captions from "
            f"folder names), but {_shown(below)} below it {'hold' if many else 'holds'} only "
            f"'N_words' folders, kohya's layout; point data.source at {where} "
            f"({str(root / below[0])!r}){reg} to read it as kohya's trainers do.")
