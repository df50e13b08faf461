"""Typed name → object registries filled by plugin hooks, with aliases and "did you mean"."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .errors import GlidectlError, PluginError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T
    plugin: str
    aliases: tuple[str, ...] = ()


class Registry(Generic[T]):
    """Objects of one kind (samplers, presets, model sources) by name and alias.

    ``guard(obj, plugin, name)``, when given, wraps each added object (e.g. so that a
    plugin's sampler that raises is reported as that plugin's error in one line).
    """

    def __init__(self, kind: str, guard: Callable[[Any, str, str], T] | None = None,
                 unknown_note: str = ""):
        self.kind = kind
        self._guard = guard
        self.unknown_note = unknown_note  # said after an unknown name (e.g. plugins left out)
        self._entries: dict[str, Entry[T]] = {}
        self._lookup: dict[str, str] = {}

    def add(
        self, name: str, obj: T, plugin: str, aliases: tuple[str, ...] | list[str] = ()
    ) -> None:
        for key in (name, *aliases):
            key = key.lower()
            if key in self._lookup:
                from .plugins import DEFAULT_PLUGINS

                other = self._entries[self._lookup[key]].plugin
                if other == plugin:
                    raise PluginError(f"Plugin {plugin!r} registers {self.kind} {key!r} twice "
                                      "(as a name or alias); register each name once.")
                builtin = next((p for p in (other, plugin) if p in DEFAULT_PLUGINS), None)
                fix = (f"it is glidectl's own, so rename it in plugin "
                       f"{plugin if builtin == other else other!r} or uninstall that plugin"
                       if builtin else "uninstall or disable one of them "
                       "(GLIDECTL_LOAD_PLUGINS)")
                raise PluginError(
                    f"{self.kind} {key!r} is registered twice: by plugin {other!r} "
                    f"and by plugin {plugin!r}; {fix}."
                )
        if self._guard is not None:
            obj = self._guard(obj, plugin, name.lower())
        self._entries[name.lower()] = Entry(name.lower(), obj, plugin, tuple(aliases))
        for key in (name, *aliases):
            self._lookup[key.lower()] = name.lower()

    def get(self, name: str) -> T:
        return self.entry(name).obj

    def entry(self, name: str) -> Entry[T]:
        key = self._lookup.get(name.lower())
        if key is None:
            raise GlidectlError(self.unknown_message(name))
        return self._entries[key]

    def unknown_message(self, name: str, also: str = "") -> str:
        """One sentence on an unknown name: the nearest, the registered ones (then ``also``,
        kinds that are not registered, e.g. ", or a schedule file"), the registry's note."""
        close = self.nearest(name)
        hint = f" Did you mean {close!r}?" if close else ""
        return (
            f"Unknown {self.kind} {name!r}.{hint} Available: "
            f"{', '.join(self._listed(e) for e in self)}{also}."
            + (f" {self.unknown_note}" if self.unknown_note else "")
        )

    @staticmethod
    def _listed(entry: Entry[T]) -> str:
        """``exponential (also logsnr)``: a name as the unknown-name sentence lists it, with
        its aliases, which the sentence may suggest."""
        return f"{entry.name} (also {', '.join(entry.aliases)})" if entry.aliases else entry.name

    def nearest(self, name: str) -> str | None:
        """The registered name or alias nearest ``name`` (a typo's likely meaning), if any."""
        close = difflib.get_close_matches(name.lower(), sorted(self._lookup), n=1, cutoff=0.5)
        return close[0] if close else None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._lookup

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def __len__(self) -> int:
        return len(self._entries)
