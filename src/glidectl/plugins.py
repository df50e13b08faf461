"""The pluggy manager: default plugins, entry-point plugins, and the registries they fill.

A third-party plugin can fail three ways, and each is contained to one line naming it:
it fails to import (recorded in :data:`broken`; ``--help``, ``--version`` and
``glidectl plugins`` still work, other commands stop with :func:`check_loaded`), its hook
raises (:func:`call_each`), or a callable it registered raises at run time
(:func:`glidectl.plugin_guards.guard`).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import sys
import threading
import time
import traceback
from collections.abc import Iterable
from functools import cache
from importlib import metadata
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError, a_or_an, takes
from .ranges import switched_on
from .registry import Registry

ENTRY_POINT_GROUP = "glidectl"
ALLOW_ENV = "GLIDECTL_LOAD_PLUGINS"

# Built-in features, registered through the very same hooks third-party plugins use.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "glidectl.glide.sources",
    "glidectl.data.presets",
    "glidectl.data.builtin_sources",
    "glidectl.samplers.builtin",
)

pm = pluggy.PluginManager("glidectl")
pm.add_hookspecs(hookspecs)
_loaded = False
_LOADING = threading.RLock()
#: plugin name → "distribution version" of installed (entry-point) plugins.
_dists: dict[str, str] = {}
#: plugin name → "ExceptionType: message" for plugins that failed to import.
broken: dict[str, str] = {}
#: names in GLIDECTL_LOAD_PLUGINS that no installed plugin has (a typo loads nothing).
unmatched: list[str] = []
#: installed plugins that GLIDECTL_LOAD_PLUGINS does not name (not loaded).
left_out: list[str] = []
#: plugin name → its commands left out, each with the owner of that name ("glidectl" or
#: the plugin that added it first).
command_clashes: dict[str, list[tuple[str, str]]] = {}
#: plugin name → why some or all of its hooks are never called (not marked @hookimpl).
idle_plugins: dict[str, str] = {}
#: plugin name → the traceback of its failed import (GLIDECTL_TRACE_PLUGINS prints it).
tracebacks: dict[str, str] = {}
#: plugin name → seconds its import took (a plugin importing torch at its top: seconds).
import_seconds: dict[str, float] = {}
#: plugin name → torch's global settings its import changed (glidectl set them back).
torch_changes: dict[str, str] = {}


def _torch_state() -> tuple[Any, bool] | None:
    """torch's default dtype and grad mode; None while torch is not imported (its defaults)."""
    torch = sys.modules.get("torch")
    if torch is None or not callable(getattr(torch, "get_default_dtype", None)):
        return None
    return torch.get_default_dtype(), torch.is_grad_enabled()


def _restore_torch(before: tuple[Any, bool] | None) -> str | None:
    """Set torch's default dtype and grad mode back to ``before`` (torch's defaults when
    None) and say what had changed, or None: a plugin's ``torch.set_default_dtype(float64)``
    at import made every model built after it (``train``'s too) float64."""
    now = _torch_state()
    if now is None:
        return None
    torch = sys.modules["torch"]
    dtype, grad = before if before is not None else (torch.float32, True)
    changed = []
    if now[0] != dtype:
        changed.append(f"default dtype to {now[0]} (set back to {dtype})")
        torch.set_default_dtype(dtype)
    if now[1] != grad:
        changed.append(f"grad mode to {'on' if now[1] else 'off'} (set back to "
                       f"{'on' if grad else 'off'})")
        torch.set_grad_enabled(grad)
    return " and ".join(changed) or None


def _allow_list() -> set[str] | None:
    raw = os.environ.get(ALLOW_ENV)
    if raw is None:
        return None
    return {name.strip() for name in raw.split(",") if name.strip()}


