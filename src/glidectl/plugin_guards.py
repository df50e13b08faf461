"""Wrappers that make what a third-party plugin registered fail in one line naming it.

:func:`checked` checks an object registered through a hook and wraps it (samplers,
schedules, model sources, data sources, presets); :func:`_guard_commands` wraps a plugin's
commands. What such a callable raises, or a result of the wrong kind, becomes one
:class:`~glidectl.errors.PluginError` naming the plugin and how to switch it off; callables
glidectl passes in (denoisers, callbacks) keep their own errors.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import numbers
import os
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

from .errors import GlidectlError, MisuseError, PluginError, got
from .plugins import DEFAULT_PLUGINS, _command_name, describe_exception, switch_off_hint, who
from .ranges import switched_on


class _Ours:
    """Marks exceptions raised by our own callables (the denoiser, callbacks) passed into a
    plugin's function, so they are not blamed on the plugin."""

    def __init__(self, fn: Callable[..., Any]):
        self._fn = fn
        try:
            self._signature: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):  # a builtin without one: called as it is
            self._signature = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._signature is not None:
            try:  # arguments it cannot take are the plugin's mistake, not ours
                self._signature.bind(*args, **kwargs)
            except TypeError as exc:
                name = "the denoiser" if hasattr(self._fn, "model_output") else \
                    f"{getattr(self._fn, '__name__', 'a function glidectl passed in')}"
                bare = self._signature.replace(return_annotation=inspect.Signature.empty,
                                               parameters=[q.replace(annotation=q.empty) for q
                                                           in self._signature.parameters.values()])
                raise MisuseError(f"it called {name} with arguments it does not take "
                                  f"({exc}); it takes {bare}") from None
        try:
            return self._fn(*args, **kwargs)
        except MisuseError:
            raise
        except (Exception, KeyboardInterrupt) as exc:  # a callback's own stop too
            exc._glidectl_ours = True  # type: ignore[attr-defined]
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fn, name)


def guard(fn: Callable[..., Any], plugin: str, what: str,
          check: Callable[..., str | None] | None = None) -> Callable[..., Any]:
    """``fn`` of ``plugin`` whose exceptions become one :class:`PluginError` line.

    Callables passed in (denoisers, callbacks) are ours: what they raise passes through.
    ``check(result, *args)`` says what is wrong with a result (else None), in that line too.
    """

    @functools.wraps(fn)  # keeps the signature: samplers are asked which options they take
    def call(*args: Any, **kwargs: Any) -> Any:
        args = tuple(_Ours(a) if _is_function(a) else a for a in args)
        kwargs = {k: _Ours(v) if _is_function(v) else v for k, v in kwargs.items()}
        try:
            result = fn(*args, **kwargs)
        except MisuseError as exc:  # it called our function wrongly
            raise _failed(plugin, what, str(exc)) from exc
        except GlidectlError:
            raise
        except KeyboardInterrupt as exc:
            if threading.current_thread() is threading.main_thread() or getattr(
                    exc, "_glidectl_ours", False):
                raise  # the user's Ctrl-C (a signal stops the main thread only), a callback's
            trace_exception(plugin, exc)  # raised by the plugin, in the web UI's worker
            raise _failed(plugin, what, describe_exception(exc)) from exc
        except (Exception, SystemExit) as exc:  # sys.exit() in a plugin: its fault too
            if getattr(exc, "_glidectl_ours", False):
                raise
            trace_exception(plugin, exc)
            raise _failed(plugin, what, describe_exception(exc)) from exc
        problem = check(result, *args) if check is not None else None
        if problem:
            raise _failed(plugin, what, problem)
        return result

    return call


def trace_exception(plugin: str, exc: BaseException) -> None:
    """With GLIDECTL_TRACE_PLUGINS set, print the traceback behind a plugin's one-line error
    (where in the plugin it raised)."""
    if switched_on("GLIDECTL_TRACE_PLUGINS"):
        sys.stderr.write(f"plugin {who(plugin)} raised:\n"
                         + "".join(traceback.format_exception(exc)))


