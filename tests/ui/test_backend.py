"""The UI's backend without a browser: what can be picked, the model cache, seeds, memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from glidectl.errors import GlidectlError
from glidectl.evaluation import image_seed
from glidectl.ui.backend import UiBackend
from glidectl.ui.models import ModelCache, list_models, memory_use


def test_models_folder_lists_weights_and_runs_but_nothing_else(tmp_path, models_dir,
                                                               monkeypatch):
    from glidectl.glide import create_model, preset_options, save_weights

    monkeypatch.setenv("GLIDECTL_HOME", str(tmp_path / "home"))
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "tiny.safetensors").write_bytes((models_dir / "tiny.safetensors").read_bytes())
    up = preset_options("upsample", "tiny").replace(image_size=64, channel_mult="1,2,2")
    save_weights(create_model(up), folder / "up.safetensors")
    step = folder / "my-run" / "checkpoints" / "step-000010"
    step.mkdir(parents=True)
    (step / "model.safetensors").write_bytes((models_dir / "tiny.safetensors").read_bytes())
    (folder / "notes.txt").write_text("not a model")
    (folder / "empty-dir").mkdir()
    (tmp_path / "home" / "openai").mkdir(parents=True)
    (tmp_path / "home" / "openai" / "base.pt").write_bytes(b"cached")  # openai:base is cached

    labels = {c.label: c.kind for c in list_models(folder)}
    assert labels == {"openai:base": "base", "tiny.safetensors": "base",
                      "up.safetensors": "upsample", "my-run/": "base"}
    bases, ups, loras = UiBackend(folder).choices()
    assert bases == ["openai:base", "my-run/", "tiny.safetensors"]
    assert ups == ["up.safetensors"] and loras == []


def test_only_listed_models_can_be_used(models_dir):
    backend = UiBackend(models_dir, device="cpu")
    for bad in ("/etc/passwd", str(models_dir / "tiny.safetensors"), "../tiny.safetensors"):
        with pytest.raises(GlidectlError, match="Unknown base model"):
            backend.generate("a cat", n=1, base_steps=1, base=bad)
    with pytest.raises(GlidectlError, match="Type a prompt"):
        backend.generate("  ", base="tiny.safetensors")


def test_models_are_loaded_once_and_kept(models_dir, monkeypatch):
    from glidectl.glide import loading

    calls: list[str] = []
    real = loading.load_model

    def counting(spec, *args, **kwargs):
        calls.append(str(spec))
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(loading, "load_model", counting)
    backend = UiBackend(models_dir, device="cpu")
    kwargs = dict(n=1, sampler="euler", base_steps=1, base="tiny.safetensors")
    first = backend.generate("a red circle", seed=1, **kwargs)
    second = backend.generate("a blue square", seed=2, **kwargs)
    assert len(calls) == 1 and backend.cache.loads == 1
    assert first.files and second.files
    backend.generate("a blue square", seed=2, precision="bf16", **kwargs)
    assert len(calls) == 2 and len(backend.cache) == 2  # another spec is another entry


def test_seeds_are_reported_and_reproduce_the_images(models_dir):
    backend = UiBackend(models_dir, device="cpu")
    kwargs = dict(n=2, sampler="euler", base_steps=2, base="tiny.safetensors")
    a = backend.generate("a red circle", seed=42, **kwargs)
    b = backend.generate("a red circle", seed=42, **kwargs)
    assert a.seed == 42 and a.seeds == [image_seed(42, 0, 0), image_seed(42, 0, 1)]
    for fa, fb in zip(a.files, b.files, strict=True):
        assert np.array_equal(np.asarray(Image.open(fa)), np.asarray(Image.open(fb)))
        assert Image.open(fa).text["seed"] in {str(s) for s in a.seeds}
    r = backend.generate("a red circle", seed=-1, **kwargs)
    assert 0 <= r.seed < 2**31 and r.settings["seed"] == r.seed
    assert all(Path(f).is_file() for f in r.files)


def test_memory_use_is_reported():
    text = memory_use()
    assert ("RSS" in text and "MiB" in text) or "GPU" in text
    assert int(text.split()[2]) > 0 if "RSS" in text else True


def test_model_cache_loads_each_key_once():
    cache = ModelCache()
    made: list[int] = []
    for key in ("a", "a", "b", "a"):
        cache.get(key, lambda: made.append(1) or object())
    assert cache.loads == 2 and len(made) == 2 and "b" in cache


def test_ui_listens_on_localhost_unless_told(monkeypatch, models_dir):
    pytest.importorskip("gradio")
    from glidectl.cli.app import main
    from glidectl.ui import app

    seen: dict = {}
    monkeypatch.setattr(app, "launch", lambda backend, **kw: seen.update(kw))
    with pytest.raises(SystemExit) as done:
        main(["ui", "--models-dir", str(models_dir)])
    assert done.value.code == 0
    assert seen == {"host": "127.0.0.1", "port": None, "share": False}
    with pytest.raises(SystemExit):
        main(["ui", "--models-dir", str(models_dir), "--host", "0.0.0.0", "--port", "9999",
              "--share"])
    assert seen == {"host": "0.0.0.0", "port": 9999, "share": True}


def test_ui_refuses_a_missing_models_folder(tmp_path, capsys):
    pytest.importorskip("gradio")
    from glidectl.cli.app import main

    with pytest.raises(SystemExit) as done:
        main(["ui", "--models-dir", str(tmp_path / "nope")])
    assert done.value.code == 2
    assert "is not a folder" in capsys.readouterr().err


def test_lora_is_listed_and_applied_with_its_scale(lora_models_dir):
    backend = UiBackend(lora_models_dir, device="cpu")
    bases, _, loras = backend.choices()
    assert bases == ["tiny.safetensors"] and loras == ["my-lora/"]
    kwargs = dict(n=1, sampler="euler", base_steps=1, base="tiny.safetensors", seed=1)
    result = backend.generate("a red circle", lora="my-lora/", lora_scale=0.5, **kwargs)
    assert result.settings["lora"] == "my-lora/:0.5"
    (stack,) = backend.cache.values()
    (applied,) = stack.base.loras
    assert applied["scale"] == 0.5 and applied["modules"] > 0
    with pytest.raises(GlidectlError, match="Unknown LoRA"):
        backend.generate("a red circle", lora=str(lora_models_dir / "my-lora"), **kwargs)
