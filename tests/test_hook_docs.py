"""Meta-test: every hook is exercised by a test, documented in the README, and every
implementation and documented callback matches the hookspec's signature."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from glidectl import hookspecs, plugins
from glidectl.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
HOOKS = [
    name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
    if name.startswith("register_")
]


def test_there_are_hooks():
    assert set(HOOKS) >= {
        "register_samplers", "register_dataset_presets", "register_model_sources",
        "register_commands",
    }


def test_every_hook_has_a_test_named_after_it_that_implements_it():
    for hook in HOOKS:
        files = [p for p in (ROOT / "tests").rglob("test_*.py")
                 if re.search(rf"def test_{hook}\w*\(", p.read_text())]
        assert files, f"no test_{hook}* test"
        # ...in a file that implements the hook (so the test exercises it, not just its name)
        assert any(re.search(rf"@hookimpl\s+def {hook}\(", p.read_text()) for p in files), hook


def test_every_implementation_takes_only_hookspec_arguments():
    plugins.load_plugins()
    for hook in HOOKS:
        spec_args = tuple(inspect.signature(getattr(hookspecs, hook)).parameters)
        for impl in getattr(plugins.pm.hook, hook).get_hookimpls():
            assert set(impl.argnames) <= set(spec_args), (hook, impl.plugin_name)
    example = ROOT / "plugins" / "glidectl-dpm3m" / "glidectl_dpm3m.py"
    for hook, params in re.findall(r"@hookimpl\s+def (\w+)\(([^)]*)\)", example.read_text()):
        spec_args = tuple(inspect.signature(getattr(hookspecs, hook)).parameters)
        assert tuple(p.strip() for p in params.split(",") if p.strip()) == spec_args


def _documented_call(text: str) -> inspect.Signature:
    """The signature of the ``register(...)`` call a docstring documents."""
    found = re.search(r"``register\(([^`]*)\)``", text)
    assert found, text
    namespace: dict = {}
    exec(f"def register({found.group(1)}): pass", namespace)  # a signature, no body
    return inspect.signature(namespace["register"])


def test_documented_register_callbacks_match_the_real_one():
    real = inspect.signature(plugins._registrar(Registry("thing"))("some-plugin"))
    for hook in HOOKS:
        if "register" not in inspect.signature(getattr(hookspecs, hook)).parameters:
            continue
        doc = _documented_call(getattr(hookspecs, hook).__doc__)
        assert len(doc.parameters) == len(real.parameters), hook
        assert [p.default for p in doc.parameters.values()] == \
            [p.default for p in real.parameters.values()], hook
        assert list(doc.parameters)[-1] == list(real.parameters)[-1] == "aliases", hook


def test_every_hook_is_documented_with_its_signature():
    readme = (ROOT / "README.md").read_text()
    for hook in HOOKS:
        params = ", ".join(inspect.signature(getattr(hookspecs, hook)).parameters)
        assert f"### {hook}({params})" in readme, f"README lacks '### {hook}({params})'"