def _failed(plugin: str, what: str, problem: str) -> PluginError:
    return PluginError(f"Plugin {who(plugin)} failed in {what}: {problem}; switch it off "
                       f"with {switch_off_hint(plugin)}.")


def _is_function(value: Any) -> bool:
    return callable(value) and not isinstance(value, type) and not hasattr(value, "shape")


def _sampler_result_problem(out: Any, denoiser: Any = None, x: Any = None, *_: Any
                            ) -> str | None:
    """What is wrong with a sampler's result for start ``x``: not a tensor of x's shape, or
    not finite (a NaN image would be written as a black PNG)."""
    import torch

    if not isinstance(x, torch.Tensor):
        return None
    if not isinstance(out, torch.Tensor):
        return f"it returned {type(out).__name__}, not a tensor shaped like x"
    if out.shape != x.shape:
        return f"it returned shape {tuple(out.shape)}, not x's {tuple(x.shape)}"
    if getattr(denoiser, "nonfinite", False):
        return None  # the network's NaN: sampling names the model, not the plugin
    if not bool(torch.isfinite(out).all()):
        return "it returned NaN or infinite values"
    return None


def _schedule_result_problem(out: Any, n: Any = None, *_: Any) -> str | None:
    """What is wrong with a schedule's result for ``n`` steps: not n descending σ's then 0."""
    import torch

    try:
        sigmas = torch.as_tensor(out, dtype=torch.float64).flatten()
    except (TypeError, ValueError, RuntimeError):
        return f"it returned {type(out).__name__}, not a tensor or list of σ's"
    shown = ", ".join(f"{v:.4g}" for v in sigmas[:4].tolist()) + (", …" if len(sigmas) > 4
                                                                   else "")
    if not bool(torch.isfinite(sigmas).all()):  # an infinite σ_max makes the model's NaN
        return f"it returned NaN or infinite σ's [{shown}]"
    if isinstance(n, int) and (len(sigmas) != n + 1 or sigmas[-1] != 0
                               or not torch.all(sigmas[:-1].diff() < 0)):
        return f"it returned {len(sigmas)} values [{shown}], not {n} descending σ's followed by 0"
    if not bool((sigmas[:-1] > 0).all()):  # a negative σ: the sampler would be blamed
        return f"it returned σ's at or below 0 before the last [{shown}]; σ's are above 0"
    return None


def _count_problem(call: str, what: str) -> Callable[..., str | None]:
    """A result check: why the result of ``call`` (``"calls(steps)"``) is not a whole
    number >= 0 of ``what``, else None."""

    def problem(count: Any, *_: Any) -> str | None:
        if isinstance(count, numbers.Integral) and not isinstance(count, bool) and count >= 0:
            return None
        return f"its {call} returned {got(count)}, not a whole number of {what} >= 0"

    return problem


def _guard_sampler(obj: Any, plugin: str, name: str) -> Any:
    what = f"sampler {name!r}"
    calls = obj.calls and guard(obj.calls, plugin, what,
                                      check=_count_problem("calls(steps)", "model calls"))
    return dataclasses.replace(obj, fn=guard(obj.fn, plugin, what, check=_sampler_result_problem),
                               calls=calls)


class _GuardedSource:
    """A plugin's model source whose ``names`` and ``resolve`` errors name the plugin."""

    def __init__(self, source: Any, plugin: str, name: str):
        self._source = source
        self.names = guard(source.names, plugin, f"model source {name!r}", check=_names_problem)
        self.resolve = guard(source.resolve, plugin, f"model source {name!r}",
                             check=_path_problem)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._source, attr)


def _names_problem(names: Any, *_: Any) -> str | None:
    """Why a model source's ``names()`` result is not a list of model names, else None."""
    if isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names):
        return None
    return f"names() returned {type(names).__name__}, not a list of model names"


def _path_problem(path: Any, *_: Any) -> str | None:
    """Why a model source's ``resolve()`` result is not the path of a weights file, else None."""
    if not isinstance(path, (str, os.PathLike)):
        return f"resolve() returned {type(path).__name__}, not the path of a weights file"
    if not os.path.isfile(path):
        return f"resolve() returned {os.fspath(path)!r}, which is not a file"
    return None


