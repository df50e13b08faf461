"""What a notebook's editor shows of the library API: signatures, return types, docstrings."""

from __future__ import annotations

import inspect
import re
import typing
from pathlib import Path
from typing import Any

import numpy as np
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
    from PIL import Image  # an image of another size was cropped into its neighbours

    with pytest.raises(GlidectlError, match="image 3 is 30x30 and image 1 12x12; resize"):
        make_grid([Image.new("RGB", (12, 12))] * 2 + [Image.new("RGB", (30, 30))])


def test_get_sigmas_refuses_an_option_its_schedule_does_not_take() -> None:
    """A misspelt option (rhoo=3) was dropped without a word."""
    from glidectl.errors import GlidectlError
    from glidectl.samplers import get_sigmas

    with pytest.raises(GlidectlError, match=r"the karras schedule takes no option 'rhoo' "
                                            r"\(its options: rho\)"):
        get_sigmas("karras", 4, 0.002, 80.0, rhoo=3)
    assert len(get_sigmas("exponential", 4, 0.002, 80.0, rho=7)) == 5  # rho: any schedule


# A call of the library API given an argument of the wrong kind, and the keyword its one
# sentence names (each was a TypeError or AttributeError from deep inside, or taken as is).
from tiny_configs import tiny_config  # noqa: E402


def _settings_for(tmp_path: Path, **flags: Any) -> Any:
    from glidectl.evaluation import RunOptions, settings_for

    (tmp_path / "p.txt").write_text("a cat\n")
    return settings_for(tmp_path / "p.txt", {"base": "openai:base", **flags},
                        RunOptions(out=tmp_path / "e", device="cpu"), "fp32")


SETTINGS_FOR = [  # settings_for(..., {key: value}, ...): was taken, or a raw error later
    ({"base_stage.steps": "x"}, "base_stage.steps must be a number of steps"),
    ({"base_stage.steps": 2.5}, "base_stage.steps must be a whole number of steps"),
    ({"base_stage.steps": -3}, "base_stage.steps must be from 1 to 10000"),
    ({"base_stage.guidance": "high"}, "base_stage.guidance must be a number"),
    ({"base_stage.guidance": float("nan")}, "base_stage.guidance must be from 0 to 100"),
    ({"upsample_stage.guidance": [3]}, "upsample_stage.guidance must be a number"),
    ({"base_stage.sampler": 5}, "base_stage.sampler must be a sampler's name"),
    ({"base_stage.schedule": 5}, "base_stage.schedule must be a schedule's name"),
    ({"seed": 1.5}, "seed must be a whole number, got 1.5 (float)"),
    ({"seed": -1}, "seed must be from 0 to 2**63-1"),
    ({"n": "4"}, "n must be a whole number, got '4' (str)"),
    ({"n": [4]}, "n must be a whole number, got [4] (list)"),
    ({"batch_size": 2.0}, "batch_size must be a whole number"),
    ({"rerank": "x"}, "rerank must be a whole number"),
    ({"rerank": -1}, "rerank must be from 0 to 1000000"),
    ({"grey": "yes"}, "grey must be True or False"),
    ({"loras": 3}, "loras takes an adapter's path"),
    ({"base": 3}, "base must be a model spec"),
    ({"upsampler": 3}, "upsampler must be a model spec"),
]


@pytest.mark.parametrize(("flags", "said"), SETTINGS_FOR)
def test_settings_for_names_a_setting_of_the_wrong_kind(tmp_path, flags, said) -> None:
    from glidectl.errors import GlidectlError

    with pytest.raises(GlidectlError) as error:
        _settings_for(tmp_path, **flags)
    assert str(error.value).startswith(said), str(error.value)
    assert not (tmp_path / "e").exists()


def test_the_flag_names_settings_for_takes_come_from_glidectl_evaluation() -> None:
    """The README describes `glidectl eval` as two calls of glidectl.evaluation whose flags
    go by their `FLAG_NAMES` keys; the table was importable only from eval_settings."""
    from glidectl.evaluation import FLAG_NAMES

    assert FLAG_NAMES["base_stage.steps"] == "--steps" and FLAG_NAMES["n"] == "--n"


