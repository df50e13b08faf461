"""The UI's backend without a browser: what can be picked, the model cache, seeds, memory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from glidectl import plugins
from glidectl.errors import GlidectlError
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
    # an A1111/ComfyUI models folder's files: offered in no list (each failed on a click)
    import torch
    from safetensors.torch import load_file, save_file

    save_file({"lora_unet_down.lora_down.weight": torch.zeros(4, 8)},
              str(folder / "kohya-lora.safetensors"))
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3)},
              str(folder / "sd15.safetensors"))
    (folder / "cut.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a")
    bare = {k: v for k, v in load_file(str(folder / "tiny.safetensors")).items()}
    save_file(bare, str(folder / "bare.safetensors"))  # GLIDE weights, no metadata: by shape

    labels = {c.label: c.kind for c in list_models(folder)}
    assert labels == {"openai:base": "base", "tiny.safetensors": "base",
                      "up.safetensors": "upsample", "my-run/": "base",
                      "bare.safetensors": "base"}
    bases, ups, loras = UiBackend(folder).choices()
    assert bases == ["openai:base", "bare.safetensors", "my-run/", "tiny.safetensors"]
    assert ups == ["up.safetensors"] and loras == []


def test_a_plugin_sources_models_are_listed_by_the_kind_of_their_file(tmp_path, models_dir,
                                                                      monkeypatch,
                                                                      register_plugin):
    from glidectl.glide import create_model, preset_options, save_weights
    from glidectl.hookspecs import hookimpl

    monkeypatch.setenv("GLIDECTL_HOME", str(tmp_path / "home"))  # no cached openai models
    up = preset_options("upsample", "tiny").replace(image_size=64, channel_mult="1,2,2")
    files = {"tiny": models_dir / "tiny.safetensors",
             "sharp": save_weights(create_model(up), tmp_path / "sharp.safetensors")}

    class Hub:
        def names(self):
            return list(files)

        def resolve(self, name, download=True):
            return files[name]

    class Sources:
        @hookimpl
        def register_model_sources(self, register):
            register("myhub", Hub())

    register_plugin(Sources(), "hub-plugin")
    bases, ups, _ = UiBackend(None).choices()
    assert bases == ["myhub:tiny"] and ups == ["myhub:sharp"]


def test_a_plugin_source_that_cannot_list_its_models_leaves_the_others_listed(
        models_dir, tmp_path, monkeypatch, register_plugin):
    from glidectl.hookspecs import hookimpl
    from glidectl.ui.models import ModelListWarning

    monkeypatch.setenv("GLIDECTL_HOME", str(tmp_path / "home"))

    class Broken:
        def names(self):
            raise ConnectionError("hub unreachable")

        def resolve(self, name, download=True):
            raise AssertionError("never asked")

    class Sources:
        @hookimpl
        def register_model_sources(self, register):
            register("deadhub", Broken())

    register_plugin(Sources(), "dead-plugin")
    with pytest.warns(ModelListWarning, match="hub unreachable.*left out of the lists"):
        bases, _, _ = UiBackend(models_dir).choices()
    assert bases == ["tiny.safetensors"]  # the folder's models are still there

    class Half:  # resolve fails for one model: it was left out without a word
        def names(self):
            return ["good", "bad"]

        def resolve(self, name, download=True):
            if name == "bad":
                raise ValueError("bad resolve")
            return models_dir / "tiny.safetensors"

    class HalfSources:
        @hookimpl
        def register_model_sources(self, register):
            register("halfhub", Half())

    plugins.unregister_plugin("dead-plugin")
    register_plugin(HalfSources(), "half-plugin")
    with pytest.warns(ModelListWarning, match=r"ValueError: bad resolve.* halfhub:bad is left "
                                              r"out of the lists"):
        bases, _, _ = UiBackend(models_dir).choices()
    assert bases == ["halfhub:good", "tiny.safetensors"]


def test_only_listed_models_can_be_used(models_dir):
    backend = UiBackend(models_dir, device="cpu")
    for bad in ("/etc/passwd", str(models_dir / "tiny.safetensors"), "../tiny.safetensors"):
        with pytest.raises(GlidectlError, match="Unknown base model"):
            backend.generate("a cat", n=1, base_steps=1, base=bad)
    with pytest.raises(GlidectlError, match="Type a prompt"):
        backend.generate("  ", base="tiny.safetensors")


def test_each_page_load_lists_the_models_on_disk_now(tmp_path, models_dir):
    from glidectl.ui.app import fresh_lists

    folder = tmp_path / "m"
    folder.mkdir()
    backend = UiBackend(folder, device="cpu")  # started with no model
    assert fresh_lists(backend, None, "(none)", "(none)", "(default)")[0] == ([], None)
    (folder / "new.safetensors").write_bytes((models_dir / "tiny.safetensors").read_bytes())
    lists = fresh_lists(backend, None, "(none)", "(none)", "karras")
    assert lists[0] == (["new.safetensors"], "new.safetensors")  # trained since: offered
    assert lists[3][1] == "karras"  # a value still offered is kept
    (folder / "new.safetensors").unlink()
    assert fresh_lists(backend, "new.safetensors", "(none)", "(none)", "karras")[0] == (
        [], None)
    with pytest.raises(GlidectlError, match=r"^Unknown base model 'new.safetensors': it is not "
                                            r"\(or no longer\) among the models on disk; reload"):
        backend.generate("a cat", n=1, base_steps=1, base="new.safetensors")


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
    # the precision `auto` picks on this machine is the same pipeline (it was loaded twice)
    from glidectl.devices import pick_precision

    picked = pick_precision("auto", "cpu").name
    backend.generate("a blue square", seed=2, precision=picked, **kwargs)
    assert len(calls) == 1 and backend.cache.loads == 1
    other = "fp32" if picked == "bf16" else "bf16"
    backend.generate("a blue square", seed=2, precision=other, **kwargs)
    assert len(calls) == 2 and len(backend.cache) == 2  # another spec is another entry


def test_images_a_full_disk_keeps_from_the_folder_are_still_shown(models_dir, tmp_path):
    """A write that fails (a full disk; here a file-size limit) lost the click's images
    behind an error; now the page shows them, unsaved, with one warning naming the file."""
    import resource

    backend = UiBackend(models_dir, device="cpu", output_dir=tmp_path / "out")
    kwargs = dict(n=2, sampler="euler", base_steps=1, base="tiny.safetensors", seed=3)
    saved = backend.generate("a red circle", **kwargs)  # room: saved (and the model loaded)
    assert len(saved.files) == 2 and not saved.unsaved
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1, limit[1]))  # Python ignores SIGXFSZ
    try:
        result = backend.generate("a red circle", **kwargs)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
    assert result.files == [] and len(result.unsaved) == 2 and result.seeds == [3, 4]
    assert any(w.startswith("Cannot write ") and "shown here only" in w
               for w in result.warnings), result.warnings
    for path, image in zip(saved.files, result.unsaved, strict=True):  # the same pictures
        assert np.array_equal(np.asarray(Image.open(path).convert("RGB")),
                              np.asarray(image.convert("RGB")))


def test_running_out_of_gpu_memory_is_one_sentence_and_the_next_click_samples(
        models_dir, tmp_path, monkeypatch):
    """Images per run 16 on a GPU too small for them raised torch's OutOfMemoryError through
    the page: its several sentences of allocator advice in the toast, a traceback in the
    terminal. Now one sentence naming the controls that need less memory; the next click
    with fewer images samples with the model still loaded."""
    import torch

    from glidectl.pipeline import GlidePipeline
    from glidectl.ui.backend import in_page_words

    backend = UiBackend(models_dir, device="cpu", output_dir=tmp_path / "out")
    kwargs = dict(sampler="euler", base_steps=1, base="tiny.safetensors", seed=3)
    real = GlidePipeline.generate

    def short_of_memory(self, *args, **kw):
        if kw["n"] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB.")
        return real(self, *args, **kw)

    monkeypatch.setattr(GlidePipeline, "generate", short_of_memory)
    with pytest.raises(GlidectlError) as info:
        backend.generate("a red circle", n=16, **kwargs)
    assert in_page_words(str(info.value)) == (
        "Device cpu ran out of memory making 16 images at once with 1 model kept loaded; lower "
        "Images per run, or start glidectl ui with a lower --keep-models.")
    assert len(backend.generate("a red circle", n=1, **kwargs).files) == 1
    assert backend.cache.loads == 1


def test_seeds_are_reported_and_reproduce_the_images(models_dir):
    backend = UiBackend(models_dir, device="cpu")
    kwargs = dict(n=2, sampler="euler", base_steps=2, base="tiny.safetensors")
    a = backend.generate("a red circle", seed=42, **kwargs)
    b = backend.generate("a red circle", seed=42, **kwargs)
    assert a.seed == 42 and a.seeds == [42, 43] and a.settings["image_seeds"] == [42, 43]
    for fa, fb, s in zip(a.files, b.files, a.seeds, strict=True):
        assert np.array_equal(np.asarray(Image.open(fa)), np.asarray(Image.open(fb)))
        assert Image.open(fa).text["seed"] == str(s)
        params = json.loads(Image.open(fa).text["parameters"])  # the image's own seed
        assert (params["seed"], params["request_seed"], params["sampler"]) == (s, 42, "euler")
    r = backend.generate("a red circle", seed=-1, **kwargs)
    assert 0 <= r.seed < 2**31 and r.settings["seed"] == r.seed
    assert all(Path(f).is_file() for f in r.files)


def test_the_seed_box_s_text_is_read_exactly_and_other_text_is_one_sentence(models_dir):
    """The page's seed box sends text: a 63-bit seed (as eval draws) stays that seed, where a
    number box's JavaScript number made it another."""
    backend = UiBackend(models_dir, device="cpu")
    kwargs = dict(n=1, sampler="euler", base_steps=1, base="tiny.safetensors")
    big = 5754344331239393581  # not a float64: 5754344331239393280 is the nearest
    assert backend.generate("a red circle", seed=f" {big} ", **kwargs).seeds == [big]
    assert backend.generate("a red circle", seed="", **kwargs).seed >= 0  # empty: random
    for text, message in (("abc", "Seed must be a whole number"), ("1.5", "whole number"),
                          (str(2**63), "Seed must be")):
        with pytest.raises(GlidectlError, match=message):
            backend.generate("a red circle", seed=text, **kwargs)


