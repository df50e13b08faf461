"""What a notebook's editor shows of the library API: signatures, return types, docstrings."""

from __future__ import annotations

import inspect
import typing
from typing import Any

import pytest

from glidectl.config import to_dict
from glidectl.pipeline import GlidePipeline, ModelRecord, generate
from glidectl.training.engine import Trainer


@pytest.mark.parametrize("cls", [GlidePipeline, ModelRecord, Trainer])
def test_every_public_method_and_property_has_a_docstring(cls) -> None:
    own = {name: member for base in reversed(cls.__mro__)  # its glidectl mixins' too
           if base.__module__.startswith("glidectl") for name, member in vars(base).items()}
    missing = [name for name, member in own.items() if not name.startswith("_")
               and callable(getattr(member, "fget", member))
               and not inspect.getdoc(getattr(member, "fget", member))]
    assert not missing, missing
    assert inspect.getdoc(to_dict)


def test_generate_says_what_it_returns() -> None:
    for fn in (generate, GlidePipeline.generate):
        hint = typing.get_type_hints(fn)["return"]
        assert hint is not Any and "Image" in str(hint) and "Tensor" in str(hint)


def test_trainer_names_its_keywords() -> None:
    """Not ``**kwargs``: an editor shows ``resume=``, ``dataset=``, ``quiet=``."""
    params = inspect.signature(Trainer).parameters
    assert {"resume", "adapter", "live", "kinds", "dataset", "quiet"} <= set(params)
    assert all(p.kind is not p.VAR_KEYWORD for p in params.values())