def describe_exception(exc: BaseException) -> str:
    """``Type: first line of the message`` (the top-level handler cleans the rest)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def load_plugins() -> pluggy.PluginManager:
    """Register default plugins, then installed ones (filtered by ``GLIDECTL_LOAD_PLUGINS``).

    An installed plugin that fails to import is recorded in :data:`broken`, not raised.
    """
    global _loaded
    with _LOADING:  # another thread waits until they are loaded; this one (a plugin that
        if _loaded:  # asks while it is imported) gets those loaded so far
            return pm
        _loaded = True
        _load()
    return pm


def _load() -> None:
    """:func:`load_plugins`' work, once."""
    for name in DEFAULT_PLUGINS:
        mod = importlib.import_module(name)
        pm.register(mod, name=name)
    allowed = _allow_list()
    installed = metadata.entry_points(group=ENTRY_POINT_GROUP)
    unmatched[:] = sorted((allowed or set()) - {ep.name for ep in installed})
    left_out[:] = sorted({ep.name for ep in installed} - allowed) if allowed is not None else []
    shared = _shared_names(installed)
    for ep in installed:
        if ep.dist is not None and ep.name not in shared:  # `glidectl plugins` lists them all
            _dists.setdefault(ep.name, f"{ep.dist.name} {ep.dist.version}")
        if allowed is not None and ep.name not in allowed:
            continue
        if pm.get_plugin(ep.name) is not None or ep.name in broken:
            continue
        if ep.name in shared:  # which one loaded would hang on the order of sys.path
            broken[ep.name] = (f"{len(shared[ep.name])} installed distributions have a plugin "
                               f"called {ep.name!r} ({', '.join(shared[ep.name])}), so "
                               "neither is loaded; uninstall one, or rename its entry point")
            continue
        started, torch_before = time.perf_counter(), _torch_state()
        try:
            plugin = ep.load()
        except (Exception, SystemExit) as exc:  # a broken package must not break the CLI
            broken[ep.name] = describe_exception(exc)
            tracebacks[ep.name] = "".join(traceback.format_exception(exc))
            continue
        finally:
            import_seconds[ep.name] = time.perf_counter() - started
            if changed := _restore_torch(torch_before):
                torch_changes[ep.name] = changed
        problem = (_not_a_plugin(plugin) or hook_problem(plugin))
        if problem:
            broken[ep.name] = problem
            continue
        try:
            pm.register(plugin, name=ep.name)
        except (ValueError, TypeError) as exc:  # pluggy: the same module twice; None, a list
            broken[ep.name] = register_problem(plugin, exc)
            continue
        idle = idle_problem(plugin)
        if idle:
            idle_plugins[ep.name] = idle
    if switched_on("GLIDECTL_TRACE_PLUGINS"):
        for name, seconds in import_seconds.items():  # every command, --help too, pays them
            if name in tracebacks:
                sys.stderr.write(f"plugin {who(name)} failed to import after {seconds:.2f} s:"
                                 f"\n{tracebacks[name]}")
            else:
                sys.stderr.write(f"plugin {who(name)} imported in {seconds:.2f} s\n")
        pm.trace.root.setwriter(lambda msg: sys.stderr.write(msg))
        pm.enable_tracing()


def _shared_names(installed: Iterable[metadata.EntryPoint]) -> dict[str, list[str]]:
    """Plugin (entry-point) names that several distributions use → "dist version" of each."""
    by_name: dict[str, set[str]] = {}
    for ep in installed:
        dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist is not None else "?"
        by_name.setdefault(ep.name, set()).add(dist)
    return {name: sorted(dists) for name, dists in by_name.items() if len(dists) > 1}


def _not_a_plugin(plugin: object) -> str | None:
    """Why an entry point's object cannot be a plugin (None, which pluggy takes as a name
    to block; a list or a number), else None."""
    if plugin is None or isinstance(plugin, list | dict | set | tuple | str | int | float):
        return (f"its entry point names {a_or_an(type(plugin).__name__)}, not a module or "
                "an object with @hookimpl functions")
    if inspect.isroutine(plugin):  # a hook function itself: pluggy reads its attributes
        return (f"its entry point names the function {plugin.__name__!r}; name the module "
                "that holds it (module, not module:function)")
    return None


def register_problem(plugin: object, exc: Exception) -> str:
    """Why pluggy would not register ``plugin``, an entry point's object."""
    other = next((n for n, p in pm.list_name_plugin() if p is plugin), None)
    if other is not None:
        return (f"it names the same module as the plugin {other!r}, which is loaded; remove "
                "one of the two entry points")
    return describe_exception(exc)