def test_settings_for_takes_one_adapter_and_a_digit_string_of_steps(tmp_path) -> None:
    """One adapter's path is one adapter (was: its characters, one adapter each); "25"
    steps is a respacing string GLIDE reads as 25 steps, so it is kept as given."""
    settings, _ = _settings_for(tmp_path, loras="my-lora:0.5", **{"base_stage.steps": "25"})
    assert settings.loras == ("my-lora:0.5",) and settings.base_stage.steps == "25"


def test_eval_settings_by_hand_name_their_fields() -> None:
    from glidectl.errors import GlidectlError
    from glidectl.evaluation import EvalSettings

    for kwargs, said in [({"n": "2"}, "n must be a whole number"),
                         ({"base_stage": {"steps": 2}}, "base_stage= takes a "
                                                        "glidectl.eval_settings.Stage")]:
        with pytest.raises(GlidectlError, match=f"^{re.escape(said)}"):
            EvalSettings(**kwargs)


def _tiny_pipe() -> Any:
    from test_pipeline import tiny_glide

    return GlidePipeline(tiny_glide("base", 0))


CALLS = [  # (call, its argument, what the sentence begins with)
    (lambda tmp, pipe: GlidePipeline(pipe.base, tokenizer="gpt2"),
     "GlidePipeline(tokenizer=...) takes a tokenizer"),
    (lambda tmp, pipe: GlidePipeline(pipe.base, upsampler_tokenizer=3),
     "GlidePipeline(upsampler_tokenizer=...) takes a tokenizer"),
    (lambda tmp, pipe: GlidePipeline(pipe.base, vocab_dir=3), "vocab_dir= takes"),
    (lambda tmp, pipe: GlidePipeline(pipe.base, diffusion="x"),
     "GlidePipeline(diffusion=...) takes"),
    (lambda tmp, pipe: GlidePipeline(pipe.base, records="x"), "GlidePipeline(records=...) takes"),
    (lambda tmp, pipe: GlidePipeline.from_specs(tmp / "b", compile="yes"), "compile= takes"),
    (lambda tmp, pipe: generate("a", base=tmp / "b", vocab_dir=3), "vocab_dir= takes"),
    (lambda tmp, pipe: pipe.generate("a", progress=3), "generate(): progress= takes a function"),
    (lambda tmp, pipe: pipe.generate("a", progress=True), "generate(): progress= takes a"),
    (lambda tmp, pipe: pipe.generate("a", on_step=3), "generate(): on_step= takes a function"),
    (lambda tmp, pipe: pipe.generate("a", on_images=3), "generate(): on_images= takes a"),
    (lambda tmp, pipe: pipe.generate("a", warn=3), "generate(): warn= takes a function"),
    (lambda tmp, pipe: pipe.generate("a", timings=[]), "generate(): timings= takes a dict"),
    (lambda tmp, pipe: pipe.generate("a", keep_images="no"), "generate(): keep_images= takes"),
    # n=10**9 filled memory with the request's seeds (MemoryError, or killed); --n refuses it
    (lambda tmp, pipe: pipe.generate("a", n=10**9), "n must be from 1 to 1000000; got 1000000000"),
    (lambda tmp, pipe: pipe.generate(["a"], n=np.int64(10**9)), "n must be from 1 to 1000000"),
    (lambda tmp, pipe: pipe.generate("a", clip_denoised="x"), "generate(): clip_denoised must"),
    (lambda tmp, pipe: pipe.generate("a", upsample_quantize_t=1),
     "generate(): upsample_quantize_t must be True or False"),
    (lambda tmp, pipe: _lora().latest_adapter(None), "latest_adapter() takes a LoRA run"),
    (lambda tmp, pipe: _lora().latest_adapter(3), "latest_adapter() takes a LoRA run"),
    (lambda tmp, pipe: _lora().latest_adapter("gone"), "LoRA run 'gone' (relative to the "),
    (lambda tmp, pipe: _lora().latest_adapter(tmp, ema="yes"), "latest_adapter(ema=...) takes"),
    (lambda tmp, pipe: _load_model()(tmp / "b", kind=3), "load_model(kind=...) takes"),
    (lambda tmp, pipe: _load_model()(tmp / "b", options="x"), "load_model(options=...) takes"),
    (lambda tmp, pipe: _config().load_config(3), "load_config() takes a glide.toml"),
    (lambda tmp, pipe: _config().load_config(None, [3]), "load_config(overrides=...) takes"),
    (lambda tmp, pipe: _train()(tiny_config(tmp), adapter="lora"), "adapter= takes a "
                                                                      "ModelAdapter"),
    (lambda tmp, pipe: _train()(tiny_config(tmp), live="x"), "live= takes True, False or None"),
    (lambda tmp, pipe: _train()(tiny_config(tmp), quiet="x"), "quiet= takes True or False"),
    (lambda tmp, pipe: _eval().run_eval(None, _eval().EvalSettings()),
     "run_eval() takes a prompts file's path as its prompts_file"),
    (lambda tmp, pipe: _eval().run_eval("p.txt", {"base": "x"}), "run_eval() takes an "
                                                                  "EvalSettings"),
    (lambda tmp, pipe: _eval().run_eval("p.txt", _eval().EvalSettings(), {"out": "x"}),
     "run_eval(options=...) takes a RunOptions"),
    (lambda tmp, pipe: _eval().run_eval("p.txt", _eval().EvalSettings(), on_event=3),
     "run_eval(on_event=...) takes a function"),
    (lambda tmp, pipe: _eval().run_eval("p.txt", _eval().EvalSettings(), notes="abc"),
     "run_eval(notes=...) takes a list"),
    (lambda tmp, pipe: _eval().settings_for("p.txt", None, _eval().RunOptions()),
     "settings_for() takes a dict of settings by their FLAG_NAMES keys as its flags"),
    (lambda tmp, pipe: _eval().settings_for("p.txt", {}, None),
     "settings_for() takes a RunOptions(out=...) as its options"),
    (lambda tmp, pipe: _eval().RunOptions(grid_max="x"), "grid_max must be a whole number"),
    (lambda tmp, pipe: _images().make_grid(None), "make_grid() takes a list"),
    (lambda tmp, pipe: _images().make_grid(pipe.generate("a", steps=1), cols=-1),
     "make_grid(cols=...) takes a whole number >= 1"),
    (lambda tmp, pipe: _images().save_png(_image(), 3, {}), "save_png() takes a file's path as "
                                                            "its path"),
    (lambda tmp, pipe: _images().save_png(_image(), tmp / "x.png", None), "save_png() takes a "
                                                                          "dict of text"),
    (lambda tmp, pipe: _images().save_png(_image(), tmp / "x.png", {"dpi": (72, 72)}),
     "save_png(): text['dpi'] is (72, 72) (tuple)"),
]


