"""Errors a user can cause. The CLI prints them as one line and exits with code 2."""

from __future__ import annotations

import errno
import functools
import os
import re
from collections.abc import Callable, Container, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar


class GlidectlError(Exception):
    """A problem with the user's input, files or environment, said in one sentence.

    Raised inside a DataLoader worker, torch re-raises it in the parent with the worker's
    traceback as the message; the constructor strips that back to the original sentence.
    """

    exit_code = 2

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str):
            args = (_unwrap_worker_message(args[0]),)
        super().__init__(*args)


_WRAPPED = re.compile(r"^(?:[\w.]+\.)?\w*Error: (.+)$")


def _unwrap_worker_message(message: str) -> str:
    if not message.startswith("Caught ") or "Original Traceback" not in message:
        return message
    for line in reversed(message.strip().splitlines()):
        match = _WRAPPED.match(line.strip())
        if match:
            return match.group(1)
    return message.strip().splitlines()[-1]


def from_here(path: str | os.PathLike) -> str:
    """' (relative to the current folder, CWD)' for a relative path, else '': a command run
    from another folder than the one meant says where it looked."""
    if os.path.isabs(os.path.expanduser(os.fspath(path))):
        return ""
    return f" (relative to the current folder, {os.getcwd()})"


class ConfigError(GlidectlError):
    """A glide.toml or ``--set`` value that is unknown, mistyped or malformed."""


class PluginError(GlidectlError):
    """A plugin that failed to load or registered a name twice."""


class MisuseError(GlidectlError):
    """A plugin called one of glidectl's functions wrongly (a denoiser given σ's that differ
    across the batch): the plugin's error, so a guarded call names the plugin."""


class NonFiniteSample(GlidectlError):
    """Sampling met NaN or infinite values (from the network, or from a sampler)."""


class WriteError(GlidectlError):
    """A file could not be written mid-work (a full disk, a file size limit, a folder made
    read-only): a failure, not bad input, so exit code 1."""

    exit_code = 1


# a write to standard output that cannot end (> /dev/full, a full disk): its own OSError,
# where the command's files are WriteErrors (one line, exit 1) already
OUTPUT_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO)


def output_full(exc: OSError) -> str:
    """The one sentence for standard output that ``exc`` could not write (a full disk)."""
    return (f"Cannot write glidectl's output ({exc.strerror}): the disk where standard output "
            "(or a file it writes) goes is full or failing; free space there, or send the "
            "output elsewhere.")


def is_write_failure(exc: BaseException) -> bool:
    """An OSError, or safetensors' account of one ("I/O error: ... (os error 28)")."""
    return (isinstance(exc, OSError) and exc.errno is not None) or (
        type(exc).__name__ == "SafetensorError" and "I/O error" in str(exc))


def write_error(path: object, exc: BaseException) -> WriteError:
    """The one-line error for a failed write of ``path``."""
    if isinstance(exc, OSError) and exc.strerror:
        reason = exc.strerror
    else:
        reason = re.sub(r"^.*I/O error: | \(os error \d+\)$", "", one_line(str(exc)))
    what = getattr(exc, "errno", None)
    if what is None and (code := re.search(r"\(os error (\d+)\)$", one_line(str(exc)))):
        what = int(code.group(1))  # safetensors' account of an OSError keeps only its number
    advice = ("remove or rename the folder in its place" if what == errno.EISDIR
              else "pick a shorter name" if what == errno.ENAMETOOLONG
              else "free disk space" if what in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
              else "fix the folder's permissions" if what in (errno.EACCES, errno.EPERM,
                                                              errno.EROFS)
              else "free disk space or fix the folder's permissions")
    return WriteError(f"Cannot write {str(path)!r} ({reason}); {advice} and try again.")


def not_a_file(path: os.PathLike) -> str | None:
    """Why ``path`` is no file to read, as a predicate ("is a folder", "is no file (a device
    or a pipe)", "does not exist"); None for a file."""
    if os.path.isfile(path):
        return None
    if os.path.isdir(path):
        return "is a folder"
    return "is no file (a device or a pipe)" if os.path.exists(path) else "does not exist"


def got(value: Any) -> str:
    """How an error shows an argument of the wrong kind: ``1.5 (float)``, its repr cut short."""
    return f"{one_line(repr(value)):.60} ({type(value).__name__})"


