"""A OneTrainer concepts file as a data source (``data.source = "concepts.json"``, or
``onetrainer:FILE``): each enabled STANDARD and PRIOR_PREDICTION concept's images, read
per epoch as OneTrainer's balancing says and captioned by its ``text.prompt_source``;
``onetrainer-validation:FILE`` reads its VALIDATION concepts instead, a run's validation
data (:func:`validation_spec`).

How OneTrainer reads a concept (mgds ``CollectPaths``, ``ModifyPath``, ``LoadMultipleTexts``,
``GetFilename``, ``SelectRandomText``, ``DiskCache``): the image files of its ``path``
(sub-folders too with ``include_subdirectories``, hidden folders skipped; symbolic links
inside it not followed; ``-masklabel`` masks and ``-condlabel`` conditioning images are
not samples), in sorted path order; the prompt is a random line of the image's ``.txt``
(``sample``), of the file at ``prompt_path`` (``concept``), or the file name without its
extension (``filename``); a
missing or blank prompt file gives the empty prompt (``LoadMultipleTexts``: ``[""]``),
which is trained on. An epoch reads
floor(images × ``balancing``) samples of a REPEATS concept and int(``balancing``) of a
SAMPLES one, walking the sorted images as a ring that continues where the last epoch
stopped: with 10 images and balancing 0.5, epoch 0 reads the first five, epoch 1 the other
five. Units are ``"N/relative path"``, N the concept's number in the file.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import GlidectlError
from .captions import read_regular, read_sidecar
from .onetrainer_config import ConceptsFile, ConceptSpec, read_concepts
from .records import IMAGE_EXTENSIONS, ONETRAINER_EXTENSIONS, RawSample, not_read_by
from .stats import RejectionCounter

# what OneTrainer's CollectPaths leaves out (exclude_postfix): an image's mask and its
# custom conditioning image beside it ("a-masklabel.png", "a-condlabel.png")
NOT_SAMPLES = ("-masklabel", "-condlabel")
TRAINED = ("STANDARD", "PRIOR_PREDICTION")
VALIDATION = ("VALIDATION",)
VALIDATION_KIND = "onetrainer-validation"  # the source type of a file's VALIDATION concepts


@dataclass
class OneTrainerSource:
    """The trained concepts of a OneTrainer concepts file: images, reads and captions."""

    file: ConceptsFile
    concepts: dict[str, ConceptSpec] = field(default_factory=dict)  # by number, those read
    images: dict[str, Path] = field(default_factory=dict)  # unit → image file
    ring: dict[str, list[str]] = field(default_factory=dict)  # number → its units, in order
    place: dict[str, int] = field(default_factory=dict)  # unit → its place in the ring
    prompts: dict[str, str] = field(default_factory=dict)  # number → prompt_path's text
    rows: list[dict[str, Any]] = field(default_factory=list)  # per concept, for inspect
    left: list[str] = field(default_factory=list)  # what the scan left out, in sentences

    kind = "onetrainer"
    splits_samples = True

    @classmethod
    def open(cls, path: str | os.PathLike[str], validation: bool = False) -> OneTrainerSource:
        """The file's training concepts, or with ``validation`` its VALIDATION ones."""
        src = cls(read_concepts(path))
        name = repr(str(src.file.path))
        types = VALIDATION if validation else TRAINED
        for spec in src.file.concepts:
            row = {"concept": spec.name or spec.path_text, "type": spec.type,
                   "enabled": spec.enabled, "balancing": spec.balancing,
                   "strategy": spec.strategy, "images": 0, "per_epoch": 0,
                   "loss_weight": spec.loss_weight}
            src.rows.append(row)
            if not spec.enabled:
                src.left.append(f"{name}: {spec.where} is not enabled and is left out, as "
                                "OneTrainer leaves it out.")
            if not spec.read_as(types):
                continue
            units = src._scan(spec)
            row["images"] = len(units)
            row["per_epoch"] = spec.per_epoch(len(units)) if units else 0
            if not units:
                src.left.append(f"{name}: {spec.where}'s folder {spec.path_text!r} holds no "
                                f"images ({' '.join(IMAGE_EXTENSIONS)}); it is left out.")
                continue
            if not row["per_epoch"]:
                src.left.append(
                    f"{name}: {spec.where} reads 0 images per epoch (balancing "
                    f"{spec.balancing:g}, {spec.strategy}, {len(units)} images, rounded down "
                    "as OneTrainer does), so it is not trained; raise its balancing.")
            key = str(spec.index)
            src.concepts[key], src.ring[key] = spec, units
            src.place.update((u, i) for i, u in enumerate(units))
            if spec.prompt_source == "concept":
                src.prompts[key] = src._prompt_file(spec)
        notes = "".join(f" {note}" for note in src.left)
        what = f"{' or '.join(types)} concept to {'validate' if validation else 'train'} on"
        if not any(spec.read_as(types) for spec in src.file.concepts):
            listed = ", ".join(f"{spec.where} {spec.type}" + " (not enabled)" * (not spec.enabled)
                               for spec in src.file.concepts)
            raise GlidectlError(f"{name} has no enabled {what} ({listed}); enable one, or "
                                f"make it {types[0]}.")
        if src.images and not any(row["per_epoch"] for row in src.rows):
            raise GlidectlError(f"{name} reads no images per epoch: every concept's balancing "
                                f"rounds down to 0.{notes}")
        if not src.images:
            raise GlidectlError(
                f"{name} names no images to {'validate' if validation else 'train'} on: no "
                f"enabled {' or '.join(types)} concept's folder holds image files "
                f"({' '.join(IMAGE_EXTENSIONS)}); point each concept's path at the folder of "
                f"its images.{notes}")
        return src

    def _scan(self, spec: ConceptSpec) -> list[str]:
        """The concept's images as units, in sorted path order, as OneTrainer collects them."""
        folder = spec.path
        assert folder is not None
        where = f"{str(self.file.path)!r}: {spec.where}"
        if not folder.is_dir():
            raise GlidectlError(
                f"{where}: path {spec.path_text!r} is not a folder ({str(folder)!r}; a relative "
                "path is read from the concepts file's folder); give the folder that holds "
                "the concept's images.")
        found = _Collected()
        found.collect(folder, spec.include_subdirectories)
        if found.unreadable:
            raise GlidectlError(f"{where}: folder {found.unreadable[0]!r} cannot be read; "
                                "check its permissions.")
        units, missing = [], 0
        for path in sorted(found.images, key=str):
            unit = f"{spec.index}/{path.relative_to(folder).as_posix()}"
            self.images[unit] = path
            units.append(unit)
            missing += spec.prompt_source == "sample" and not path.with_suffix(".txt").exists()
        if missing:
            many = missing != 1
            self.left.append(
                f"{where}: {missing} image{'s' * many} {'have' if many else 'has'} no .txt "
                f"prompt beside {'them' if many else 'it'} (text.prompt_source \"sample\") and "
                f"{'are' if many else 'is'} trained on the empty prompt, as OneTrainer trains "
                f"{'them' if many else 'it'}; write the .txt, or set text.prompt_source to "
                f"\"filename\" or \"concept\", to caption {'them' if many else 'it'}.")
        self.left += found.notes(where, spec.path_text)
        self.left += filter(None, [not_read_by("OneTrainer does", found.other_kinds, where,
                                               repr(spec.path_text))])
        deeper = found.deeper
        if deeper:
            self.left.append(
                f"{where}: {deeper} image{'s' * (deeper != 1)} in sub-folders of "
                f"{spec.path_text!r} {'are' if deeper != 1 else 'is'} not read, as "
                "include_subdirectories is false; set it to true to read them.")
        return units

    def _prompt_file(self, spec: ConceptSpec) -> str:
        path = spec.prompt_path
        assert path is not None
        raw, why = read_regular(path)  # a named pipe is not opened: it would wait
        try:
            if raw is not None:
                return raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            why = "not UTF-8 text"
        raise GlidectlError(
            f"{str(self.file.path)!r}: {spec.where}: text.prompt_path {str(path)!r} cannot be "
            f"read ({why or 'no such file'}); give the UTF-8 text file of its prompts, one a "
            "line (a relative path is read from the concepts file's folder).")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_samples(self) -> int:
        return len(self.images)

    def units(self) -> list[str]:
        """PRIOR_PREDICTION concepts' images last (so validation.holdout, which takes none
        of them, and previews read the others first)."""
        return sorted(self.images, key=lambda u: self.concepts[u.partition("/")[0]].type
                      == "PRIOR_PREDICTION")

    def reads(self, unit: str, epoch: int) -> int:
        """Times training epoch ``epoch`` reads ``unit``: its concept reads ``k`` samples per
        epoch (:meth:`ConceptSpec.per_epoch`) from its ``n`` images taken as a ring, epoch
        ``e`` from place ``e·k mod n`` on (mgds ``DiskCache``: local index ``e·k + j``,
        image ``(e·k + j) mod n``), so every image is read equally often over the epochs."""
        key = unit.partition("/")[0]
        n, k = len(self.ring[key]), self.concepts[key].per_epoch(len(self.ring[key]))
        laps, rest = divmod(k, n)
        return laps + ((self.place[unit] - epoch * k) % n < rest)

    @property
    def reads_vary(self) -> bool:
        """Whether an epoch's reads of some image change from epoch to epoch (a fractional
        count walking its concept's ring)."""
        return any(spec.per_epoch(len(self.ring[key])) % len(self.ring[key])
                   for key, spec in self.concepts.items())

    def mean_reads(self, unit: str) -> float:
        """Reads of ``unit`` per epoch over the epochs: k/n for each of its concept's ``n``
        images (the ring reads them all equally often), what an endless stream
        (``data.resampled``) draws it by."""
        key = unit.partition("/")[0]
        n = len(self.ring[key])
        return self.concepts[key].per_epoch(n) / n

    def describe(self) -> str:
        return str(self.file.path)

    def concept_table(self) -> list[dict[str, Any]]:
        """Per concept: name, type, enabled, balancing and strategy, images, reads per epoch
        and loss weight (``dataset inspect``)."""
        return [dict(row) for row in self.rows]

    def notes(self) -> list[str]:
        """Settings and types not applied, unknown keys, and what the scan left out."""
        return self.file.notes() + self.left

    def read(self, unit: str, counter: RejectionCounter) -> Iterator[RawSample]:
        key = unit.partition("/")[0]
        spec, path = self.concepts[key], self.images[unit]
        caption: bytes | str | None = ""  # no prompt file: mgds LoadMultipleTexts gives ""
        reject = None
        if spec.prompt_source == "filename":
            caption = path.stem
        elif spec.prompt_source == "concept":
            caption = self.prompts[key]
        else:
            raw, unreadable = read_sidecar(path, (".txt",))
            caption = raw if raw is not None else caption
            # there but not readable (a folder; mgds stops the run): not a missing prompt
            reject = "unreadable_caption" if unreadable is not None else None
        # a missing, empty or blank prompt file is OneTrainer's empty prompt, not a reject
        yield RawSample(key=unit, image=path, caption=caption, reject=reject, rules=spec.rules,
                        loss_weight=spec.loss_weight, empty_ok=True,
                        prior_prediction=spec.type == "PRIOR_PREDICTION")

    def leave_out_prior_prediction(self) -> str | None:
        """Leave the PRIOR_PREDICTION concepts out, for a run that cannot predict as the base
        model (OneTrainer's ``BaseModelSetup.prior_model`` refuses all but LoRA training):
        the warning that says so, or None when there are none."""
        keys = [k for k, spec in self.concepts.items() if spec.type == "PRIOR_PREDICTION"]
        if not keys:
            return None
        for key in keys:
            for unit in self.ring.pop(key):
                del self.images[unit], self.place[unit]
            self.prompts.pop(key, None)
        which = ", ".join(self.concepts.pop(k).where for k in keys)
        many = len(keys) != 1
        name = repr(str(self.file.path))
        if not self.images:
            raise GlidectlError(
                f"{name} names only PRIOR_PREDICTION concepts ({which}) to train on, and only "
                "a LoRA run can train them; train with `glidectl lora`, or make a concept "
                "STANDARD.")
        return (f"{name}: PRIOR_PREDICTION {which} {'are' if many else 'is'} left out of "
                "training: their target is the base model's own prediction, which OneTrainer "
                "makes only in LoRA runs (the model with its adapters off), and a full "
                "finetune has no base model beside the one it trains; train with `glidectl "
                f"lora`, or make {'them' if many else 'it'} STANDARD.")