def hook_problem(plugin: object) -> str | None:
    """Why ``plugin``'s hook implementations do not fit glidectl's hooks (a name that is no
    hook, an argument the hook does not pass), else None; pluggy would raise or ignore them."""
    specs = {n: c.spec for n, c in vars(pm.hook).items() if getattr(c, "spec", None)}
    for attr in dir(plugin):
        opts = pm.parse_hookimpl_opts(plugin, attr)
        if opts is None:
            continue
        name = opts.get("specname") or attr
        if name not in specs:
            if opts.get("optionalhook"):
                continue
            near = difflib.get_close_matches(name, list(specs), n=1)
            return f"{name!r} is not a glidectl hook" + (
                f" (did you mean {near[0]!r}?)" if near else f"; hooks: {', '.join(sorted(specs))}")
        args = pluggy.HookImpl(plugin, "", getattr(plugin, attr), opts).argnames
        wanted = ", ".join(specs[name].argnames)
        if set(args) - set(specs[name].argnames):
            return (f"its hook {name}({', '.join(args)}) takes arguments glidectl does not "
                    f"pass; it must be {name}({wanted})")
        if not args:  # pluggy calls it, but it has nothing to register with
            return f"its hook {name}() takes no {wanted!r}, so it adds nothing; it must be " \
                   f"{name}({wanted})"
    return None


def idle_problem(plugin: object) -> str | None:
    """Why hooks of a loaded plugin are never called (functions named like hooks but not
    marked ``@hookimpl``; no hook implementation at all), else None."""
    unmarked = sorted(n for n in dir(plugin) if n.startswith("register_")
                      and callable(getattr(hookspecs, n, None))
                      and callable(getattr(plugin, n, None))
                      and pm.parse_hookimpl_opts(plugin, n) is None)
    mark = "with @hookimpl (from glidectl.hookspecs import hookimpl)"
    if not pm.get_hookcallers(plugin):
        return (f"it adds nothing: mark {', '.join(unmarked)} {mark}" if unmarked else
                f"it adds nothing: its entry point names no function marked {mark}")
    if unmarked:
        them = "them" if len(unmarked) > 1 else "it"
        return f"glidectl never calls its {', '.join(unmarked)}: mark {them} {mark}"
    return None


def who(plugin: str) -> str:
    """``'name' (distribution version)``, or just ``'name'`` for unpackaged plugins."""
    dist = _dists.get(plugin)
    return f"{plugin!r} ({dist})" if dist else repr(plugin)


def switch_off_hint(plugin: str) -> str:
    """How to run without ``plugin``: the allow-list of every other installed plugin that
    loaded (one that failed to would stop the next run the same way)."""
    others = sorted(n for n in external_names() if n != plugin and n not in broken)
    return f"{ALLOW_ENV}={','.join(others)}" if others else f'{ALLOW_ENV}=""'


def external_names() -> list[str]:
    """Names of the installed plugins that loaded or tried to."""
    names = {pm.get_name(p) for p in pm.get_plugins()} | set(broken)
    return sorted(n for n in names if n and n not in DEFAULT_PLUGINS)


def unmatched_warning() -> str | None:
    """One sentence when GLIDECTL_LOAD_PLUGINS names plugins that are not installed."""
    load_plugins()
    if not unmatched:
        return None
    names = ", ".join(repr(n) for n in unmatched)
    installed = sorted({ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)})
    return (f"{ALLOW_ENV} names {names}, which no installed plugin is called; installed: "
            f"{', '.join(installed) or 'none'}.")


def check_loaded() -> None:
    """Stop with one line when an installed plugin failed to import."""
    load_plugins()
    for name, error in sorted(broken.items()):
        raise PluginError(
            f"Plugin {who(name)} failed to load: {error}. Fix or uninstall it, or switch it "
            f"off with {switch_off_hint(name)} (the plugins to load, comma-separated)."
        )


