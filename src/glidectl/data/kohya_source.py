"""The images a kohya dataset config names (:mod:`glidectl.data.kohya_config`), read as
kohya's trainers read them.

A DreamBooth subset reads the images directly in its ``image_dir`` (not its sub-folders,
as kohya), each captioned by its ``stem + caption_extension`` file (its first line, as
kohya: :func:`caption_file_text`), else by ``class_tokens``, else (as kohya) by the empty
caption; a fine-tuning subset reads its
``metadata_file`` (JSON ``{image_key: {"caption": ..., "tags": ...}}``; the caption is
"caption,tags" joined by ``caption_separator`` as kohya joins them, the empty one without
either: :func:`_metadata_caption`). Each image is read ``num_repeats`` times
per training epoch; a count below 1 leaves the subset out, and a second subset of one
dataset with the same ``image_dir`` as written (a fine-tuning one: the same
``metadata_file``) is left out, as kohya leaves them out. Units are ``"N/name"``, N the
subset's number in the file, so two datasets may share a folder.

An ``is_reg = true`` subset holds regularisation images: each [[datasets]] entry reads its
own as often per epoch as :func:`~glidectl.data.kohya.reg_draws` matches them to its
training images × repeats, and training weights their loss by ``train.prior_loss_weight``.
"""

from __future__ import annotations

import glob
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import GlidectlError
from .captions import caption_file_text, decode_caption, read_regular, read_sidecar
from .images import Rejected
from .kohya import KohyaFolder, reg_draws, unread_reg_note
from .kohya_config import DatasetConfig, SubsetSpec, read_dataset_config
from .records import IMAGE_EXTENSIONS, KOHYA_EXTENSIONS, RawSample, not_read_by
from .stats import RejectionCounter
from .walk import walk

OTHER_CAPTIONS = (".txt", ".caption")  # caption files a subset may hold under another name