def test_the_seed_box_takes_plain_digits_only_as_sample_seed_does(models_dir, tmp_path):
    """The seed box read its text with int(): "1_000" made seed 1000 and other scripts'
    digits ("٣", full-width "１２") seeds 3 and 12, where ``sample --seed`` refuses them as
    no plain decimal number; a slip became another seed without a word."""
    backend = UiBackend(models_dir, device="cpu", output_dir=tmp_path / "out")
    kwargs = dict(n=1, sampler="euler", base_steps=1, base="tiny.safetensors")
    for text in ("1_000", "٣", "１２"):
        with pytest.raises(GlidectlError) as refused:
            backend.generate("a red circle", seed=text, **kwargs)
        assert str(refused.value) == ("Seed must be a whole number from 0 to 2**63-1, or -1 "
                                      f"for a random one; got {text!r}.")
    assert not list((tmp_path / "out").rglob("*.png"))
    assert backend.generate("a red circle", seed=" +7 ", **kwargs).seeds == [7]


def test_a_prompt_the_model_cuts_stores_what_it_read_as_sample_does(models_dir):
    """UI PNGs stored a cut prompt without `prompt_used`, unlike `sample`'s."""
    from glidectl.glide import load_model

    ctx = load_model(models_dir / "tiny.safetensors").options.text_ctx
    backend = UiBackend(models_dir, device="cpu")
    long = "a red circle " * (ctx // 8)  # byte tokens: 13 a repeat, more than ctx in all
    result = backend.generate(long, n=1, seed=1, sampler="euler", base_steps=1,
                              base="tiny.safetensors")
    assert result.settings["prompt_used"] == long.strip()[:ctx]
    assert json.loads(Image.open(result.files[0]).text["parameters"])["prompt_used"] == \
        long.strip()[:ctx]


def test_a_restarted_ui_never_writes_into_an_earlier_clicks_folder(models_dir, tmp_path):
    kwargs = dict(n=1, sampler="euler", base_steps=2, base="tiny.safetensors", seed=7)
    out = tmp_path / "out"
    first = UiBackend(models_dir, device="cpu", output_dir=out).generate("a red circle",
                                                                          **kwargs)
    (out / "0005").mkdir()  # a later folder, e.g. of another UI on the same folder
    before = first.files[0].read_bytes()
    again = UiBackend(models_dir, device="cpu", output_dir=out).generate("a blue square",
                                                                          **kwargs)
    assert first.files[0].parent.name == "0001" and again.files[0].parent.name == "0006"
    assert first.files[0].read_bytes() == before  # same seed, same file name: kept


def test_ui_refuses_an_output_folder_it_cannot_write(tmp_path, capsys):
    pytest.importorskip("gradio")
    from glidectl.cli.app import main

    (tmp_path / "a-file").write_text("")
    with pytest.raises(SystemExit) as done:
        main(["ui", "--output-dir", str(tmp_path / "a-file" / "out")])
    assert done.value.code == 2
    assert capsys.readouterr().err == (
        f"Error: --output-dir {str(tmp_path / 'a-file' / 'out')!r} is under "
        f"{str(tmp_path / 'a-file')!r}, a file; pass a folder.\n")


def test_ui_refuses_an_output_folder_named_like_an_image(tmp_path, capsys):
    """``--output-dir x.png`` made a folder named x.png, as sample's --out did."""
    pytest.importorskip("gradio")
    from glidectl.cli.app import main

    with pytest.raises(SystemExit) as done:
        main(["ui", "--output-dir", str(tmp_path / "x.png")])
    assert done.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith(f"Error: --output-dir {str(tmp_path / 'x.png')!r} names an image "
                          "file, but --output-dir is the folder each click's images are saved")
    assert "(0001/00_seed7.png, …)" in err  # as the UI names them (it said 0001/00000.png)
    assert not (tmp_path / "x.png").exists()


def test_memory_use_reads_the_gpu_the_ui_runs_on(monkeypatch):
    """``glidectl ui --device cuda:1`` showed cuda:0's counters (torch.cuda's default is the
    current GPU), an idle GPU's; a UI on the CPU shows its own memory even where CUDA is up."""
    import torch

    seen: list = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "memory_allocated",
                        lambda device=None: seen.append(device) or 2**30)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated",
                        lambda device=None: seen.append(device) or 3 * 2**30)
    assert memory_use("cuda:1") == "GPU cuda:1 1.00 GiB in use (peak 3.00 GiB)"
    assert seen == ["cuda:1", "cuda:1"]
    assert memory_use("cpu").startswith("process RSS ")


