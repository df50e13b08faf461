"""Atomic file writes: a temp file beside the target, flushed, then renamed over it.

A reader (or a run killed half-way) sees the old file or the new one, never a part. The temp
name is ``.<name>.<pid>@<host>.tmp`` in the same folder (same filesystem, so the rename is
atomic); it is opened like any file, so the user's umask applies. A ``kill -9`` leaves it
behind: the next run into the folder removes those whose writer is gone
(:func:`remove_stale_temps`). Also the lock that keeps a second process from writing a folder
another one writes (:func:`lock_file`).
"""

from __future__ import annotations

import contextlib
import errno
import gc
import hashlib
import json
import math
import os
import re
import shutil
import socket
import stat
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

from .errors import GlidectlError, is_write_failure, write_error

# errors of os.fsync where a filesystem does not do it (some FUSE and network mounts)
NO_FSYNC = {errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EROFS}


# .<name>.<pid>@<host>.tmp (:func:`temp_path`), or .<name>.<pid>.tmp (written before the
# names held the host), and a folder .<name>.<pid>@<host>.tmp.parts (what safetensors writes
# through, :func:`save_safetensors`); groups: name, pid, host (None for the old names), parts
TEMP_NAME = re.compile(r"\.(.+)\.(\d+)(?:@([A-Za-z0-9.-]+))?\.tmp(\.parts)?")
# a temp file of another host (a folder shared over NFS) is that old before it counts as a
# killed writer's: its pid says nothing here, and no write of one file takes a day
OTHER_HOST_STALE_S = 24 * 3600


def host_name() -> str:
    """This machine's name as it goes into a temp file name (letters, digits, '.', '-')."""
    return re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:64] or "localhost"


# the longest file name most filesystems take, in bytes
NAME_MAX = 255


def temp_path(path: Path) -> Path:
    """Where :func:`atomic_path` and :func:`new_path` write before the rename: a name of this
    process's on this host, so two processes writing one file (also from two machines
    sharing the folder) never share a temp file. A name near :data:`NAME_MAX` is cut short
    in it (with a hash of the whole name), so any name the filesystem takes can be
    written."""
    tail = f".{os.getpid()}@{host_name()}.tmp"
    return path.with_name(f".{_kept_name(path.name, tail)}{tail}")


def _kept_name(name: str, tail: str) -> str:
    """``name`` as a temp name ending in ``tail`` keeps it: whole, or its first bytes and 8
    hex digits of its sha1 when the whole would pass :data:`NAME_MAX` (bytes that are not
    UTF-8, a cut character's too, are kept as the filesystem has them)."""
    raw = os.fsencode(name)
    room = NAME_MAX - 1 - len(os.fsencode(tail))
    if len(raw) <= room:
        return name
    return os.fsdecode(raw[:room - 9]) + "~" + hashlib.sha1(raw).hexdigest()[:8]


def _temp_of(temp: Path, kept: str, name: str) -> bool:
    """Whether the temp file ``temp``, keeping ``kept`` of its file's name, is ``name``'s
    (:func:`temp_path` cuts a long name short)."""
    return kept == name or kept == _kept_name(name, temp.name[1 + len(kept):])


def _process_gone(pid: int) -> bool:
    """Whether no process ``pid`` runs (this one, one of another user's and any where it
    cannot be told count as running)."""
    if os.name != "posix" or pid == os.getpid():
        return False  # os.kill(pid, 0) ends the process on Windows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):  # EPERM: it runs, as another user; no process id
        return False
    return False


def _is_stale(path: Path, pid: int, host: str | None, here: str) -> bool:
    """Whether the temp file ``path`` of process ``pid`` on ``host`` is a gone writer's: on
    this host (or an old name without one) when no process ``pid`` runs here; on another
    host (the folder is shared) only when untouched for :data:`OTHER_HOST_STALE_S`."""
    if host is None or host == here:
        return _process_gone(pid)
    try:
        return time.time() - path.lstat().st_mtime > OTHER_HOST_STALE_S
    except OSError:
        return False