class _GuardedDataSource:
    """A source a plugin's data source type opened, whose errors (and samples that are no
    ``RawSample``) are one line naming the plugin; picklable for DataLoader workers."""

    REQUIRED = ("units", "read", "describe", "kind", "num_samples", "splits_samples")
    # optional methods that count reads of a unit (a float or "2" was a traceback)
    COUNTS = {"repeats": _count_problem("repeats(unit)", "reads"),
              "reads": _count_problem("reads(unit, epoch)", "reads")}

    def __init__(self, source: Any, plugin: str, what: str):
        self._source, self._plugin, self._what = source, plugin, what

    def read(self, unit: str, counter: Any) -> Any:
        from .data.records import RawSample

        items = self._attr("read")(unit, counter)
        while True:
            try:
                raw = next(items)
            except StopIteration:
                return
            except GlidectlError:
                raise
            except (Exception, SystemExit) as exc:
                trace_exception(self._plugin, exc)
                raise _failed(self._plugin, self._what, describe_exception(exc)) from exc
            if not isinstance(raw, RawSample):
                raise _failed(self._plugin, self._what, f"read() yielded {type(raw).__name__}, "
                              "not a glidectl.data.records.RawSample")
            yield raw

    def _attr(self, attr: str) -> Any:
        try:
            value = getattr(self._source, attr)
        except AttributeError:  # optional attributes (notes) are asked for with a default
            raise
        except (Exception, SystemExit) as exc:
            raise _failed(self._plugin, self._what, describe_exception(exc)) from exc
        if callable(value) and not isinstance(value, type):
            return guard(value, self._plugin, self._what, check=self.COUNTS.get(attr))
        return value

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") or attr in ("_source", "_plugin", "_what"):
            raise AttributeError(attr)  # unpickling asks before __init__ has run
        return self._attr(attr)


class _GuardedOpen:
    """A plugin's ``SourceType.open``: its errors name the plugin, and so do the source's."""

    def __init__(self, fn: Callable[..., Any], plugin: str, what: str):
        self._fn, self._plugin, self._what = fn, plugin, what

    def __call__(self, spec: Any, cfg: Any, resolution: int) -> _GuardedDataSource:
        source = guard(self._fn, self._plugin, self._what)(spec, cfg, resolution)
        missing = [a for a in _GuardedDataSource.REQUIRED if not hasattr(source, a)]
        if missing:
            raise _failed(self._plugin, self._what,
                          f"open() returned {type(source).__name__}, which has no "
                          f"{', '.join(missing)} (glidectl.data.source_api.Source)")
        return _GuardedDataSource(source, self._plugin, self._what)


def _guard_source_type(obj: Any, plugin: str, name: str) -> Any:
    what = f"data source {name!r}"
    claims = obj.claims and guard(obj.claims, plugin, what)
    return dataclasses.replace(obj, open=_GuardedOpen(obj.open, plugin, what), claims=claims)


class _GuardedSelect:
    """A plugin preset's ``select``: what it raises, or a result that is no caption or
    ``Reject``, rejects the sample under a reason naming the preset and its plugin (a
    plugin's bug must not end a run; the no-valid-samples error then names it)."""

    def __init__(self, fn: Callable[..., Any], plugin: str, name: str):
        self._fn, self._plugin, self._name = fn, plugin, name
        self._traced: set[str] = set()

    def __call__(self, meta: Any, caption: Any, options: Any) -> Any:
        from .data.preset_api import Reject

        where = f"preset {self._name!r} of plugin {self._plugin!r}"
        try:
            chosen = self._fn(meta, caption, options)
        except (Exception, SystemExit) as exc:
            if type(exc).__name__ not in self._traced:  # once per kind, not per sample
                self._traced.add(type(exc).__name__)
                trace_exception(self._plugin, exc)
            return Reject(f"{where} raised {type(exc).__name__}")
        if isinstance(chosen, (str, Reject)):
            return chosen
        return Reject(f"{where} returned {type(chosen).__name__}, not a caption or Reject")


