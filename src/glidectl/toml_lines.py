"""The line of each key in a TOML text: tomllib gives values, not positions, so a config
error could not say which line of glide.toml holds the value at fault. This reads the
text's structure (table headers, dotted and quoted keys, inline tables, arrays and strings
that span lines, comments), never a search for the key's name."""

from __future__ import annotations

import bisect
import sys
from collections.abc import Callable

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

Path = tuple[str, ...]
_BARE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


class _Unreadable(Exception):
    """The text is not laid out as valid TOML is (then no line is known)."""


def key_lines(text: str) -> dict[Path, int]:
    """Each key path's 1-based line in ``text`` (TOML that tomllib reads): where its
    table's header is, or the first key that makes the table, or where the key is given a
    value; {} where the text cannot be read so (no line is better than a wrong one)."""
    try:
        return _Scanner(text).document()
    except (_Unreadable, IndexError, tomllib.TOMLDecodeError):
        return {}


class _Scanner:
    """One pass over a TOML text, recording where each key path is first made."""

    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0
        self.newlines = [i for i, c in enumerate(text) if c == "\n"]
        self.defined: dict[Path, int] = {}  # headers and keys given a value
        self.implied: dict[Path, int] = {}  # tables made by a dotted key or a deeper header

    def document(self) -> dict[Path, int]:
        """Every path of the text with its line (a path defined outright wins over one a
        dotted key or deeper header implied first)."""
        table: Path = ()
        while self._skip(newlines=True) < len(self.text):
            if self.text[self.pos] == "[":
                table = self._header()
            else:
                self._key_value(table)
        return {**self.implied, **self.defined}

    def _line(self) -> int:
        return bisect.bisect_right(self.newlines, self.pos - 1) + 1

    def _record(self, path: Path, line: int) -> None:
        for n in range(1, len(path)):
            self.implied.setdefault(path[:n], line)
        self.defined.setdefault(path, line)

    def _skip(self, newlines: bool) -> int:
        """Past spaces, tabs and comments (and line breaks when ``newlines``)."""
        text = self.text
        while self.pos < len(text):
            c = text[self.pos]
            if c in " \t" or (newlines and c in "\r\n"):
                self.pos += 1
            elif c == "#":
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end
            else:
                break
        return self.pos

    def _expect(self, token: str) -> None:
        if not self.text.startswith(token, self.pos):
            raise _Unreadable(token)
        self.pos += len(token)

    def _header(self) -> Path:
        """A ``[table]`` or ``[[array.of.tables]]`` header: its path, recorded."""
        line, close = self._line(), "]]" if self.text.startswith("[[", self.pos) else "]"
        self.pos += len(close)
        path = self._key()
        self._expect(close)
        self._record(path, line)
        return path

    def _key_value(self, table: Path) -> None:
        """``key = value`` (the key dotted or quoted) inside ``table``."""
        line = self._line()
        path = table + self._key()
        self._record(path, line)
        self._expect("=")
        self._skip(newlines=False)
        self._value(path)

    def _key(self) -> Path:
        """A bare, quoted or dotted key, as the parts tomllib reads."""
        parts = []
        while True:
            self._skip(newlines=False)
            start, c = self.pos, self.text[self.pos]
            if c in "\"'":
                self._string()
                parts.append(tomllib.loads(f"k = {self.text[start:self.pos]}")["k"])
            else:
                while self.pos < len(self.text) and self.text[self.pos] in _BARE:
                    self.pos += 1
                if self.pos == start:
                    raise _Unreadable(c)
                parts.append(self.text[start:self.pos])
            self._skip(newlines=False)
            if self.text[self.pos] != ".":
                return tuple(parts)
            self.pos += 1

    def _value(self, path: Path) -> None:
        """Past one value: the keys of an inline table (nested too) are recorded."""
        c = self.text[self.pos]
        if c in "\"'":
            self._string()
        elif c == "[":
            self._array(path)
        elif c == "{":
            self._inline_table(path)
        else:  # a number, boolean or date (a date may hold one space: 1979-05-27 07:32:00)
            while self.pos < len(self.text) and self.text[self.pos] not in ",]}#\r\n":
                self.pos += 1

    def _array(self, path: Path) -> None:
        self._items(path, "]", newlines=True, item=self._value)

    def _inline_table(self, path: Path) -> None:
        self._items(path, "}", newlines=False, item=self._key_value)

    def _items(self, path: Path, close: str, newlines: bool,
               item: Callable[[Path], None]) -> None:
        """Past ``[`` or ``{``, its comma-separated items and ``close``."""
        self.pos += 1
        while self.text[self._skip(newlines)] != close:
            item(path)
            if self.text[self._skip(newlines)] == ",":
                self.pos += 1
        self.pos += 1

    def _string(self) -> None:
        """Past a basic or literal string, one line or several."""
        text, quote = self.text, self.text[self.pos]
        if text.startswith(quote * 3, self.pos):
            end = self._close(quote * 3, self.pos + 3)
            for _ in range(2):  # """a "quoted" word"""": up to two quotes end the content
                end += text.startswith(quote, end)
            self.pos = end
            return
        self.pos = self._close(quote, self.pos + 1)

    def _close(self, delimiter: str, at: int) -> int:
        """Just past the ``delimiter`` that ends a string whose content starts at ``at``
        (a backslash escapes the next character in basic strings)."""
        text = self.text
        while not text.startswith(delimiter, at):
            if at >= len(text):
                raise _Unreadable(delimiter)
            at += 2 if delimiter[0] == '"' and text[at] == "\\" else 1
        return at + len(delimiter)