def test_memory_use_reports_this_process_resident_memory():
    import re

    status = Path("/proc/self/status")
    if not status.is_file() or not memory_use().startswith("process RSS"):
        pytest.skip("needs Linux's /proc and no CUDA context")

    def reported() -> int:
        found = re.fullmatch(r"process RSS (\d+) MiB", memory_use())
        assert found, memory_use()
        return int(found.group(1))

    def kernel() -> int:
        kib = re.search(r"VmRSS:\s+(\d+) kB", status.read_text())
        return int(kib.group(1)) // 1024

    before = reported()
    assert abs(before - kernel()) <= 16
    import mmap

    block = mmap.mmap(-1, 128 * 2**20)  # a fresh mapping (no freed heap to reuse), written
    for offset in range(0, len(block), mmap.PAGESIZE):
        block[offset] = 1
    assert reported() - before >= 100
    block.close()


def test_model_cache_loads_each_key_once():
    cache = ModelCache()
    made: list[int] = []
    for key in ("a", "a", "b", "a"):
        cache.get(key, lambda: made.append(1) or object())
    assert cache.loads == 2 and len(made) == 2 and "b" in cache


def test_model_cache_keeps_the_models_used_last_and_frees_the_others():
    import weakref

    class Model:
        pass

    cache = ModelCache(2)
    cache.get("a", Model)
    dropped = weakref.ref(cache.get("b", Model))
    cache.get("a", Model)  # used again: "b" is now the oldest
    cache.get("c", Model)
    assert list(cache._items) == ["a", "c"] and cache.loads == 3
    assert dropped() is None  # nothing else holds a dropped model
    cache.get("d", Model)
    assert list(cache._items) == ["c", "d"]


def test_switching_lora_scales_keeps_a_bounded_number_of_models(lora_models_dir):
    import gc

    from glidectl.pipeline import GlidePipeline

    def loaded() -> int:  # pipelines alive in this process, wherever they are held
        gc.collect()
        return sum(isinstance(o, GlidePipeline) for o in gc.get_objects())

    before = loaded()
    backend = UiBackend(lora_models_dir, device="cpu")  # keeps 2 by default
    kwargs = dict(n=1, sampler="euler", base_steps=1, base="tiny.safetensors", seed=1,
                  lora="my-lora/")
    for scale in (0.0, 0.5, 1.0, 1.5):  # the slider: each scale is another pipeline
        backend.generate("a red circle", lora_scale=scale, **kwargs)
        assert len(backend.cache) <= 2
    assert backend.cache.loads == 4
    assert loaded() - before == 2  # the others were unloaded, not kept elsewhere


def test_ui_listens_on_localhost_unless_told(monkeypatch, models_dir):
    pytest.importorskip("gradio")
    from glidectl.cli.app import main
    from glidectl.ui import app

    seen: dict = {}
    monkeypatch.setattr(app, "launch", lambda backend, **kw: seen.update(kw))
    with pytest.raises(SystemExit) as done:
        main(["ui", "--models-dir", str(models_dir)])
    assert done.value.code == 0
    assert seen == {"host": "127.0.0.1", "port": None, "share": False, "auth": None}
    with pytest.raises(SystemExit):
        main(["ui", "--models-dir", str(models_dir), "--host", "0.0.0.0", "--port", "9999",
              "--share"])
    assert seen == {"host": "0.0.0.0", "port": 9999, "share": True, "auth": None}


def test_keep_models_sets_how_many_models_the_ui_keeps_loaded(monkeypatch, capsys,
                                                              models_dir):
    pytest.importorskip("gradio")
    from glidectl.cli.app import main
    from glidectl.ui import app

    kept: list[int] = []
    monkeypatch.setattr(app, "launch", lambda backend, **kw: kept.append(backend.cache.size))
    for argv in ([], ["--keep-models", "5"]):
        with pytest.raises(SystemExit) as done:
            main(["ui", "--models-dir", str(models_dir), *argv])
        assert done.value.code == 0
    assert kept == [2, 5]
    with pytest.raises(SystemExit) as done:
        main(["ui", "--models-dir", str(models_dir), "--keep-models", "0"])
    assert done.value.code == 2 and kept == [2, 5]
    assert "--keep-models" in capsys.readouterr().err


def test_a_device_this_machine_lacks_stops_the_ui_before_it_listens(monkeypatch, capsys,
                                                                    models_dir):
    pytest.importorskip("gradio")
    from glidectl.cli.app import main
    from glidectl.ui import app

    launched: list = []
    monkeypatch.setattr(app, "launch", lambda backend, **kw: launched.append(kw))
    with pytest.raises(SystemExit) as done:
        main(["ui", "--models-dir", str(models_dir), "--device", "meta"])
    assert done.value.code == 2 and launched == []
    assert capsys.readouterr().err.startswith("Error: Device 'meta' is not one glidectl "
                                              "computes on;")


def test_a_port_in_use_or_a_host_not_of_this_machine_is_one_line(capsys):
    import socket

    from glidectl.cli.app import main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(SystemExit) as done:
            main(["ui", "--port", str(port)])
    assert done.value.code == 2
    assert capsys.readouterr().err == (
        f"Error: Port {port} on 127.0.0.1 is in use (another glidectl ui?); pass another "
        "--port, or leave --port out to take the first free one from 7860.\n")
    for host, says in (("999.1.1.1", "is neither an address nor a host name"),
                       ("192.0.2.1", "is not an address of this machine")):
        with pytest.raises(SystemExit) as done:
            main(["ui", "--host", host])
        assert done.value.code == 2
        assert capsys.readouterr().err.startswith(f"Error: --host {host!r} {says}")


def test_gradio_gets_ipv6_in_brackets_and_its_start_failure_is_one_line(monkeypatch,
                                                                      models_dir):
    gr = pytest.importorskip("gradio")
    from glidectl.errors import GlidectlError
    from glidectl.ui.app import launch

    seen = {}

    def no_free_port(self, **kw):
        seen.update(kw)
        raise OSError("Cannot find empty port in range: 7860-7959. You can specify a "
                      "different port by passing the `server_port` parameter to `launch()`.")

    monkeypatch.setattr(gr.Blocks, "launch", no_free_port)
    with pytest.raises(GlidectlError) as info:
        launch(UiBackend(models_dir), host="::1", quiet=True)
    assert seen["server_name"] == "[::1]"  # gradio builds its own URL from it
    assert str(info.value) == ("The web UI could not start on [::1]: Cannot find empty port "
                               "in range: 7860-7959; pass a free --port.")


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
    assert result.settings["loras"] == ["my-lora:0.5"]  # the adapter, as sample --lora takes it
    assert result.settings["lora_dirs"] == ["my-lora"]  # the folder read: no server path
    assert str(lora_models_dir) not in json.dumps(result.settings)
    ((pipe, _),) = backend.cache.values()
    (applied,) = pipe.records["base"].loras
    assert applied["scale"] == 0.5 and applied["modules"] > 0
    with pytest.raises(GlidectlError, match="Unknown LoRA"):
        backend.generate("a red circle", lora=str(lora_models_dir / "my-lora"), **kwargs)


def test_an_inpainting_model_s_lora_is_not_listed(lora_models_dir, tmp_path):
    """The page lists no inpainting model (it has no mask input), yet it listed their LoRAs,
    and picking one always failed, telling the user to pass --base a base-inpaint model."""
    import shutil

    import torch
    from tiny_configs import random_attention_adapter

    from glidectl.glide import create_model, preset_options, save_weights

    folder = tmp_path / "models"
    shutil.copytree(lora_models_dir, folder)
    torch.manual_seed(0)
    save_weights(create_model(preset_options("base-inpaint", "tiny").replace(image_size=16)),
                 folder / "inpaint.safetensors")
    (folder / "my-lora").rename(folder / "plain-lora")
    random_attention_adapter(folder, "inpaint.safetensors", 0.05).rename(folder / "inpaint-lora")
    backend = UiBackend(folder, device="cpu")
    assert backend.choices() == (["tiny.safetensors"], [], ["plain-lora/"])
    with pytest.raises(GlidectlError, match="Unknown LoRA 'inpaint-lora/'"):
        backend.generate("a red circle", n=1, sampler="euler", base_steps=1,
                         base="tiny.safetensors", lora="inpaint-lora/", seed=1)