def call_each(hook_name: str, **kwargs: Any) -> None:
    """Call one hook plugin by plugin (through pluggy, so tracing sees it) so an error can
    name the plugin that raised it.

    ``kwargs`` values that are callables taking ``plugin=`` get the plugin name bound.
    """
    from .plugin_guards import trace_exception  # it imports this module

    load_plugins()
    for plugin, name in implementers(hook_name):
        args = {k: (v(name) if getattr(v, "_per_plugin", False) else v)
                for k, v in kwargs.items()}
        others = [p for p in pm.get_plugins() if p is not plugin]
        try:
            pm.subset_hook_caller(hook_name, remove_plugins=others)(**args)
        except PluginError:
            raise
        except Exception as exc:
            trace_exception(name, exc)
            raise PluginError(
                f"Plugin {who(name)} raised in {hook_name}: {describe_exception(exc)}; "
                f"switch it off with {switch_off_hint(name)}."
            ) from exc


def implementers(hook_name: str) -> list[tuple[object, str]]:
    """``(plugin, name)`` of each plugin implementing ``hook_name``, once each (a plugin
    may implement a hook twice, through ``specname``), in registration order."""
    seen: dict[int, tuple[object, str]] = {}
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        seen.setdefault(id(impl.plugin), (impl.plugin, impl.plugin_name))
    return list(seen.values())


# names a registry cannot take: glidectl reads them before any lookup
RESERVED = {"schedule": {"auto": "the sampler's own schedule",
                         "respaced": "GLIDE's own timesteps"}}


def _registrar(registry: Registry):
    def for_plugin(plugin: str):
        def register(name: str, obj: Any, aliases: tuple[str, ...] | list[str] = ()) -> None:
            if isinstance(aliases, str | bytes):  # tuple("xy") would be ("x", "y")
                raise PluginError(f"Plugin {plugin!r} registers {registry.kind} {name!r} with "
                                  f"aliases={aliases!r}; pass a tuple of names, such as "
                                  f"aliases=({aliases!r},).")
            aliases = tuple(aliases)
            for key in (name, *aliases):
                if not isinstance(key, str) or not key.strip() or ":" in key:
                    raise PluginError(f"Plugin {plugin!r} registers {registry.kind} name "
                                      f"{key!r}; a name is a non-empty string without ':'.")
                why = RESERVED.get(registry.kind, {}).get(key.lower())
                if why:
                    raise PluginError(f"Plugin {plugin!r} registers {registry.kind} {key!r}, "
                                      f"which is glidectl's word for {why}; rename it.")
                if registry.kind == "schedule" and key.lower().endswith(".json"):
                    raise PluginError(f"Plugin {plugin!r} registers schedule {key!r}, which "
                                      "--schedule would read as a schedule file (a name "
                                      "ending in .json); rename it.")
            registry.add(name, obj, plugin, aliases)

        return register

    for_plugin._per_plugin = True  # type: ignore[attr-defined]
    return for_plugin


@cache
def _registry(hook_name: str, kind: str) -> Registry:
    from .plugin_guards import checked  # it imports this module

    check_loaded()
    note = (f"{ALLOW_ENV} leaves out the installed plugin(s) {', '.join(left_out)}; name them "
            "there to load them." if left_out else "")
    registry: Registry = Registry(
        kind, guard=lambda obj, plugin, name: checked(hook_name, obj, plugin, name),
        unknown_note=note)
    call_each(hook_name, register=_registrar(registry))
    return registry


def samplers() -> Registry:
    """All registered samplers by name."""
    return _registry("register_samplers", "sampler")


def schedules() -> Registry:
    """All registered step schedules by name."""
    return _registry("register_schedules", "schedule")


def dataset_presets() -> Registry:
    """All registered dataset presets by name."""
    return _registry("register_dataset_presets", "dataset preset")


def model_sources() -> Registry:
    """All registered model sources (``openai`` in ``openai:base``) by name."""
    return _registry("register_model_sources", "model source")


def data_sources() -> Registry:
    """All registered data source types (``hf`` in ``hf:NAME``) by name."""
    return _registry("register_data_sources", "data source")