@dataclass
class _Collected:
    """A concept folder's images as mgds ``CollectPaths`` lists them (``os.scandir``,
    ``follow_symlinks=False``): its files, and with ``include_subdirectories`` those of
    its sub-folders, hidden (".") sub-folders skipped; symbolic links (to files or folders)
    are not followed, a folder reached twice is read once. Unlike mgds, hidden files are
    skipped (macOS's "._a.png" is no image); what is not read is counted for the notes."""

    images: list[Path] = field(default_factory=list)
    deeper: int = 0  # images in sub-folders, not read without include_subdirectories
    linked_files: int = 0  # links to images, not followed
    linked_folders: int = 0  # links to folders, not followed (include_subdirectories)
    hidden: int = 0  # hidden image files, which mgds reads
    other_kinds: Counter[str] = field(default_factory=Counter)  # images OneTrainer skips
    unreadable: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)

    def collect(self, folder: Path, subdirs: bool, read: bool = True) -> None:
        """Add ``folder``'s images (``read`` False: count them as :attr:`deeper`)."""
        real = os.path.normcase(os.path.realpath(folder))
        if real in self.seen:
            return
        self.seen.add(real)
        try:
            with os.scandir(folder) as listing:
                entries = list(listing)
        except OSError:
            if read:
                self.unreadable.append(str(folder))
            return
        for entry in entries:
            if entry.is_symlink():
                if read and entry.is_dir():
                    self.linked_folders += subdirs
                elif read:
                    self.linked_files += _image_suffix(entry.name)
            elif entry.is_dir(follow_symlinks=False):
                if not entry.name.startswith("."):
                    self.collect(Path(entry.path), subdirs, read and subdirs)
            elif read and _image_suffix(entry.name, IMAGE_EXTENSIONS) and not _image_suffix(
                    entry.name) and not entry.name.startswith("."):
                self.other_kinds[os.path.splitext(entry.name)[1].lower()] += 1  # a .gif
            elif _image_suffix(entry.name) and entry.is_file(follow_symlinks=False):
                hidden = entry.name.startswith(".")
                if not read:
                    self.deeper += not hidden
                elif hidden:
                    self.hidden += 1
                else:
                    self.images.append(Path(entry.path))

    def notes(self, where: str, shown: str) -> list[str]:
        """Sentences for the links and hidden files that were not read."""
        out = []
        if links := self.linked_files + self.linked_folders:
            files, folders = self.linked_files, self.linked_folders
            parts = ([f"{files} to {'an image' if files == 1 else 'images'}"] * bool(files)
                     + [f"{folders} to folder{'s' * (folders != 1)}"] * bool(folders))
            many = links != 1
            out.append(
                f"{where}: {links} symbolic link{'s' * many} in {shown!r} ({', '.join(parts)}) "
                f"{'are' if many else 'is'} not followed, as OneTrainer does not follow them "
                "in a concept's folder; copy what they point to into the folder, or give it a "
                "concept of its own.")
        if n := self.hidden:
            many = n != 1
            out.append(
                f"{where}: {n} hidden image file{'s' * many} (named '.…') in {shown!r} "
                f"{'are' if many else 'is'} not read, though OneTrainer reads "
                f"{'them' if many else 'it'} (macOS's '._a.png' is no image); rename "
                f"{'them' if many else 'it'} without the dot to train on "
                f"{'them' if many else 'it'}.")
        return out


