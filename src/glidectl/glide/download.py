"""Cache-first, resumable downloads of model files (urllib, rich progress bar).

A partial transfer is kept as ``<file>.part`` and resumed with an HTTP Range request; the
finished file is checked (the size the server announced and, with ``check``, what the file
is) and renamed into place atomically, so a file in the cache is always complete.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from .. import __version__
from ..errors import GlidectlError, WriteError, cause, write_error

if TYPE_CHECKING:  # urllib and http.client load on the first download: `--help` stays fast
    import http.client
    import urllib.error

CHUNK = 1 << 20
#: The most bytes a download may write: past it the source is not a checkpoint but one that
#: never ends (a file:// mirror's link to /dev/zero, a server's endless body with no
#: Content-Length), which would fill the disk. OpenAI's largest checkpoint holds 398,368,198
#: float32 weights (upsample-inpaint, about 1.6 GB).
MAX_BYTES = 2 << 30
#: Why a whole downloaded file is not the one wanted (a clause starting "it ..."), or None.
Check = Callable[[Path], str | None]


def cache_dir() -> Path:
    """``$GLIDECTL_HOME``, else ``$XDG_CACHE_HOME/glidectl``, else ``~/.cache/glidectl``."""
    home = os.environ.get("GLIDECTL_HOME")
    if home:
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "glidectl"


OFFLINE_VARIABLES = ("GLIDECTL_OFFLINE", "HF_HUB_OFFLINE")


def offline_by() -> str | None:
    """The variable (``GLIDECTL_OFFLINE``, else ``HF_HUB_OFFLINE``) that forbids network
    access, if one does."""
    from ..ranges import switched_on

    return next(filter(switched_on, OFFLINE_VARIABLES), None)


def offline() -> bool:
    """True when ``GLIDECTL_OFFLINE`` (or ``HF_HUB_OFFLINE``) forbids network access."""
    return offline_by() is not None


class _Interrupted(Exception):
    """A transfer that stopped early; the .part file keeps what arrived."""


class _Unusable(Exception):
    """A whole transfer that is not the file wanted (the ``check``'s clause); deleted."""


class _Endless(Exception):
    """A source that sends more than a checkpoint holds (a clause starting "it ..."); what
    arrived is deleted."""


def _total_from(resp: http.client.HTTPResponse, offset: int) -> int | None:
    content_range = resp.headers.get("Content-Range", "")
    if "/" in content_range and content_range.rsplit("/", 1)[1].strip().isdigit():
        return int(content_range.rsplit("/", 1)[1])
    length = resp.headers.get("Content-Length")
    return offset + int(length) if length and length.isdigit() else None


def _whole_size(refusal: urllib.error.HTTPError) -> int | None:
    """The file's size a 416 refusal names (``Content-Range: bytes */N``), if it does."""
    given = (refusal.headers or {}).get("Content-Range", "")
    match = re.fullmatch(r"bytes \*/(\d+)", given.strip())
    return int(match.group(1)) if match else None


def _resumed_from(resp: http.client.HTTPResponse) -> int | None:
    """The first byte a 206 answer holds (``Content-Range: bytes START-END/N``)."""
    match = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", "").strip())
    return int(match.group(1)) if match else None


def _fetch_once(url: str, part: Path, timeout: float, progress: bool, label: str) -> bool:
    """Fetch ``url`` into ``part``, resuming what it holds; True when bytes kept from an
    earlier transfer are part of the result."""
    import http.client
    import urllib.error
    import urllib.request

    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": f"glidectl/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            if _whole_size(exc) == offset:  # all of it arrived; a kill came before the rename
                return True
            part.unlink()  # our .part is stale or larger than the file: restart
            raise _Interrupted("server refused to resume; restarting") from exc
        raise
    with resp:
        if offset and resp.status != 206:
            offset = 0  # the server ignored Range and sends it all: start over
        elif offset and _resumed_from(resp) != offset:  # not where .part ends: never glued
            part.unlink()
            raise _Interrupted(f"server resumed at byte {_resumed_from(resp)}, not {offset}; "
                               "restarting")
        total = _total_from(resp, offset)
        if total is not None and total > MAX_BYTES:
            part.unlink(missing_ok=True)
            raise _Endless(f"it announces {total:,} bytes, more than a GLIDE checkpoint holds "
                           f"({MAX_BYTES:,} at most)")
        try:
            fh = open(part, "ab" if offset else "wb")
        except OSError as exc:
            raise write_error(part, exc) from None
        try:
            done = offset
            with _progress(progress, label, total, done) as advance:
                while True:
                    try:
                        chunk = resp.read(CHUNK)
                    except (http.client.IncompleteRead, ConnectionError, TimeoutError) as exc:
                        raise _Interrupted(f"connection dropped after {done} bytes") from exc
                    if not chunk:
                        break
                    if done + len(chunk) > (MAX_BYTES if total is None else total):
                        raise _Endless(_endless(total))
                    try:
                        fh.write(chunk)
                        fh.flush()
                    except OSError as exc:  # a full disk: the network is not at fault
                        raise write_error(part, exc) from None
                    done += len(chunk)
                    advance(len(chunk))
        finally:
            with suppress(OSError):  # a full disk fails the close too: the error is said
                fh.close()
    if total is not None and done != total:
        raise _Interrupted(f"got {done} of {total} bytes")
    return offset > 0


def _endless(total: int | None) -> str:
    """What a source that sent more than ``total`` bytes (the size it announced, up to
    :data:`MAX_BYTES`) or, announcing none, more than :data:`MAX_BYTES` is: a clause
    starting "it ..."."""
    if total is not None:
        return (f"it sent more than the {total:,} bytes it announced (a device such as "
                "/dev/zero, or a file still being written)")
    return (f"it sent more than {MAX_BYTES:,} bytes, more than a GLIDE checkpoint holds (a "
            "link to /dev/zero, or a server whose body never ends)")


def _fetch_checked(url: str, part: Path, timeout: float, progress: bool, label: str,
                   check: Check | None) -> None:
    """:func:`_fetch_once`, then ``check`` on the whole ``part``. A resumed file that fails
    is fetched once more from byte 0 (the kept bytes may be another file's); a file that
    still fails is deleted and raised as :class:`_Unusable`."""
    resumed = _fetch_once(url, part, timeout, progress, label)
    problem = check(part) if check else None
    if problem and resumed:
        part.unlink()
        _fetch_once(url, part, timeout, progress, label)
        problem = check(part)
    if problem:
        part.unlink(missing_ok=True)
        raise _Unusable(problem)


class _progress:
    """A rich progress bar on stderr (or nothing), used as ``with ... as advance``."""

    def __init__(self, enabled: bool, label: str, total: int | None, done: int):
        self.enabled, self.label, self.total, self.done = enabled, label, total, done

    def __enter__(self):
        if not self.enabled:
            return lambda n: None
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.bar = Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
            TransferSpeedColumn(), TimeRemainingColumn(), console=Console(stderr=True),
        )
        self.bar.__enter__()
        task = self.bar.add_task(self.label, total=self.total, completed=self.done)
        return lambda n: self.bar.advance(task, n)

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.bar.__exit__(*exc)


