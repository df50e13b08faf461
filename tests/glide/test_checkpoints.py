"""Checkpoint files: OpenAI .pt, glidectl .safetensors, run folders, and bad files."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from glidectl.errors import GlidectlError
from glidectl.glide import KINDS, create_model, load_model, official_options
from glidectl.glide.checkpoints import (
    META_OPTIONS,
    identify_kind,
    infer_options,
    load_openai_pt,
    read_metadata,
    read_weights,
    save_weights,
)


@pytest.fixture
def inpaint_model(kit):
    options = kit.tiny("base-inpaint")
    return options, kit.randomize(create_model(options), seed=3).eval()


@pytest.fixture
def outputs(kit):
    def run(model, options):
        with torch.no_grad():
            return model(**kit.inputs(options))

    return run


def test_safetensors_round_trip_keeps_options_and_outputs(tmp_path, inpaint_model, outputs):
    options, model = inpaint_model
    path = save_weights(model, tmp_path / "w.safetensors", metadata={"step": 7})
    meta = read_metadata(path)
    assert json.loads(meta[META_OPTIONS]) == options.to_dict()
    assert meta["glidectl.tokenizer"] == "byte" and meta["step"] == "7"
    state, read_options = read_weights(path)
    assert read_options == options
    loaded = load_model(path)
    assert loaded.options == options and not loaded.training
    torch.testing.assert_close(outputs(loaded, options), outputs(model, options), atol=0, rtol=0)


def test_openai_format_pt_of_a_tiny_model_loads_unchanged(tmp_path, inpaint_model, outputs):
    options, model = inpaint_model
    path = tmp_path / "tiny.pt"
    torch.save({k: v.half() for k, v in model.state_dict().items()}, path)  # plain state_dict
    state, _ = load_openai_pt(path, options=options)
    assert all(v.dtype == torch.float32 for v in state.values())  # fp16 upcast
    loaded = load_model(path, options=options)
    ref = create_model(options).eval()
    ref.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    torch.testing.assert_close(outputs(loaded, options), outputs(ref, options), atol=0, rtol=0)
    # Without options a custom-sized .pt is refused with a reason, not guessed, and how to
    # record its options: the file that advice writes loads on its own.
    with pytest.raises(GlidectlError, match=r"official one .*save_weights\(load_model"):
        load_model(path)
    recorded = save_weights(load_model(path, options=options), tmp_path / "model.safetensors")
    assert load_model(recorded).options == options


def _prefixed(state, prefix):
    return {prefix + k: v for k, v in state.items()}


WRAPPED = {  # how other trainers save a model's state_dict
    "ddp": lambda sd: {"state_dict": _prefixed(sd, "module."), "step": 5},
    "lightning": lambda sd: {"state_dict": _prefixed(sd, "model."), "epoch": 1},
    "compile": lambda sd: _prefixed(sd, "_orig_mod."),
    "bookkeeping": lambda sd: {**sd, "step": 5, "epoch": 1.5, "note": "run 3"},
    "model_ema": lambda sd: {"model_ema": sd, "step": 7},
    "ema-pytorch": lambda sd: {**_prefixed(sd, "ema_model."), "step": torch.tensor(9),
                               **_prefixed({k: 0 * v for k, v in sd.items()}, "online_model.")},
}
FLAT = ("compile", "ema-pytorch")


@pytest.mark.parametrize("suffix,wrap", [(".pt", w) for w in WRAPPED]
                         + [(".safetensors", w) for w in FLAT])
def test_weights_saved_through_a_wrapper_load_without_their_prefix(tmp_path, inpaint_model,
                                                                    suffix, wrap):
    from safetensors.torch import save_file

    options, model = inpaint_model
    obj, path = WRAPPED[wrap](model.state_dict()), tmp_path / f"w{suffix}"
    if suffix == ".pt":
        torch.save(obj, path)
    else:
        save_file({k: v.contiguous() for k, v in obj.items()}, path)
    loaded = load_model(path, options=options)
    for key, value in model.state_dict().items():  # ema-pytorch: the EMA copy, not the online
        assert torch.equal(loaded.state_dict()[key], value), key


def test_a_file_with_model_and_ema_copies_says_which_it_loaded(tmp_path, inpaint_model):
    from glidectl.glide.checkpoints import CheckpointWarning

    options, model = inpaint_model
    state = model.state_dict()
    torch.save({"model": state, "ema": {k: 0 * v for k, v in state.items()}, "step": 3},
               tmp_path / "both.pt")
    with pytest.warns(CheckpointWarning, match="holds 'model' and 'ema' weights; loaded 'model'"):
        loaded = load_model(tmp_path / "both.pt", options=options)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())


def test_two_wrapped_models_that_are_not_model_and_ema_are_refused(tmp_path, inpaint_model):
    options, model = inpaint_model
    state = model.state_dict()
    torch.save({**_prefixed(state, "unet_a."), **_prefixed(state, "unet_b.")}, tmp_path / "2.pt")
    with pytest.raises(GlidectlError, match=r"holds 2 models \(keys under 'unet_a.', 'unet_b.'"):
        load_model(tmp_path / "2.pt", options=options)


@pytest.mark.parametrize("kind", KINDS)
def test_official_kind_is_identified_from_keys(kind, carried):
    manifest = json.loads((carried / "state_dict_manifest.json").read_text())["models"][kind]
    state = {k: torch.empty(shape, device="meta") for k, shape in manifest["state_dict"]}
    assert identify_kind({k: v.shape for k, v in state.items()}) == kind
    assert infer_options(state, "x.pt") == official_options(kind)
    other = "upsample" if kind == "base" else "base"
    with pytest.raises(GlidectlError, match=f"holds an? {kind} model, but an? {other} model"):
        infer_options(state, "x.pt", kind=other)


def test_mismatching_keys_are_named(tmp_path, inpaint_model):
    options, model = inpaint_model
    state = model.state_dict()
    state.pop("out.2.bias")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(GlidectlError, match=r"missing keys out\.2\.bias.*unexpected keys extra"):
        load_openai_pt(tmp_path / "bad.pt", options=options)


@pytest.mark.parametrize("dtype", [torch.int32, torch.complex64])
def test_a_weight_that_holds_no_floats_is_one_sentence(tmp_path, inpaint_model, dtype):
    """An int weight was a load_state_dict traceback ("Only Tensors of floating point and
    complex dtype can require gradients"), a complex one a dtype mismatch mid-sampling;
    other float dtypes load as float32."""
    from safetensors.torch import load_file, save_file

    options, model = inpaint_model
    good = save_weights(model, tmp_path / "good.safetensors")
    state = load_file(str(good))
    state["out.2.bias"] = state["out.2.bias"].to(dtype)
    save_file(state, str(tmp_path / "bad.safetensors"), metadata=read_metadata(good))
    with pytest.raises(GlidectlError) as info:
        load_model(tmp_path / "bad.safetensors")
    assert str(info.value) == (
        f"{str(tmp_path / 'bad.safetensors')!r} is not a GLIDE state_dict: tensor 'out.2.bias' "
        f"holds {str(dtype).removeprefix('torch.')} numbers, where GLIDE's weights are floats; "
        "pass the file as it was trained or exported.")
    state["out.2.bias"] = state["out.2.bias"].real.to(torch.bfloat16)
    save_file(state, str(tmp_path / "bf16.safetensors"), metadata=read_metadata(good))
    assert load_model(tmp_path / "bf16.safetensors").out[2].bias.dtype == torch.float32


def test_wrong_kind_is_refused(tmp_path, inpaint_model):
    options, model = inpaint_model
    path = save_weights(model, tmp_path / "w.safetensors")
    with pytest.raises(GlidectlError, match="holds a base-inpaint model, but an upsample model"):
        load_model(path, kind="upsample")


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_bad_files_give_one_line_errors(tmp_path, inpaint_model, suffix):
    options, model = inpaint_model
    good = tmp_path / f"good{suffix}"
    if suffix == ".pt":
        torch.save(model.state_dict(), good)
    else:
        save_weights(model, good)
    data = good.read_bytes()
    cases = {
        "truncated": data[: len(data) // 2],
        "random": bytes(range(256)) * 64,
        "empty": b"",
    }
    for name, content in cases.items():
        bad = tmp_path / f"{name}{suffix}"
        bad.write_bytes(content)
        with pytest.raises(GlidectlError) as info:
            load_model(bad, options=options)
        message = str(info.value)
        assert "\n" not in message and str(bad) in message, (name, message)
    with pytest.raises(GlidectlError, match="not found"):
        load_model(tmp_path / f"missing{suffix}")


def test_a_cut_checkpoint_in_torchs_format_before_1_6_is_one_sentence(tmp_path):
    """A .pt in torch's format before 1.6 cut at any byte is one sentence (cut at some
    bytes, torch raised struct.error, which ended commands in a traceback)."""
    from glidectl.glide.checkpoints import torch_load_weights

    good = tmp_path / "good.pt"
    torch.save({"w": torch.zeros(20)}, good, _use_new_zipfile_serialization=False)
    data, bad = good.read_bytes(), tmp_path / "cut.pt"
    for end in range(1, len(data)):
        bad.write_bytes(data[:end])
        with pytest.raises(GlidectlError, match="^Cannot read checkpoint"):
            torch_load_weights(bad)


@pytest.mark.parametrize(("data", "said"), [
    (b"a red circle\n", "it is a text file, not a PyTorch checkpoint"),
    (b"[model]\nsize = 'tiny' # \xc3\xa9", "it is a text file, not a PyTorch checkpoint"),
    (b"", "it is empty"),
    (b"<!DOCTYPE html><html>403</html>", "it is a web page (a server's error or sign-in "
     "page), not a PyTorch checkpoint"),
    (bytes(range(256)) * 4, "it is not a PyTorch checkpoint (torch.save's zip archive)"),
])
def test_a_file_in_no_torch_format_says_what_it_is(tmp_path, data, said):
    """A prompts file or config.toml passed as a model said torch's words ("pop from empty
    list", "Weights only load failed. In PyTorch 2.6, we changed the default value of the
    `weights_only` argument ..."); it says what the file is."""
    path = tmp_path / "model.pt"
    path.write_bytes(data)
    with pytest.raises(GlidectlError) as info:
        load_model(path)
    assert str(info.value) == (f"Cannot read checkpoint {str(path)!r}: {said}; pass another "
                               "weights file.")