def register_commands(app: Any) -> None:
    """Let every plugin add commands to the Typer app; one that raises is recorded in
    :data:`broken` (so ``--help`` still works) instead of stopping the CLI, and a command
    whose name glidectl or an earlier plugin has is left out (:data:`command_clashes`)."""
    from .plugin_guards import _guard_commands  # it imports this module

    load_plugins()
    command_clashes.clear()
    owners = dict.fromkeys(command_names(app), "glidectl")
    for plugin, name in implementers("register_commands"):
        others = [p for p in pm.get_plugins() if p is not plugin]
        commands, groups = list(app.registered_commands), list(app.registered_groups)
        try:
            pm.subset_hook_caller("register_commands", remove_plugins=others)(app=app)
        except Exception as exc:
            if name in DEFAULT_PLUGINS:
                raise
            broken[name] = f"register_commands raised {describe_exception(exc)}"
        for added, kept in ((app.registered_commands, commands), (app.registered_groups, groups)):
            for info in added[len(kept):]:
                command = _command_name(info)
                if command in owners:
                    command_clashes.setdefault(name, []).append((command, owners[command]))
                else:
                    owners[command] = name
                    kept.append(info)
                    if name not in DEFAULT_PLUGINS:
                        _guard_commands(info, name, command)
            added[:] = kept


def _command_name(info: Any) -> str:
    """The name a Typer command or group info is invoked by."""
    if info.name:
        return info.name
    callback = getattr(info, "callback", None)
    return callback.__name__.replace("_", "-") if callback is not None else ""


def command_names(app: Any) -> list[str]:
    """The names of the commands and groups registered on a Typer app."""
    return [_command_name(i) for i in (*app.registered_commands, *app.registered_groups)
            if _command_name(i)]


def load_warnings() -> list[str]:
    """One sentence per plugin with hooks never called (not marked ``@hookimpl``), per
    plugin whose import changed torch's global settings and per plugin command left out
    because its name was taken."""
    idle = [f"plugin {who(plugin)}: {why}." for plugin, why in sorted(idle_plugins.items())]
    idle += [f"plugin {who(plugin)} changed torch's {what} when imported; change torch's "
             "global settings only inside the plugin's functions, and restore them."
             for plugin, what in sorted(torch_changes.items())]
    return idle + [
        f"plugin {who(plugin)} adds the command {command!r}, which "
        f"{'glidectl has' if owner == 'glidectl' else f'plugin {who(owner)} adds first'}: "
        "it is left out; rename it in the plugin."
        for plugin, clashes in sorted(command_clashes.items()) for command, owner in clashes]


def refresh() -> None:
    """Forget cached registries (after a plugin is registered or unregistered)."""
    _registry.cache_clear()


def register_plugin(plugin: object, name: str) -> None:
    """Register ``plugin`` (a module or object with ``@hookimpl`` hooks) in this process as
    ``name``, replacing what was registered under that name or registered as that object
    (a notebook cell run again), and refresh the registries."""
    if not isinstance(name, str) or not name:
        raise takes("register_plugin(): name=", "a plugin name (text)", name)
    load_plugins()
    unregister_plugin(name)
    if pm.is_registered(plugin):
        pm.unregister(plugin)
    pm.register(plugin, name=name)
    refresh()


def unregister_plugin(name: str) -> None:
    """Undo :func:`register_plugin` (nothing when no plugin is registered as ``name``)."""
    if pm.get_plugin(name) is not None:
        pm.unregister(name=name)
    refresh()


def version_of(plugin: str) -> str | None:
    dist = _dists.get(plugin)
    return dist.rsplit(" ", 1)[1] if dist else None


def distribution_of(plugin: str) -> str | None:
    dist = _dists.get(plugin)
    return dist.rsplit(" ", 1)[0] if dist else None


def plugins_used(sampler_names: Iterable[str | None] = (),
                 schedule_names: Iterable[str | None] = ()) -> list[str] | None:
    """``"DIST VERSION"`` of each installed plugin whose sampler or schedule is named
    (sorted; None when all are glidectl's own or not registered names, e.g. schedule files):
    the code that made a picture, beside its settings."""
    found = set()
    for registry, names in ((samplers(), sampler_names), (schedules(), schedule_names)):
        for name in names:
            if name and name in registry:
                dist = _dists.get(registry.entry(name).plugin)
                found.update([dist] if dist else [])
    return sorted(found) or None
