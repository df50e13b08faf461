"""LoRA adapters: targets, injection, adapter files, wrong-base errors, apply, merge, CLI."""

from __future__ import annotations

import json
import math
import re
import shutil

import pytest
import torch
from cli_helpers import exit_code
from torch import nn

from glidectl.config import LoraConfig
from glidectl.errors import GlidectlError
from glidectl.glide import create_model, preset_options
from glidectl.lora import (
    LoraSpec,
    apply_loras,
    attach_adapter,
    inject_lora,
    lora_summary,
    merge_and_unload,
    parse_lora_spec,
    read_adapter,
    resolve_targets,
    save_adapter,
    weights_sha256,
)


def tiny(kind: str = "base", seed: int = 0, **changes) -> nn.Module:
    """A tiny network whose zero-initialised output layers are randomised (so LoRA shows)."""
    small = {"image_size": 32, "text_ctx": 16, "attention_resolutions": "16,8", "xf_width": 64}
    options = preset_options(kind, "tiny").replace(**{**small, **changes})
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = create_model(options).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p[0].numel()))
    return model


def inputs(model: nn.Module, seed: int = 1) -> dict:
    o = model.options
    gen = torch.Generator().manual_seed(seed)
    args = {
        "x": torch.randn(2, 3, o.image_size, o.image_size, generator=gen),
        "timesteps": torch.tensor([10.0, 600.0]),
        "tokens": torch.randint(0, o.n_vocab - 1, (2, o.text_ctx), generator=gen),
        "mask": torch.ones(2, o.text_ctx, dtype=torch.bool),
    }
    if o.super_res:
        args["low_res"] = torch.rand(2, 3, o.image_size // 4, o.image_size // 4) * 2 - 1
    return args


def run(model: nn.Module, args: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(args["x"], args["timesteps"], args["tokens"], args["mask"],
                     **({"low_res": args["low_res"]} if "low_res" in args else {}))


def randomise_lora(model: nn.Module, only: str = "", std: float = 0.05, seed: int = 3) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_B." in name and only in name:
                p.copy_(torch.randn(p.shape, generator=gen) * std)


def trained_adapter(tmp_path, kind="base", cfg=None, seed=0):
    """(base model, adapter dir, LoRA-injected model with random adapter weights)."""
    cfg = cfg or LoraConfig(targets=["all"], rank=4, alpha=8.0)
    base = tiny(kind, seed)
    lora_model = tiny(kind, seed)
    names = inject_lora(lora_model, cfg)
    randomise_lora(lora_model)
    out = save_adapter(lora_model, tmp_path / "adapter", cfg=cfg, target_names=names,
                       base_spec="tiny-test", base_sha256=weights_sha256(base))
    return base, out, lora_model


# ----------------------------------------------------------------------------- targets
def test_presets_select_the_documented_modules():
    model = tiny()
    attention = resolve_targets(model, ["attention"])
    assert {n.rsplit(".", 1)[-1] for n in attention} == {"qkv", "encoder_kv", "proj_out",
                                                         "c_qkv", "c_proj"}
    assert all(".mlp." not in n for n in attention)
    mlp = resolve_targets(model, ["mlp"])
    assert mlp and all(".mlp.c_fc" in n or ".mlp.c_proj" in n for n in mlp)
    conv = resolve_targets(model, ["conv"])
    modules = dict(model.named_modules())
    assert conv and all(isinstance(modules[n], nn.Conv2d) for n in conv)
    assert any(n.endswith("skip_connection") for n in conv)
    assert sorted(resolve_targets(model, ["all"])) == sorted(attention + mlp + conv)
    # attention, mlp and conv are disjoint; patterns add to presets
    extra = resolve_targets(model, ["mlp"], [r"out\.2", r"time_embed\.\d"])
    assert set(extra) == set(mlp) | {"out.2", "time_embed.0", "time_embed.2"}


@pytest.mark.parametrize("targets,patterns,message", [
    (["attn"], [], "unknown preset 'attn'"),
    ([], [r"input_blocks\.(("], "not a valid regular expression"),
    ([], [r"no_such_module"], "matches no module"),
    ([], [r"out\.0"], "which LoRA cannot adapt"),
])
def test_bad_targets_are_one_clear_error(targets, patterns, message):
    with pytest.raises(GlidectlError, match=message.replace("(", r"\(")):
        resolve_targets(tiny(), targets, patterns)


def test_attention_conv1d_adapters_change_the_output():
    """GLIDE's qkv / encoder_kv / proj_out are kernel-1 nn.Conv1d: each adapter must act."""
    from peft.tuners.lora import layer

    model = tiny()
    args = inputs(model)
    before = run(model, args)
    inject_lora(model, LoraConfig(targets=["attention"], rank=2, alpha=2.0))
    wrapped = dict(model.named_modules())
    assert isinstance(wrapped["middle_block.1.qkv"], layer.Conv1d)
    assert isinstance(wrapped["transformer.resblocks.0.attn.c_qkv"], layer.Linear)
    torch.testing.assert_close(run(model, args), before, atol=1e-5, rtol=0)  # B = 0 at init
    for part in (".qkv.", ".encoder_kv.", ".proj_out.", ".attn.c_qkv."):
        randomise_lora(model, only=part)
        changed = run(model, args)
        assert not torch.allclose(changed, before), part
        randomise_lora(model, only=part, std=0.0)
        torch.testing.assert_close(run(model, args), before, atol=1e-5, rtol=0)


def test_injection_freezes_the_base_and_keeps_adapters_fp32():
    model = tiny(use_fp16=True)
    cfg = LoraConfig(targets=["attention", "conv"], rank=4, alpha=4.0)
    names = inject_lora(model, cfg)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert {p.dtype for n, p in model.named_parameters() if ".lora_" in n} == {torch.float32}
    assert model.input_blocks[1][0].in_layers[2].base_layer.weight.dtype == torch.float16
    summary = lora_summary(model, cfg, len(names))
    assert summary.trainable == sum(p.numel() for n, p in model.named_parameters()
                                    if p.requires_grad)
    assert summary.scale == 1.0 and "trainable parameters" in summary.line()
    # training step: gradients reach only the adapters
    args = inputs(model)
    model.train()
    out = model(args["x"], args["timesteps"], args["tokens"], args["mask"])
    out.float().square().mean().backward()
    assert all(p.grad is None for n, p in model.named_parameters() if not p.requires_grad)
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for n, p in model.named_parameters() if ".lora_B." in n)


def test_rslora_scales_by_alpha_over_sqrt_rank():
    from peft.tuners.lora import LoraLayer

    for rslora, want in ((False, 16.0 / 16), (True, 16.0 / 4)):
        model = tiny()
        cfg = LoraConfig(targets=["mlp"], rank=16, alpha=16.0, rslora=rslora)
        names = inject_lora(model, cfg)
        assert lora_summary(model, cfg, len(names)).scale == pytest.approx(want)
        layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
        assert layers and all(m.scaling["default"] == pytest.approx(want) for m in layers)


# ----------------------------------------------------------------------------- files
def test_adapter_dir_is_peft_format_with_glidectl_metadata(tmp_path):
    from safetensors import safe_open

    base, out, lora_model = trained_adapter(tmp_path)
    assert {p.name for p in out.iterdir()} == {
        "adapter_config.json", "adapter_model.safetensors", "glidectl.json"}
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 8.0
    with safe_open(str(out / "adapter_model.safetensors"), framework="pt") as f:
        keys = list(f.keys())
        meta = json.loads(f.metadata()["glidectl"])
    assert keys and all(k.startswith("base_model.model.") for k in keys)
    assert any(k.endswith("middle_block.1.qkv.lora_A.weight") for k in keys)
    assert meta == json.loads((out / "glidectl.json").read_text())
    assert meta["model_kind"] == "base" and meta["base_model"] == "tiny-test"
    assert meta["base_sha256"] == weights_sha256(base) and len(meta["base_sha256"]) == 64
    assert meta["model_options"] == base.options.to_dict()
    adapter = read_adapter(out)
    assert len(adapter.module_names) == meta["modules"]
    assert read_adapter(out / "adapter_model.safetensors").path == out


def test_the_same_adapter_saved_again_is_the_same_bytes(tmp_path):
    """safetensors wrote the metadata keys in a random order on each save, so a resumed run's
    adapter (same tensors, same metadata) had another sha256 (lora_sha256) than an unbroken
    run's; they are sorted now."""
    cfg = LoraConfig(targets=["mlp"], rank=2)
    model = tiny()
    names = inject_lora(model, cfg)
    shas = {read_adapter(save_adapter(model, tmp_path / str(i), cfg=cfg, target_names=names,
                                      base_spec="tiny-test", step=3)).sha256
            for i in range(8)}
    assert len(shas) == 1
    raw = (tmp_path / "0" / "adapter_model.safetensors").read_bytes()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    assert list(header["__metadata__"]) == ["format", "glidectl"]


def test_an_adapter_config_lists_its_modules_in_one_order(tmp_path):
    """peft wrote target_modules in its set's order, which string hashing changes in each
    process: two runs of one config (or a run and its resume) wrote adapter_config.json
    files, so config_sha256 in PNGs and merged models, that differed; they are sorted now."""
    cfg = LoraConfig(targets=["all"], rank=2)
    model = tiny()
    names = inject_lora(model, cfg)
    out = save_adapter(model, tmp_path / "a", cfg=cfg, target_names=names[::-1],
                       base_spec="tiny-test")
    written = json.loads((out / "adapter_config.json").read_text())["target_modules"]
    assert len(names) > 10 and written == sorted(names)


def test_weights_hash_ignores_injected_adapters_but_not_weight_changes():
    model = tiny()
    h = weights_sha256(model)
    inject_lora(model, LoraConfig(targets=["all"]))
    randomise_lora(model)
    assert weights_sha256(model) == h
    assert weights_sha256(tiny(seed=1)) != h


def test_unreadable_adapter_paths_are_user_errors(tmp_path):
    with pytest.raises(GlidectlError, match=f"{str(tmp_path / 'missing')!r} does not exist"):
        read_adapter(tmp_path / "missing")  # was "not a LoRA adapter directory (it needs ...)"
    (tmp_path / "empty").mkdir()
    with pytest.raises(GlidectlError, match="not a LoRA adapter"):
        read_adapter(tmp_path / "empty")
    stray = tmp_path / "empty" / "notes.txt"  # a file: named in the error, not its folder
    stray.write_text("not an adapter")
    with pytest.raises(GlidectlError, match=f"{str(stray)!r} is not a LoRA adapter"):
        read_adapter(stray)


def test_damaged_adapter_json_files_are_one_line(tmp_path):
    """glidectl.json or adapter_config.json edited into other JSON, or not UTF-8: a
    GlidectlError naming the file, never a traceback."""
    _, out, _ = trained_adapter(tmp_path)
    for name, text in (("glidectl.json", b"{"), ("glidectl.json", b"\xff"),
                       ("glidectl.json", b"[]"), ("adapter_config.json", b"[1]")):
        original = (out / name).read_bytes()
        (out / name).write_bytes(text)
        with pytest.raises(GlidectlError, match=f"{str(out / name)!r}"):
            read_adapter(out)
        (out / name).write_bytes(original)


def test_an_adapter_folder_missing_its_config_names_the_missing_file(tmp_path, capsys):
    """It said the folder was "not a LoRA adapter, checkpoint or run folder"."""
    base, out, _ = trained_adapter(tmp_path)
    (out / "adapter_config.json").unlink()
    with pytest.raises(GlidectlError) as info:
        read_adapter(out)
    assert str(info.value) == (
        f"{str(out)!r} holds adapter_model.safetensors but no adapter_config.json; put back "
        "the adapter_config.json saved with it (peft's save_pretrained writes both).")


def test_an_adapter_config_of_another_rank_than_its_weights_is_said_so(tmp_path):
    """adapter_config.json's r disagreeing with the tensors said "does not fit this model
    (Error(s) in loading state_dict ... size mismatch ...); load it onto its base model"."""
    base, out, _ = trained_adapter(tmp_path)
    config = out / "adapter_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "r": 2}))
    with pytest.raises(GlidectlError) as info:
        attach_adapter(base, out)
    assert str(info.value) == (
        f"{str(config)!r} says r = 2 but the weights beside it have rank 4; put back the "
        "adapter_config.json saved with these weights.")


@pytest.mark.parametrize("change, said", [
    ({"r": "4"}, "says r = '4', which is no rank (a whole number of at least 1)"),
    ({"lora_alpha": "abc"}, "says lora_alpha = 'abc', which is no scale (a number up to 1e+06)"),
    ({"lora_alpha": 1e300}, "says lora_alpha = 1e+300, which is no scale"),
    ({"modules_to_save": ["out"]}, "names modules_to_save, which glidectl does not apply"),
    ({"lora_dropout": "x"}, "says lora_dropout = 'x', which is no dropout (a number from 0 "
                            "up to but not including 1); put back the adapter_config.json"),
    ({"lora_dropout": None}, "says lora_dropout = None, which is no dropout"),
    ({"alpha_pattern": {"qkv": 1e300}}, "says alpha_pattern['qkv'] = 1e+300, which is no "
                                        "scale (a number up to 1e+06); put back"),
    ({"alpha_pattern": {"qkv": "x"}}, "says alpha_pattern['qkv'] = 'x', which is no scale"),
    ({"alpha_pattern": [1]}, "says alpha_pattern = [1], which is no object of module "
                             "patterns and their values"),
    ({"rank_pattern": {"qkv": "x"}}, "says rank_pattern['qkv'] = 'x', which is no rank (a "
                                     "whole number of at least 1)"),
    ({"rank_pattern": 5}, "says rank_pattern = 5, which is no object of module patterns"),
    ({"rank_pattern": {"[": 4}}, "says rank_pattern has the key '[', which is no module "
                                 "pattern (a regular expression: unterminated character set"),
    ({"rank_pattern": {"qkv": 2}}, "says rank_pattern['qkv'] = 2 but the weights beside it "
                                   "have rank 4 for 'input_blocks."),
    ({"exclude_modules": 5}, "says exclude_modules = 5, which is no module pattern (a "
                             "regular expression) or list of module names"),
    ({"exclude_modules": ["qkv"]}, "says exclude_modules = ['qkv'], which leaves out "
                                   "'input_blocks."),
    ({"use_rslora": "x"}, "says use_rslora = 'x', which is neither true nor false"),
    ({"bias": 5}, "says bias = 5, which is none of 'none', 'all', 'lora_only'"),
    ({"init_lora_weights": "pissa"}, "says init_lora_weights = 'pissa', which glidectl does "
                                     "not apply (an initialisation that changes the base"),
    ({"layers_to_transform": 0.5}, "sets layers_to_transform, which glidectl does not apply"),
    ({"megatron_config": {"a": 1}}, "sets megatron_config, which glidectl does not apply"),
])
def test_an_adapter_config_peft_reads_but_fails_on_is_one_sentence(tmp_path, capsys, change,
                                                                    said):
    """A string lora_alpha, modules_to_save naming a module, and an alpha of 1e300 (NaN
    merged weights) ended `sample --lora` and `lora merge` in peft's tracebacks (exit 1); a
    string r said "r = 4 but the weights beside it have rank 4". So did a bad lora_dropout,
    alpha_pattern (1e300 got past the lora_alpha bound), rank_pattern or exclude_modules,
    and a LoRA variant glidectl does not apply; a rank_pattern of another rank than the
    weights was blamed on the base model, and one leaving a module out dropped it silently."""
    base, out, _ = trained_adapter(tmp_path)
    config = out / "adapter_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), **change}))
    with pytest.raises(GlidectlError) as info:
        attach_adapter(base, out)
    assert str(info.value).startswith(f"{str(config)!r} {said}"), str(info.value)


def test_a_rank_pattern_that_agrees_with_the_weights_applies(tmp_path):
    """rank_pattern is checked module by module: one naming the weights' rank is fine."""
    base, out, lora_model = trained_adapter(tmp_path)
    config = out / "adapter_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "r": 2,
                                  "rank_pattern": {".*": 4}, "alpha_pattern": {"qkv": 8}}))
    args = inputs(base)
    torch.testing.assert_close(run(apply_loras(base, [str(out)]), args), run(lora_model, args))