def test_a_torch_save_file_named_safetensors_says_to_rename_it(tmp_path, inpaint_model):
    """torch.save(state, "model.safetensors") (a model, or a peft adapter's weights) was
    "damaged, truncated or not a .safetensors file"; it names the name that reads it."""
    from glidectl.lora import read_adapter

    options, model = inpaint_model
    path = tmp_path / "model.safetensors"
    torch.save(model.state_dict(), path)
    for load in (lambda: load_model(path, options=options), lambda: read_metadata(path)):
        with pytest.raises(GlidectlError) as info:
            load()
        assert str(info.value) == (f"{str(path)!r} was written by torch.save, not as "
                                   "safetensors; rename it to 'model.pt', a name glidectl "
                                   "reads such a file under (with weights_only=True).")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 2}')
    torch.save({"base_model.model.out.2.lora_A.weight": torch.zeros(2, 8)},
               adapter / "adapter_model.safetensors")
    with pytest.raises(GlidectlError, match=r"was written by torch\.save, not as safetensors; "
                                            r"rename it to 'adapter_model\.bin'"):
        read_adapter(adapter)


def test_an_optimizers_state_passed_as_a_model_says_so(tmp_path, inpaint_model):
    """guided-diffusion's optNNNNNN.pt (beside modelNNNNNN.pt) was "not a GLIDE state_dict:
    entry 'state' is a dict, not a tensor", which says nothing of what to pass instead."""
    options, model = inpaint_model
    optimizer = torch.optim.AdamW(model.parameters())
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()
    path = tmp_path / "opt000100.pt"
    torch.save(optimizer.state_dict(), path)
    with pytest.raises(GlidectlError, match=r"holds an optimizer's state \(torch\.optim's state "
                                            r"and param_groups\), not model weights; pass the "
                                            r"model's weights file saved beside it"):
        load_model(path, options=options)


