"""What a notebook's editor shows of the library API: signatures, return types, docstrings."""

from __future__ import annotations

import inspect
import typing
from pathlib import Path
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


def test_training_calls_given_no_config_or_a_resume_of_another_kind_say_so(tmp_path) -> None:
    """``train("glide.toml")`` or a dict (was: AttributeError "'str' object has no attribute
    'train'"), ``train_lora`` likewise, and ``resume=True`` (was: TypeError from pathlib):
    one sentence naming what the call takes; nothing is left on disk."""
    from tiny_configs import tiny_config

    from glidectl.errors import GlidectlError
    from glidectl.lora import train_lora
    from glidectl.training import train

    for call in (train, train_lora):
        with pytest.raises(GlidectlError) as error:
            call("examples/glide.toml")
        assert str(error.value) == (
            f"{call.__name__}() takes a GlideConfig (glidectl.config.load_config(path)), got "
            "'examples/glide.toml' (str).")
    with pytest.raises(GlidectlError) as error:
        train(tiny_config(tmp_path), resume=True)
    assert str(error.value) == ("resume= takes 'latest' or a checkpoint folder's path, got "
                                "True (bool).")
    with pytest.raises(GlidectlError, match=r"^resume='runs/gone': not a checkpoint"):
        train(tiny_config(tmp_path), resume=Path("runs/gone"))  # was: resume PosixPath(...
    assert not (tmp_path / "runs").exists()


def test_grid_and_png_helpers_say_what_they_take(tmp_path) -> None:
    """make_grid([]) was a ZeroDivisionError and save_png(tensor) an AttributeError from
    deep inside: the README's helpers for generate()'s images say what they take."""
    import torch

    from glidectl.errors import GlidectlError
    from glidectl.images import make_grid, save_png

    for bad in ([], [torch.zeros(3, 8, 8)]):
        with pytest.raises(GlidectlError, match="make_grid\\(\\) takes a list of one or more"):
            make_grid(bad)
    with pytest.raises(GlidectlError, match="save_png\\(\\) takes a PIL image .* got Tensor"):
        save_png(torch.zeros(3, 8, 8), tmp_path / "x.png", {})
    assert not (tmp_path / "x.png").exists()
