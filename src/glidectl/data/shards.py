"""WebDataset tar shards: a directory, a glob, a brace pattern, ``a::b`` or a list, on disk
or at ``http(s)://`` URLs.

Shards are opened here (local files, or HTTP with a timeout) and read with ``webdataset``'s
tar iterators; a shard that is truncated, empty or unreadable is counted by reason and
skipped, keeping what was read before the damage. ``pipe:`` URLs (a shell command) and
other schemes are refused: data never runs code.
"""

from __future__ import annotations

import glob
import json
import os
import tarfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO, NamedTuple

from ..errors import GlidectlError, not_a_file
from .preset_api import first_text
from .records import IMAGE_EXTENSIONS, RawSample, unit_names
from .stats import RejectionCounter
from .tables import JSON_CAPTION_KEYS, json_caption
from .walk import files_with_suffix

SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
# claimed as shards (so a spec starting with one is told what is wrong with it), but only
# HTTP is read
REMOTE_PREFIXES = ("http://", "https://", "pipe:", "s3://", "gs://", "ais://", "hf://")
HTTP_PREFIXES = ("http://", "https://")
HTTP_TIMEOUT_S = 30.0  # to connect, and between received blocks
SHARD_ENDING = {"truncated_tar", "empty_shard", "unreadable_shard", "bad_tar", "bad_shard"}
# extensions a shard's caption (or image) is stored under when not under data.caption_key
# (data.image_key): named in the hint when samples lack the configured one
CAPTION_EXTENSIONS = ("txt", "caption", "text", "cap", "prompt", "captions")
# fields of a shard's JSON that hold a caption the presets do not read: named in the hint
JSON_CAPTION_FIELDS = ("prompt", "captions", "cap", "txt", "alt", "alt_text", "description")
IMAGE_KEYS = tuple(ext.lstrip(".") for ext in IMAGE_EXTENSIONS)
# what `dataset inspect` counts the parts of a sample cut between two shards as
SPLIT_REASON = "split_across_shards"


class SplitSample(NamedTuple):
    """A sample whose files end shard ``first`` and begin shard ``second`` (a tar writer cut
    between them): webdataset groups members by key within one tar, so it reads two samples,
    each without the other's files."""

    key: str
    first: str
    second: str

    def note(self) -> str:
        return (f"sample {self.key!r} is split across shards {self.first!r} and "
                f"{self.second!r}: webdataset reads it as two incomplete samples; rewrite the "
                "shards so each sample's files sit in one tar.")


def is_remote(url: str) -> bool:
    return url.startswith(REMOTE_PREFIXES)


def expand_shards(spec: str | Sequence[str]) -> list[str]:
    """Shard paths/URLs for a spec; local paths must exist (GlidectlError otherwise)."""
    import braceexpand

    items = [spec] if isinstance(spec, str) else list(spec)
    urls: list[str] = []
    for item in items:
        for part in str(item).split("::"):
            part = part.strip()
            if not part:
                continue
            part = os.path.expanduser(part)
            # a folder or tar named with { } [ ] * ? ('photos [2024]') is read as named
            for url in [part] if os.path.exists(part) else braceexpand.braceexpand(part):
                if is_remote(url):
                    _check_scheme(url, spec)
                    urls.append(url)
                elif any(c in url for c in "*?[") and not os.path.exists(url):
                    urls.extend(sorted(glob.glob(url)))
                elif os.path.isdir(url):
                    urls.extend(files_with_suffix(url, SHARD_SUFFIXES))
                else:
                    urls.append(url)
    missing = [u for u in urls if not is_remote(u) and not os.path.isfile(u)]
    there = next((u for u in missing if os.path.exists(u)), None)  # a pipe, a device, a folder
    if there is not None:
        move = "" if spec == there else " (move it away or narrow the pattern)"
        raise GlidectlError(f"{_shard_of(there, spec)} {not_a_file(there)}; point data.source "
                            f"at tar files only{move}.")
    if missing:
        raise GlidectlError(
            f"{len(missing)} of {len(urls)} shard(s) of {_show(spec)} do not exist "
            f"(first: {missing[0]}); fix the path or brace pattern."
        )
    if not urls:
        raise GlidectlError(
            f"No .tar shards found for {_show(spec)}; pass a directory of shards, a glob, a "
            "brace pattern like 'shard-{00000..00009}.tar' or a list."
        )
    return urls


def _show(spec: str | Sequence[str]) -> str:
    return repr(spec) if isinstance(spec, str) else f"a list of {len(spec)}"


def _shard_of(url: str, spec: str | Sequence[str]) -> str:
    """How a message names one shard of ``spec``."""
    return f"Shard {url!r}" + ("" if spec == url else f" of {_show(spec)}")