def test_a_weights_file_or_adapter_saved_again_under_its_name_is_loaded_again(
        lora_models_dir, tmp_path):
    """A model file in --models-dir exported again under its name (other weights) went on
    sampling from the weights loaded before, its PNGs recording their sha256 beside the
    file's name, so ``sample --from-png`` said the file "holds other contents now"."""
    import hashlib
    import shutil

    import torch

    from glidectl.glide import load_model, save_weights

    folder = tmp_path / "m"
    shutil.copytree(lora_models_dir, folder)
    backend = UiBackend(folder, device="cpu", output_dir=tmp_path / "out")
    kwargs = dict(n=1, sampler="euler", base_steps=1, base="tiny.safetensors", seed=1,
                  precision="fp32", lora="my-lora/")
    first = backend.generate("a red circle", **kwargs)
    model = load_model(folder / "tiny.safetensors")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    save_weights(model, folder / "tiny.safetensors")
    second = backend.generate("a red circle", **kwargs)
    assert backend.cache.loads == 2
    assert second.settings["base_sha256"] == hashlib.sha256(
        (folder / "tiny.safetensors").read_bytes()).hexdigest() != first.settings["base_sha256"]
    adapter = folder / "my-lora" / "adapter_model.safetensors"  # saved again by lora
    adapter.write_bytes(adapter.read_bytes())
    backend.generate("a red circle", **kwargs)
    assert backend.cache.loads == 3
    backend.generate("a red circle", **kwargs)  # unchanged since: kept
    assert backend.cache.loads == 3


def test_a_run_linked_into_the_models_folder_is_named_as_linked(models_dir, tmp_path):
    """A run symlinked into --models-dir was recorded by its file's bare name (the link
    resolved outside the folder), so --from-png in the models folder could not find it."""
    from glidectl import runs

    step = tmp_path / "runs" / "mine" / "checkpoints" / runs.step_dir_name(1)
    step.mkdir(parents=True)
    (step / "ema.safetensors").write_bytes((models_dir / "tiny.safetensors").read_bytes())
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "mine").symlink_to(tmp_path / "runs" / "mine")
    backend = UiBackend(tmp_path / "models", device="cpu")
    result = backend.generate("a red circle", n=1, sampler="euler", base_steps=1,
                              base="mine/", seed=1)
    assert result.settings["base_file"] == "mine/checkpoints/step-000001/ema.safetensors"


def test_a_lora_trained_on_other_weights_is_warned_about_with_each_image(lora_models_dir,
                                                                        tmp_path):
    import shutil

    import torch

    from glidectl.glide import create_model, preset_options, save_weights

    folder = tmp_path / "m"
    shutil.copytree(lora_models_dir / "my-lora", folder / "my-lora")
    torch.manual_seed(1)  # the same network with other weights
    save_weights(create_model(preset_options("base", "tiny").replace(image_size=32)),
                 folder / "other.safetensors")
    backend = UiBackend(folder, device="cpu")
    kwargs = dict(n=1, sampler="euler", base_steps=1, base="other.safetensors", seed=1,
                  lora="my-lora/")
    for _ in range(2):  # loaded once, warned each time
        (warning,) = backend.generate("a red circle", **kwargs).warnings
        assert "was trained on other weights" in warning


def test_ui_images_are_the_images_sample_makes_with_the_same_seed(models_dir):
    from glidectl.pipeline import GlidePipeline

    backend = UiBackend(models_dir, device="cpu")
    ui = backend.generate("a red circle", n=2, base_steps=2, seed=7, base="tiny.safetensors")
    assert ui.settings["sampler"] == "dpm++2m" and ui.settings["guidance"] == 3.0
    pipe = GlidePipeline.from_specs(str(models_dir / "tiny.safetensors"), device="cpu")
    same = pipe.generate("a red circle", n=2, seed=7, steps=2)  # what `glidectl sample` runs
    for path, image in zip(ui.files, same, strict=True):
        assert np.array_equal(np.asarray(Image.open(path)), np.asarray(image))


def test_models_recommend_their_sampling_and_example_prompts(tmp_path, models_dir):
    import json

    from glidectl.glide import load_model, save_weights
    from glidectl.pipeline import RECOMMENDED_KEY

    folder = tmp_path / "m"
    rec = {"sampler": "euler", "steps": 3, "guidance": 5.0,
           "prompts": ["a red circle on a white background", "a blue square on a black "
                       "background"]}
    save_weights(load_model(models_dir / "tiny.safetensors"), folder / "shapes.safetensors",
                 metadata={RECOMMENDED_KEY: json.dumps(rec)})
    (folder / "plain.safetensors").write_bytes((models_dir / "tiny.safetensors").read_bytes())
    backend = UiBackend(folder, device="cpu")
    assert backend.example_prompts("shapes.safetensors") == rec["prompts"]
    assert "corgi" in " ".join(backend.example_prompts("plain.safetensors"))
    result = backend.generate("a red circle", n=1, seed=1, base="shapes.safetensors")
    assert (result.settings["sampler"], result.settings["steps"],
            result.settings["guidance"]) == ("euler", "3", 5.0)
    chosen = backend.generate("a red circle", n=1, seed=1, base="shapes.safetensors",
                              sampler="ddim", base_steps=2, guidance=2.0)
    assert (chosen.settings["sampler"], chosen.settings["steps"]) == ("ddim", "2")


def test_auth_is_parsed_and_bad_values_refused(monkeypatch):
    from glidectl.cli.ui_cmd import is_loopback, parse_auth

    assert parse_auth("alice:s3:cret") == ("alice", "s3:cret")
    assert parse_auth("") is None
    for bad in ("alice", ":pw", "alice:"):
        with pytest.raises(GlidectlError, match="USER:PASSWORD"):
            parse_auth(bad)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")


def test_binding_beyond_loopback_warns_and_takes_auth_from_the_environment(
        monkeypatch, models_dir, capsys):
    pytest.importorskip("gradio")
    from glidectl.cli.app import main
    from glidectl.ui import app

    seen: dict = {}
    monkeypatch.setattr(app, "launch", lambda backend, **kw: seen.update(kw))
    with pytest.raises(SystemExit):
        main(["ui", "--models-dir", str(models_dir)])
    assert "Warning" not in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["ui", "--models-dir", str(models_dir), "--host", "0.0.0.0"])
    err = capsys.readouterr().err
    assert "Warning: the UI is reachable by other machines" in err and "NO login" in err
    monkeypatch.setenv("GLIDECTL_UI_AUTH", "bob:pw")
    with pytest.raises(SystemExit):
        main(["ui", "--models-dir", str(models_dir), "--share"])
    err = capsys.readouterr().err
    assert "gradio.live" in err and "a login is required" in err
    assert seen["auth"] == ("bob", "pw")
    with pytest.raises(SystemExit):
        main(["ui", "--models-dir", str(models_dir), "--auth", "carol:x"])
    assert seen["auth"] == ("carol", "x")
    with pytest.raises(SystemExit) as bad:
        main(["ui", "--models-dir", str(models_dir), "--auth", "nopassword"])
    assert bad.value.code == 2 and capsys.readouterr().err.count("\n") == 1