def test_a_bad_adapter_config_in_lora_merge_is_one_line_and_writes_nothing(tmp_path, capsys):
    """`lora merge` with lora_dropout "x" or alpha_pattern {"qkv": 1e300} ended in a
    TypeError or peft's "NaNs detected" traceback, exit 1."""
    from glidectl.glide import save_weights

    base, out, _ = trained_adapter(tmp_path)
    base_file = save_weights(base, tmp_path / "base.safetensors")
    config = out / "adapter_config.json"
    saved = json.loads(config.read_text())
    target = tmp_path / "m.safetensors"
    for change, said in (({"lora_dropout": "x"}, "lora_dropout = 'x', which is no dropout"),
                         ({"alpha_pattern": {"qkv": 1e300}},
                          "alpha_pattern['qkv'] = 1e+300, which is no scale")):
        config.write_text(json.dumps({**saved, **change}))
        capsys.readouterr()
        assert cli("lora", "merge", out, "--base", base_file, "-o", target) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"Error: {str(config)!r} says {said}") and err.count("\n") == 1
        assert "Traceback" not in err and not target.exists()


def test_weights_peft_cannot_merge_are_one_sentence(tmp_path):
    """peft's "NaNs detected in the merged weights" ValueError (a scale too large for the
    weights, given to the library) is a GlidectlError naming the adapter."""
    base, out, _ = trained_adapter(tmp_path)
    attach_adapter(base, out, scale=1e300)
    with pytest.raises(GlidectlError) as info:
        merge_and_unload(base, out)
    assert str(info.value) == (
        f"LoRA adapter {str(out)!r} cannot be merged into this model (NaNs detected in the "
        "merged weights. The adapter default seems to be broken); check its "
        "adapter_config.json and the scale, or use another checkpoint's adapter.")


@pytest.mark.parametrize("options", [5, True, "base", [1]])
def test_an_adapter_whose_glidectl_json_has_no_model_options_object_is_damaged(tmp_path,
                                                                             options):
    """``model_options: 5`` in an adapter's glidectl.json was a TypeError traceback when
    the adapter was checked against its base."""
    base, out, _ = trained_adapter(tmp_path)
    meta = out / "glidectl.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "model_options": options}))
    with pytest.raises(GlidectlError) as info:
        attach_adapter(base, out)
    assert str(info.value) == (
        f"{str(meta)!r} does not hold the adapter's glidectl metadata (model_options is "
        f"{json.dumps(options)}, not a JSON object); the adapter is damaged: use another "
        "checkpoint's adapter.")


def test_an_adapter_whose_weights_hold_nan_is_said_to_be_damaged(tmp_path):
    from safetensors.torch import load_file, save_file

    base, out, _ = trained_adapter(tmp_path)
    weights = out / "adapter_model.safetensors"
    state = load_file(weights)
    key = next(k for k in state if ".lora_B." in k)
    state[key][0, 0] = float("nan")
    save_file(state, weights)
    with pytest.raises(GlidectlError, match=r"holds NaN or infinite values \(.*lora_B.*\); "
                       "the adapter is damaged"):
        attach_adapter(base, out)


# ----------------------------------------------------------------------------- apply
@pytest.mark.parametrize("text,path,scale", [
    ("runs/a/lora", "runs/a/lora", 1.0),
    ("runs/a/lora:0.5", "runs/a/lora", 0.5),
    ("x:-1", "x", -1.0),
    (r"C:\loras\x", r"C:\loras\x", 1.0),
    (r"C:\loras\x:2", r"C:\loras\x", 2.0),
])
def test_parse_lora_spec(text, path, scale):
    assert parse_lora_spec(text) == LoraSpec(path, scale)


@pytest.mark.parametrize("text, said", [
    ("adapter:strong", "--lora 'adapter:strong': the scale after ':' must be a plain decimal "
                       "number, e.g. adapter:0.8."),
    # float() reads "1_0" as 10 and "١" (Arabic-Indic one) as 1
    ("adapter:1_0", "--lora 'adapter:1_0': the scale after ':' must be a plain decimal "
                    "number, e.g. adapter:0.8."),
    ("adapter:\u0661", "--lora 'adapter:\u0661': the scale after ':' must be a plain decimal "
                       "number, e.g. adapter:0.8."),
    # said "--lora needs an adapter directory, e.g. --lora runs/my-lora/lora", a folder no
    # LoRA run has
    ("", "--lora was given no path; pass a LoRA run folder or an adapter folder, e.g. "
         "--lora runs/my-lora."),
])
def test_parse_lora_spec_rejects_a_bad_scale(text, said):
    with pytest.raises(GlidectlError) as info:
        parse_lora_spec(text)
    assert str(info.value) == said
    assert parse_lora_spec("adapter:-1.5e-1").scale == -0.15


@pytest.mark.parametrize("tail, got", [
    ("nan", "from -10 to 10 (a finite number); got nan"),
    ("inf", "from -10 to 10 (a finite number); got inf"),
    ("-inf", "from -10 to 10 (a finite number); got -inf"),
    ("1e9", "from -10 to 10; got 1e+09"),
    ("-10.5", "from -10 to 10; got -10.5"),
])
def test_parse_lora_spec_checks_the_scale_range_of_lora_merge(tail, got):
    with pytest.raises(GlidectlError) as info:
        parse_lora_spec(f"runs/a/lora:{tail}")
    assert str(info.value) == f"--lora 'runs/a/lora:{tail}': the scale after ':' must be {got}."
    with pytest.raises(GlidectlError, match="--lora 'x': the scale must be"):
        parse_lora_spec(("x", float(tail)))
    assert parse_lora_spec("x:-10").scale == -10.0 and parse_lora_spec("x:10").scale == 10.0


def test_parse_lora_spec_keeps_an_existing_path_with_a_colon_whole(tmp_path, monkeypatch):
    """`--lora runs/lora:v2` (a folder named so) said its scale 'v2' must be a number."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lora:v2").mkdir()
    (tmp_path / "lora:2").mkdir()
    assert parse_lora_spec("lora:v2") == LoraSpec("lora:v2", 1.0)
    assert parse_lora_spec("lora:v2:0.5") == LoraSpec("lora:v2", 0.5)
    assert parse_lora_spec("lora:2") == LoraSpec("lora:2", 1.0)  # no folder 'lora' here
    assert parse_lora_spec(str(tmp_path / "lora:2")) == LoraSpec(str(tmp_path / "lora:2"), 1.0)


@pytest.mark.parametrize("text, said", [
    ("runs/a:1:2", "--lora 'runs/a:1:2': give one scale after the path, e.g. runs/a:0.8."),
    (":0.5", "--lora ':0.5' names no adapter before ':'; pass PATH:SCALE, e.g. runs/my-lora:0.5."),
])
def test_parse_lora_spec_says_what_is_wrong_with_a_malformed_spec(text, said, tmp_path,
                                                                   monkeypatch):
    """Both were taken as an adapter path that "does not exist" ('runs/a:1', ':0.5')."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(GlidectlError) as info:
        parse_lora_spec(text)
    assert str(info.value) == said


