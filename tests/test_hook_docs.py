"""Meta-test: every hook is exercised by a test and documented in the README."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from glidectl import hookspecs

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


def test_every_hook_has_a_test_named_after_it():
    names = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        names |= set(re.findall(r"def (test_\w+)", path.read_text()))
    for hook in HOOKS:
        assert any(n.startswith(f"test_{hook}") for n in names), f"no test_{hook}* test"


def test_every_hook_is_documented_with_its_signature():
    readme = (ROOT / "README.md").read_text()
    for hook in HOOKS:
        params = ", ".join(inspect.signature(getattr(hookspecs, hook)).parameters)
        assert f"### {hook}({params})" in readme, f"README lacks '### {hook}({params})'"