def test_run_folder_prefers_ema_of_latest_step(tmp_path, inpaint_model, kit):
    options, model = inpaint_model
    run = tmp_path / "runs" / "demo"
    for step, seed in ((100, 1), (200, 2)):
        step_dir = run / "checkpoints" / f"step-{step:06d}"
        save_weights(kit.randomize(create_model(options), seed), step_dir / "model.safetensors")
        save_weights(kit.randomize(create_model(options), seed + 10), step_dir / "ema.safetensors")
    (run / "checkpoints" / "latest").write_text("step-000100\n")
    loaded = load_model(run)
    expected = kit.randomize(create_model(options), 11)
    assert torch.equal(loaded.out[2].weight, expected.out[2].weight)
    (run / "checkpoints" / "step-000100" / "ema.safetensors").unlink()
    model_weights = kit.randomize(create_model(options), 1).out[2].weight
    assert torch.equal(load_model(run).out[2].weight, model_weights)
    with pytest.raises(GlidectlError, match="not a training run"):
        load_model(tmp_path)


def test_import_glidectl_does_not_import_torch_but_exposes_load_model():
    code = (
        "import sys, glidectl; assert 'torch' not in sys.modules; "
        "from glidectl.glide import sources; assert 'torch' not in sys.modules; "
        "f = glidectl.load_model; assert 'torch' in sys.modules; print(f.__module__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "glidectl.glide.loading"


def test_load_model_casts_dtype(tmp_path, inpaint_model):
    options, model = inpaint_model
    path = save_weights(model, tmp_path / "w.safetensors")
    half = load_model(path, dtype=torch.bfloat16)
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}