def test_apply_loras_equals_the_live_adapter_at_any_scale(tmp_path):
    base, out, lora_model = trained_adapter(tmp_path)
    args = inputs(base)
    plain = run(base, args)
    live = run(lora_model, args)
    assert not torch.allclose(live, plain)
    merged = apply_loras(tiny(), [str(out)])
    assert merged.applied_loras == [{"path": str(out), "scale": 1.0,
                                     "modules": len(read_adapter(out).module_names)}]
    assert not any(".lora_" in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(run(merged, args), live, atol=1e-5, rtol=0)
    half_live = tiny()
    attach_adapter(half_live, out, scale=0.5)
    half_merged = apply_loras(tiny(), [f"{out}:0.5"])
    torch.testing.assert_close(run(half_merged, args), run(half_live, args), atol=1e-5, rtol=0)
    assert not torch.allclose(run(half_merged, args), live)
    zero = apply_loras(tiny(), [LoraSpec(str(out), 0.0)])
    torch.testing.assert_close(run(zero, args), plain, atol=1e-6, rtol=0)


def test_two_adapters_stack(tmp_path):
    _, a, _ = trained_adapter(tmp_path / "a", cfg=LoraConfig(targets=["attention"]))
    _, b, _ = trained_adapter(tmp_path / "b", cfg=LoraConfig(targets=["conv"], rank=2))
    model = tiny()
    apply_loras(model, [str(a), f"{b}:0.7"])
    live = tiny()
    attach_adapter(live, a, adapter_name="a")
    merge_and_unload(live)
    attach_adapter(live, b, scale=0.7, adapter_name="b", check_hash=False)
    args = inputs(model)
    torch.testing.assert_close(run(model, args), run(live, args), atol=1e-5, rtol=0)
    assert len(model.applied_loras) == 2


def test_adapter_on_the_wrong_kind_is_one_clear_error(tmp_path):
    _, out, _ = trained_adapter(tmp_path)
    with pytest.raises(GlidectlError, match="trained for a 'base' model but is being loaded "
                                            "onto an 'upsample' model"):
        apply_loras(tiny("upsample"), [str(out)])


def test_adapter_on_another_architecture_is_one_clear_error(tmp_path):
    _, out, _ = trained_adapter(tmp_path)
    other = tiny(num_channels=64)
    with pytest.raises(GlidectlError, match="different base architecture .num_channels=32"):
        apply_loras(other, [str(out)])


def test_adapter_on_other_weights_of_the_same_architecture_warns(tmp_path):
    from glidectl.lora.apply import LoraMismatchWarning

    _, out, _ = trained_adapter(tmp_path)
    with pytest.warns(LoraMismatchWarning, match="trained on other weights"):
        apply_loras(tiny(seed=5), [str(out)])


def test_an_adapter_given_twice_is_warned_of_with_its_total_scale(tmp_path, capsys):
    """`--lora A --lora A` merged A twice, silently: double strength."""
    from glidectl.lora import apply_loras_by_kind
    from glidectl.lora.apply import LoraMismatchWarning

    _, out, _ = trained_adapter(tmp_path)
    copy = shutil.copytree(out, tmp_path / "copy")  # the same adapter by another path
    with pytest.warns(LoraMismatchWarning, match=re.escape(
            f"LoRA adapter {str(out)!r} is given twice ({str(out)!r} and '{copy}:0.5'), so "
            f"it applies at scale 1.5 in all; pass it once, as {out}:1.5 for that strength.")):
        apply_loras_by_kind([tiny()], [str(out), f"{copy}:0.5"])
    with pytest.warns(LoraMismatchWarning, match="is given 3 times"):
        apply_loras(tiny(), [str(out)] * 3)
    from glidectl.glide import save_weights

    base = save_weights(tiny(), tmp_path / "base.safetensors")
    assert cli("sample", "a red circle", "--base", base, "--upsampler", "none", "--lora", out,
               "--lora", out, "--steps", "1", "--sampler", "euler", "-q",
               "--out", tmp_path / "o") == 0
    said = [ln for ln in capsys.readouterr().err.splitlines() if "given twice" in ln]
    assert len(said) == 1 and said[0].startswith("Warning: LoRA adapter"), said


@pytest.mark.parametrize("peft_first", [False, True], ids=["glidectl-first", "peft-first"])
def test_stacked_adapters_on_their_base_do_not_warn_whatever_their_order(tmp_path,
                                                                         peft_first):
    """A peft adapter (no recorded base) merged first made the next adapter's base check
    hash the merged weights: "trained on other weights", though both fit this base."""
    import warnings

    from glidectl.lora import apply_loras_by_kind

    (tmp_path / "g").mkdir()
    (tmp_path / "p").mkdir()
    _, ours, _ = trained_adapter(tmp_path / "g")
    _, theirs = peft_adapter(tmp_path / "p", target_modules=["qkv"])
    specs = [str(theirs), str(ours)] if peft_first else [str(ours), str(theirs)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        apply_loras(tiny(), specs)
        apply_loras_by_kind([tiny()], specs)


def test_adapter_without_metadata_matching_nothing_is_an_error(tmp_path):
    _, out, _ = trained_adapter(tmp_path)
    (out / "glidectl.json").unlink()
    from safetensors.torch import load_file, save_file

    state = load_file(str(out / "adapter_model.safetensors"))
    renamed = {k.replace("base_model.model.", "base_model.model.other."): v
               for k, v in state.items()}
    save_file(renamed, str(out / "adapter_model.safetensors"))
    with pytest.raises(GlidectlError, match="None of the .* modules"):
        apply_loras(tiny(), [str(out)])


def peft_adapter(tmp_path, safe: bool = True, **lora_kw):
    """(peft model, adapter dir) as peft itself trains and saves one: no glidectl metadata."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    torch.manual_seed(0)
    config = PeftLoraConfig(r=4, lora_alpha=8, init_lora_weights=False, **lora_kw)
    peft_model = get_peft_model(tiny(), config).eval()
    out = tmp_path / "peft-adapter"
    peft_model.save_pretrained(str(out), safe_serialization=safe)
    return peft_model, out


@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "bin"])
def test_an_adapter_saved_by_peft_applies_as_peft_computes_it(tmp_path, safe):
    peft_model, out = peft_adapter(tmp_path, safe, use_dora=True,
                                   target_modules=["qkv", "c_qkv", "in_layers.2"])
    assert (out / ("adapter_model.safetensors" if safe else "adapter_model.bin")).is_file()
    args = inputs(tiny())
    expected = run(peft_model, args)
    assert not torch.allclose(expected, run(tiny(), args), atol=1e-3)
    torch.testing.assert_close(run(apply_loras(tiny(), [str(out)]), args), expected,
                               atol=1e-5, rtol=1e-5)


def test_an_adapter_given_as_the_model_says_to_pass_it_with_lora(tmp_path, capsys):
    """load_model's caller is Python: it is told the pipeline keyword; the CLI, its flag."""
    from glidectl.glide import load_model

    _, out = peft_adapter(tmp_path, target_modules=["qkv"])
    for spec in (out, out / "adapter_model.safetensors"):
        with pytest.raises(GlidectlError) as caught:
            load_model(spec)
        assert str(caught.value).startswith(
            f"{str(spec)!r} is a LoRA adapter, not a model; apply it to its base model with "
            f"GlidePipeline.from_specs(base, loras=[{str(spec)!r}]), or fold it in with: "
            f"glidectl lora merge {spec} -o merged.safetensors")
    assert cli("sample", "a cat", "--base", out, "--out", tmp_path / "s") == 2
    assert f"apply it to its base model with --lora {out}, or" in capsys.readouterr().err


def test_an_adapter_given_to_generate_by_a_bare_name_is_said_as_loras(tmp_path, monkeypatch):
    """An adapter folder or file in the current folder, passed as ``base``: the keyword to
    pass it with, and its name, quoted (``--lora peft-adapter`` was said ``loras
    peft-adapter``)."""
    import glidectl

    _, out = peft_adapter(tmp_path, target_modules=["qkv"])
    for folder, spec in ((tmp_path, "peft-adapter"), (out, "adapter_model.safetensors")):
        monkeypatch.chdir(folder)
        with pytest.raises(GlidectlError) as caught:
            glidectl.generate("a cat", base=spec, upsampler=None, device="cpu")
        assert f"apply it to its base model with loras={spec!r}, or fold it in with: " \
               f"glidectl lora merge {spec} -o" in str(caught.value)


def test_a_lora_run_given_to_load_model_names_the_pipeline_keyword(tmp_path):
    from glidectl import runs
    from glidectl.glide import load_model

    step = tmp_path / "my run" / runs.CHECKPOINTS_DIR / runs.step_dir_name(3)
    (step / runs.ADAPTER_DIR).mkdir(parents=True)
    (step / runs.ADAPTER_DIR / runs.ADAPTER_CONFIG).write_text("{}")
    with pytest.raises(GlidectlError, match=re.escape(
            f"pass its base model with GlidePipeline.from_specs(base, "
            f"loras=[{str(tmp_path / 'my run')!r}]), or merge it first with: glidectl lora "
            "merge '")):
        load_model(tmp_path / "my run")


def test_a_peft_adapter_with_modules_to_save_is_refused_in_one_line(tmp_path):
    _, out = peft_adapter(tmp_path, target_modules=["qkv"], modules_to_save=["out.2"])
    with pytest.raises(GlidectlError, match=r"replaces whole modules \(peft's modules_to_save: "
                                            r"out\.2\), which glidectl does not apply"):
        apply_loras(tiny(), [str(out)])


@pytest.mark.parametrize("targets", [["token_embedding", "c_qkv"], ["token_embedding"]])
def test_a_peft_adapter_of_the_token_embedding_is_refused_in_one_line(tmp_path, targets):
    """peft's nn.Embedding LoRA (lora_embedding_A/B): beside other modules it was left out
    without a word ("merged 2 of 2 adapter modules", the text encoder's new words gone),
    alone it "holds no LoRA weights"."""
    _, out = peft_adapter(tmp_path, target_modules=targets)
    with pytest.raises(GlidectlError, match=r"adapts token_embedding with peft's embedding "
                                            r"LoRA \(lora_embedding_A/B\), which glidectl does "
                                            r"not apply"):
        apply_loras(tiny(), [str(out)])


def test_a_peft_adapter_goes_to_the_loaded_model_its_layers_fit(tmp_path):
    """peft's own adapters (no glidectl.json) all went to the base model, an upsampler's
    merged into the base wherever the shapes agreed; one that fits both is said."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    from glidectl.lora import apply_loras_by_kind
    from glidectl.lora.apply import LoraMismatchWarning

    def saved(name, targets):
        torch.manual_seed(0)
        model = get_peft_model(tiny("upsample"), PeftLoraConfig(
            r=4, lora_alpha=8, init_lora_weights=False, target_modules=targets))
        model.save_pretrained(str(tmp_path / name))
        return str(tmp_path / name)

    conv = saved("conv", ["input_blocks.0.0"])  # 6 input channels: the upsampler's alone
    applied = apply_loras_by_kind([tiny(), tiny("upsample")], [conv])
    assert [a["kind"] for a in applied] == ["upsample"]
    attention = saved("attention", ["qkv"])  # other sizes in the tiny base
    assert [a["kind"] for a in apply_loras_by_kind([tiny(), tiny("upsample")], [attention])] \
        == ["upsample"]
    time = saved("time", ["time_embed.0"])  # the same sizes in both tiny networks
    with pytest.warns(LoraMismatchWarning, match=r"fits both the base and the upsample model: "
                                                 r"it is applied to the base model"):
        applied = apply_loras_by_kind([tiny(), tiny("upsample")], [time])
    assert [a["kind"] for a in applied] == ["base"]


@pytest.mark.parametrize("bias", ["all", "lora_only"])
def test_a_peft_adapter_saved_with_biases_says_bias_not_modules_to_save(tmp_path, bias):
    """It blamed modules_to_save, which the adapter's config does not set."""
    _, out = peft_adapter(tmp_path, target_modules=["qkv"], bias=bias)
    with pytest.raises(GlidectlError, match=rf"was saved with peft's bias='{bias}': it carries "
                                            r"\d+ of the model's biases, which glidectl does "
                                            r"not apply; save it with bias='none'"):
        apply_loras(tiny(), [str(out)])


def test_kohya_and_diffusers_lora_files_are_named_as_such(tmp_path, capsys):
    """A kohya (A1111) or diffusers LoRA file was "not a LoRA adapter" (and as --base "not a
    GLIDE checkpoint"): it is one, of a format made for other networks."""
    from safetensors.torch import save_file

    from glidectl.glide import load_model

    for name, key in (("kohya", "lora_unet_down_blocks_0_attentions_0.lora_down.weight"),
                      ("diffusers", "unet.down_blocks.0.attentions.0.to_q.lora.down.weight")):
        path = tmp_path / f"{name}.safetensors"
        save_file({key: torch.zeros(4, 8)}, str(path))
        said = (f"{str(path)!r} is a LoRA file in kohya's or diffusers' format (lora_down/"
                "lora_up keys, made for another network than GLIDE); glidectl reads peft "
                "adapter folders (adapter_config.json and adapter_model.safetensors), as "
                "glidectl lora and peft's save_pretrained write them.")
        with pytest.raises(GlidectlError) as caught:
            apply_loras(tiny(), [str(path)])
        assert str(caught.value) == said
        with pytest.raises(GlidectlError) as caught:
            load_model(path)
        assert str(caught.value) == said


def test_diffusers_peft_style_lora_files_and_lone_peft_weights_are_named(tmp_path):
    """diffusers' pytorch_lora_weights.safetensors (peft's lora_A/lora_B keys under unet.)
    was "a LoRA adapter, not a model; apply it with --lora" as --base and "not a LoRA adapter"
    as --lora; a peft adapter_model.safetensors without its config was "not a LoRA adapter"."""
    from safetensors.torch import save_file

    from glidectl.glide import load_model

    path = tmp_path / "pytorch_lora_weights.safetensors"
    key = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight"
    save_file({key: torch.zeros(4, 8)}, str(path))
    for load in (lambda: apply_loras(tiny(), [str(path)]), lambda: load_model(path)):
        with pytest.raises(GlidectlError, match=r"is a LoRA file in kohya's or diffusers' "
                                                r"format \(lora_A/lora_B keys under unet\."):
            load()
    lone = tmp_path / "lone" / "adapter_model.safetensors"
    lone.parent.mkdir()
    save_file({"base_model.model.input_blocks.1.1.qkv.lora_A.weight": torch.zeros(2, 8)},
              str(lone))
    with pytest.raises(GlidectlError, match=r"holds LoRA weights but no adapter_config\.json "
                                            r"beside it; put back the adapter_config\.json"):
        apply_loras(tiny(), [str(lone)])


def test_a_lora_path_starting_with_a_tilde_is_read_from_home(tmp_path, monkeypatch):
    """`--lora=~/x` (the shell leaves ~ after '=') said the adapter did not exist; --base
    expands it."""
    from glidectl.lora import latest_adapter, read_adapter

    out = trained_adapter(tmp_path)[1]
    monkeypatch.setenv("HOME", str(out.parent))
    assert read_adapter(f"~/{out.name}").path == out
    assert latest_adapter(f"~/{out.name}") == out
    model = apply_loras(tiny(), [f"~/{out.name}:0.5"])
    assert model.applied_loras[0]["path"] == f"~/{out.name}"


# ----------------------------------------------------------------------------- merge CLI
cli = exit_code


def test_merge_writes_a_checkpoint_equal_to_base_plus_adapter(tmp_path, capsys):
    from glidectl.glide import load_model, read_weights, save_weights

    base, out, lora_model = trained_adapter(tmp_path)
    base_file = save_weights(base, tmp_path / "base.safetensors")
    merged_file = tmp_path / "merged.safetensors"
    assert cli("lora", "merge", out, "--base", base_file, "-o", merged_file) == 0
    n = len(read_adapter(out).module_names)
    assert f"merged {n} of {n} adapter modules" in capsys.readouterr().out
    state, options = read_weights(merged_file)
    assert options == base.options and not any(".lora_" in k for k in state)
    merged = load_model(str(merged_file)).eval()
    args = inputs(base)
    torch.testing.assert_close(run(merged, args), run(lora_model, args), atol=1e-5, rtol=0)
    assert not torch.allclose(run(merged, args), run(base, args), atol=1e-3)


@pytest.mark.parametrize("kind, base, said", [
    ("base", "openai:base", "different base architecture (image_size=32 there, 64 here)"),
    ("upsample", "openai:base", "trained for an 'upsample' model but is being loaded onto"),
])
def test_merge_onto_an_openai_model_of_another_shape_says_so_before_loading_it(
        tmp_path, capsys, monkeypatch, kind, base, said):
    """`lora merge runs/tiny-lora --base openai:base` downloaded OpenAI's 1.5 GB base
    (offline: said only that the download failed) before saying the adapter does not fit it."""
    import glidectl.glide as glide

    def no_load(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(glide, "load_model", no_load)
    _, out, _ = trained_adapter(tmp_path, kind=kind, cfg=LoraConfig(targets=["mlp"]))
    assert cli("lora", "merge", out, "--base", base, "-o", tmp_path / "m.safetensors") == 2
    assert said in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "m.safetensors").exists()


def test_a_merged_file_records_the_adapter_and_base_files_it_read(tmp_path, capsys):
    """`lora merge RUN --base BASE_RUN` recorded only "adapter": "RUN" and "base":
    "BASE_RUN", folders whose latest checkpoints move on as they train: the merged file could
    not say which adapter and weights it holds. It also records the adapter folder read, its
    sha256 (weights and settings) and the base weights file read."""
    from glidectl.glide import save_weights
    from glidectl.glide.checkpoints import read_metadata

    base, out, _ = trained_adapter(tmp_path)
    step = tmp_path / "base-run" / "checkpoints" / "step-000001"
    step.mkdir(parents=True)
    save_weights(base, step / "model.safetensors")
    lora_step = tmp_path / "lora-run" / "checkpoints" / "step-000001"
    shutil.copytree(out, lora_step / "lora")
    merged = tmp_path / "merged.safetensors"
    assert cli("lora", "merge", tmp_path / "lora-run", "--base", tmp_path / "base-run",
               "-o", merged) == 0
    [record] = json.loads(read_metadata(merged)["lora_merged"])
    adapter = read_adapter(lora_step / "lora")
    assert record["adapter"] == "lora-run"  # as given, by its name
    assert record["adapter_dir"] == "lora-run/checkpoints/step-000001/lora"
    assert (record["adapter_sha256"], record["adapter_config_sha256"]) == (
        adapter.sha256, adapter.config_sha256)
    assert record["base_file"] == "base-run/checkpoints/step-000001/model.safetensors"


def test_a_merged_file_records_no_local_folder_and_is_the_same_from_any_folder(
        tmp_path, capsys, monkeypatch):
    """The record held absolute paths of the adapter folder and the base file read (the
    user's folders, in a file they share; wrong once moved), so one merge typed from two
    folders wrote two files. It names them by run and file names, with the base weights'
    sha256 beside the adapter's (what the adapter's own base_sha256 is checked against)."""
    from glidectl.glide import save_weights
    from glidectl.glide.checkpoints import read_metadata
    from glidectl.lora import weights_sha256

    base, out, _ = trained_adapter(tmp_path)
    save_weights(base, tmp_path / "base.safetensors")
    assert cli("lora", "merge", out, "--base", tmp_path / "base.safetensors",
               "-o", tmp_path / "a.safetensors") == 0
    monkeypatch.chdir(tmp_path)
    assert cli("lora", "merge", out.name, "--base", "base.safetensors",
               "-o", "b.safetensors") == 0
    text = read_metadata(tmp_path / "a.safetensors")["lora_merged"]
    assert str(tmp_path) not in text
    [record] = json.loads(text)
    assert (record["adapter"], record["adapter_dir"], record["base"], record["base_file"]) == (
        out.name, out.name, "base.safetensors", "base.safetensors")
    assert record["base_sha256"] == weights_sha256(base)
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()


def test_merge_keeps_the_sampling_settings_its_base_recommends(tmp_path, capsys):
    """A merged glidectl-trained model sampled with dpm++2m/25/3 instead of the settings its
    base run's checkpoint recommends (the metadata `glidectl export` carries along)."""
    from glidectl.glide import save_weights
    from glidectl.pipeline import RECOMMENDED_KEY, recommended_settings

    base, out, _ = trained_adapter(tmp_path)
    settings = {"sampler": "ddpm", "steps": 5, "guidance": 1.5, "prompts": ["a red circle"]}
    base_file = save_weights(base, tmp_path / "base.safetensors",
                             metadata={RECOMMENDED_KEY: json.dumps(settings)})
    merged_file = tmp_path / "merged.safetensors"
    assert cli("lora", "merge", out, "--base", base_file, "-o", merged_file) == 0
    assert recommended_settings(merged_file) == settings


@pytest.mark.parametrize("recorded", ["[1, 2]", '"grey"', "null", "{"])
def test_a_grey_merge_onto_a_base_whose_sampling_record_is_no_object_recommends_grey(
        tmp_path, capsys, recorded):
    """A greyscale adapter merged onto a base whose glidectl.sampling metadata is valid JSON
    but no object (or no JSON) ended in a TypeError traceback ('list' object is not a
    mapping); such a record is no recommendation, as sample reads it."""
    from glidectl.glide import save_weights
    from glidectl.pipeline import RECOMMENDED_KEY, recommended_settings

    base, out, _ = trained_adapter(tmp_path)
    meta = json.loads((out / "glidectl.json").read_text())
    (out / "glidectl.json").write_text(json.dumps({**meta, "grey": True}))
    base_file = save_weights(base, tmp_path / "base.safetensors",
                             metadata={RECOMMENDED_KEY: recorded})
    merged_file = tmp_path / "merged.safetensors"
    assert cli("lora", "merge", out, "--base", base_file, "-o", merged_file) == 0
    assert recommended_settings(merged_file) == {"grey": True}


def test_merge_onto_other_weights_warns_in_one_line(tmp_path, capsys):
    """The mismatch warning came out as Python's two-line warning with a source line."""
    from glidectl.glide import save_weights

    _, out, _ = trained_adapter(tmp_path)
    other = save_weights(tiny(seed=5), tmp_path / "other.safetensors")
    assert cli("lora", "merge", out, "--base", other, "-o", tmp_path / "m.safetensors") == 0
    err = capsys.readouterr().err
    assert err.startswith("Warning: LoRA adapter") and "trained on other weights" in err
    assert len(err.strip().splitlines()) == 1 and ".py:" not in err


def test_a_merged_file_merged_again_keeps_its_record_and_names_a_twice_merged_adapter(
        tmp_path, capsys):
    """Merging into a merged file wrote only the new merge in `lora_merged` (the first
    adapter's record was lost), and the adapter it already holds, merged again (or given as
    `--lora` on it), warned only that it was "trained on other weights". The record keeps
    the base file's merges first, and such an adapter is said to be in it already."""
    from glidectl.glide import save_weights
    from glidectl.glide.checkpoints import read_metadata

    base, out, _ = trained_adapter(tmp_path)
    base_file = save_weights(base, tmp_path / "base.safetensors")
    once, twice = tmp_path / "once.safetensors", tmp_path / "twice.safetensors"
    assert cli("lora", "merge", out, "--base", base_file, "-o", once) == 0
    capsys.readouterr()
    assert cli("lora", "merge", out, "--base", once, "-o", twice) == 0
    err = capsys.readouterr().err
    assert err.startswith(f"Warning: LoRA adapter {str(out)!r} is merged into {str(once)!r} "
                          "already (at scale 1)"), err
    assert "other weights" not in err and len(err.strip().splitlines()) == 1
    first, second = json.loads(read_metadata(twice)["lora_merged"])
    assert first == json.loads(read_metadata(once)["lora_merged"])[0]
    assert (first["base"], second["base"]) == ("base.safetensors", "once.safetensors")
    assert cli("sample", "a red circle", "--base", once, "--lora", out, "--steps", "1",
               "--sampler", "euler", "-q", "--out", tmp_path / "o") == 0
    err = capsys.readouterr().err
    assert "is merged into" in err and "other weights" not in err


def test_sample_with_a_lora_trained_on_other_weights_warns_in_one_line(tmp_path, capsys):
    """`sample --lora` printed Python's warning format: file path, line number, source line."""
    from glidectl.glide import save_weights

    _, out, _ = trained_adapter(tmp_path)
    other = save_weights(tiny(seed=5), tmp_path / "other.safetensors")
    assert cli("sample", "a red circle", "--base", other, "--lora", out, "--steps", "1",
               "--sampler", "euler", "-q", "--out", tmp_path / "o") == 0
    warning = [ln for ln in capsys.readouterr().err.splitlines() if "other weights" in ln]
    assert len(warning) == 1 and warning[0].startswith("Warning: LoRA adapter"), warning
    assert ".py:" not in warning[0]


def test_merge_refuses_an_existing_output_unless_forced(tmp_path, capsys):
    from glidectl.glide import read_weights, save_weights

    base, out, _ = trained_adapter(tmp_path)
    base_file = save_weights(base, tmp_path / "base.safetensors")
    target = tmp_path / "merged.safetensors"
    target.write_bytes(b"keep me")
    capsys.readouterr()
    assert cli("lora", "merge", out, "--base", base_file, "-o", target) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"Error: Output {str(target)!r} already exists; pass --force to overwrite it "
                   "or choose another --output.")
    assert target.read_bytes() == b"keep me"  # nothing on disk is lost
    assert cli("lora", "merge", out, "--base", base_file, "-o", target, "--force") == 0
    state, options = read_weights(target)
    assert options == base.options and not any(".lora_" in k for k in state)
    # a folder named like the output is refused even with --force
    folder = tmp_path / "dir.safetensors"
    folder.mkdir()
    assert cli("lora", "merge", out, "--base", base_file, "-o", folder, "--force") == 2
    err = capsys.readouterr().err.strip()
    assert "is a folder; pass a file path to --output" in err and "\n" not in err


def test_merge_of_an_adapter_given_with_a_scale_suffix_names_scale(tmp_path, capsys,
                                                                    monkeypatch):
    """`lora merge runs/my-lora:0.5` (--lora's PATH:SCALE) said "LoRA adapter
    'runs/my-lora:0.5' … does not exist; pass the folder written by 'glidectl lora'", the
    folder the user had passed; it says merge takes the scale as --scale, and writes nothing.
    A folder whose own name holds ':' still merges."""
    base, out, _ = trained_adapter(tmp_path)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert cli("lora", "merge", "adapter:0.5", "-o", "m.safetensors") == 2
    assert capsys.readouterr().err == (
        "Error: lora merge takes the adapter's scale as --scale, not after ':' as --lora "
        "does; run glidectl lora merge adapter --scale 0.5 -o m.safetensors.\n")
    assert not (tmp_path / "m.safetensors").exists()
    from glidectl.glide import save_weights

    save_weights(base, tmp_path / "base.safetensors")
    shutil.copytree(out, tmp_path / "adapter:0.5")
    assert cli("lora", "merge", "adapter:0.5", "--base", "base.safetensors", "-o",
               "m.safetensors") == 0


def test_merge_refuses_to_write_over_its_own_base_or_a_checkpoint_even_forced(tmp_path, capsys):
    """`lora merge RUN -o RUN/checkpoints/step-N/ema.safetensors --force` replaced the base
    run's checkpoint with the merged weights (the base was lost, its adapters then "trained
    on other weights"); --force onto --base's own file or the adapter's did the same."""
    from glidectl.glide import save_weights

    base, out, _ = trained_adapter(tmp_path)
    step = tmp_path / "runs" / "base" / "checkpoints" / "step-000002"
    step.mkdir(parents=True)
    in_run = save_weights(base, step / "ema.safetensors")
    loose = save_weights(base, tmp_path / "base.safetensors")
    weights = out / "adapter_model.safetensors"
    for base_spec, target, said in (
            (in_run, in_run, "inside checkpoint folder"),
            (loose, step / "new.safetensors", "inside checkpoint folder"),
            (loose, loose, "is the base model's own file"),
            (loose, weights, "is the LoRA adapter's own file")):
        before = target.read_bytes() if target.exists() else None
        capsys.readouterr()
        assert cli("lora", "merge", out, "--base", base_spec, "-o", target, "--force") == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("Error: ") and said in err and "\n" not in err, err
        assert (target.read_bytes() if target.exists() else None) == before


def test_export_of_an_adapter_folder_points_at_lora_merge(tmp_path, capsys):
    """`glidectl export RUN/checkpoints/step-N/lora` said the adapter folder "has no
    checkpoints; train it first" (a LoRA run's own folder already named `lora merge`)."""
    _, out, _ = trained_adapter(tmp_path)
    target = tmp_path / "full.safetensors"
    for given in (out, out / "adapter_model.safetensors"):  # its file: "no checkpoints"
        assert cli("export", given, "-o", target) == 2
        assert capsys.readouterr().err == (
            f"Error: {str(out)!r} is a LoRA adapter, not full weights; write a full checkpoint "
            f"with: glidectl lora merge {out} -o {target}\n")
    assert not target.exists()


def lora_run_folder(tmp_path):
    """``tmp_path/runs/my-lora``: a LoRA run folder as `glidectl lora` lays one out (its
    step-000003 holds lora/ and lora-ema/), without training it."""
    _, out, _ = trained_adapter(tmp_path)
    run = tmp_path / "runs" / "my-lora"
    step = run / "checkpoints" / "step-000003"
    step.mkdir(parents=True)
    for name in ("lora", "lora-ema"):
        shutil.copytree(out, step / name)
    return run


def test_a_lora_run_given_to_merge_as_its_base_says_to_pass_the_base(tmp_path, capsys):
    """`lora merge ADAPTER --base LORA_RUN` said to pass the base "with --lora" (sample's
    flag) or to merge the run first."""
    run = lora_run_folder(tmp_path)
    adapter = run / "checkpoints" / "step-000003" / "lora"
    run_is = "a LoRA run: its checkpoints hold adapters"
    # an adapter folder (or its weights file) as --base suggested this very command
    for merged, base, is_a in ((run, run, run_is), (adapter, adapter, "a LoRA adapter"),
                               (adapter, adapter / "adapter_model.safetensors", "a LoRA adapter")):
        assert cli("lora", "merge", merged, "--base", base, "-o", tmp_path / "m.safetensors") == 2
        assert capsys.readouterr().err == (
            f"Error: --base {str(base)!r} is {is_a}, not a model to merge into; pass the base "
            "model the adapter was trained on as --base, or leave --base out to use the one "
            "the adapter records ('tiny-test').\n")
        assert not (tmp_path / "m.safetensors").exists()


def test_export_of_a_lora_run_without_ema_names_its_raw_adapter(tmp_path, capsys):
    """`glidectl export RUN --no-ema` of a LoRA run named `lora merge RUN`, which merges the
    EMA adapter."""
    run = lora_run_folder(tmp_path)
    step, target = run / "checkpoints" / "step-000003", tmp_path / "full.safetensors"
    assert cli("export", run, "--no-ema", "-o", target) == 2
    assert capsys.readouterr().err == (
        f"Error: {str(step)!r} holds LoRA adapters, not full weights; write a full checkpoint "
        f"of its raw (non-EMA) adapter with: glidectl lora merge {step / 'lora'} -o "
        f"{target}\n")
    for flags in ([], ["--ema"]):  # --ema said the run trained without EMA
        assert cli("export", run, *flags, "-o", target) == 2
        assert capsys.readouterr().err == (
            f"Error: {str(step)!r} holds LoRA adapters, not full weights; write a full "
            f"checkpoint with: glidectl lora merge {run} -o {target}\n")
    assert not target.exists()


def test_a_recorded_base_that_is_not_there_says_whose_record_it_is(tmp_path, capsys,
                                                                   monkeypatch):
    """Without --base, `lora merge` and `sample --lora` said "Model 'tiny-test' not found:
    pass openai:<kind>, ..." of a model the user never named (the adapter's record)."""
    monkeypatch.chdir(tmp_path)
    _, out, _ = trained_adapter(tmp_path)  # records the base 'tiny-test', not a file here
    where = f"'tiny-test' (relative to the current folder, {tmp_path})"
    assert cli("lora", "merge", out, "-o", tmp_path / "m.safetensors") == 2
    assert capsys.readouterr().err == (
        f"Error: {str(out)!r} was trained on {where}, which is not there (moved, pruned by "
        "its run's checkpoint.keep_last, or named from another folder); pass that model "
        "with --base.\n")
    assert cli("sample", "a red circle", "--lora", out, "--steps", "1", "-q",
               "--out", tmp_path / "o") == 2
    assert capsys.readouterr().err == (
        f"Error: --lora {out} was trained on {where}, which is not there (moved, pruned by "
        "its run's checkpoint.keep_last, or named from another folder); pass that model "
        "with --base.\n")
    assert not (tmp_path / "m.safetensors").exists() and not (tmp_path / "o").exists()


def test_merge_errors_in_one_line_when_no_module_matches(tmp_path, capsys):
    from glidectl.glide import save_weights

    _, out, _ = trained_adapter(tmp_path)
    (out / "glidectl.json").unlink()
    from safetensors.torch import load_file, save_file

    state = load_file(str(out / "adapter_model.safetensors"))
    save_file({k.replace("base_model.model.", "base_model.model.x."): v for k, v in state.items()},
              str(out / "adapter_model.safetensors"))
    base_file = save_weights(tiny(), tmp_path / "base.safetensors")
    assert cli("lora", "merge", out, "--base", base_file, "-o", tmp_path / "m.safetensors") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("Error: None of the") and "\n" not in err
    assert not (tmp_path / "m.safetensors").exists()


# ----------------------------------------------------------------------------- training
def lora_config(tmp_path, **sections):
    """The shared tiny training config, as a LoRA run (rank 4 on the attention layers)."""
    from tiny_configs import tiny_config

    cfg = tiny_config(
        tmp_path,
        data={"demo_size": 16},
        train={"name": "lora", "lr": 1e-2, "ema_decay": 0.5},
        lora={"targets": ["attention"], "rank": 4},
    )
    for name, values in sections.items():
        for key, value in values.items():
            setattr(getattr(cfg, name), key, value)
    return cfg


def base_run_config(tmp_path, steps):
    """A tiny base model's run, runs/base, that checkpoints every step (a LoRA run's base)."""
    from tiny_configs import tiny_config

    return tiny_config(tmp_path, train={"name": "base", "steps": steps}, checkpoint={"every": 1})


def test_glidectl_lora_trains_an_adapter_dir_on_demo_shapes(tmp_path, capsys):
    from glidectl.config import save_config
    from glidectl.glide import load_model

    # A scratch base predicts 0 (its last conv is zero-initialised), so also adapt that conv.
    cfg = lora_config(tmp_path, preview=dict(every=4, steps=2, prompts=["a red circle"]),
                      lora=dict(patterns=[r"out\.2"]))
    save_config(cfg, tmp_path / "lora.toml")
    assert cli("lora", "--config", tmp_path / "lora.toml", "--no-live") == 0
    printed = capsys.readouterr().out
    assert "trainable parameters" in printed and "effective scale 2" in printed
    run_dir = tmp_path / "runs" / "lora"
    step_dir = run_dir / "checkpoints" / "step-000004"
    assert {p.name for p in step_dir.iterdir()} == {"lora", "lora-ema", "state"}
    assert (run_dir / "previews" / "step-000004.png").is_file()
    assert (run_dir / "metrics.jsonl").is_file()
    adapter = read_adapter(run_dir)  # a run folder resolves to its latest EMA adapter
    assert adapter.path == step_dir / "lora-ema"
    assert adapter.meta["step"] == 4 and adapter.meta["targets"] == ["attention"]
    assert "out.2" in adapter.module_names
    # a scratch base is kept with the run, and training never touched it
    assert adapter.meta["base_model"] == str(run_dir / "base.safetensors")
    base = load_model(adapter.meta["base_model"]).eval()
    assert weights_sha256(base) == adapter.meta["base_sha256"]
    raw = read_adapter(step_dir / "lora")
    assert any(v.abs().sum() > 0 for k, v in raw.state.items() if ".lora_B." in k)
    args = inputs(base)
    plain = run(base, args)
    tuned = apply_loras(load_model(adapter.meta["base_model"]).eval(), [str(step_dir / "lora")])
    assert not torch.allclose(run(tuned, args), plain)
    # merge with the recorded base (no --base)
    assert cli("lora", "merge", run_dir, "-o", tmp_path / "merged.safetensors") == 0
    n = len(adapter.module_names)
    assert f"merged {n} of {n} adapter modules" in capsys.readouterr().out
    # `glidectl export` on a LoRA run points at `lora merge` instead of failing vaguely
    from glidectl.errors import GlidectlError
    from glidectl.training.export import export_weights

    with pytest.raises(GlidectlError, match="holds LoRA adapters.*glidectl lora merge"):
        export_weights(run_dir, tmp_path / "full.safetensors")


def test_lora_resume_is_bitwise_identical(tmp_path):
    from safetensors.torch import load_file

    from glidectl.glide import save_weights
    from glidectl.lora import LoraTrainingAdapter
    from glidectl.training.engine import Trainer

    def adapter_weights(result, name):
        path = result.run_dir / "checkpoints" / "step-000004" / name / "adapter_model.safetensors"
        return load_file(str(path))

    base_file = save_weights(tiny(), tmp_path / "base.safetensors")
    model = dict(init=str(base_file))
    # OneTrainer concepts, one of them PRIOR_PREDICTION: its target, the prediction with the
    # adapters off, is made again exactly on resume
    from PIL import Image

    for folder, rgb in (("plain", (200, 30, 30)), ("prior", (30, 30, 200))):
        (tmp_path / folder).mkdir()
        for i in range(3):
            Image.new("RGB", (40, 36), rgb).save(tmp_path / folder / f"{folder} {i}.png")
    concepts = tmp_path / "concepts.json"
    concepts.write_text(json.dumps([
        {"path": "plain", "text": {"prompt_source": "filename"}},
        {"path": "prior", "type": "PRIOR_PREDICTION", "text": {"prompt_source": "filename"}}]))
    data = dict(source=str(concepts))
    # dropout draws from torch's global generator: a resume that draws once more (the data
    # loader's seed) moved every mask after it
    straight_cfg = lora_config(tmp_path, train=dict(name="straight"), model=model, data=data,
                               lora=dict(targets=["attention", "mlp"], rslora=True,
                                         dropout=0.1))
    straight = Trainer(straight_cfg, adapter=LoraTrainingAdapter(straight_cfg.lora, str(base_file)),
                       quiet=True).run()
    split_cfg = lora_config(tmp_path, train=dict(name="split"), model=model, data=data,
                            lora=dict(targets=["attention", "mlp"], rslora=True, dropout=0.1))
    first = Trainer(split_cfg, adapter=LoraTrainingAdapter(split_cfg.lora, str(base_file)),
                    quiet=True).run(2)
    assert first.interrupted and first.step == 2
    second = Trainer(split_cfg, adapter=LoraTrainingAdapter(split_cfg.lora, str(base_file)),
                     resume="latest", quiet=True).run()
    assert second.step == 4
    for name in ("lora", "lora-ema"):
        a, b = adapter_weights(straight, name), adapter_weights(second, name)
        assert a.keys() == b.keys() and a
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)
        assert any(v.abs().sum() > 0 for k, v in a.items() if ".lora_B." in k)
        assert read_adapter(straight.run_dir / "checkpoints" / "step-000004" / name).sha256 \
            == read_adapter(second.run_dir / "checkpoints" / "step-000004" / name).sha256
    assert [r["loss"] for r in straight.history][2:] == [r["loss"] for r in second.history]
    rng = [load_file(str(r.run_dir / "checkpoints" / "step-000004" / "state" / "rng-0.safetensors"))
           for r in (straight, second)]
    assert rng[0].keys() == rng[1].keys() and all(torch.equal(rng[0][k], rng[1][k]) for k in rng[0])