def _check_scheme(url: str, spec: str | Sequence[str]) -> None:
    """Refuse a remote URL that is not HTTP: ``pipe:`` runs a shell command."""
    if url.startswith(HTTP_PREFIXES):
        return
    if url.startswith("pipe:"):
        raise GlidectlError(
            f"{_shard_of(url, spec)} is a pipe: URL, a shell command, and glidectl runs no "
            "command named by its data; run it yourself to write the shards to disk and point "
            "data.source at them."
        )
    raise GlidectlError(
        f"{_shard_of(url, spec)}: glidectl does not read {url.split(':', 1)[0]}:// URLs; copy "
        "the shards to disk (or mount the bucket) and point data.source at them, or give "
        "their http(s):// URLs."
    )


def open_shard(url: str) -> BinaryIO:
    """A binary stream of a local shard or an ``http(s)://`` one (OSError if it cannot be
    opened: urllib's errors are OSErrors)."""
    if url.startswith(HTTP_PREFIXES):
        import urllib.request

        return urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S)
    return open(url, "rb")


def check_reachable(urls: Sequence[str], spec: str | Sequence[str]) -> None:
    """One sentence, before any reading, when the first HTTP shard cannot be fetched (no
    network, a wrong host or path); later failures are counted as ``unreadable_shard``."""
    url = next((u for u in urls if is_remote(u)), None)
    if url is None:
        return
    try:
        open_shard(url).close()
    except OSError as exc:
        why = (f"HTTP {exc.code} {exc.reason}" if hasattr(exc, "code")
               else getattr(exc, "reason", None) or exc)
        raise GlidectlError(
            f"{_shard_of(url, spec)} cannot be fetched ({why}); check the URL and the network, "
            "or download the shards and point data.source at them."
        ) from None


def lacks_end_blocks(path: str) -> bool:
    """True for a local ``.tar`` that does not end in the two zero blocks every tar writer
    closes with: it was cut short, maybe exactly between members, where reading it raises
    nothing. Only a file that begins as a plain tar does (a valid header, or a header cut
    short) is judged: a compressed tar is read whole by the reader, which also reports a
    file that is no tar at all (``bad_tar``)."""
    if is_remote(path) or not path.lower().endswith(".tar"):
        return False
    try:
        with open(path, "rb") as fh:
            if not _begins_as_tar(fh.read(tarfile.BLOCKSIZE)):
                return False
            size = fh.seek(0, os.SEEK_END)
            if size < 2 * tarfile.BLOCKSIZE:
                return size > 0
            fh.seek(size - 2 * tarfile.BLOCKSIZE)
            return any(fh.read())
    except OSError:
        return False  # reading it reports the problem


def data_past_end(path: str, stream: BinaryIO) -> bool:
    """True when a local plain ``.tar`` holds data past ``stream``'s position, where its
    reader stopped without an error: tarfile takes a damaged member header after the first
    for the end of the archive (as it takes a second tar appended to the first), so every
    member after it would be dropped without a word."""
    if is_remote(path) or not path.lower().endswith(".tar"):
        return False
    try:
        position = stream.tell()
        with open(path, "rb") as fh:
            if not _begins_as_tar(fh.read(tarfile.BLOCKSIZE)):
                return False  # gzip'd: the position counts compressed bytes
            fh.seek(position)
            while chunk := fh.read(1 << 16):
                if chunk.strip(b"\0"):
                    return True
    except OSError:
        return False
    return False


COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")  # gzip, bzip2, xz: tarfile's r|*


