"""Range checks for numeric flags, installed on every command (plugins' included) by name,
and a check that no path flag is empty (a leading ``~`` of one is the home folder).

The ranges live in :data:`glidectl.ranges.FLAGS`, so ``--seed`` or ``--guidance`` mean the
same numbers in ``sample``, ``eval`` and anywhere else; a bad value is one line, exit 2.
"""

from __future__ import annotations

import inspect
import os
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import typer
from typer.models import OptionInfo, ParameterInfo

from ..ranges import FLAGS, Range, plain_number


def check(rng: Range) -> Callable[[Any], Any]:
    """A Typer option callback refusing values outside ``rng`` (None passes)."""

    def validate(value: Any) -> Any:
        problem = None if value is None else rng.problem(value)
        if problem:
            raise typer.BadParameter(problem)
        return value

    return validate


def plain(kind: type) -> Callable[[Any], Any]:
    """A Typer option parser taking only plain decimal numbers of ``kind`` (not ``1_0``)."""

    def parse(value: Any) -> Any:
        if isinstance(value, str):
            if not plain_number(value, kind):
                raise typer.BadParameter(
                    f"{value!r} is not a whole number; write digits only, e.g. 10."
                    if kind is int else f"{value!r} is not a plain decimal number; write "
                    "digits with at most one point and an exponent, e.g. 10, 1.5 or 1e-3.")
            return kind(value)
        return value

    return parse


# flags whose values are paths though typed as text (a folder, a data source, an .npz)
TEXT_PATH_FLAGS = ("--fid", "--fid-weights", "--clip-weights")


def non_empty(kind: type) -> Callable[[Any], Any]:
    """A Typer parser for paths (as ``kind``: Path or str) refusing the empty one:
    ``Path('')`` is ``.``, so ``--config ''`` (an unset shell variable) was read as the
    current folder, and ``--fid ''`` computed no FID without a word. A path that is there
    but not readable is refused as Typer's own path check refused it before this parser
    took its place. A leading ``~`` is the home folder, as in config paths and model specs
    (the shell leaves it in ``--out=~/pics``: a folder named ``~`` was made here)."""

    def parse(value: Any) -> Any:
        if isinstance(value, str):
            if not value.strip():
                raise typer.BadParameter(f"the path is empty ({value!r}); pass a file's or "
                                         "folder's path ('.' for the current folder).")
            value = os.path.expanduser(value)
            if kind is Path and os.path.exists(value) and not os.access(value, os.R_OK):
                raise typer.BadParameter(f"path {value!r} is not readable.")
            return kind(value)
        return value

    return parse


def typed(ctx: typer.Context) -> list[Any]:
    """The parameters of ``ctx``'s command given on the command line (not defaults)."""
    return [p for p in ctx.command.params if p.name and getattr(
        ctx.get_parameter_source(p.name), "name", "") == "COMMANDLINE"]


def path_options(app: typer.Typer) -> Iterator[tuple[ParameterInfo, type]]:
    """Every option and argument of every command (plugins' included) that takes a path,
    with the type it is given as."""
    for fn in _callbacks(app):
        hints = typing.get_type_hints(fn)
        for pname, param in inspect.signature(fn).parameters.items():
            info, hint = param.default, hints.get(pname)
            if not isinstance(info, ParameterInfo):
                continue
            kinds = {a for k in (set(typing.get_args(hint)) or {hint})
                     for a in (set(typing.get_args(k)) or {k})}  # list[Path] | None too
            if Path in kinds:
                yield info, Path
            elif str in kinds and isinstance(info, OptionInfo) \
                    and set(info.param_decls or ()) & set(TEXT_PATH_FLAGS):
                yield info, str


def _callbacks(app: typer.Typer) -> Iterator[Callable[..., Any]]:
    for command in app.registered_commands:
        if command.callback is not None:
            yield command.callback
    for group in app.registered_groups:
        if group.typer_instance is not None:
            yield from _callbacks(group.typer_instance)


def numeric_options(app: typer.Typer) -> Iterator[tuple[str, str, OptionInfo, type]]:
    """(command, flag, option, int or float) for every numeric option of every command."""
    for command in app.registered_commands:
        if command.callback is not None:
            yield from _numeric(command.name or command.callback.__name__, command.callback)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            for name, flag, info, kind in numeric_options(group.typer_instance):
                yield f"{group.name} {name}", flag, info, kind


def _numeric(name: str, fn: Callable[..., Any]) -> Iterator[tuple[str, str, OptionInfo, type]]:
    hints = typing.get_type_hints(fn)
    for pname, param in inspect.signature(fn).parameters.items():
        info = param.default
        if not isinstance(info, OptionInfo):
            continue
        kinds = set(typing.get_args(hints.get(pname))) or {hints.get(pname)}
        if not kinds & {int, float} or bool in kinds:
            continue
        decls = [d for d in info.param_decls or () if d.startswith("--")]
        flag = decls[0] if decls else "--" + pname.replace("_", "-")
        yield name, flag, info, float if float in kinds else int


def install(app: typer.Typer) -> None:
    """Give every numeric option plain-number parsing and, with a known flag name, its
    range check; every path option refuses an empty path."""
    for _, flag, info, kind in numeric_options(app):
        if info.parser is None:
            info.parser = plain(kind)
        if flag in FLAGS and info.callback is None:
            info.callback = check(FLAGS[flag])
    for info, kind in path_options(app):
        if info.parser is None and getattr(info, "click_type", None) is None:
            info.parser = non_empty(kind)