def remove_stale_temps(folder: str | Path, name: str | None = None) -> list[Path]:
    """Remove the temp files (``.<name>.<pid>@<host>.tmp``) in ``folder`` whose writer
    process is gone: what a ``kill -9`` left. A live process's, and any other file, are
    kept; so is another host's for a day (a folder shared between machines: its process id
    cannot be looked up here). With ``name``, only that file's (a user's folder holding one
    output). Returns the files removed."""
    removed: list[Path] = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:  # no folder yet (or unreadable: said by whatever writes there)
        return removed
    here = host_name()
    for path in entries:
        match = TEMP_NAME.fullmatch(path.name)
        if not match or (name is not None and not _temp_of(path, match.group(1), name)) \
                or not _is_stale(path, int(match.group(2)), match.group(3), here) \
                or path.is_symlink():
            continue
        if match.group(4) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        elif not match.group(4) and path.is_file():
            with suppress(OSError):
                path.unlink()
                removed.append(path)
    return removed


# the file :func:`probe_writable` writes, under a temp name
PROBE_NAME = "glidectl-write-test"


def probe_writable(folder: str | Path, data: bytes = b"") -> None:
    """Create a file in ``folder`` and remove it again: ``OSError`` where the folder takes no
    new file. The file has a temp name of this process's (:func:`temp_path`), so one that a
    ``kill -9`` left between the two (a probe name with a random part left one more hidden
    file each time) is removed by the next probe of the folder, and by any
    :func:`remove_stale_temps` of it."""
    folder = Path(folder)
    remove_stale_temps(folder, PROBE_NAME)
    probe = temp_path(folder / PROBE_NAME)
    try:
        probe.write_bytes(data)
    finally:  # a full disk takes the name but not the bytes: no probe left behind
        with suppress(OSError):
            probe.unlink(missing_ok=True)


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    """Flush ``path`` to disk; a filesystem that does not do fsync is let be (ENOSPC, EIO:
    the data did not reach the disk, raised)."""
    with open(path, "rb+") as fh:
        try:
            os.fsync(fh.fileno())
        except OSError as exc:
            if exc.errno not in NO_FSYNC:
                raise


def fsync_tree(folder: Path) -> None:
    """Flush every file and folder under ``folder`` to disk: a folder about to be renamed
    into place (a checkpoint) must not be named by a pointer while its files may still be
    lost in a power cut."""
    for path in sorted(Path(folder).rglob("*"), key=lambda p: -len(p.parts)):
        if path.is_file() and not path.is_symlink():
            _fsync_file(path)
        elif path.is_dir():
            fsync_dir(path)
    fsync_dir(Path(folder))


def refuse_special(path: str | Path, what: str = "Output") -> None:
    """One sentence when ``path`` is a device, pipe or socket, or a link to one
    (``/dev/stdout``): a temp file renamed over it would take its place (as root, ``--out
    /dev/full`` made /dev/full a plain file)."""
    modes = []
    for look in (os.lstat, os.stat):
        with suppress(OSError):
            modes.append(look(path).st_mode)
    if any(stat.S_ISCHR(m) or stat.S_ISBLK(m) or stat.S_ISFIFO(m) or stat.S_ISSOCK(m)
           for m in modes):
        raise GlidectlError(f"{what} {str(path)!r} is no file (a device or a pipe), which the "
                            "file written would replace; pass a file's path.")


@contextmanager
def atomic_path(path: str | Path, durable: bool = False) -> Iterator[Path]:
    """Yield a temp path to write; on success it replaces ``path`` (else it is removed).
    A failed write (a full disk, a read-only folder) is a one-line :class:`WriteError`; a
    device or pipe at ``path`` is refused (:func:`refuse_special`).

    ``durable`` also fsyncs the file and its folder (checkpoints: survive a power cut).
    """
    path = Path(path)
    refuse_special(path)
    tmp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        if durable:
            _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
        if is_write_failure(exc):
            raise write_error(path, exc) from None
        raise
    if durable:
        fsync_dir(path.parent)


# errors of os.link where a filesystem has no hard links (FAT, exFAT, some network shares)
NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK}