def test_lora_resume_with_another_rank_is_one_line(tmp_path, capsys):
    from glidectl.config import save_config
    from glidectl.glide import save_weights

    cfg = lora_config(tmp_path, train=dict(steps=2),
                      model=dict(init=str(save_weights(tiny(), tmp_path / "base.safetensors"))))
    save_config(cfg, tmp_path / "lora.toml")
    assert cli("lora", "--config", tmp_path / "lora.toml", "--no-live") == 0
    capsys.readouterr()
    assert cli("lora", "--config", tmp_path / "lora.toml", "--resume", "latest", "--steps", "4",
               "--set", "lora.rank=8", "--no-live") == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: Cannot resume from") and err.count("\n") == 1, err
    assert "rank 4 but the [lora] config says 8" in err


def test_adapters_behind_a_scratch_networks_zero_output_layer_are_warned_of(tmp_path, capsys):
    """A scratch network's out.2 is zero: frozen, it passes no gradient back, so adapters
    elsewhere never moved (lora_B 0 after training) and the run said nothing. It is warned
    of once; adapting out.2 too trains, and says nothing."""
    from glidectl.lora import train_lora
    from glidectl.lora.training import FROZEN_OUTPUT_NOTE

    result = train_lora(lora_config(tmp_path, train=dict(steps=2, name="plain")), live=False)
    out = capsys.readouterr().out
    assert out.count(FROZEN_OUTPUT_NOTE) == 1, out
    state = read_adapter(result.run_dir / "checkpoints" / "step-000002" / "lora").state
    assert not any(v.any() for k, v in state.items() if ".lora_B." in k)  # what it warns of
    train_lora(lora_config(tmp_path, train=dict(steps=2, name="out"),
                           lora=dict(patterns=[r"out\.2"])), live=False)
    assert "out.2" not in capsys.readouterr().out