def test_schedules_are_chosen_by_name_or_the_run_folders_fitted_file(tmp_path, models_dir):
    from test_bench_limits import bespoke_file

    from glidectl import plugins
    from glidectl.pipeline import GlidePipeline
    from glidectl.ui.app import schedule_change
    from glidectl.ui.backend import FITTED_SCHEDULE, OWN_SCHEDULE

    step = tmp_path / "m" / "my-run" / "checkpoints" / "step-000010"
    step.mkdir(parents=True)
    (step / "model.safetensors").write_bytes((models_dir / "tiny.safetensors").read_bytes())
    (tmp_path / "m" / "tiny.safetensors").write_bytes(
        (models_dir / "tiny.safetensors").read_bytes())
    backend = UiBackend(tmp_path / "m", device="cpu")
    named = backend.schedule_choices("tiny.safetensors")
    assert named[0] == OWN_SCHEDULE and {"respaced", "karras", "exponential"} <= set(named)
    assert backend.schedule_choices("my-run/") == named  # no fitted file yet
    assert backend.fitted_settings("my-run/") == (None, [], None, None)

    result = backend.generate("a red circle", n=1, seed=3, base_steps=2, schedule="karras",
                              base="tiny.safetensors")
    assert result.settings["schedule"] == "karras"
    pipe = GlidePipeline.from_specs(str(models_dir / "tiny.safetensors"), device="cpu")
    same = pipe.generate("a red circle", n=1, seed=3, steps=2, schedule="karras")
    assert np.array_equal(np.asarray(Image.open(result.files[0])), np.asarray(same[0]))
    respaced = backend.generate("a red circle", n=1, seed=3, base_steps=2, sampler="euler",
                                schedule="respaced", base="tiny.safetensors")
    assert (respaced.settings["schedule"], respaced.settings["steps"]) == ("respaced", "2")
    default = backend.generate("a red circle", n=1, seed=3, base_steps=2,
                               base="tiny.safetensors")
    assert default.settings["schedule"] == plugins.samplers().get("dpm++2m").schedule
    for bad, match in (("../schedule.json", "Unknown schedule"),
                       (FITTED_SCHEDULE, "no fitted schedule file")):
        with pytest.raises(GlidectlError, match=match):
            backend.generate("a cat", n=1, base_steps=2, schedule=bad, base="my-run/")

    bespoke_file(step / "model.safetensors", tmp_path / "m" / "my-run" / "schedule.json", 3)
    assert backend.schedule_choices("my-run/") == [*named, FITTED_SCHEDULE]
    assert backend.fitted_settings("my-run/") == ("bespoke", [3], None, None)  # none recorded
    fitted = backend.generate("a red circle", n=1, seed=3, sampler="bespoke", base_steps=3,
                              schedule=FITTED_SCHEDULE, base="my-run/")
    assert (fitted.settings["sampler"], fitted.settings["schedule"]) == (
        "bespoke", "my-run/schedule.json")  # in the models folder, no server path
    with pytest.raises(GlidectlError, match="bespoke"):  # the solver needs its file
        backend.generate("a cat", n=1, sampler="bespoke", base_steps=3, base="my-run/")
    # the page: picking the fitted file brings its sampler and steps; leaving it, the default
    samplers = plugins.samplers().names()
    assert schedule_change(backend, FITTED_SCHEDULE, "my-run/", "unipc", samplers) == (
        "bespoke", 3, None, None)
    assert schedule_change(backend, "karras", "my-run/", "bespoke", samplers) == (
        "dpm++2m", None, None, None)
    assert schedule_change(backend, "karras", "my-run/", "unipc", samplers) == (
        None, None, None, None)


def test_picking_the_fitted_schedule_brings_the_guidance_it_was_fitted_at(tmp_path,
                                                                         models_dir):
    """A file fitted at guidance 3.25 made the page say "Guidance set to 3.25", while picking
    it left Guidance where it was (and the slider stepped by 0.5)."""
    from test_bench_limits import bespoke_file

    from glidectl import plugins
    from glidectl.ui.app import schedule_change
    from glidectl.ui.backend import FITTED_SCHEDULE

    step = tmp_path / "m" / "my-run" / "checkpoints" / "step-000010"
    step.mkdir(parents=True)
    (step / "model.safetensors").write_bytes((models_dir / "tiny.safetensors").read_bytes())
    path = bespoke_file(step / "model.safetensors", tmp_path / "m" / "my-run" / "schedule.json",
                        3)
    data = json.loads(path.read_text())
    backend, samplers = UiBackend(tmp_path / "m", device="cpu"), plugins.samplers().names()
    for recorded, brought in ((3.25, 3.25), (37.5, 37.5), (1e9, None), ("3", None),
                              (True, None)):  # outside what Guidance takes: left as it is
        path.write_text(json.dumps({**data, "guidance": recorded}))
        assert backend.fitted_settings("my-run/") == ("bespoke", [3], brought, None)
        assert schedule_change(backend, FITTED_SCHEDULE, "my-run/", "unipc", samplers) == (
            "bespoke", 3, brought, None)


def test_a_fitted_file_of_other_weights_is_warned_about_as_sample_does(tmp_path, models_dir):
    import json

    from test_bench_limits import bespoke_file

    from glidectl.ui.backend import FITTED_SCHEDULE

    step = tmp_path / "m" / "my-run" / "checkpoints" / "step-000010"
    step.mkdir(parents=True)
    (step / "model.safetensors").write_bytes((models_dir / "tiny.safetensors").read_bytes())
    path = bespoke_file(step / "model.safetensors", tmp_path / "m" / "my-run" / "schedule.json",
                        3)
    path.write_text(json.dumps({**json.loads(path.read_text()), "model_sha256": "ab" * 32}))
    result = UiBackend(tmp_path / "m", device="cpu").generate(
        "a red circle", n=1, seed=3, sampler="bespoke", base_steps=3, schedule=FITTED_SCHEDULE,
        base="my-run/")
    assert len(result.warnings) == 1
    assert result.warnings[0].startswith(f"Schedule file {str(path)!r} was fitted to other "
                                         "weights (sha256 abababababab…)")


def test_errors_in_the_page_name_its_controls_not_command_line_flags(models_dir):
    from glidectl.ui.backend import in_page_words

    backend = UiBackend(models_dir, device="cpu")
    with pytest.raises(GlidectlError) as info:
        backend.generate("a cat", n=1, sampler="plms", base_steps=1, base="tiny.safetensors")
    assert in_page_words(str(info.value)) == (
        "Base steps set to 1: the plms sampler needs at least 3 steps, got '1'.")
    with pytest.raises(GlidectlError) as info:
        backend.generate("a cat", n=1, sampler="bespoke", base_steps=3, base="tiny.safetensors")
    assert in_page_words(str(info.value)).endswith(
        ": pick Schedule 'fitted (schedule.json)', the file written by the terminal command "
        "glidectl fit-steps MODEL --method bespoke.")
    assert in_page_words("glidectl fit-steps --steps-file x --upsample-steps 2") == (
        "glidectl fit-steps --steps-file x --upsample-steps 2")  # a command keeps its flags
    assert in_page_words("pass --steps-file x, not --upsample-steps 2") == (
        "pass the command-line flag --steps-file x, not Upsampler steps set to 2")