def _train() -> Any:
    from glidectl.training import train

    return train


def _lora() -> Any:
    import glidectl.lora

    return glidectl.lora


def _load_model() -> Any:
    from glidectl import load_model

    return load_model


def _config() -> Any:
    import glidectl.config

    return glidectl.config


def _eval() -> Any:
    import glidectl.evaluation

    return glidectl.evaluation


def _images() -> Any:
    import glidectl.images

    return glidectl.images


def _image() -> Any:
    from PIL import Image

    return Image.new("RGB", (4, 4))


@pytest.fixture(scope="module")
def tiny_pipe() -> Any:
    return _tiny_pipe()


@pytest.mark.parametrize(("call", "said"), CALLS,
                         ids=[said.split(" takes")[0].split(" must")[0] for _, said in CALLS])
def test_library_calls_name_an_argument_of_the_wrong_kind(tmp_path, monkeypatch, tiny_pipe,
                                                          call, said) -> None:
    """Each was a raw TypeError/AttributeError from deep inside, or was taken as it was
    (``progress=True``, ``timings=[]`` when the first batch is done, notes='abc' said as
    three notes): one sentence naming the keyword, and nothing written."""
    from glidectl.errors import GlidectlError

    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.txt").write_text("a cat\n")
    with pytest.raises(GlidectlError) as error:
        call(tmp_path, tiny_pipe)
    assert str(error.value).startswith(said), str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.txt"]