def _image_suffix(name: str, kinds: tuple[str, ...] = ONETRAINER_EXTENSIONS) -> bool:
    """Whether mgds takes ``name`` for an image: its extension (one of ``kinds``), and
    neither postfix of :data:`NOT_SAMPLES` at the end of its name without the extension."""
    stem, ext = os.path.splitext(name)
    return ext.lower() in kinds and not stem.endswith(NOT_SAMPLES)




def _concepts_file(data_source: str | list[str]) -> tuple[str, ConceptsFile] | None:
    """The spec as given and the concepts file, when ``data_source`` is a OneTrainer
    concepts file; else None. Only the file is read, not its folders."""
    from .sources import source_type

    kind, given = source_type(data_source)
    if kind is None or kind.name != OneTrainerSource.kind or not isinstance(given, str):
        return None
    return given, read_concepts(os.path.expanduser(given))


def validation_spec(data_source: str | list[str]) -> tuple[str, list[str]] | None:
    """When ``data_source`` is a OneTrainer concepts file with enabled VALIDATION concepts:
    the source spec of those concepts and where each is ("concept 5 ('held out')");
    else None. Only the file is read, not its folders."""
    if (opened := _concepts_file(data_source)) is None:
        return None
    given, file = opened
    found = [c.where for c in file.concepts if c.read_as(VALIDATION)]
    return (f"{VALIDATION_KIND}:{given}", found) if found else None


def check_full_finetune(data_source: str | list[str]) -> None:
    """Refuse a full finetune (no base model to predict as) of a concepts file whose every
    enabled training concept is PRIOR_PREDICTION, before any model is loaded: only the file
    is read, not its folders."""
    if (opened := _concepts_file(data_source)) is None:
        return
    file = opened[1]
    trained = [c for c in file.concepts if c.read_as(TRAINED)]
    if trained and all(c.type == "PRIOR_PREDICTION" for c in trained):
        which = ", ".join(c.where for c in trained)
        raise GlidectlError(
            f"{str(file.path)!r}: every enabled training concept is PRIOR_PREDICTION "
            f"({which}), which a full finetune leaves out (its target is the base model's "
            "own prediction, which only a LoRA run makes); train it with `glidectl lora`, or "
            "add a STANDARD concept.")