def test_warnings_in_the_page_name_its_controls_and_fit_steps_as_a_terminal_command(
        fitted_models_dir):
    """The page showed the warnings of a fitted file of another ODE as glidectl sample
    prints them: "sample with --grey", "sample with --guidance 3"."""
    from glidectl.ui.backend import FITTED_SCHEDULE, in_page_words

    path = fitted_models_dir / "my-run" / "schedule.json"
    result = UiBackend(fitted_models_dir, device="cpu").generate(
        "a red circle", n=1, seed=3, sampler="unipc", base_steps=3, guidance=1.0,
        schedule=FITTED_SCHEDULE, base="my-run/", grey=False)
    refit = (f"the terminal command glidectl fit-steps {fitted_models_dir / 'my-run'} "
             "--prompts PROMPTS.txt --method bespoke --calls 3 --guidance")
    shown = [in_page_words(w) for w in result.warnings]
    # one refit for the sampling at hand mends all three (each named its own: running one
    # left the others' mismatches)
    one = f"{refit} 1 --no-grey --out {path} --overwrite."
    assert [w.split(": its steps ")[1] for w in shown] == [
        "may be worse than its own exponential schedule for unipc; sample with Sampler "
        "bespoke, or fit a file for unipc with the terminal command glidectl fit-steps MODEL "
        "--sampler unipc.",
        f"suit the other ODE; sample with the Grey box ticked, or refit it with {one}",
        f"suit the other ODE; sample with Guidance set to 3, or refit it with {one}",
        f"suit that model's ODE; refit it with {one}"]
    # glidectl sample's own words are unchanged
    assert "; sample with --grey, or refit it with glidectl fit-steps " in result.warnings[1]
    assert "; sample with --guidance 3, or refit it with glidectl fit-steps " in (
        result.warnings[2])


def test_default_output_folder_is_removed_only_when_empty(tmp_path, models_dir):
    """Without --output-dir the UI saves into a temp folder; closing removes it only if
    nothing was generated there, and never a folder the user named."""
    empty = UiBackend(models_dir)
    assert empty.output_dir.parent == tmp_path and empty.output_dir.is_dir()
    empty.close()
    assert not empty.output_dir.exists()

    used = UiBackend(models_dir)
    (used.output_dir / "0001").mkdir()
    used.close()
    assert (used.output_dir / "0001").is_dir()

    named = UiBackend(models_dir, output_dir=tmp_path / "mine")
    named.close()
    assert (tmp_path / "mine").is_dir()


def test_closing_stops_a_generation_under_way_and_waits_for_it(models_dir):
    """Ctrl-C (or SIGTERM) of ``glidectl ui`` while a click's images were being made killed
    it with "terminate called without an active exception" (SIGABRT): the sampling thread
    was still in torch as Python exited. Closing now ends that generation at its next model
    call and waits for it; a click after that is refused."""
    import threading
    import time

    from glidectl.ui.backend import UiStopped

    backend = UiBackend(models_dir, device="cpu")
    started, outcome = threading.Event(), []

    def on_step(stage: str, done: int, total: int) -> None:
        started.set()
        time.sleep(0.01)

    def click() -> None:
        try:
            outcome.append(backend.generate("a red circle", n=1, sampler="euler",
                                            base_steps=500, base="tiny.safetensors",
                                            on_step=on_step))
        except UiStopped as exc:
            outcome.append(exc)

    thread = threading.Thread(target=click)
    thread.start()
    assert started.wait(60)
    backend.close()
    thread.join(60)
    assert len(outcome) == 1 and isinstance(outcome[0], UiStopped), outcome
    assert not backend.output_dir.exists()  # removed once the generation had ended
    with pytest.raises(UiStopped):
        backend.generate("a red circle", n=1, base_steps=2, base="tiny.safetensors")


def test_warnings_while_loading_pass_through_the_filters_as_elsewhere(models_dir,
                                                                      monkeypatch):
    """The first click's load printed gradio's `ResourceWarning: unclosed event loop` in the
    UI's terminal (a collection while loading met it), a warning Python hides unless asked
    (`-X dev`): the load caught every warning and showed the others' past the filters."""
    import warnings

    from glidectl.pipeline import GlidePipeline

    load = GlidePipeline.from_specs

    def noisy(cls, *args, **kwargs):
        warnings.warn("unclosed event loop", ResourceWarning, stacklevel=1)
        warnings.warn("a library's own warning", UserWarning, stacklevel=1)
        return load(*args, **kwargs)

    monkeypatch.setattr(GlidePipeline, "from_specs", classmethod(noisy))
    with warnings.catch_warnings(record=True) as shown:
        warnings.resetwarnings()
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", ResourceWarning)  # Python's default, without -X dev
        UiBackend(models_dir, device="cpu").generate("a red circle", n=1, base_steps=2,
                                                     base="tiny.safetensors")
    assert [(w.category, str(w.message)) for w in shown] == [
        (UserWarning, "a library's own warning")]


def test_a_fitted_schedule_file_nested_too_deep_is_no_file(tmp_path, models_dir):
    step = tmp_path / "m" / "my-run" / "checkpoints" / "step-000010"
    step.mkdir(parents=True)
    (step / "model.safetensors").write_bytes((models_dir / "tiny.safetensors").read_bytes())
    (tmp_path / "m" / "my-run" / "schedule.json").write_text("[" * 100_000 + "]" * 100_000)
    assert UiBackend(tmp_path / "m", device="cpu").fitted_settings("my-run/") == (
        None, [], None, None)


def test_paths_in_the_page_s_messages_are_shown_as_its_models_are(fitted_models_dir, tmp_path,
                                                                   monkeypatch):
    """The page's warnings named files by their server paths ('/home/…/runs/my-run/
    schedule.json'), in sentences and in the refit command; now as the page names models:
    relative to the models folder, else relative to the output folder, else by file name."""
    from glidectl.ui.backend import FITTED_SCHEDULE, in_page_words

    backend = UiBackend(fitted_models_dir, device="cpu", output_dir=tmp_path / "out")
    result = backend.generate("a red circle", n=1, seed=3, sampler="bespoke", base_steps=3,
                              schedule=FITTED_SCHEDULE, base="my-run/", grey=True,
                              guidance=3.0)
    (shown,) = [backend.shown(in_page_words(w)) for w in result.warnings]
    assert str(fitted_models_dir) not in shown
    assert shown.startswith("Schedule file 'my-run/schedule.json' was fitted to other weights")
    assert shown.endswith(" that model's ODE; refit it with the terminal command glidectl "
                          "fit-steps my-run --prompts PROMPTS.txt --method bespoke --calls 3 "
                          "--guidance 3 --grey --out my-run/schedule.json --overwrite.")
    out = tmp_path / "out" / "0007" / "00_seed3.png"
    assert backend.shown(f"Cannot write {str(out)!r} (No space left on device).") == (
        "Cannot write '0007/00_seed3.png' (No space left on device).")
    assert backend.shown("'/opt/cache/glide/base.pt' looks like a base model; see "
                         "/opt/cache/glide/upsample.pt.") == (
        "'base.pt' looks like a base model; see upsample.pt.")
    words = "a respacing string needs a ddpm/ddim-style sampler (--base/--upsampler), 1/2"
    assert backend.shown(words) == words
    # a models folder given relative to where the UI runs names its files relative to it
    monkeypatch.chdir(fitted_models_dir.parent)
    relative = UiBackend(fitted_models_dir.name, device="cpu", output_dir=tmp_path / "out")
    assert relative.shown(f"Schedule file '{fitted_models_dir.name}/my-run/schedule.json' was "
                          f"fitted; refit it with glidectl fit-steps "
                          f"{fitted_models_dir.name}/my-run --out "
                          f"{fitted_models_dir.name}/my-run/schedule.json.") == (
        "Schedule file 'my-run/schedule.json' was fitted; refit it with glidectl fit-steps "
        "my-run --out my-run/schedule.json.")