class Fetched(NamedTuple):
    """A file :func:`fetch` made sure of, and who put it there: ``"cache"`` (it was there),
    ``"this process"`` or ``"another process"`` (fetched while this one waited for it)."""

    path: Path
    by: str


def download(
    url: str,
    dest: str | Path,
    *,
    progress: bool = True,
    retries: int = 3,
    timeout: float = 60.0,
    instead: str = "",
    check: Check | None = None,
) -> Path:
    """Return ``dest``, downloading ``url`` there first unless it is already present.

    Interrupted transfers resume from ``dest.part`` (up to ``retries`` tries here, and again
    on the next call). A whole transfer must have the size the server announced and pass
    ``check`` (a function of the file saying why it is not the one wanted, or None) before
    it is renamed to ``dest``; one that fails is deleted. Errors raise GlidectlError saying
    where to put the file by hand and, with ``instead``, what else the caller could do
    ("pass the path of ...").
    """
    return fetch(url, dest, progress=progress, retries=retries, timeout=timeout,
                 instead=instead, check=check).path


def fetch(url: str, dest: str | Path, *, progress: bool = True, retries: int = 3,
          timeout: float = 60.0, instead: str = "", check: Check | None = None) -> Fetched:
    """:func:`download`, saying who put the file in place."""
    dest = Path(dest)
    if dest.is_file():
        return Fetched(dest, "cache")
    if dest.is_symlink():  # a link to a drive not mounted now: not to be written over
        what = ("a folder, not a checkpoint file; remove" if dest.exists() else
                "not there (a drive not mounted?); mount it, or remove")
        raise GlidectlError(f"{str(dest)!r} is a link to {os.readlink(dest)!r}, which is "
                            f"{what} the link to download into the cache.")
    hint = f"put the file at {str(dest)!r} yourself" + (f", or {instead}" if instead else "")
    if (variable := offline_by()) is not None:
        raise GlidectlError(f"{str(dest)!r} is not in the cache and downloads are off "
                            f"({variable}); {hint}.")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file or a dangling link in its place, a read-only folder
        from ..out_dir import broken_link

        link = broken_link(dest.parent)
        why = f"it {link}" if link else exc.strerror or str(exc)
        raise GlidectlError(f"Cannot create cache folder {str(dest.parent)!r} ({why}); set "
                            "GLIDECTL_HOME to a writable folder or fix that path.") from None
    with _only_downloader(dest, progress):
        if dest.is_file():  # another process fetched it while this one waited
            return Fetched(dest, "another process")
        return Fetched(_download(url, dest, progress, retries, timeout, hint, check),
                       "this process")


