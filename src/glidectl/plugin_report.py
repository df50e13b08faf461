"""What each plugin registers, its load errors and name clashes, as ``glidectl plugins`` shows."""

from __future__ import annotations

import inspect
from typing import Any

from . import hookspecs, plugins
from .callables import doc_summary
from .plugin_guards import checked
from .plugins import pm


def _register_hooks() -> list[str]:
    """Hooks that take a ``register(name, obj, aliases=())`` callback (all but commands)."""
    return sorted(
        name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
        if name.startswith("register_") and "register" in inspect.signature(fn).parameters
    )


def _collect(hook: str, plugin: Any) -> list[dict[str, Any]]:
    """What one plugin registers through one hook: ``[{"name", "aliases"}]`` (and the
    object's ``description`` where it has one, as samplers do); an object that is not what
    the hook takes raises, as it does when the registry is filled."""
    found: list[dict[str, Any]] = []

    def register(name: str, obj: Any, aliases: tuple[str, ...] | list[str] = ()) -> None:
        obj = checked(hook, obj, pm.get_name(plugin) or "", name)  # a bare sampler: Sampler
        entry = {"name": name.lower(), "aliases": [a.lower() for a in aliases]}
        description = getattr(obj, "description", None)
        if hook == "register_schedules":  # a function: its docstring's start
            description = doc_summary(obj) or description
        if isinstance(description, str) and description:
            entry["description"] = description
        found.append(entry)

    others = [p for p in pm.get_plugins() if p is not plugin]
    pm.subset_hook_caller(hook, remove_plugins=others)(register=register)
    return found


def _commands(plugin: Any) -> list[str]:
    import typer

    app = typer.Typer()
    others = [p for p in pm.get_plugins() if p is not plugin]
    pm.subset_hook_caller("register_commands", remove_plugins=others)(app=app)
    return plugins.command_names(app)


def _describe(plugin: Any, name: str) -> dict[str, Any]:
    hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
    info: dict[str, Any] = {"name": name, "status": "ok", "hooks": hooks, "registers": {}}
    try:
        for hook in _register_hooks():
            if hook in hooks:
                info["registers"][hook.removeprefix("register_")] = _collect(hook, plugin)
        if "register_commands" in hooks:
            info["registers"]["commands"] = _commands(plugin)
    except Exception as exc:  # shown, not raised: this command must work for broken plugins
        info["status"] = "error"
        info["error"] = f"raised while registering: {plugins.describe_exception(exc)}"
    return info


def _mark_clashes(infos: list[dict[str, Any]]) -> None:
    """Add ``clashes`` to every plugin that registers a name another plugin also does."""
    owners: dict[tuple[str, str], list[str]] = {}
    for info in infos:
        for kind, entries in info["registers"].items():
            for entry in entries:
                names = [entry] if isinstance(entry, str) else [entry["name"], *entry["aliases"]]
                for key in names:
                    owners.setdefault((kind, key), []).append(info["name"])
    for info in infos:
        info["clashes"] = [
            {"kind": kind, "name": key, "with": [o for o in who if o != info["name"]]}
            for (kind, key), who in sorted(owners.items())
            if info["name"] in who and len(who) > 1
        ]


def plugin_info(include_defaults: bool = False) -> list[dict[str, Any]]:
    """Per plugin: name, version, distribution, hooks, what it registers, clashes, errors."""
    plugins.load_plugins()
    infos = []
    for plugin in pm.get_plugins():
        name = pm.get_name(plugin)
        if name is not None:
            infos.append(_describe(plugin, name))
    for info in infos:
        if info["name"] in plugins.idle_plugins:
            info.update(status="error", error=plugins.idle_plugins[info["name"]])
        if info["name"] in plugins.torch_changes:  # set back; every other command warns
            info["warning"] = (f"its import changed torch's "
                               f"{plugins.torch_changes[info['name']]}")
    for name, error in plugins.broken.items():
        if pm.get_plugin(name) is None:
            infos.append({"name": name, "status": "error", "hooks": [], "registers": {},
                          "error": f"failed to load: {error}"})
        else:  # imported, but its register_commands raised
            info = next(i for i in infos if i["name"] == name)
            info.update(status="error", error=error)
    if include_defaults:  # --all: the installed plugins the allow-list leaves out too
        infos += [{"name": name, "status": "left out", "hooks": [], "registers": {},
                   "note": f"not loaded: {plugins.ALLOW_ENV} leaves it out"}
                  for name in plugins.left_out]
    _mark_clashes(infos)  # defaults included: a plugin may clash with a built-in name
    for info in infos:  # glidectl's own commands come from no plugin
        info["clashes"] += [{"kind": "commands", "name": command, "with": ["glidectl"]}
                            for command, owner in plugins.command_clashes.get(info["name"], [])
                            if owner == "glidectl"]
    out = []
    for info in infos:
        if info["name"] in plugins.DEFAULT_PLUGINS and not include_defaults:
            continue
        if plugins.version_of(info["name"]):
            info["distribution"] = plugins.distribution_of(info["name"])
            info["version"] = plugins.version_of(info["name"])
        out.append(info)
    return sorted(out, key=lambda i: i["name"])


def _registers_text(info: dict[str, Any]) -> str:
    lines = []
    for kind, entries in info["registers"].items():
        shown = [
            e if isinstance(e, str)
            else e["name"] + (f" ({', '.join(e['aliases'])})" if e["aliases"] else "")
            for e in entries
        ]
        lines.append(f"{kind}: {', '.join(shown) or '-'}")
        lines += [f"  {e['name']}: {e['description']}" for e in entries
                  if isinstance(e, dict) and "description" in e]
    for clash in info["clashes"]:
        lines.append(f"CLASH: {clash['kind']} {clash['name']!r} also from "
                     f"{', '.join(clash['with'])}")
    if "error" in info:
        lines.append(f"ERROR: {info['error']}")
    if "warning" in info:
        lines.append(f"WARNING: {info['warning']}")
    if "note" in info:
        lines.append(info["note"])
    return "\n".join(lines) or "-"


def table(infos: list[dict[str, Any]]) -> Any:
    """A rich table of :func:`plugin_info` rows for a terminal."""
    from rich.markup import escape
    from rich.table import Table

    out = Table("plugin", "distribution", "registers (aliases)", show_lines=True)
    for info in infos:
        dist = " ".join(x for x in (info.get("distribution"), info.get("version")) if x)
        out.add_row(*map(escape, (info["name"], dist or "-", _registers_text(info))))
    return out