def test_a_models_folder_with_a_space_is_no_server_path_in_the_page(tmp_path):
    """A models folder such as '/home/me/my models' named its run unquoted in a warning
    ("than /home/me/my models/my-run (c6c…)"): the page cut that path at its space and
    showed "than my models/my-run", a piece of the server's path and no name of the run."""
    models, out = tmp_path / "my models", tmp_path / "ui out"
    backend = UiBackend(models, device="cpu", output_dir=out)
    said = backend.shown(
        f"Schedule file '{models}/my-run/schedule.json' was fitted to other weights (sha256 "
        f"abab…) than {models}/my-run (c6c2…); these images sample {models}/my run with "
        f"LoRA '{models}/my lora', see {out}/0003/00_seed1.png.")
    assert said == ("Schedule file 'my-run/schedule.json' was fitted to other weights (sha256 "
                    "abab…) than my-run (c6c2…); these images sample my run with LoRA "
                    "'my lora', see 0003/00_seed1.png.")


def _flags_a_page_user_cannot_set(message: str) -> list[str]:
    """The command-line flags ``message`` names outside a terminal command, other than ones
    said to be a command-line flag of a terminal command."""
    import re

    from glidectl.errors import outside_commands

    found: list[str] = []
    outside_commands(message, lambda text: found.extend(re.findall(
        r"(?<![\w-])(?<!command-line flag )--[a-z][a-z0-9-]*", text)) or text)
    return found


def test_messages_the_page_shows_name_no_flag_it_lacks(tmp_path, models_dir,
                                                        lora_models_dir):
    """Messages of controls the page lacks named glidectl sample's flags ("leave --sigma-max at
    the value it was fitted with", "sigma_max (--sigma-max) …; pass a larger one", "apply it
    with --lora FILE"); each now says what a page user can do, and a glidectl command in one
    is called a terminal command."""
    from test_bench_limits import bespoke_file

    from glidectl.glide import load_model, save_weights
    from glidectl.pipeline import RECOMMENDED_KEY
    from glidectl.pipeline_models import check_pair
    from glidectl.samplers.tuned import guidance_warning
    from glidectl.ui.backend import FITTED_SCHEDULE, in_page_words

    folder = tmp_path / "m"
    step = folder / "my-run" / "checkpoints" / "step-000010"
    step.mkdir(parents=True)
    (step / "model.safetensors").write_bytes((models_dir / "tiny.safetensors").read_bytes())
    path = bespoke_file(step / "model.safetensors", folder / "my-run" / "schedule.json", 3)
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "sigma_max": 40.0}))  # σ's of another σ_max
    save_weights(load_model(models_dir / "tiny.safetensors"), folder / "low.safetensors",
                 metadata={RECOMMENDED_KEY: json.dumps({"sigma_max": 0.002})})
    (folder / "adapter.safetensors").write_bytes(  # an adapter's weights: no model
        (lora_models_dir / "my-lora" / "adapter_model.safetensors").read_bytes())
    backend = UiBackend(folder, device="cpu")
    assert "adapter.safetensors" not in backend.choices()[0]  # offered in no model list
    said = []
    for settings in ({"sampler": "bespoke", "base_steps": 3, "schedule": FITTED_SCHEDULE,
                      "base": "my-run/"},
                     {"base_steps": 3, "base": "low.safetensors"}):
        with pytest.raises(GlidectlError) as info:
            backend.generate("a red circle", n=1, seed=1, **settings)
        said.append(backend.shown(in_page_words(str(info.value))))
    assert said[0].endswith(
        "but this run samples from 80 to 0.00642541: the page samples from the base model's "
        "σ_max and has no control for it; refit the file with the terminal command glidectl "
        "fit-steps, or sample at its σ_max with the terminal command glidectl sample "
        "--sigma-max 40.0.")
    assert said[1] == (
        "The base model recommends sampling from σ_max 0.002, which is not above its smallest "
        "σ, 0.006425, and the page has no control for it; sample with the terminal command "
        "glidectl sample --sigma-max set to a larger one (default 80).")
    from glidectl.glide import preset_options

    with pytest.raises(GlidectlError) as info:  # an official upsampler .pt picked as base
        check_pair(preset_options("upsample", "tiny"), None)
    said.append(in_page_words(str(info.value)))
    assert said[-1].endswith(" model; pass it as the upsampler (Upsampler) behind a base "
                             "model, or in the terminal command glidectl sample with --base "
                             "none --low-res IMAGE.")
    path.write_text(json.dumps({**data, "guidance": 3}))  # the page never sends these two:
    said.append(in_page_words(guidance_warning(path, 1.0, upsampler=True)))  # the fallback
    assert "; sample with the command-line flag --upsample-guidance 3, or drop it " in said[-1]
    said.append(in_page_words("The base model returned NaN or infinite values while "
                              "sampling: its weights may be damaged or bf16 too coarse for it "
                              "(try --precision fp32)."))
    assert said[-1].endswith("(try Precision set to fp32).")
    for message in said:
        assert _flags_a_page_user_cannot_set(message) == [], message



def test_the_page_sample_and_generate_make_one_picture_with_one_record(models_dir, tmp_path):
    """One prompt (a trailing space, which the page used to strip), seed and settings: the
    page, ``glidectl sample`` and ``generate()`` draw the same pixels and record the same
    keys (the page had no input-image keys, and ``compile`` false where sample has null);
    the library's PNG, saved as the README says, is made again by ``sample --from-png``."""
    from cli_helpers import exit_code

    from glidectl.images import save_png
    from glidectl.pipeline import GlidePipeline

    prompt, model = "a red circle ", str(models_dir / "tiny.safetensors")
    page = UiBackend(models_dir, device="cpu", output_dir=tmp_path / "page").generate(
        prompt, n=2, seed=5, sampler="ddim", base_steps=2, base="tiny.safetensors")
    assert exit_code("sample", prompt, "--base", model, "--upsampler", "none", "-n", "2",
                     "-b", "2", "--seed", "5", "--sampler", "ddim", "--steps", "2",
                     "--device", "cpu", "-q", "--out", tmp_path / "cli") == 0
    pipe = GlidePipeline.from_specs(model, device="cpu")
    library = pipe.generate(prompt, n=2, seed=5, sampler="ddim", steps=2, batch_size=2)
    for j, image in enumerate(library):
        save_png(image, tmp_path / f"lib{j}.png", image.info)
    records = []
    for page_png, cli_png, lib_png in zip(page.files, sorted((tmp_path / "cli").glob("*.png")),
                                          [tmp_path / "lib0.png", tmp_path / "lib1.png"],
                                          strict=True):
        pixels = [np.asarray(Image.open(p)) for p in (page_png, cli_png, lib_png)]
        assert np.array_equal(pixels[0], pixels[1]) and np.array_equal(pixels[1], pixels[2])
        records.append([json.loads(Image.open(p).text["parameters"])
                        for p in (page_png, cli_png, lib_png)])
    for own, cli, lib in records:
        assert own["prompt"] == cli["prompt"] == lib["prompt"] == prompt
        # generate() alone leaves the weights' sha256 out (reading OpenAI's takes seconds)
        assert set(cli) - set(lib) == {"base_sha256"} and set(cli) <= set(own)
        assert set(own) - set(cli) == {"load_s", "sample_s"}
        same = set(lib) - {"base", "base_file"}  # the page names a model by its label
        assert {k: own[k] for k in same} == {k: cli[k] for k in same}
        assert {k: lib[k] for k in same} == {k: cli[k] for k in same}
        assert lib["base_file"] == cli["base_file"]
    assert exit_code("sample", "--from-png", tmp_path / "lib1.png", "--out",
                     tmp_path / "again", "-q") == 0
    again = next((tmp_path / "again").glob("*.png"))
    assert np.array_equal(np.asarray(Image.open(again)),
                          np.asarray(Image.open(tmp_path / "lib1.png")))