@contextmanager
def _only_downloader(dest: Path, progress: bool) -> Iterator[None]:
    """Hold ``.<name>.lock`` beside ``dest`` for the download: several processes wanting
    one file (each rank of a multi-GPU run loading ``openai:base``, two ``sample``s) would
    otherwise write one ``.part`` at once and rename a mix of their bytes into the cache."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not a POSIX system
        yield
        return
    try:
        handle = open(dest.with_name(f".{dest.name}.lock"), "a+b")
    except OSError:  # a cache folder that takes no new file fails at the .part, said there
        yield
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another process holds it
            if progress:
                print(f"Waiting for another glidectl process downloading {dest.name} ...",
                      file=sys.stderr, flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:  # a filesystem without locks (Lustre without -o flock, NFS without
            pass  # lockd: ENOSYS, ENOLCK) was no other process's: download unlocked
        yield  # the lock ends with the file (or the process)


def _download(url: str, dest: Path, progress: bool, retries: int, timeout: float,
              hint: str, check: Check | None) -> Path:
    import http.client
    import urllib.error

    part = dest.with_name(dest.name + ".part")
    reason = ""
    for attempt in range(max(1, retries)):
        try:
            _fetch_checked(url, part, timeout, progress, dest.name, check)
            break
        except _Endless as exc:  # a source without end: retrying writes as much again
            part.unlink(missing_ok=True)
            raise GlidectlError(f"Stopped downloading {url}: {exc}; nothing was cached: check "
                                f"the address and run again, or {hint}.") from None
        except _Unusable as exc:  # the server sent something else: retrying cannot help
            raise GlidectlError(f"Downloaded {url}, but {exc}; nothing was cached: check the "
                                f"address and run again, or {hint}.") from None
        except WriteError as exc:  # retrying cannot help; what arrived stays for next time
            kept = part.is_file() and part.stat().st_size > 0
            again = f"; the next run resumes from {part.name}" if kept else ""
            raise WriteError(f"{str(exc).rstrip('.')}{again}.") from None
        except urllib.error.HTTPError as exc:
            if exc.code not in BUSY_CODES:  # 404, 403, …: asking again gets the same
                raise GlidectlError(
                    f"Downloading {url} failed with HTTP {exc.code} {exc.reason}; {hint}."
                ) from exc
            reason = f"HTTP {exc.code} {exc.reason}"  # a server busy for a moment: retried
            if attempt + 1 < retries:
                time.sleep(min(_retry_after(exc), 30.0) or min(0.5 * 2**attempt, 8.0))
        except (_Interrupted, urllib.error.URLError, ConnectionError, TimeoutError,
                http.client.HTTPException, OSError) as exc:
            local = getattr(exc, "reason", None)
            if isinstance(local, OSError) and url[:5].lower() == "file:":  # no network here:
                raise GlidectlError(  # a missing file or a folder stays so on a retry
                    f"Cannot read {url} ({local.strerror or cause(local)}); check the address "
                    f"and run again, or {hint}.") from None
            reason = str(local or exc) or type(exc).__name__
            if attempt + 1 < retries:
                time.sleep(min(0.2 * (attempt + 1), 2.0))
    else:
        kept = part.is_file() and part.stat().st_size > 0
        again = f"run again to resume from {part.name}" if kept else "run again"
        raise GlidectlError(
            f"Could not download {url} ({reason}); check the connection and {again}, or "
            f"{hint}.")
    try:  # here: the whole file, checked; what fails now is the folder, not the network
        os.replace(part, dest)
    except OSError as exc:
        raise GlidectlError(
            f"Downloaded {url}, but cannot put it at {str(dest)!r} ({cause(exc)}); make that "
            f"path free (a folder or a file of another user is there) and run again: the next "
            f"run takes {part.name} as it is.") from None
    return dest


# HTTP statuses of a server or CDN that is busy for a moment: asked again, as pip does
BUSY_CODES = {429, 500, 502, 503, 504}


def _retry_after(exc: Any) -> float:
    """Seconds a ``Retry-After`` header asks for (0 when none or a date)."""
    value = (getattr(exc, "headers", None) or {}).get("Retry-After", "")
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return 0.0
