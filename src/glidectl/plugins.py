"""The pluggy manager: default plugins, entry-point plugins, and the registries they fill."""

from __future__ import annotations

import importlib
import os
import sys
from functools import cache
from importlib import metadata
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError
from .registry import Registry

ENTRY_POINT_GROUP = "glidectl"

# Built-in features, registered through the very same hooks third-party plugins use.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "glidectl.glide.sources",
    "glidectl.data.presets",
    "glidectl.samplers.builtin",
)

pm = pluggy.PluginManager("glidectl")
pm.add_hookspecs(hookspecs)
_loaded = False


def _allow_list() -> set[str] | None:
    raw = os.environ.get("GLIDECTL_LOAD_PLUGINS")
    if raw is None:
        return None
    return {name.strip() for name in raw.split(",") if name.strip()}


def load_plugins() -> pluggy.PluginManager:
    """Register default plugins, then installed ones (filtered by ``GLIDECTL_LOAD_PLUGINS``)."""
    global _loaded
    if _loaded:
        return pm
    _loaded = True
    for name in DEFAULT_PLUGINS:
        mod = importlib.import_module(name)
        pm.register(mod, name=name)
    allowed = _allow_list()
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if allowed is not None and ep.name not in allowed:
            continue
        if pm.get_plugin(ep.name) is not None:
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # a broken third-party package must say who it is
            raise PluginError(f"Plugin {ep.name!r} failed to load: {exc}") from exc
        pm.register(plugin, name=ep.name)
        if ep.dist is not None:
            _versions[ep.name] = ep.dist.version
    if os.environ.get("GLIDECTL_TRACE_PLUGINS"):
        pm.trace.root.setwriter(lambda msg: print(msg, end="", file=sys.stderr))
        pm.enable_tracing()
    return pm


_versions: dict[str, str] = {}


def call_each(hook_name: str, **kwargs: Any) -> None:
    """Call one hook plugin by plugin so an error can name the plugin that raised it.

    ``kwargs`` values that are callables taking ``plugin=`` get the plugin name bound.
    """
    load_plugins()
    caller = getattr(pm.hook, hook_name)
    for impl in caller.get_hookimpls():  # registration order
        args = {
            k: (v(impl.plugin_name) if getattr(v, "_per_plugin", False) else v)
            for k, v in kwargs.items()
        }
        try:
            impl.function(**{k: args[k] for k in impl.argnames if k in args})
        except PluginError:
            raise
        except Exception as exc:
            raise PluginError(
                f"Plugin {impl.plugin_name!r} raised in {hook_name}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc


def _registrar(registry: Registry):
    def for_plugin(plugin: str):
        def register(name: str, obj: Any, aliases: tuple[str, ...] | list[str] = ()) -> None:
            registry.add(name, obj, plugin, tuple(aliases))

        return register

    for_plugin._per_plugin = True  # type: ignore[attr-defined]
    return for_plugin


@cache
def _registry(hook_name: str, kind: str) -> Registry:
    registry: Registry = Registry(kind)
    call_each(hook_name, register=_registrar(registry))
    return registry


def samplers() -> Registry:
    """All registered samplers by name."""
    return _registry("register_samplers", "sampler")


def dataset_presets() -> Registry:
    """All registered dataset presets by name."""
    return _registry("register_dataset_presets", "dataset preset")


def model_sources() -> Registry:
    """All registered model sources (``openai`` in ``openai:base``) by name."""
    return _registry("register_model_sources", "model source")


def register_commands(app: Any) -> None:
    """Let every plugin add commands to the Typer app."""
    call_each("register_commands", app=app)


def refresh() -> None:
    """Forget cached registries (after a plugin is registered or unregistered)."""
    _registry.cache_clear()


def plugin_info(include_defaults: bool = False) -> list[dict[str, Any]]:
    """Name, version and hooks of each plugin, as ``glidectl plugins`` prints them."""
    load_plugins()
    out = []
    for plugin in pm.get_plugins():
        name = pm.get_name(plugin)
        if name is None:
            continue
        if name in DEFAULT_PLUGINS and not include_defaults:
            continue
        info: dict[str, Any] = {
            "name": name,
            "hooks": sorted(h.name for h in pm.get_hookcallers(plugin) or []),
        }
        if name in _versions:
            info["version"] = _versions[name]
        out.append(info)
    return sorted(out, key=lambda i: i["name"])