def test_a_negative_upsampler_step_count_is_the_range_sentence(tmp_path):
    """The page sent "-3" on as a respacing string ("bad timestep respacing '-3'"), where
    sample says its range."""
    from test_pipeline import tiny_glide

    from glidectl.glide import save_weights

    save_weights(tiny_glide("base", 0), tmp_path / "b.safetensors")
    save_weights(tiny_glide("upsample", 1), tmp_path / "u.safetensors")
    backend = UiBackend(tmp_path, device="cpu")
    for typed in ("-3", "0"):
        with pytest.raises(GlidectlError, match=f"Upsampler steps must be from 1 to 10000; "
                                                f"got {int(typed)}"):
            backend.generate("a cat", n=1, base_steps=2, up_steps=typed, base="b.safetensors",
                             upsampler="u.safetensors")


def test_a_lora_trained_on_grey_data_ticks_the_grey_box(lora_models_dir, tmp_path):
    """The LoRA's glidectl.json says grey (greyscale training data): picking it recommends
    grey pictures, as its base model's recommendation would."""
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(lora_models_dir, folder)
    backend = UiBackend(folder)
    assert backend.recommends_grey("tiny.safetensors", None, "my-lora/") is False
    meta = folder / "my-lora" / "glidectl.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "grey": True}))
    assert backend.recommends_grey("tiny.safetensors", None, "my-lora/") is True
    assert backend.recommends_grey("tiny.safetensors") is False


def test_leaving_the_fitted_schedule_puts_back_a_grey_lora_s_grey(lora_models_dir, tmp_path):
    """A LoRA trained on grey data picked, the fitted file (fitted in colour) unticked Grey;
    leaving the file put Grey back to the base model's recommendation alone (colour): the
    LoRA's grey was forgotten. It is the same rule ``sample --lora`` follows now."""
    import shutil

    from glidectl import plugins
    from glidectl.ui.app import fitted_left

    folder = tmp_path / "m"
    shutil.copytree(lora_models_dir, folder)
    meta = folder / "my-lora" / "glidectl.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "grey": True}))
    backend, samplers = UiBackend(folder), plugins.samplers().names()
    picked = {"steps": 3, "guidance": None, "grey": False}
    assert fitted_left(backend, "tiny.safetensors", None, samplers, picked, 3, 3.0, False,
                       "my-lora/")[2] is True
    assert fitted_left(backend, "tiny.safetensors", None, samplers, picked, 3, 3.0, False,
                       None)[2] is False


def test_a_model_whose_recommendation_cannot_be_read_leaves_the_page_working(models_dir,
                                                                             tmp_path):
    """A base model (or upsampler) recording guidance = "high" in its sampling metadata, first
    in the folder: ``glidectl ui`` stopped with that sentence before it served the others,
    and picking it in a running page raised it out of the Base model list's event (a
    traceback in the terminal). Now its controls keep the defaults and Generate with it says
    what is wrong."""
    from test_pipeline import tiny_glide

    from glidectl.glide import save_weights
    from glidectl.ui.backend import EXAMPLE_PROMPTS

    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "tiny.safetensors").write_bytes((models_dir / "tiny.safetensors").read_bytes())
    bad = {"glidectl.sampling": json.dumps({"sampler": "ddim", "guidance": "high"})}
    save_weights(tiny_glide("base", 0), folder / "0-bad.safetensors", metadata=bad)
    save_weights(tiny_glide("upsample", 1), folder / "0-bad-up.safetensors", metadata=bad)
    backend = UiBackend(folder, device="cpu", output_dir=tmp_path / "out")
    assert backend.choices()[0][0] == "0-bad.safetensors"  # the page's first pick
    assert backend.recommended("0-bad.safetensors") == {}
    assert backend.example_prompts("0-bad.safetensors") == EXAMPLE_PROMPTS
    assert backend.recommends_grey("tiny.safetensors", "0-bad-up.safetensors") is False
    with pytest.raises(GlidectlError, match=r"^'\S*0-bad.safetensors' recommends guidance = "
                                            r"\"high\" in its glidectl.sampling metadata"):
        backend.generate("a cat", n=1, base_steps=2, base="0-bad.safetensors")
    pytest.importorskip("gradio")
    from glidectl.ui.app import build_app

    build_app(backend)  # the page is built with the defaults in its controls


def test_the_ui_tokenizes_a_gpt2_model_s_prompts_with_vocab_dir(monkeypatch, capsys, tmp_path,
                                                                gpt2_vocab):
    """``ui`` had no --vocab-dir (sample and eval do): a GPT-2 model offline without
    tiktoken's cache could not be used but through the environment, and the page's
    sentence for it named a flag ui did not take. A folder that is not one stops the UI
    before it listens; the page's images record the folder."""
    pytest.importorskip("gradio")
    from test_pipeline import tiny_glide
    from test_remake import _swapped_vocab

    from glidectl import tokenizer
    from glidectl.cli.app import main
    from glidectl.glide import save_weights
    from glidectl.ui import app
    from glidectl.ui.backend import UiBackend

    monkeypatch.setenv(tokenizer.VOCAB_ENV, str(gpt2_vocab))  # this machine's default
    models = tmp_path / "models"
    models.mkdir()
    save_weights(tiny_glide("base", 3, tokenizer="gpt2"), models / "gpt2.safetensors")
    other = str(_swapped_vocab(gpt2_vocab, tmp_path / "other"))
    launched: list = []
    monkeypatch.setattr(app, "launch", lambda backend, **kw: launched.append(backend))
    with pytest.raises(SystemExit) as done:
        main(["ui", "--models-dir", str(models), "--vocab-dir", str(tmp_path / "gone")])
    assert done.value.code == 2 and not launched
    assert capsys.readouterr().err.startswith(
        f"Error: The GPT-2 vocabulary folder {str(tmp_path / 'gone')!r} given with "
        "--vocab-dir does not exist;")
    with pytest.raises(SystemExit) as done:
        main(["ui", "--models-dir", str(models), "--vocab-dir", other])
    assert done.value.code == 0 and launched[0].vocab_dir == other
    backend = UiBackend(models, device="cpu", output_dir=tmp_path / "out", vocab_dir=other)
    mine, default = (b.generate("cat a dog", n=1, base_steps=1, seed=0, base="gpt2.safetensors")
                     for b in (backend, UiBackend(models, device="cpu",
                                                  output_dir=tmp_path / "out2")))
    assert (mine.settings["vocab_dir"], default.settings["vocab_dir"]) == (other, None)
    assert mine.settings["vocab_sha256"] != default.settings["vocab_sha256"]


def test_torch_compile_without_a_cpp_compiler_names_the_page_s_box(models_dir):
    """With the torch.compile box ticked and no C++ compiler the page said "the
    command-line flag --compile needs …, or go on without the command-line flag
    --compile": the page has a box, not a flag."""
    from torch._inductor import config
    from torch._inductor.cpp_builder import cpp_compiler_search

    from glidectl.ui.backend import in_page_words

    backend = UiBackend(models_dir, device="cpu")
    with config.patch({"cpp.cxx": (None, "/nonexistent/g++")}):
        cpp_compiler_search.cache_clear()
        try:
            with pytest.raises(GlidectlError) as info:
                backend.generate("a cat", n=1, base_steps=1, base="tiny.safetensors",
                                 compile=True)
        finally:
            cpp_compiler_search.cache_clear()
    assert in_page_words(str(info.value)) == (
        "torch.compile (the box) needs a C++ compiler on the CPU (torch.compile builds its "
        "kernels with one) and /nonexistent/g++ does not run here; install g++ (or set CXX "
        "to a compiler), or untick torch.compile.")