def _begins_as_tar(head: bytes) -> bool:
    """Whether ``head`` (a file's first block) starts a plain tar: a header that parses (or
    zeros: the end of an empty tar), or a header cut short that is no compressed data."""
    if len(head) < tarfile.BLOCKSIZE:
        return not head.startswith(COMPRESSED_MAGIC)
    if not any(head):
        return True
    try:
        tarfile.TarInfo.frombuf(head, "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False  # gzip'd, or no tar at all
    return True


DUPLICATE = ": duplicate file name in tar file"  # webdataset's group_by_keys says so
DUPLICATE_REASON = "duplicate_key"  # a later sample of a key a shard already holds


def duplicate_member(exc: BaseException) -> tuple[str, str] | None:
    """The sample key and extension of the member webdataset dropped as a repeat of one its
    sample already holds (``a.jpg`` twice: a shard holding two samples of one key), else
    None."""
    from webdataset.tariterators import base_plus_ext

    text = str(exc.args[0]) if exc.args else ""
    if not isinstance(exc, ValueError) or DUPLICATE not in text:
        return None
    key, ext = base_plus_ext(text.rsplit(DUPLICATE, 1)[0])
    return (key, ext.lower()) if key is not None and ext is not None else None


def shard_error_reason(exc: BaseException) -> str:
    """A counter name for an exception raised while reading a shard."""
    text = str(exc).lower()
    if (isinstance(exc, EOFError) or "unexpected end" in text or "truncated" in text
            or "empty header" in text):  # the file ended where a header should follow
        return "truncated_tar"
    if "empty file" in text:
        return "empty_shard"
    if isinstance(exc, OSError):  # missing, unreadable, or an HTTP fetch that failed
        return "unreadable_shard"
    if "duplicate file name" in text:
        return "duplicate_tar_member"
    if isinstance(exc, tarfile.TarError):
        return "bad_tar"
    return "bad_shard"


@dataclass
class ShardSource:
    """Webdataset shards; ``image_keys`` in preference order, e.g. ``("jpg", "png")``."""

    spec: str | Sequence[str]
    urls: list[str]
    image_keys: tuple[str, ...] = ("jpg", "png", "jpeg", "webp")
    caption_key: str = "txt"
    metadata_key: str = "json"
    caption_column: str = ""  # data.caption_column: the JSON field holding the caption
    # per reason (missing_caption, missing_image): the extensions the samples lacking the
    # configured key carry instead, counted as this process reads them (for :meth:`hint`)
    elsewhere: dict[str, Counter[str]] = field(default_factory=dict, repr=False,
                                               compare=False)
    # per shard read: its first and last sample's key, and whether it had image and caption
    ends: dict[str, list[tuple[str, bool]]] = field(default_factory=dict, repr=False,
                                                    compare=False)
    names: dict[str, str] | None = field(default=None, repr=False, compare=False)

    kind = "webdataset"
    splits_samples = False
    num_samples = None

    def shard_name(self, unit: str) -> str:
        """The shard as its samples' keys name it (:func:`unit_names`)."""
        if self.names is None:
            self.names = unit_names(self.urls)
        return self.names.get(unit, unit.rsplit("/", 1)[-1])

    @classmethod
    def open(
        cls, spec: str | Sequence[str], image_key: str = "jpg;png;jpeg;webp",
        caption_key: str = "txt", metadata_key: str = "json", caption_column: str = "",
    ) -> ShardSource:
        keys = tuple(k.strip().lower().lstrip(".") for k in image_key.split(";") if k.strip())
        if caption_key.lower().lstrip(".") == metadata_key.lower().lstrip("."):
            raise GlidectlError(
                f"data.caption_key and data.metadata_key are both {caption_key!r}: each "
                "caption would be the metadata's JSON text; leave data.caption_key at 'txt' "
                "(a sample without a .txt is captioned by its JSON's caption or text field).")
        urls = expand_shards(spec)
        check_reachable(urls, spec)
        return cls(spec, urls, keys or ("jpg",), caption_key.lower().lstrip("."),
                   metadata_key.lower().lstrip("."), caption_column)

    def describe(self) -> str:
        return self.spec if isinstance(self.spec, str) else f"{len(self.urls)} shards"

    def units(self) -> list[str]:
        return list(self.urls)

    def _note_elsewhere(self, sample: Mapping[str, object]) -> None:
        """Count the other caption or image extensions a sample without the configured
        one carries."""
        if self.caption_key not in sample:
            for ext in (e for e in CAPTION_EXTENSIONS if e != self.caption_key and e in sample):
                self.elsewhere.setdefault("missing_caption", Counter())[ext] += 1
            if (found := self._json_field(sample.get(self.metadata_key))) is not None:
                self.elsewhere.setdefault("json_field", Counter())[found] += 1
        if not any(k in sample for k in self.image_keys):
            for ext in (e for e in IMAGE_KEYS if e not in self.image_keys and e in sample):
                self.elsewhere.setdefault("missing_image", Counter())[ext] += 1
            # "photo.0.v2.jpg" is sample "photo", extension "0.v2.jpg" (webdataset's rule)
            dotted = [k for k in sample if k.rpartition(".")[2] in self.image_keys]
            if dotted:
                self.elsewhere.setdefault("dotted_key", Counter())[
                    f"{str(sample.get('__key__', '')).rpartition('/')[2]}.{dotted[0]}"] += 1

    def _json_field(self, raw: object) -> str | None:
        """The caption-like string field of a sample's JSON (``prompt``, …) when it has no
        caption the presets or data.caption_column read (None: none, or not JSON)."""
        if not isinstance(raw, bytes):
            return None
        try:
            meta = json.loads(raw.decode("utf-8-sig"))
        except ValueError:  # not UTF-8 or not JSON: rejected as bad_metadata
            return None
        if not isinstance(meta, dict) or json_caption(meta, self.caption_column) \
                or first_text(meta, JSON_CAPTION_KEYS):
            return None
        return next((k for k in JSON_CAPTION_FIELDS if first_text(meta, (k,))), None)

    def hint(self, reason: str) -> str | None:
        """For samples rejected as ``reason``: the other extension the samples read so far
        carry it under, and the key to set (None: none seen)."""
        found = self.elsewhere.get(reason)
        keys = ";".join(self.image_keys)
        if reason == "missing_image" and (dotted := self.elsewhere.get("dotted_key")):
            n = sum(dotted.values())
            name = dotted.most_common(1)[0][0]
            stem, _, ext = name.rpartition(".")
            return (f"{n} sample{'s' if n != 1 else ''} without a .{keys.replace(';', '/.')} "
                    f"image (data.image_key) {'have' if n != 1 else 'has'} one behind a dot in "
                    f"its name, as {name}: webdataset takes a member's name up to its first dot "
                    "as the sample's key (members sharing it merge into one sample), so rename "
                    f"them without dots before the extension, e.g. {stem.replace('.', '_')}.{ext}.")
        if reason == "missing_caption" and not found and (fields := self.elsewhere.get(
                "json_field")):
            name, n = fields.most_common(1)[0]
            hold, their = ("hold", "their") if n != 1 else ("holds", "its")
            return (f"{n} sample{'s' if n != 1 else ''} without a .{self.caption_key} caption "
                    f"{hold} one under {name!r} in {their} .{self.metadata_key}: set "
                    f"data.caption_column = \"{name}\" to read it.")
        if not found:
            return None
        ext, n = found.most_common(1)[0]
        some = f"{n} sample{'s' if n != 1 else ''} without a"
        carry = "carry" if n != 1 else "carries"
        if reason == "missing_caption":
            return (f"{some} .{self.caption_key} caption (data.caption_key) {carry} a .{ext} "
                    f"file: set data.caption_key = \"{ext}\" to read it.")
        return (f"{some} .{keys.replace(';', '/.')} image (data.image_key) {carry} a .{ext} "
                f"file: set data.image_key = \"{keys};{ext}\" to read it.")

    def split_samples(self) -> list[SplitSample]:
        """The samples cut between the last of one shard read and the first of the next
        (in ``urls`` order) into two parts, neither with both image and caption."""
        splits = []
        for first, second in zip(self.urls, self.urls[1:], strict=False):
            if first in self.ends and second in self.ends:
                (key, whole), (next_key, next_whole) = self.ends[first][1], self.ends[second][0]
                if key == next_key and not whole and not next_whole:
                    splits.append(SplitSample(key, first, second))
        return splits

    def read(self, unit: str, counter: RejectionCounter) -> Iterator[RawSample]:
        from webdataset.tariterators import group_by_keys, tar_file_expander

        ended = False
        truncated = False
        # per key: its members dropped as repeats, by extension, and the samples so counted
        repeats: dict[str, Counter[str]] = {}
        counted: Counter[str] = Counter()

        def handler(exc: BaseException) -> bool:
            # webdataset reports one damaged tar twice (the member read, then the next
            # header); the first shard-level error ends this shard and is the one counted.
            nonlocal ended
            if (member := duplicate_member(exc)) is not None and not ended:
                repeats.setdefault(member[0], Counter())[member[1]] += 1
                return True  # the key's first sample is read; each later one counted once
            reason = shard_error_reason(exc)
            if ended:
                return False
            ended = reason in SHARD_ENDING
            if not (ended and truncated):  # a cut tar was counted when it was opened
                counter.reject(reason, unit)
            return not ended

        if not is_remote(unit) and os.path.isfile(unit) and os.path.getsize(unit) == 0:
            counter.reject("empty_shard", unit)
            return
        if lacks_end_blocks(unit):  # what was written before the cut is still read
            truncated = True
            counter.reject("truncated_tar", unit)
        name = self.shard_name(unit)

        def repeated() -> Iterator[RawSample]:
            """A rejected sample for each later sample of a key seen so far."""
            for key, exts in repeats.items():
                for _ in range(max(exts.values()) - counted[key]):
                    yield RawSample(key=f"{name}/{key}", image=None, caption=None,
                                    reject=DUPLICATE_REASON)
                counted[key] = max(exts.values())

        try:
            stream = open_shard(unit)
        except OSError as exc:
            counter.reject(shard_error_reason(exc), unit)
            return
        with stream:
            files = tar_file_expander([{"url": unit, "stream": stream}], handler=handler)
            for sample in group_by_keys(files, handler=handler):
                yield from repeated()
                self._note_elsewhere(sample)
                image = next((sample[k] for k in self.image_keys if k in sample), None)
                end = (str(sample.get("__key__", "?")),
                       image is not None and self.caption_key in sample)
                self.ends.setdefault(unit, [end, end])[1] = end
                yield RawSample(
                    key=f"{name}/{sample.get('__key__', '?')}",
                    image=image,
                    caption=sample.get(self.caption_key),
                    meta_bytes=sample.get(self.metadata_key),
                )
            yield from repeated()
            if not ended and not truncated and data_past_end(unit, stream):
                counter.reject("bad_tar", unit)