def test_a_scratch_lora_run_resumed_with_another_seed_names_train_seed(tmp_path, capsys):
    """It said to "put back the weights it started on", which are in the run's own
    base.safetensors: what differs is the scratch network train.seed builds."""
    from glidectl.config import save_config

    save_config(lora_config(tmp_path, train=dict(steps=2, seed=1)), tmp_path / "lora.toml")
    assert cli("lora", "--config", tmp_path / "lora.toml", "--no-live") == 0
    capsys.readouterr()
    assert cli("lora", "--config", tmp_path / "lora.toml", "--resume", "latest", "--steps", "4",
               "--set", "train.seed=5", "--no-live") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith(
        "with train.seed = 5: it trained with train.seed = 1, whose data order, noise and "
        "(from scratch) network the checkpoint goes on with; resume with train.seed = 1, or "
        "start a new run.\n"), err


@pytest.mark.parametrize(("change", "said"), [
    ("model.kind=upsample", "model.kind = 'upsample' here, but the run trained with 'base'; "
     "resume without the --set (or --config) that changes it, or with --set "
     "model.kind=\"base\""),
    ("data.resolution=16", "data.resolution = 16 here, but the run trained with 32; resume "
     "without the --set (or --config) that changes it, or with --set data.resolution=32"),
])
def test_a_scratch_lora_run_resumed_with_another_network_names_the_key(tmp_path, capsys,
                                                                        change, said):
    """`--set model.kind=...` or `data.resolution=...` on a scratch LoRA run's resume said the
    base weights differed and to resume with the run's own train.seed, which it had."""
    from glidectl.config import save_config

    save_config(lora_config(tmp_path, train=dict(steps=2)), tmp_path / "lora.toml")
    assert cli("lora", "--config", tmp_path / "lora.toml", "--no-live") == 0
    capsys.readouterr()
    assert cli("lora", "--config", tmp_path / "lora.toml", "--resume", "latest", "--steps", "4",
               "--set", change, "--no-live") == 2
    err = capsys.readouterr().err
    step = tmp_path / "runs" / "lora" / "checkpoints" / "step-000002"
    assert err == (f"Error: Cannot resume from {str(step)!r}: it trained on a scratch network "
                   f"its run's config builds, and this config builds another; {said}.\n"), err