def _guard_preset(obj: Any, plugin: str, name: str) -> Any:
    return dataclasses.replace(obj, select=_GuardedSelect(obj.select, plugin, name))


def _is_schedule(obj: Any) -> Any:
    if not callable(obj):
        raise TypeError(f"a schedule must be a function fn(n, sigma_min, sigma_max), got "
                        f"{type(obj).__name__}")
    return obj


def _is_instance(cls_path: str) -> Callable[[Any], Any]:
    module, cls_name = cls_path.rsplit(".", 1)

    def check(obj: Any) -> Any:
        if not isinstance(obj, getattr(importlib.import_module(module), cls_name)):
            raise TypeError(f"a {cls_name} ({module}) is expected, got {type(obj).__name__}")
        return obj

    return check


def _is_model_source(obj: Any) -> Any:
    if not (callable(getattr(obj, "names", None)) and callable(getattr(obj, "resolve", None))):
        raise TypeError("a model source must have names() and resolve(name, download=True), "
                        f"got {type(obj).__name__}")
    return obj


def _as_sampler(obj: Any) -> Any:
    from .samplers.spec import as_sampler

    return as_sampler(obj)


# What each hook's registered objects must be (a TypeError says so; call_each names the
# plugin), and how a third-party plugin's object is wrapped so that its errors name it.
_CHECKS: dict[str, Callable[[Any], Any]] = {
    "register_samplers": _as_sampler,
    "register_schedules": _is_schedule,
    "register_dataset_presets": _is_instance("glidectl.data.preset_api.DatasetPreset"),
    "register_data_sources": _is_instance("glidectl.data.source_api.SourceType"),
    "register_model_sources": _is_model_source,
}
_GUARDS: dict[str, Callable[[Any, str, str], Any]] = {
    "register_samplers": _guard_sampler,
    "register_schedules": lambda fn, plugin, name: guard(fn, plugin, f"schedule {name!r}",
                                                         check=_schedule_result_problem),
    "register_model_sources": _GuardedSource,
    "register_data_sources": _guard_source_type,
    "register_dataset_presets": _guard_preset,
}


def checked(hook_name: str, obj: Any, plugin: str, name: str) -> Any:
    """``obj`` as registered through ``hook_name`` by ``plugin``: checked to be what the hook
    takes (else TypeError), and wrapped, for a third-party plugin, so its errors name it."""
    check = _CHECKS.get(hook_name)
    obj = check(obj) if check else obj
    guard_fn = _GUARDS.get(hook_name)
    return obj if guard_fn is None or plugin in DEFAULT_PLUGINS else guard_fn(obj, plugin, name)


def _guard_commands(info: Any, plugin: str, path: str) -> None:
    """Make a plugin's command (or every command of its group) fail in one line naming the
    plugin, not with a traceback; Typer's exits and glidectl's errors pass through."""
    if callable(getattr(info, "callback", None)):  # not Typer's DefaultPlaceholder
        info.callback = _guard_command(info.callback, plugin, path)
    group = getattr(info, "typer_instance", None)
    if group is not None:
        for sub in (*group.registered_commands, *group.registered_groups):
            _guard_commands(sub, plugin, f"{path} {_command_name(sub)}".strip())
        if group.registered_callback is not None:
            _guard_commands(group.registered_callback, plugin, path)


def _guard_command(fn: Callable[..., Any], plugin: str, path: str) -> Callable[..., Any]:
    import typer

    try:  # typer >= 0.26 vendors click
        from typer._click import exceptions as click_exc
    except ImportError:  # pragma: no cover
        from click import exceptions as click_exc
    passes = (GlidectlError, typer.Exit, typer.Abort, click_exc.ClickException)

    @functools.wraps(fn)  # Typer reads the options from the signature
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except passes:
            raise
        except Exception as exc:
            trace_exception(plugin, exc)
            raise _failed(plugin, f"command {path!r}", describe_exception(exc)) from exc

    return call
