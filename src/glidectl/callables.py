"""Which keyword options a callable takes: asked of a plugin's functions (a sampler, a model
source's ``resolve``, an adapter's ``save_checkpoint``) before glidectl passes an option an
older or simpler one may not name. Torch-free: plugin modules import its users."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import cache
from typing import Any


def takes_keyword(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` names a parameter ``name`` (``**kwargs`` alone does not count: what it
    would do with the option is unknown)."""
    return name in parameter_names(fn)


def parameter_names(fn: Callable[..., Any]) -> frozenset[str]:
    """The names of ``fn``'s parameters; none when inspect cannot read its signature (a
    builtin). Plain functions are looked at once; a bound method is not kept (its object
    would live as long as the cache)."""
    if inspect.ismethod(fn):
        return _read_names(fn)
    try:
        return _cached_names(fn)
    except TypeError:  # an unhashable callable object
        return _read_names(fn)


def _read_names(fn: Callable[..., Any]) -> frozenset[str]:
    try:
        return frozenset(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return frozenset()


_cached_names = cache(_read_names)


def doc_summary(obj: Any) -> str:
    """The first paragraph of ``obj``'s docstring on one line ("" when it has none, or one
    of only blanks): the description ``glidectl plugins`` shows for a bare function."""
    doc = getattr(obj, "__doc__", None)
    if not isinstance(doc, str):
        return ""
    return " ".join(inspect.cleandoc(doc).split("\n\n")[0].split())