def test_lora_resume_with_another_alpha_or_rslora_is_one_line(tmp_path, capsys):
    """`--resume latest --set lora.alpha=2` went on at a quarter of the adapters' scale
    (alpha/r 0.25 for 1: the trained adapters' output cut to a quarter), without a word."""
    from glidectl.config import save_config
    from glidectl.glide import save_weights

    cfg = lora_config(tmp_path, train=dict(steps=2), lora=dict(alpha=8.0),
                      model=dict(init=str(save_weights(tiny(), tmp_path / "base.safetensors"))))
    save_config(cfg, tmp_path / "lora.toml")
    assert cli("lora", "--config", tmp_path / "lora.toml", "--no-live") == 0
    step = tmp_path / "runs" / "lora" / "checkpoints" / "step-000002"
    for change, said in (("lora.alpha=2", "lora.alpha = 8 but the config says 2 (effective "
                                           "scale 2 there, 0.5 here)"),
                         ("lora.rslora=true", "lora.rslora = false but the config says true "
                                              "(effective scale 2 there, 4 here)")):
        capsys.readouterr()
        assert cli("lora", "--config", tmp_path / "lora.toml", "--resume", "latest",
                   "--steps", "4", "--set", change, "--no-live") == 2
        err = capsys.readouterr().err
        assert err == (f"Error: Cannot resume from {str(step)!r}: its adapter was trained with "
                       f"{said}; resume with the run's own config.\n"), err
    assert not (step.parent / "step-000004").exists()


def test_resuming_a_run_with_the_other_command_names_the_command_that_resumes_it(
        tmp_path, capsys):
    """`glidectl train --resume` of a LoRA run said its model.safetensors (or
    state/ema.safetensors) was missing and to start a new run; `glidectl lora --resume` of
    a full run said its lora/ folder was no adapter."""
    from glidectl.config import save_config
    from glidectl.glide import save_weights

    cfg = lora_config(tmp_path, train=dict(steps=2),
                      model=dict(init=str(save_weights(tiny(), tmp_path / "base.safetensors"))))
    save_config(cfg, tmp_path / "lora.toml")
    assert cli("lora", "--config", tmp_path / "lora.toml", "--no-live") == 0
    cfg.train.name = "full"
    save_config(cfg, tmp_path / "full.toml")
    assert cli("train", "--config", tmp_path / "full.toml", "--no-live") == 0
    capsys.readouterr()
    for command, run, other in (("train", "lora", "lora"), ("lora", "full", "train")):
        before = sorted(p.name for p in (tmp_path / "runs" / run / "checkpoints").iterdir())
        assert cli(command, "--resume", str(tmp_path / "runs" / run), "--steps", "4",
                   "--no-live") == 2
        err = capsys.readouterr().err.splitlines()  # a warning on [lora] may come first
        assert err[-1].startswith("Error: ") and sum(e.startswith("Error") for e in err) == 1
        assert f"resume it with glidectl {other} --resume" in err[-1], err
        after = sorted(p.name for p in (tmp_path / "runs" / run / "checkpoints").iterdir())
        assert after == before