@dataclass
class KohyaConfigSource:
    """The subsets of a kohya dataset config: their images, repeats and captions."""

    config: DatasetConfig
    uncond_p: float = 0.0  # data.uncond_p, to say how it combines with caption dropout
    resampled: bool = False  # data.resampled: an endless stream, without epochs
    subsets: dict[str, SubsetSpec] = field(default_factory=dict)  # by number, those read
    images: dict[str, Path] = field(default_factory=dict)  # unit → image file
    captions: dict[str, str | None] = field(default_factory=dict)  # unit → metadata caption
    draws: dict[str, int] = field(default_factory=dict)  # reg unit → reads per epoch
    rows: list[KohyaFolder] = field(default_factory=list)  # per subset, for inspect
    left: list[str] = field(default_factory=list)  # what the scan left out, in sentences

    kind = "kohya"
    splits_samples = True

    @classmethod
    def open(cls, path: str | os.PathLike[str], uncond_p: float = 0.0,
             resampled: bool = False) -> KohyaConfigSource:
        src = cls(read_dataset_config(path), float(uncond_p), bool(resampled))
        seen: dict[tuple[int, str, str], int] = {}  # SubsetSpec.same_as → subset number
        name = repr(str(src.config.path))
        for spec in src.config.subsets:
            row = KohyaFolder(spec.shown, spec.repeats, spec.class_tokens or "")
            src.rows.append(row)
            if spec.repeats < 1:
                src.left.append(f"{name}: {spec.where} ({spec.shown!r}) has num_repeats = "
                                f"{spec.repeats} and is left out, as kohya leaves it out.")
                continue
            if (first := seen.get(spec.same_as)) is not None:
                key = spec.same_as[1]
                src.left.append(f"{name}: {spec.where} ({spec.shown!r}) has the same {key} as "
                                f"subset {first} of its dataset and is left out, as kohya "
                                f"leaves it out (kohya compares {key} as written); put it in "
                                "another [[datasets]] to read it twice.")
                continue
            seen[spec.same_as] = spec.number
            src.subsets[str(spec.number)] = spec
            if spec.metadata_file is not None:
                src._scan_metadata(spec, row)
            else:
                src._scan_folder(spec, row)
        if not src.subsets:
            raise GlidectlError(f"{name} reads no images: kohya leaves out every one of its "
                                "subsets." + "".join(f" {note}" for note in src.left))
        if not src.images:
            raise GlidectlError(
                f"{str(src.config.path)!r} names no images: its subsets' image_dirs hold no "
                f"image files ({' '.join(KOHYA_EXTENSIONS)}) at their top (kohya reads no "
                "sub-folders); point each image_dir at the folder that holds its images."
                + "".join(f" {note}" for note in src.left))
        src._match_reg()
        return src

    def _spec(self, unit: str) -> SubsetSpec:
        return self.subsets[unit.partition("/")[0]]

    def _match_reg(self) -> None:
        """Each dataset's regularisation images, matched to its training reads."""
        if not any(s.is_reg for s in self.subsets.values()):
            return
        if all(self._spec(u).is_reg for u in self.images):
            raise GlidectlError(
                f"{str(self.config.path)!r} names only regularisation images (is_reg "
                "subsets); add a subset of training images with is_reg = false.")
        for d in sorted({s.dataset for s in self.subsets.values()}):
            units = [u for u in self.images if self._spec(u).dataset == d]
            train = sum(self._spec(u).repeats for u in units if not self._spec(u).is_reg)
            reg = [u for u in units if self._spec(u).is_reg]
            repeats = [self._spec(u).repeats for u in reg]
            draws = reg_draws(train, repeats)
            self.draws.update(zip(reg, draws, strict=True))
            where = f"{str(self.config.path)!r}: dataset {d}"
            if note := unread_reg_note(where, draws, repeats, train):
                self.left.append(note)
        for spec in self.subsets.values():
            row = self.rows[spec.number - 1]
            row.reg = spec.is_reg
            if spec.is_reg:
                row.draws = sum(n for u, n in self.draws.items() if self._spec(u) is spec)

    def _folder(self, spec: SubsetSpec) -> Path:
        folder = spec.image_dir
        assert folder is not None
        if not folder.is_dir():
            here = Path(spec.image_dir_text).expanduser()
            hint = (f" (it does exist in the current folder, where kohya would look: write "
                    f"{str(here.resolve())!r})") if here.is_dir() and not here.is_absolute() \
                else ""
            raise GlidectlError(
                f"{str(self.config.path)!r}: {spec.where}: image_dir {spec.image_dir_text!r} "
                f"is not a folder ({str(folder)!r}; a relative image_dir is read from the "
                f"config's folder){hint}; give the folder that holds the subset's images.")
        return folder

    def _listing(self, folder: Path) -> list[str]:
        try:
            return sorted(os.listdir(folder))
        except OSError as exc:
            raise GlidectlError(f"Folder {str(folder)!r} cannot be read ({exc.strerror}); "
                                "check its permissions.") from None

    def _scan_folder(self, spec: SubsetSpec, row: KohyaFolder) -> None:
        folder = self._folder(spec)
        names = self._listing(folder)
        present = set(names)
        other = no_caption = 0
        skipped: Counter[str] = Counter()  # images of kinds kohya does not read
        for name in names:
            if name.startswith(".") or not name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            path = folder / name
            if not path.is_file():
                continue
            if not name.lower().endswith(KOHYA_EXTENSIONS):
                skipped[path.suffix.lower()] += 1
                continue
            unit = f"{spec.number}/{name}"
            self.images[unit] = path
            row.images += 1
            stem = path.stem
            if stem + spec.caption_extension in present:
                continue
            other += any(stem + ext in present for ext in OTHER_CAPTIONS)
            if spec.class_tokens is not None:
                row.named += 1
            else:
                no_caption += 1
        where = f"{str(self.config.path)!r}: {spec.where}"
        if spec.is_reg and not row.images:
            raise GlidectlError(
                f"{where}: the is_reg subset's image_dir {spec.image_dir_text!r} holds no "
                f"images ({' '.join(KOHYA_EXTENSIONS)}) at its top; put the regularisation "
                "images there, or remove the subset.")
        if other:
            default = " (kohya's default)" * (spec.caption_extension == ".caption")
            self.left.append(
                f"{where}: {other} image{'s' * (other != 1)} without a "
                f"{spec.caption_extension!r} file {'have' if other != 1 else 'has'} a .txt or "
                f".caption file, which caption_extension = {spec.caption_extension!r}{default} "
                "does not read; set caption_extension to read them.")
        if no_caption:
            many = no_caption != 1
            self.left.append(
                f"{where}: {no_caption} image{'s' * many} {'have' if many else 'has'} neither "
                f"a {spec.caption_extension!r} file nor the subset's class_tokens and "
                f"{'train' if many else 'trains'} on the empty caption, as in kohya's "
                "trainers (\"neither caption file nor class tokens are found. use empty "
                "caption\"); give the subset class_tokens to caption "
                f"{'them' if many else 'it'}.")
        self.left += filter(None, [not_read_by("kohya does", skipped, where,
                                               repr(spec.image_dir_text))])
        deeper = sum(1 for d, _, files in walk(folder) if Path(d) != folder
                     for n in files if n.lower().endswith(IMAGE_EXTENSIONS))
        if deeper:
            self.left.append(
                f"{where}: {deeper} image{'s' * (deeper != 1)} in sub-folders of "
                f"{spec.image_dir_text!r} {'are' if deeper != 1 else 'is'} not read, as kohya "
                "reads only the images directly in an image_dir; give each sub-folder a "
                "subset of its own.")

    def _scan_metadata(self, spec: SubsetSpec, row: KohyaFolder) -> None:
        path = spec.metadata_file
        assert path is not None
        name = f"{str(self.config.path)!r}: {spec.where}: metadata_file {str(path)!r}"
        raw, why = read_regular(path)  # a named pipe is not opened: it would wait
        if raw is None:
            raise GlidectlError(f"{name} cannot be read ({why or 'no such file'}); check the "
                                "path (a relative one is read from the config's folder).")
        try:
            entries = json.loads(raw.decode("utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise GlidectlError(f"{name} is not JSON text ({exc}); write kohya's metadata "
                                "JSON, {\"image_key\": {\"caption\": \"...\"}}.") from None
        if not isinstance(entries, dict):
            raise GlidectlError(f"{name} holds a JSON {type(entries).__name__}, not an "
                                "object of {\"image_key\": {\"caption\": \"...\"}}.")
        folder = self._folder(spec) if spec.image_dir is not None else None
        by_stem: dict[str, str] = {}
        if folder is not None:
            for file in self._listing(folder):
                if file.lower().endswith(KOHYA_EXTENSIONS):  # kohya's glob_images kinds
                    by_stem.setdefault(Path(file).stem, file)
        missing = bad = 0
        other_kinds: Counter[str] = Counter()  # keys whose only image kohya does not read
        for key, entry in entries.items():
            image = _metadata_image(key, folder, by_stem, self.config.path.parent)
            if image is None:
                missing += 1
                if kind := _other_kind(key, folder):
                    other_kinds[kind] += 1
                continue
            if not isinstance(entry, dict):
                bad += 1
                continue
            unit = f"{spec.number}/{key}"
            self.images[unit] = image
            self.captions[unit] = _metadata_caption(entry, spec.rules.separator,
                                                     spec.rules.any_line)
            row.images += 1
        if bad and not row.images:  # not "the image_dirs hold no image files"
            raise GlidectlError(f"{name}: {'its' if bad == 1 else f'all {bad}'} "
                                f"entr{'ies' if bad != 1 else 'y'} naming an image "
                                f"{'are' if bad != 1 else 'is'} not an object; write kohya's "
                                "metadata JSON, {\"image_key\": {\"caption\": \"...\"}}.")
        if missing:
            kinds = "".join(f"; {n} with only a {kind} file, which kohya does not read"
                            for kind, n in sorted(other_kinds.items()))
            self.left.append(f"{name}: {missing} entr{'ies' if missing != 1 else 'y'} "
                             f"name{'s' * (missing == 1)} no "
                             f"image file (KEY{'/'.join(KOHYA_EXTENSIONS)} in image_dir "
                             f"{spec.image_dir_text!r}, or a path from the config's folder"
                             f"{kinds}) and {'are' if missing != 1 else 'is'} left out.")
        if bad:
            self.left.append(f"{name}: {bad} entr{'ies' if bad != 1 else 'y'} "
                             f"{'are' if bad != 1 else 'is'} not an object with a caption and "
                             f"{'are' if bad != 1 else 'is'} left out.")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_samples(self) -> int:
        return len(self.images)

    def units(self) -> list[str]:
        """Training images first, then regularisation images (so previews and
        validation.holdout take training images)."""
        return sorted(self.images, key=lambda u: self._spec(u).is_reg)

    def repeats(self, unit: str) -> int:
        """Times per epoch training reads ``unit``: its subset's ``num_repeats``, or for a
        regularisation image as matched by :func:`~glidectl.data.kohya.reg_draws`."""
        return self.draws[unit] if unit in self.draws else self._spec(unit).repeats

    def describe(self) -> str:
        return str(self.config.path)

    def kohya_table(self) -> list[dict[str, Any]]:
        """Per subset: its folder, repeats, images, reads per epoch and class-token
        captions (``dataset inspect``)."""
        return [row.to_dict() for row in self.rows]

    def notes(self) -> list[str]:
        """Keys not applied, subsets and images left out, and how caption dropout adds to
        data.uncond_p."""
        out = self.config.notes() + self.left
        rates = sorted({s.rules.dropout for s in self.subsets.values() if s.rules.dropout})
        if rates and self.uncond_p > 0:
            both = ", ".join(f"{1 - (1 - r) * (1 - self.uncond_p):.0%}" for r in rates)
            out.append(
                f"{str(self.config.path)!r}: caption_dropout_rate adds to data.uncond_p "
                f"({self.uncond_p:g}): two independent draws, so those subsets train on the "
                f"empty caption {both} of the time; set data.uncond_p = 0 for kohya's rates "
                "alone.")
        return out + self._every_n_epochs() + self._kept_separators()

    def _every_n_epochs(self) -> list[str]:
        """caption_dropout_every_n_epochs (n > 1) under data.resampled, whose endless
        stream stays in its first epoch: it would never drop a caption."""
        every = [s for s in self.subsets.values() if s.rules.dropout_every > 1]
        if not self.resampled or not every:
            return []
        which = (f"subsets {', '.join(str(s.number) for s in every)}" if len(every) > 1
                 else every[0].where)
        return [f"{str(self.config.path)!r}: {which}: "
                "caption_dropout_every_n_epochs drops no caption with data.resampled = true, "
                "whose endless stream has no epochs to count; set data.resampled = false to "
                "drop them every n-th epoch as kohya does."]

    def _kept_separators(self) -> list[str]:
        """Per keep_tokens_separator, the subsets whose captions train with it as written
        (kohya splits at it only to shuffle, drop or warm up tags)."""
        kept: dict[str, list[SubsetSpec]] = {}
        for spec in self.subsets.values():
            if spec.rules.keep_separator and not spec.rules.splits_tags:
                kept.setdefault(spec.rules.keep_separator, []).append(spec)
        out = []
        for sep, specs in kept.items():
            many = len(specs) > 1
            which = (f"subsets {', '.join(str(s.number) for s in specs)}" if many
                     else specs[0].where)
            out.append(
                f"{str(self.config.path)!r}: {which}: keep_tokens_separator {sep!r} stays in "
                f"{'their' if many else 'its'} captions as written, as in kohya's trainers, "
                f"since {'they' if many else 'it'} neither shuffle{'s' * (not many)} "
                f"(shuffle_caption), drop{'s' * (not many)} tags (caption_tag_dropout_rate) "
                f"nor warm{'s' * (not many)} up (token_warmup_step); set one of them, or "
                "remove the separator from the captions.")
        return out

    def read(self, unit: str, counter: RejectionCounter) -> Iterator[RawSample]:
        spec = self.subsets[unit.partition("/")[0]]
        path = self.images[unit]
        caption: str | None = None
        reject = None
        if spec.metadata_file is not None:
            caption = self.captions.get(unit) or ""  # kohya: no caption nor tags: ""
        else:
            raw, unreadable = read_sidecar(path, (spec.caption_extension,))
            if unreadable is not None:  # there but not readable (a folder): not a missing one
                reject = "unreadable_caption"
            elif raw is None:  # kohya: the class tokens, else the empty caption
                caption = spec.class_tokens or ""
            elif not raw:  # an empty file stops kohya's run ("caption file is empty")
                reject = "empty_caption"
            else:
                try:
                    caption = caption_file_text(decode_caption(raw), spec.rules.any_line)
                except Rejected as exc:
                    reject = exc.reason
        yield RawSample(key=unit, image=path, caption=caption, reject=reject, rules=spec.rules,
                        is_reg=spec.is_reg, empty_ok=True)  # kohya trains on "" too


def _metadata_image(key: str, folder: Path | None, by_stem: dict[str, str],
                    base: Path) -> Path | None:
    """The image a metadata key names, looked up as kohya's fine-tuning dataset looks it up:
    the key as a path (a relative one from the config's folder, ``base``, where kohya reads
    it from the folder it runs in), else in ``folder`` (the subset's image_dir) the key with
    one of kohya's image extensions added (``name`` or ``sub/name``: ``by_stem`` holds the
    folder's own images by stem), or the key as a file name there."""
    given = Path(key).expanduser()
    path = given if given.is_absolute() else base / given
    if path.is_file():
        return path
    if folder is None:
        return None
    if key in by_stem:
        return folder / by_stem[key]
    if ("/" in key or os.sep in key) and (found := _stem_image(folder / key,
                                                            KOHYA_EXTENSIONS)):
        return found  # a stem in a sub-folder of image_dir
    named = folder / key
    return named if key.lower().endswith(KOHYA_EXTENSIONS) and named.is_file() else None


def _other_kind(key: str, folder: Path | None) -> str | None:
    """The extension of an image in ``folder`` that ``key`` names by stem or file name but
    kohya does not read (``.gif``), for the note on keys left out; else None."""
    if folder is None:
        return None
    inner = folder / key
    if inner.suffix.lower() in IMAGE_EXTENSIONS and inner.is_file():
        return inner.suffix.lower()
    found = _stem_image(inner, IMAGE_EXTENSIONS)
    return found.suffix.lower() if found else None


def _stem_image(inner: Path, kinds: tuple[str, ...]) -> Path | None:
    """The first file (sorted) named ``inner`` with one of the extensions ``kinds`` added."""
    if not inner.parent.is_dir():
        return None
    return next((c for c in sorted(inner.parent.glob(glob.escape(inner.name) + ".*"))
                 if c.stem == inner.name and c.suffix.lower() in kinds and c.is_file()), None)


def _metadata_caption(entry: dict[str, Any], separator: str, any_line: bool) -> str | None:
    """kohya's fine-tuning caption (``FineTuningDataset``): tags alone, as written, without
    a caption; else ``caption + caption_separator + tags`` once (non-empty tags; a later
    line of a multi-line caption then ends in them), or with ``any_line``
    (``enable_wildcard``) the tags, their newlines made separators, after each non-blank
    line of the caption."""
    caption, tags = entry.get("caption"), entry.get("tags")
    caption = caption if isinstance(caption, str) else None
    tags = tags if isinstance(tags, str) else None
    if caption is None:
        return tags
    if any_line:
        if tags is None:
            return caption
        tags = tags.replace("\n", separator)
        return "\n".join(f"{line}{separator}{tags}" for line in caption.split("\n")
                         if line.strip())
    return f"{caption}{separator}{tags}" if tags else caption