def takes(keyword: str, what: str, value: Any) -> GlidectlError:
    """The one sentence for ``keyword`` given ``value`` where it takes ``what``:
    "latest_adapter() takes a LoRA run folder's path, got None (NoneType)."."""
    return GlidectlError(f"{keyword} takes {what}, got {got(value)}.")


def check_callback(value: Any, keyword: str, call: str) -> None:
    """One sentence unless ``value`` is None or callable (``call``: how it is called)."""
    if value is not None and not callable(value):
        raise takes(keyword, f"a function, called as {call}, or None", value)


def is_own_warning(category: type[Warning]) -> bool:
    """A warning glidectl itself raises (shown as one ``Warning:`` line, or in the web page)."""
    return category.__module__.startswith("glidectl")


def canonical_word(value: Any, words: Container[str]) -> Any:
    """``value`` as the lower-case word of the closed set ``words`` it names in any case
    (``FP32`` → ``fp32``), the one rule for choice words on every surface; anything else
    (not text, not ASCII, no such word) comes back as it was, for the caller to refuse."""
    if isinstance(value, str) and value.isascii() and value.lower() in words:
        return value.lower()
    return value


def a_or_an(word: str) -> str:
    """'a base' / 'an upsample' / "an 'upsample'": the word with its indefinite article."""
    return f"an {word}" if word.lstrip("'\"`")[:1].lower() in tuple("aeiou") else f"a {word}"


_ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def one_line(text: str) -> str:
    """``text`` as one clean line: no terminal escape codes, control characters or runs of
    whitespace (third-party messages, e.g. torch's, carry all three)."""
    return " ".join(_CONTROL.sub(" ", _ANSI.sub("", text)).split())


def cause(exc: BaseException, limit: int = 160) -> str:
    """A short, clean account of a third-party exception to put in our one-line errors:
    its first sentence(s) up to ``limit`` characters, cut at a sentence or word end, never
    mid-word or inside a `code span`."""
    text = one_line(str(exc))
    if not any(c.isalpha() for c in text):  # "101", "": the type says more than the text
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    if len(text) <= limit:
        return text
    head = text[: limit + 1]
    end = max(head.rfind(". "), head.rfind("; "), head.rfind(": "))
    if end >= limit // 3:
        return head[:end].rstrip(" .;:") + " …"
    words = head[:limit].rsplit(" ", 1)[0]
    if words.count("`") % 2:  # do not leave a code span open
        words = words[: words.rfind("`")].rstrip()
    return words.rstrip(" ,.;:") + " …"


# Errors are written as the CLI speaks (``--resume latest``). A library entry point says them
# with the caller's keywords (``resume='latest'``): see :func:`keyword_errors`.
_NAMING: ContextVar[str | None] = ContextVar("glidectl_error_naming", default=None)
_F = TypeVar("_F", bound=Callable[..., Any])
# where a bare value ends: a space, a closing mark, or a sentence's '.' / ':' (not "x.png")
_END = r"(?=[\s;,)`]|[.:](?:\s|$)|$)"
# what may follow a flag as its value: quoted, a METAVAR (FILE.json too), a number, a path,
# a file name (photo.png, a.safetensors:0.5; no word of prose has an extension), a known word
_VALUE = (r"'[^']*'|\"[^\"]*\"|[A-Z]+\.[a-z]+" + _END + r"|[A-Z][A-Z0-9_]*(?!\w|\.\w)"
          r"|-?\d+(?:\.\d+)?(?!\w|[.-]\w)|[\w.~-]*/[^\s;,)]*[^\s;,).]"
          r"|[\w~+-][\w.~+-]*\.[A-Za-z][A-Za-z0-9]+(?::\d+(?:\.\d+)?)?" + _END +
          r"|(?:latest|none|auto|fp32|bf16|fp16|offline|respaced|openai:[\w-]+)(?![\w-])")
_METAVAR = re.compile(r"[A-Z][A-Z0-9_]*|[A-Z]+\.[a-z]+")  # said as it is: lora=FILE.json
# a command to run (``glidectl fit-steps MODEL --out FILE``) keeps its flags
_COMMAND = re.compile(r"glidectl [a-z][\w-]*.*?(?=[;,)`]|\.(?:\s|$)|$)")