def test_a_peft_that_does_not_import_is_one_line_naming_torchvision(tmp_path, capsys,
                                                                    monkeypatch):
    """peft imports transformers, which imports torchvision: a torchvision built for another
    torch (as `.[fid]` left one here) stopped `glidectl lora` and `sample --lora` with a
    traceback ending in "Could not import module 'BloomPreTrainedModel'"."""
    import sys

    from glidectl.config import save_config
    from glidectl.glide import save_weights

    site = tmp_path / "site"
    for name, code in (("torchvision", "raise RuntimeError('operator torchvision::nms does "
                                       "not exist')\n"),
                       ("peft", "try:\n    import torchvision\nexcept Exception as e:\n"
                                "    raise ModuleNotFoundError('Could not import module') "
                                "from e\n")):
        (site / name).mkdir(parents=True)
        (site / name / "__init__.py").write_text(code)
    monkeypatch.syspath_prepend(str(site))
    for name in ("peft", "torchvision"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    cfg = lora_config(tmp_path, train=dict(steps=1),
                      model=dict(init=str(save_weights(tiny(), tmp_path / "base.safetensors"))))
    save_config(cfg, tmp_path / "lora.toml")
    assert cli("lora", "--config", tmp_path / "lora.toml", "--no-live") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("Error: LoRA needs peft, which does not import (RuntimeError: "
                          "operator torchvision::nms does not exist): torchvision ")
    assert "install the torchvision release made for your torch" in err


@pytest.fixture
def fresh_accelerate():
    """Accelerate keeps one precision per process; let a test pick its own, then restore."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    yield
    AcceleratorState._reset_state(True)


def test_lora_trains_an_upsampler_in_bf16_with_frozen_base(tmp_path, fresh_accelerate):
    from glidectl.glide import save_weights
    from glidectl.lora import LoraTrainingAdapter
    from glidectl.training.engine import Trainer

    base = tiny("upsample")
    base_file = save_weights(base, tmp_path / "up.safetensors")
    cfg = lora_config(tmp_path, model=dict(kind="upsample", init=str(base_file)),
                      train=dict(steps=2, ema_decay=0.0, precision="bf16",
                                 gradient_checkpointing=True),
                      checkpoint=dict(every=0), lora=dict(targets=["conv"], rank=2),
                      data=dict(low_res_resample="box"))
    adapter = LoraTrainingAdapter(cfg.lora, cfg.model.init)
    trainer = Trainer(cfg, adapter=adapter, quiet=True)
    result = trainer.run()
    assert result.step == 2
    step_dir = result.run_dir / "checkpoints" / "step-000002"
    assert {p.name for p in step_dir.iterdir()} == {"lora", "state"}
    files = read_adapter(step_dir / "lora")
    assert files.meta["model_kind"] == "upsample" and files.meta["base_model"] == str(base_file)
    assert files.meta["base_sha256"] == weights_sha256(base)
    assert files.meta["low_res_resample"] == "box"  # what eval downscales references with
    assert weights_sha256(trainer.unwrapped) == weights_sha256(base)  # the base stayed frozen
    assert {p.dtype for _, p in adapter.trainable(trainer.unwrapped)} == {torch.float32}
    with pytest.raises(GlidectlError, match="trained for an 'upsample' model"):
        apply_loras(tiny("base"), [str(step_dir / "lora")])


# ----------------------------------------------------------------------------- sample --lora
def test_sample_accepts_lora_specs_and_records_them(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from glidectl.glide import save_weights

    base, out, _ = trained_adapter(tmp_path)
    base_file = save_weights(base, tmp_path / "base.safetensors")
    common = ["sample", "a zorblax", "--base", base_file, "--upsampler", "none", "--sampler",
              "ddim", "--steps", "3", "-q"]
    assert cli(*common, "-o", tmp_path / "plain") == 0
    assert cli(*common, "-o", tmp_path / "lora", "--lora", f"{out}:0.5") == 0
    capsys.readouterr()
    plain = Image.open(tmp_path / "plain" / "00000.png")
    tuned = Image.open(tmp_path / "lora" / "00000.png")
    assert json.loads(tuned.text["parameters"])["loras"] == [f"{out}:0.5"]
    assert "loras" not in json.loads(plain.text["parameters"]) or \
        json.loads(plain.text["parameters"])["loras"] is None
    assert not np.array_equal(np.asarray(plain), np.asarray(tuned))
    # an upsampler adapter with only a base model loaded: one clear line, exit 2
    _, up_adapter, _ = trained_adapter(tmp_path / "up", kind="upsample")
    assert cli(*common, "-o", tmp_path / "bad", "--lora", str(up_adapter)) == 2
    err = capsys.readouterr().err.strip()
    assert "trained for an 'upsample' model" in err and "\n" not in err
    # a scale outside lora merge's range: one line naming --lora, not peft's NaN traceback
    for scale in ("nan", "inf", "1e9"):
        assert cli(*common, "-o", tmp_path / "bad", "--lora", f"{out}:{scale}") == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"Error: --lora '{out}:{scale}': the scale after ':' must be "
                              "from -10 to 10") and "\n" not in err, err
    assert not (tmp_path / "bad").exists()


def test_sample_with_a_lora_and_no_base_loads_the_base_the_adapter_records(tmp_path, capsys):
    """`sample --lora RUN` without --base loaded openai:base (a download) even when the
    adapter records another base, as `lora merge` reads it."""
    from PIL import Image

    from glidectl.glide import save_weights

    cfg = LoraConfig(targets=["mlp"], rank=4, alpha=8.0)
    base = tiny()
    base_file = save_weights(base, tmp_path / "base.safetensors")
    lora_model = tiny()
    names = inject_lora(lora_model, cfg)
    randomise_lora(lora_model)
    adapter = save_adapter(lora_model, tmp_path / "adapter", cfg=cfg, target_names=names,
                           base_spec=str(base_file), base_sha256=weights_sha256(base))
    common = ["sample", "a zorblax", "--lora", str(adapter), "--sampler", "ddim", "--steps",
              "2", "-q"]
    assert cli(*common, "-o", tmp_path / "recorded") == 0
    assert f"Base: {base_file} (recorded by --lora {adapter};" in capsys.readouterr().err
    assert cli(*common, "--base", base_file, "--upsampler", "none", "-o", tmp_path / "given") == 0
    assert "recorded by" not in capsys.readouterr().err
    recorded, given = (Image.open(tmp_path / d / "00000.png") for d in ("recorded", "given"))
    assert recorded.tobytes() == given.tobytes()
    assert json.loads(recorded.text["parameters"])["base"] == str(base_file)


def test_an_adapter_finds_its_base_from_any_working_folder(tmp_path, monkeypatch, capsys):
    """Adapters recorded their base as given, relative to the folder training ran in, so
    `sample --lora` from another folder said the base "is not there". The base is recorded
    as an absolute path now; an older adapter's relative one is found from its own folder."""
    from glidectl.glide import save_weights

    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(project)
    cfg = LoraConfig(targets=["mlp"], rank=4, alpha=8.0)
    base = tiny()
    save_weights(base, project / "base.safetensors")
    lora_model = tiny()
    names = inject_lora(lora_model, cfg)
    randomise_lora(lora_model)
    adapter = save_adapter(lora_model, "runs/my-lora/lora", cfg=cfg, target_names=names,
                           base_spec="base.safetensors", base_sha256=weights_sha256(base))
    adapter = project / adapter
    assert read_adapter(adapter).meta["base_model"] == str(project / "base.safetensors")
    monkeypatch.chdir(elsewhere)
    common = ["sample", "a zorblax", "--lora", adapter, "--sampler", "ddim", "--steps", "1",
              "-q"]
    assert cli(*common, "-o", tmp_path / "new") == 0
    assert f"Base: {project / 'base.safetensors'} (recorded by" in capsys.readouterr().err
    meta = json.loads((adapter / "glidectl.json").read_text())
    meta["base_model"] = "base.safetensors"  # as adapters recorded it before
    (adapter / "glidectl.json").write_text(json.dumps(meta))
    assert cli(*common, "-o", tmp_path / "old") == 0
    assert f"Base: {project / 'base.safetensors'} (recorded by" in capsys.readouterr().err
    assert cli("lora", "merge", adapter, "-o", tmp_path / "m.safetensors") == 0


def test_apply_loras_by_kind_routes_adapters_to_their_models(tmp_path):
    from glidectl.lora import apply_loras_by_kind

    _, base_adapter, _ = trained_adapter(tmp_path / "b", cfg=LoraConfig(targets=["mlp"]))
    _, up_adapter, _ = trained_adapter(tmp_path / "u", kind="upsample",
                                       cfg=LoraConfig(targets=["mlp"]))
    base, up = tiny(), tiny("upsample")
    applied = apply_loras_by_kind([base, up], [f"{up_adapter}:2", str(base_adapter)])
    assert [(a["kind"], a["scale"]) for a in applied] == [("upsample", 2.0), ("base", 1.0)]
    assert len(base.applied_loras) == 1 and len(up.applied_loras) == 1


@pytest.mark.parametrize("kind, loaded, flag", [("upsample", "base", "--upsampler"),
                                                 ("base", "upsample", "--base")])
def test_an_adapter_with_no_model_of_its_kind_names_the_flag_that_loads_one(tmp_path, kind,
                                                                           loaded, flag):
    """`sample --base runs/qs --lora runs/upsampler-lora` said "load an 'upsample' model (e.g.
    --base/--upsampler)", naming the flag that loads a base model too; it names the one."""
    from glidectl.lora import apply_loras_by_kind

    _, adapter, _ = trained_adapter(tmp_path, kind=kind, cfg=LoraConfig(targets=["mlp"]))
    with pytest.raises(GlidectlError) as err:
        apply_loras_by_kind([tiny(loaded)], [str(adapter)])
    assert f"load {'an' if kind == 'upsample' else 'a'} {kind} model ({flag}) or drop" in str(
        err.value)


@pytest.mark.parametrize("kind, base, upsampler, said", [
    ("upsample", "openai:base", "none", "load an upsample model (upsampler)"),
    ("base", "none", "openai:upsample", "load a base model (base)"),
    ("base", "openai:base", "none", "different base architecture (image_size=32 there, 64"),
    ("upsample", "openai:base", "auto", "different upsample architecture (image_size=32"),
])
def test_an_adapter_no_model_will_take_is_said_before_any_model_loads(tmp_path, monkeypatch,
                                                                      kind, base, upsampler,
                                                                      said):
    """`sample PROMPT --lora runs/upsampler-lora` (no --upsampler) downloaded OpenAI's base
    (offline: said it could not) before naming --upsampler; a tiny run's adapter behind
    openai:base downloaded it before naming the architecture. Both are said first now."""
    import glidectl.glide.loading as loading
    from glidectl.pipeline import GlidePipeline

    def no_load(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(loading, "load_model", no_load)
    _, adapter, _ = trained_adapter(tmp_path, kind=kind, cfg=LoraConfig(targets=["mlp"]))
    with pytest.raises(GlidectlError, match=re.escape(said)):
        GlidePipeline.from_specs(base, upsampler, loras=[str(adapter)], device="cpu")


def test_example_lora_recipe_is_a_valid_config():
    from pathlib import Path

    from glidectl.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "examples" / "lora.toml")
    assert cfg.lora.targets == ["attention"] and cfg.lora.rank == 16
    assert cfg.model.init == "openai:base"


def test_two_processes_train_the_same_adapter_as_one(tmp_path):
    """`torchrun --nproc_per_node 2 -m glidectl lora` (gloo on CPU) == one process."""
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    from glidectl.config import save_config
    from glidectl.glide import save_weights
    from glidectl.lora import train_lora

    base_file = save_weights(tiny(), tmp_path / "base.safetensors")
    sections = dict(model=dict(init=str(base_file)),
                    train=dict(steps=2, grad_accum=2, ema_decay=0.0, lr=1e-4, adam_eps=1e-6,
                               precision="fp32"),  # auto is bf16 on CPUs that have it
                    data=dict(uncond_p=0.0, flip=False, random_crop=False, demo_size=8),
                    checkpoint=dict(every=0))
    one = lora_config(tmp_path, **sections)
    one.train.name, one.train.batch_size = "one", 2
    train_lora(one, quiet=True)
    two = lora_config(tmp_path, **sections)
    two.train.name, two.train.batch_size = "two", 1
    save_config(two, tmp_path / "two.toml")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLIDECTL_LOAD_PLUGINS": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "--log-dir", str(tmp_path / "torchelastic"), "-m", "glidectl", "lora", "-c",
           str(tmp_path / "two.toml"), "--no-live"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("trainable parameters") == 1  # printed by the main process only

    def weights(name):
        return load_file(str(tmp_path / "runs" / name / "checkpoints" / "step-000002" / "lora" /
                             "adapter_model.safetensors"))

    a, b = weights("one"), weights("two")
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    assert any(v.abs().sum() > 0 for k, v in b.items() if ".lora_B." in k)


def test_bad_lora_config_fails_before_a_run_directory_exists(tmp_path, capsys):
    from glidectl.config import save_config

    cfg = lora_config(tmp_path, lora=dict(rank=0))
    save_config(cfg, tmp_path / "bad.toml")
    assert cli("lora", "--config", tmp_path / "bad.toml", "--no-live") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("Error: ") and err.endswith("'lora.rank' must be from 1 to 4096; got 0.")
    assert not (tmp_path / "runs").exists()
    save_config(lora_config(tmp_path, lora=dict(rank=4)), tmp_path / "bad.toml")
    assert cli("lora", "--config", tmp_path / "bad.toml", "--set",
               "lora.targets=['attn']") == 2
    assert "unknown preset 'attn'" in capsys.readouterr().err


def test_a_new_start_replaces_the_scratch_base_an_earlier_start_left(tmp_path):
    """A start killed before its first checkpoint leaves base.safetensors; a new start of the
    run on another seed (another scratch base) writes its own, so its adapters load."""
    import shutil

    from glidectl.glide import load_model
    from glidectl.lora import train_lora

    train_lora(lora_config(tmp_path, train=dict(name="earlier", seed=1, steps=2)), quiet=True)
    run_dir = tmp_path / "runs" / "lora"
    run_dir.mkdir(parents=True)
    shutil.copy(tmp_path / "runs" / "earlier" / "base.safetensors", run_dir)
    train_lora(lora_config(tmp_path, train=dict(steps=2)), quiet=True)
    adapter = read_adapter(run_dir)
    assert adapter.meta["base_model"] == str(run_dir / "base.safetensors")
    assert weights_sha256(load_model(adapter.meta["base_model"])) == adapter.meta["base_sha256"]


def test_a_scratch_lora_run_moved_elsewhere_finds_its_own_base(tmp_path):
    """Its adapters record base.safetensors by absolute path: after `mv` (or a copy to
    another machine) `--lora RUN` and `lora merge RUN` said the base was not there."""
    import shutil

    from glidectl.lora import base_for_loras, train_lora

    train_lora(lora_config(tmp_path, train=dict(steps=2)), quiet=True)
    shutil.move(tmp_path / "runs" / "lora", tmp_path / "moved")
    base, _ = base_for_loras([str(tmp_path / "moved")], "openai:base")
    assert base == str(tmp_path / "moved" / "base.safetensors")


def test_a_lora_run_on_a_base_run_keeps_training_on_the_step_it_began_on(tmp_path, capsys):
    """model.init = a training run that trains on: the LoRA run's resume was refused
    (the run's latest weights differ) and `sample --lora` drew on the newer weights. A new
    LoRA run is pinned to the run's latest step when it begins; when that step is pruned,
    its resume says so in one sentence. A run begun before the pin still names the fix."""
    import shutil

    from glidectl.config import load_config, save_config
    from glidectl.lora import train_lora
    from glidectl.training.engine import Trainer

    Trainer(base_run_config(tmp_path, 1), quiet=True).run()
    run = tmp_path / "runs" / "base"
    step1 = run / "checkpoints" / "step-000001"
    lora = lora_config(tmp_path, model=dict(init=str(run)), train=dict(steps=1),
                       checkpoint=dict(every=1))
    train_lora(lora, live=False)
    assert f"this LoRA run trains on its latest checkpoint, {str(step1)!r}" in \
        capsys.readouterr().out
    lora_run = tmp_path / "runs" / "lora"
    saved = load_config(lora_run / "config.toml")
    assert saved.model.init == str(step1) and lora.model.init == str(run)  # caller's kept
    assert read_adapter(lora_run).meta["base_model"] == str(step1)
    Trainer(base_run_config(tmp_path, 2), resume="latest", quiet=True).run()  # the base trains on
    saved.train.steps = 2
    assert train_lora(saved, resume="latest", quiet=True).step == 2

    # a step folder that is not there and not the run's base: the base is named, not pruning
    saved.model.init, gone = str(run / "checkpoints" / "step-000009"), saved.model.init
    with pytest.raises(GlidectlError, match=re.escape(
            f"model.init {saved.model.init!r} is not the base LoRA run {str(lora_run)!r} "
            f"trains on: its config.toml names {str(step1)!r}; resume with model.init")):
        train_lora(saved, resume="latest", quiet=True)
    saved.model.init = gone

    shutil.move(step1, tmp_path / "aside")  # pruned by the base run's keep_last
    saved.train.steps = 3
    with pytest.raises(GlidectlError, match=re.escape(
            f"model.init {str(step1)!r}, the checkpoint this LoRA run trains on, is gone")):
        train_lora(saved, resume="latest", quiet=True)
    shutil.move(tmp_path / "aside", step1)

    saved.model.init = str(run)  # a LoRA run begun before the pin: the refusal names the fix
    save_config(saved, lora_run / "config.toml")
    with pytest.raises(GlidectlError, match=re.escape(
            f"model.init {str(run)!r} is a training run whose latest checkpoint has moved on "
            "since; set model.init to the step folder this LoRA run started from")):
        train_lora(saved, resume="latest", quiet=True)


def test_resuming_with_the_config_that_names_the_base_run_keeps_the_pinned_step(tmp_path,
                                                                            capsys):
    """`glidectl lora --config CFG --resume latest`, CFG's model.init the base run folder (as
    the examples resume), trained on the base run's latest instead of the step the LoRA run
    began on, rewrote its config.toml and adapters to name the run, and was refused once the
    base trained on. Another run folder than the recorded base is one sentence naming both."""

    from glidectl.config import load_config, save_config
    from glidectl.training.engine import Trainer

    Trainer(base_run_config(tmp_path, 1), quiet=True).run()
    run = tmp_path / "runs" / "base"
    step1 = run / "checkpoints" / "step-000001"
    save_config(lora_config(tmp_path, model=dict(init=str(run)), train=dict(steps=1)),
                tmp_path / "lora.toml")
    assert cli("lora", "--config", tmp_path / "lora.toml", "--no-live") == 0
    Trainer(base_run_config(tmp_path, 2), resume="latest", quiet=True).run()  # the base trains on
    capsys.readouterr()
    assert cli("lora", "--config", tmp_path / "lora.toml", "--resume", "latest", "--steps",
               "2", "--no-live") == 0
    assert f"goes on training on the checkpoint it began on, {str(step1)!r}" in \
        capsys.readouterr().out
    lora_run = tmp_path / "runs" / "lora"
    assert load_config(lora_run / "config.toml").model.init == str(step1)
    assert read_adapter(lora_run).meta["base_model"] == str(step1)
    assert read_adapter(lora_run).meta["step"] == 2

    other = tmp_path / "other-run"
    other.mkdir()
    assert cli("lora", "--config", tmp_path / "lora.toml", "--resume", "latest", "--steps",
               "3", "--set", f"model.init={other}", "--no-live") == 2
    assert capsys.readouterr().err == (
        f"Error: model.init {str(other)!r} is not the base LoRA run {str(lora_run)!r} trains "
        f"on: its config.toml names {str(step1)!r}; resume with model.init = {str(step1)!r} "
        "(or --resume RUN without --config), or start a new LoRA run (another --name) on "
        f"{str(other)!r}.\n")
    assert not (lora_run / "checkpoints" / "step-000003").exists()
    step1.rename(tmp_path / "aside")  # pruned by the base run's keep_last
    assert cli("lora", "--config", tmp_path / "lora.toml", "--resume", "latest", "--steps",
               "3", "--no-live") == 2
    assert f"model.init {str(step1)!r}, the checkpoint this LoRA run trains on, is gone" in \
        capsys.readouterr().err


def test_a_lora_resume_whose_base_run_moved_names_the_fix_not_keep_last(tmp_path, capsys):
    """A LoRA run whose base run folder was moved (a project folder moved whole): its resume
    blamed the base run's checkpoint.keep_last and offered only to put the step back or
    start over; it names the move and `--set model.init` at the new place, which resumes."""
    from glidectl.config import save_config
    from glidectl.training.engine import Trainer

    Trainer(base_run_config(tmp_path, 1), quiet=True).run()
    run = tmp_path / "runs" / "base"
    step1 = run / "checkpoints" / "step-000001"
    save_config(lora_config(tmp_path, model=dict(init=str(step1)), train=dict(steps=1)),
                tmp_path / "lora.toml")
    assert cli("lora", "--config", tmp_path / "lora.toml", "--no-live") == 0
    lora_run = tmp_path / "runs" / "lora"
    moved = tmp_path / "elsewhere"
    run.rename(moved)
    capsys.readouterr()
    assert cli("lora", "--resume", lora_run, "--steps", "2", "--no-live") == 2
    err = capsys.readouterr().err
    assert err == (
        f"Error: model.init {str(step1)!r}, the checkpoint this LoRA run trains on, is gone "
        f"with its run folder {str(run)!r} (moved or deleted); if it moved, resume with --set "
        "model.init=NEW_RUN_FOLDER/checkpoints/step-000001, else start a new LoRA run on "
        "another base.\n")
    assert cli("lora", "--resume", lora_run, "--steps", "2", "--no-live", "--set",
               f"model.init={moved / 'checkpoints' / 'step-000001'}") == 0
    assert (lora_run / "checkpoints" / "step-000002" / "lora").is_dir()


def test_one_adapter_may_be_passed_alone_as_text_or_a_path(tmp_path):
    """``loras="my-lora"`` (or a Path) from a notebook is that adapter, not a list of its
    characters (was: "'/' is not a LoRA adapter" or "'PosixPath' object is not iterable")."""
    from tiny_configs import random_attention_adapter, tiny_base_weights

    from glidectl.pipeline import GlidePipeline

    base = tiny_base_weights(tmp_path / "base.safetensors")
    adapter = random_attention_adapter(tmp_path, base.name, 0.05)
    for given in (str(adapter), adapter, [adapter]):
        pipe = GlidePipeline.from_specs(str(base), "none", loras=given, device="cpu")
        assert [x["path"] for x in pipe.records["base"].loras] == [str(adapter)]


def test_a_lora_run_asks_disk_room_for_its_adapters_not_for_the_base(tmp_path, monkeypatch):
    """A LoRA checkpoint holds adapters, not the base, but the free-space check counted the
    base's weights twice: `glidectl lora` on a 15 M-weight base refused a disk with 100 MiB
    free ("a checkpoint needs about 116 MiB") for checkpoints under 1 MiB (on OpenAI's
    base, about 3 GB asked)."""
    from glidectl.lora import train_lora
    from glidectl.training import engine

    asked: list[int] = []
    check = engine.check_writable
    monkeypatch.setattr(engine, "check_writable",
                        lambda folder, needed: asked.append(needed) or check(folder, needed))
    result = train_lora(lora_config(tmp_path, train=dict(steps=1)), quiet=True)
    step = result.run_dir / "checkpoints" / "step-000001"
    weights = sum(f.stat().st_size for f in step.rglob("*.safetensors")
                  if not f.name.startswith("rng"))
    base_bytes = (result.run_dir / "base.safetensors").stat().st_size  # its scratch base
    # about the adapters' tensors (their files add headers), far below the base's weights
    assert len(asked) == 1 and weights / 2 < asked[0] < base_bytes, (asked, weights, base_bytes)
