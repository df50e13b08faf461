"""The tiny golden cases: our network reproduces OpenAI's outputs to 1e-4 in float32."""

from __future__ import annotations

import pytest
import torch
from golden_data import tiny_options, tiny_reference_state
from safetensors.torch import load_file

from glidectl.glide import KINDS, ModelOptions, create_model
from glidectl.glide.checkpoints import read_weights
from glidectl.glide.layers import timestep_embedding

TOL = dict(atol=1e-4, rtol=1e-4)


def _case(carried, kind):
    meta = tiny_options(kind)
    options = ModelOptions.from_dict(meta["options"])
    model = create_model(options).eval()
    model.load_state_dict(tiny_reference_state(kind))
    case = load_file(carried / f"tiny_{kind}_case.safetensors")
    return meta, model, case


@pytest.mark.parametrize("kind", KINDS)
def test_tiny_model_reproduces_reference_outputs(carried, kind):
    meta, model, case = _case(carried, kind)
    assert [[k, list(v.shape)] for k, v in model.state_dict().items()] == \
        meta["derived"]["state_dict_order"]
    assert sum(p.numel() for p in model.parameters()) == meta["derived"]["total_params"]
    extra = {k: case[k] for k in ("low_res", "inpaint_image", "inpaint_mask") if k in case}
    x, tokens, mask = case["x_t"], case["tokens"], case["mask"]
    with torch.no_grad():
        text = model.encode_text(tokens, mask)
        torch.testing.assert_close(text["xf_proj"], case["text_xf_proj"], **TOL)
        torch.testing.assert_close(text["xf_out"], case["text_xf_out"], **TOL)
        t_emb = model.time_embed(timestep_embedding(case["timesteps"], model.model_channels))
        torch.testing.assert_close(t_emb, case["time_emb"], **TOL)
        out = model(x, case["timesteps"], tokens, mask, **extra)
        torch.testing.assert_close(out, case["out"], **TOL)
        frac = model(x, case["timesteps_frac"], tokens, mask, **extra)
        torch.testing.assert_close(frac, case["out_frac_t"], **TOL)
        # Text embeddings computed once and passed in give the same output.
        reused = model(x, case["timesteps"], text_emb=text, **extra)
        torch.testing.assert_close(reused, out, atol=0, rtol=0)
        if "out_no_inpaint_kwargs" in case:
            low = {"low_res": extra["low_res"]} if "low_res" in extra else {}
            bare = model(x, case["timesteps"], tokens, mask, **low)
            torch.testing.assert_close(bare, case["out_no_inpaint_kwargs"], **TOL)


def test_golden_safetensors_without_metadata_needs_options(tmp_path):
    """The golden files carry no options; they are custom-sized, so reading them says so."""
    from safetensors.torch import save_file

    from glidectl.errors import GlidectlError

    path = tmp_path / "tiny_base_state_dict.safetensors"  # stored like the reference's: fp16
    save_file({k: v.half() for k, v in tiny_reference_state("base").items()}, path)
    with pytest.raises(GlidectlError, match="not OpenAI's official one"):
        read_weights(path)
    state, options = read_weights(
        path, options=ModelOptions.from_dict(tiny_options("base")["options"]),
    )
    assert all(v.dtype == torch.float32 for v in state.values())  # stored fp16, upcast
    assert options.kind == "base"