@contextmanager
def flags_named() -> Iterator[None]:
    """Errors raised inside name command-line flags as written (the CLI, and the web UI,
    which relabels them); usable as a decorator."""
    token = _NAMING.set("flags")
    try:
        yield
    finally:
        _NAMING.reset(token)


def flags_in_force() -> bool:
    """Whether messages now name command-line flags (under :func:`flags_named`: the CLI
    and the web UI, which say their own warnings of the flags they were given)."""
    return _NAMING.get() == "flags"


@contextmanager
def keywords_named() -> Iterator[None]:
    """Errors raised inside name the library's keywords even under the CLI: for settings a
    file records (``n``, not the ``--n`` no one passed)."""
    token = _NAMING.set(None)
    try:
        yield
    finally:
        _NAMING.reset(token)


Phrases = Mapping[str, str | Callable[[re.Match[str]], str]]  # regex → re.sub replacement


def _flag_pattern(values: Iterable[str] = ()) -> re.Pattern[str]:
    """A flag and its value (:data:`_VALUE`, or one of ``values`` as it is: a bare word,
    ``--out results``, is not told from prose by its look, but the caller passed it)."""
    words = sorted({v for v in values if 0 < len(v) <= 4096
                    and not any(c.isspace() for c in v)}, key=len, reverse=True)
    value = _VALUE + (f"|(?:{'|'.join(map(re.escape, words))}){_END}" if words else "")
    return re.compile(rf"(?<![\w-])--([a-z][a-z0-9-]*)(?: ({value}))?")


_FLAG = _flag_pattern()


def passed_values(args: Iterable[Any]) -> list[str]:
    """The strings and paths among a call's arguments (and in its lists, tuples and sets):
    what an error may echo as a flag's value."""
    found: list[str] = []
    for arg in args:
        if isinstance(arg, (list, tuple, set, frozenset)):
            found += passed_values(arg)
        elif isinstance(arg, str | os.PathLike):
            path = os.fspath(arg)
            if isinstance(path, str):
                found.append(path)
    return found


def in_keywords(message: str, flags: Mapping[str, str], phrases: Phrases | None = None,
                values: Iterable[str] = ()) -> str:
    """``message`` with each flag in ``flags`` said as its Python keyword: ``--resume`` →
    ``flags["--resume"]``, ``--resume latest`` → ``resume='latest'``. ``phrases`` (regex →
    replacement) go first; flags inside a ``glidectl CMD ...`` command are left alone.
    ``values``: what the caller passed, a flag's value also as a bare word."""
    for pattern, text in (phrases or {}).items():
        message = re.sub(pattern, text, message)
    flag = _flag_pattern(values) if values else _FLAG

    def keyword(match: re.Match[str]) -> str:
        name = flags.get("--" + match.group(1))
        if name is None:
            return match.group(0)
        value = match.group(2)
        if value is None:
            return name
        if not (re.fullmatch(r"'.*'|\".*\"|-?[\d.]+", value) or _METAVAR.fullmatch(value)):
            value = repr(value)
        return f"{name.split('=')[0]}={value}"

    return outside_commands(message, lambda text: flag.sub(keyword, text))


def outside_commands(message: str, say: Callable[[str], str]) -> str:
    """``message`` with ``say`` applied to its text outside ``glidectl CMD ...`` commands
    (a command keeps its flags: it is run as written)."""
    out, end = [], 0
    for command in _COMMAND.finditer(message):
        out += [say(message[end:command.start()]), command.group(0)]
        end = command.end()
    return "".join(out) + say(message[end:])


def keyword_errors(flags: Mapping[str, str], phrases: Phrases | None = None
                   ) -> Callable[[_F], _F]:
    """Decorate a library entry point: a GlidectlError it raises names the keywords its
    caller passed, not the command-line flags (:func:`in_keywords`), unless the CLI (see
    :func:`flags_named`) or an outer entry point is the caller."""

    def wrap(fn: _F) -> _F:
        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            if _NAMING.get() is not None:
                return fn(*args, **kwargs)
            token = _NAMING.set("keywords")
            try:
                return fn(*args, **kwargs)
            except GlidectlError as exc:
                if len(exc.args) == 1 and isinstance(exc.args[0], str):
                    values = passed_values([*args, *kwargs.values()])
                    exc.args = (in_keywords(exc.args[0], flags, phrases, values),)
                raise
            finally:
                _NAMING.reset(token)

        return call  # type: ignore[return-value]

    return wrap