def test_a_lora_run_passed_as_a_model_says_how_to_use_it(tmp_path):
    from glidectl import runs
    from glidectl.errors import GlidectlError
    from glidectl.glide.loading import resolve_spec

    step = tmp_path / "run" / runs.CHECKPOINTS_DIR / runs.step_dir_name(3)
    (step / runs.ADAPTER_DIR).mkdir(parents=True)
    (step / runs.ADAPTER_DIR / runs.ADAPTER_CONFIG).write_text("{}")
    with pytest.raises(GlidectlError, match="is a LoRA run.*--lora .*glidectl lora merge"):
        resolve_spec(tmp_path / "run")


def test_a_cached_openai_file_of_another_kind_is_said_as_the_cache_s(tmp_path, monkeypatch):
    """A file put into the cache by hand under another model's name is refused naming the
    cache file and the download that mends it, by load_model and by the pipeline (it was
    sampled as the kind it holds, recorded as openai:NAME), and by what reads the file once
    its spec is resolved: fit-steps, lora merge and model_cost passed the path and used
    the other model (a link to the cache file too)."""
    from glidectl.glide import create_model, preset_options, save_weights
    from glidectl.glide.loading import load_model, read_checkpoint
    from glidectl.model_cost import spec_options
    from glidectl.pipeline import GlidePipeline

    monkeypatch.setenv("GLIDECTL_HOME", str(tmp_path))
    (tmp_path / "openai").mkdir()
    cached = tmp_path / "openai" / "upsample.pt"  # a base model's weights, as safetensors
    save_weights(create_model(preset_options("base", "tiny")), tmp_path / "b.safetensors")
    cached.write_bytes((tmp_path / "b.safetensors").read_bytes())
    said = (f"{str(cached)!r}, the cached openai:upsample, holds a base model, not OpenAI's "
            "upsample; delete it and run glidectl download upsample.")
    for load in (lambda: load_model("openai:upsample"),
                 lambda: load_model("OpenAI:upsample", kind="base"),
                 lambda: GlidePipeline.from_specs("openai:upsample", None, device="cpu"),
                 lambda: load_model(cached), lambda: read_checkpoint(cached, kind="base"),
                 lambda: spec_options("openai:upsample")):
        with pytest.raises(GlidectlError) as info:
            load()
        assert str(info.value) == said
    (tmp_path / "link.pt").symlink_to(cached)
    with pytest.raises(GlidectlError, match="the cached openai:upsample, holds a base model"):
        load_model(tmp_path / "link.pt")
    assert load_model(tmp_path / "b.safetensors").options.kind == "base"  # not the cache's


def test_a_state_dict_with_a_key_that_is_no_string_is_one_sentence(tmp_path):
    from glidectl.glide.loading import load_model
    from glidectl.glide.official_files import official_file_problem

    path = tmp_path / "k.pt"
    torch.save({0: torch.zeros(1), "a": torch.zeros(2)}, path)
    assert official_file_problem(path, "base") == "its key 0 is an int, not a parameter name"
    with pytest.raises(GlidectlError, match="is not a GLIDE state_dict: its key 0 is an int"):
        load_model(path)