@contextmanager
def new_path(path: str | Path) -> Iterator[Path]:
    """:func:`atomic_path` for a file that must not replace another: the finished temp file
    (named for this process) is hard-linked to ``path``, which fails with
    ``FileExistsError`` when the name is taken, also by another process writing into the
    same folder; ``path`` appears only whole. Without hard links the name is claimed by an
    exclusive create, then the temp file renamed over the claim."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError as exc:
            if exc.errno not in NO_HARD_LINKS:
                raise
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, umask_mode()))
            os.replace(tmp, path)
    except BaseException as exc:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
        if is_write_failure(exc) and not isinstance(exc, FileExistsError):
            raise write_error(path, exc) from None
        raise
    with suppress(OSError):
        tmp.unlink(missing_ok=True)  # the link's second name


def write_text(path: str | Path, text: str, durable: bool = False) -> Path:
    """Write UTF-8 text atomically."""
    with atomic_path(path, durable) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | Path, data: Any, durable: bool = False) -> Path:
    """Write indented JSON atomically (a number that is not finite as null: see
    :func:`json_safe`)."""
    return write_text(path, json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n",
                      durable)


def json_safe(value: Any) -> Any:
    """``value`` with each float that is NaN or infinite, at any depth, as None: Python's
    ``json`` would write the bare tokens ``NaN``/``Infinity``, which are not JSON (jq,
    JavaScript's ``JSON.parse`` and strict parsers refuse the whole file). The writer that
    owns such a number says why it is missing; this is the last guard."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def umask_mode(mode: int = 0o666) -> int:
    """``mode`` with the process umask applied (what a plain ``open`` would create)."""
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


def save_safetensors(path: str | Path, tensors: dict[str, Any], metadata: dict[str, str],
                     replace: bool = True) -> Path:
    """``tensors`` as a .safetensors file at ``path``, atomically, with the permissions the
    user's umask gives (safetensors alone creates 0600 files) and its metadata in sorted
    order, so the same tensors and metadata are the same bytes (the same sha256).
    ``replace=False``: a file at ``path`` by then is kept (:func:`new_path`'s
    ``FileExistsError``)."""
    with atomic_path(path) if replace else new_path(path) as tmp:
        _save_file(tmp, tensors, metadata)
        _sort_metadata(tmp)
        os.chmod(tmp, umask_mode())
    return Path(path)


def _save_file(tmp: Path, tensors: dict[str, Any], metadata: dict[str, str]) -> None:
    """safetensors' ``save_file`` to ``tmp``, through a folder of this write's own: safetensors
    (0.6 on) writes through a ``.tmpXXXXXX`` file of its own in the folder it writes to, which
    a ``kill -9`` would leave where nothing removes it (1.5 GB for OpenAI's base model); in
    ``.<tmp>.parts`` :func:`remove_stale_temps` removes it with the folder."""
    from safetensors.torch import save_file

    parts = tmp.with_name(tmp.name + ".parts")
    if len(os.fsencode(parts.name)) > NAME_MAX:  # a name at the limit: no room for .parts
        save_file(tensors, str(tmp), metadata=metadata)
        return
    shutil.rmtree(parts, ignore_errors=True)  # a killed writer's of this pid (PID 1 in a
    parts.mkdir()  # container): this write's own, as the temp file beside it is
    try:
        save_file(tensors, str(parts / "file"), metadata=metadata)
        os.replace(parts / "file", tmp)
    finally:
        shutil.rmtree(parts, ignore_errors=True)


def _sort_metadata(path: Path) -> None:
    """Put the metadata of the safetensors file at ``path`` in sorted key order, in place:
    safetensors writes it in a Rust HashMap's order, another in each call. Its header is JSON
    as Python writes it compactly, so the sorted header has the same length; one that is not
    (never seen) is left as it is."""
    with open(path, "r+b") as f:
        size = int.from_bytes(f.read(8), "little")
        text = f.read(size).decode("utf-8")
        header = json.loads(text)
        meta = header.get("__metadata__")
        if not isinstance(meta, dict) or len(meta) < 2 \
                or _compact_json(header) != text.rstrip(" ").encode("utf-8"):
            return
        f.seek(8)
        f.write(_compact_json({**header, "__metadata__": dict(sorted(meta.items()))}))


def _compact_json(value: Any) -> bytes:
    """``value`` as JSON without spaces or escaped non-ASCII (as safetensors' serde writes it)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# the lock files this process holds (real paths): a POSIX record lock is the process's, so
# a second claim from this process (a notebook's second Trainer on one run) would be granted,
# and closing either handle would drop both; _GUARD keeps two threads' claims apart
_HELD: dict[str, HeldLock] = {}
_GUARD = threading.RLock()


class HeldLock:
    r"""A lock :func:`lock_file` took; :meth:`close` lets it go. ``in_use``: its holder writes
    (a claim made and not yet used, a Trainer set up and not run, may be taken over). A lock
    taken over from another claim is the new claim's once :meth:`confirm`\ ed; closed before
    that (its set-up failed), it goes back to the claim it came from."""

    def __init__(self, handle: IO[str], key: str, in_use: bool,
                 took_from: HeldLock | None = None) -> None:
        self._handle: IO[str] | None = handle
        self._key, self.in_use, self.superseded = key, in_use, False
        self._took_from = took_from

    @property
    def closed(self) -> bool:
        return self._handle is None or self._handle.closed

    def confirm(self) -> None:
        """The claim is set up: the lock it took over stays its own."""
        self._took_from = None

    def close(self) -> None:
        guard = globals().get("_GUARD")  # None once the interpreter tears the module down
        with guard if guard is not None else contextlib.nullcontext():
            held = globals().get("_HELD")
            if self._handle is not None and not self._handle.closed:
                if (old := self._took_from) is not None:  # a failed set-up: give it back
                    old._handle, old.superseded, self._took_from = self._handle, False, None
                    if held is not None:
                        held[self._key] = old
                else:
                    if held is not None and held.get(self._key) is self:
                        del held[self._key]
                    self._handle.close()
            self._handle = None

    def __del__(self) -> None:  # a Trainer dropped without running: its claim goes with it
        self.close()


class LockWarning(UserWarning):
    """A lock file on a filesystem that takes no locks (:func:`lock_file` goes on without)."""


def lock_file(path: str | Path, busy: str, in_use: bool = True) -> HeldLock | None:
    """Hold an exclusive lock on ``path`` (created if missing) until the returned lock is
    closed or the process ends (``kill -9`` included); ``GlidectlError(busy)`` when another
    process holds it, or another claim of this process that is in use (a notebook's Trainer
    that runs). A claim of this process not in use (a Trainer set up again by a notebook cell
    run twice) is taken over: it is ``superseded``. A POSIX record lock: owned by the
    process, so never held by forked data workers. None where fcntl is missing or the file
    cannot be created (a folder that takes no new file fails later, said there); a ``path``
    that is there but cannot be opened (a folder, another user's file) is a GlidectlError:
    without the lock a second process would write the same files. A filesystem that takes no
    locks (ENOLCK, ENOSYS) is one :class:`LockWarning` and None: refusing would stop every
    run there, as if another process held it.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not a POSIX system
        return None
    key = os.path.realpath(path)
    with _GUARD:
        if key in _HELD:
            gc.collect()  # a claim that nothing refers to any more (in a cycle) lets go first
        if (old := _HELD.get(key)) is not None:
            if old.in_use:
                raise GlidectlError(busy)
            if _same_file(old._handle, path):
                handle, old._handle, old.superseded = old._handle, None, True
                assert handle is not None
                _HELD[key] = lock = HeldLock(handle, key, in_use, took_from=old)
                return lock
            old.superseded = True  # its lock file was deleted (the run folder made again)
            old.close()
        try:
            handle = open(path, "a+", encoding="utf-8")
        except OSError as exc:
            if not os.path.lexists(path):
                return None
            raise GlidectlError(f"The lock file {str(path)!r} cannot be opened "
                                f"({exc.strerror}), so another process could write the same "
                                "files; remove it (when nothing else uses the folder) and "
                                "try again.") from None
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.close()
            if exc.errno in (errno.EACCES, errno.EAGAIN):  # another process holds it
                raise GlidectlError(busy) from None
            warnings.warn(f"{str(path)!r} cannot be locked on its filesystem "  # NFS without
                          f"({exc.strerror}), so nothing stops a second glidectl process "
                          "from writing the same files; run one at a time there.",
                          LockWarning, stacklevel=2)  # lockd, Lustre without -o flock
            return None
        _HELD[key] = lock = HeldLock(handle, key, in_use)
        return lock


def _same_file(handle: IO[str] | None, path: str | Path) -> bool:
    """Whether the open ``handle`` is the file at ``path`` now (not one deleted since)."""
    if handle is None or handle.closed:
        return False
    try:
        mine, there = os.fstat(handle.fileno()), os.stat(path)
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (there.st_dev, there.st_ino)


def is_locked(path: str | Path) -> bool:
    """Whether another process, or another claim of this one, holds :func:`lock_file` on
    ``path`` (no file: no)."""
    if not Path(path).is_file():
        return False
    with _GUARD:
        if os.path.realpath(path) in _HELD:  # a probe's close would drop this process's lock
            return True
    try:
        with warnings.catch_warnings():  # no locks on its filesystem: said by who locks it
            warnings.simplefilter("ignore", LockWarning)
            probe = lock_file(path, "")
    except GlidectlError:
        return True
    if probe is not None:
        probe.close()
    return False
