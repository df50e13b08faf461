"""q_sample, the learned-range reverse step and the hybrid loss reproduce GLIDE's numbers."""

from __future__ import annotations

import pytest
import torch
from diffusion_helpers import eps_from_xstart

from glidectl.diffusion import create_diffusion


@pytest.fixture(scope="module")
def cos():
    return create_diffusion("squaredcos_cap_v2", 1000)


def _close(ours: torch.Tensor, ref: torch.Tensor, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    torch.testing.assert_close(ours, ref, rtol=rtol, atol=atol)


def test_q_sample_matches_golden(cos, dg) -> None:
    xt = cos.q_sample(dg["loss/x_start"], dg["loss/t"], dg["loss/noise"])
    assert xt.dtype == torch.float32
    _close(xt, dg["loss/q_sample"], rtol=1e-6, atol=1e-6)


def test_p_mean_variance_matches_golden(cos, dg) -> None:
    out = cos.p_mean_variance(
        dg["loss/model_output"], dg["loss/q_sample"], dg["loss/t"], clip_denoised=False
    )
    _close(out["mean"], dg["loss/p_mean"])
    _close(out["log_variance"], dg["loss/p_log_variance"])
    _close(out["pred_xstart"], dg["loss/p_pred_xstart"])
    _close(out["variance"], dg["loss/p_log_variance"].exp())
    _close(out["eps"], dg["loss/model_output"][:, :3], rtol=0, atol=0)


def test_clip_denoised_and_denoised_fn(cos, dg) -> None:
    args = (dg["loss/model_output"], dg["loss/q_sample"], dg["loss/t"])
    raw = cos.p_mean_variance(*args, clip_denoised=False)["pred_xstart"]
    assert raw.abs().max() > 1
    clipped = cos.p_mean_variance(*args, clip_denoised=True)["pred_xstart"]
    _close(clipped, raw.clamp(-1, 1), rtol=0, atol=0)
    halved = cos.p_mean_variance(*args, clip_denoised=False, denoised_fn=lambda x: x / 2)
    _close(halved["pred_xstart"], raw / 2, rtol=0, atol=0)


def test_learned_range_variance_endpoints(cos) -> None:
    x = torch.zeros(2, 3, 4, 4)
    t = torch.tensor([10, 500])
    for v, attr in [(1.0, "betas"), (-1.0, "posterior_variance")]:
        out = torch.cat([torch.zeros_like(x), torch.full_like(x, v)], dim=1)
        var = cos.p_mean_variance(out, x, t)["variance"][:, 0, 0, 0].double()
        expected = torch.from_numpy(getattr(cos, attr)[t.numpy()])
        torch.testing.assert_close(var, expected, rtol=1e-5, atol=0)


def test_respaced_variance_uses_respaced_betas(dg) -> None:
    short = create_diffusion("squaredcos_cap_v2", 1000, "10")
    x = torch.zeros(1, 3, 2, 2)
    out = torch.cat([torch.zeros_like(x), torch.ones_like(x)], dim=1)
    var = short.p_mean_variance(out, x, torch.tensor([5]))["variance"].flatten()[0].item()
    assert var == pytest.approx(dg["respace/10/cos/betas"][5].item(), rel=1e-6)


def test_hybrid_training_losses_match_golden(cos, dg) -> None:
    seen = {}

    def model_fn(xt: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
        seen["xt"], seen["ts"] = xt, ts
        return dg["loss/model_output"]

    terms = cos.training_losses(model_fn, dg["loss/x_start"], dg["loss/t"], dg["loss/noise"])
    _close(seen["xt"], dg["loss/q_sample"], rtol=1e-6, atol=1e-6)
    assert seen["ts"].tolist() == [0, 1, 500, 999]
    for key in ("loss", "mse", "vb"):
        assert terms[key].shape == (4,)
        _close(terms[key], dg[f"loss/{key}"], rtol=1e-5, atol=1e-7)


def test_eps_loss_is_mse_only(cos, dg) -> None:
    terms = cos.training_losses(
        lambda xt, ts: dg["loss/model_output"], dg["loss/x_start"], dg["loss/t"],
        dg["loss/noise"], loss_type="eps",
    )
    _close(terms["loss"], dg["loss/mse"])
    _close(terms["vb"], dg["loss/vb"])


def test_vb_trains_only_the_variance_channels(cos, dg) -> None:
    """Stop-gradient on the mean: vb's gradient reaches v but never ε."""
    output = dg["loss/model_output"].clone().requires_grad_(True)
    terms = cos.training_losses(
        lambda xt, ts: output, dg["loss/x_start"], dg["loss/t"], dg["loss/noise"]
    )
    terms["vb"].sum().backward()
    assert output.grad is not None
    assert output.grad[:, :3].abs().max() == 0
    assert output.grad[:, 3:].abs().max() > 0
    output.grad = None
    terms = cos.training_losses(
        lambda xt, ts: output, dg["loss/x_start"], dg["loss/t"], dg["loss/noise"]
    )
    terms["mse"].sum().backward()
    assert output.grad[:, 3:].abs().max() == 0 and output.grad[:, :3].abs().max() > 0


def test_eps_loss_gives_no_variance_gradient(cos, dg) -> None:
    output = dg["loss/model_output"].clone().requires_grad_(True)
    terms = cos.training_losses(
        lambda xt, ts: output, dg["loss/x_start"], dg["loss/t"], dg["loss/noise"],
        loss_type="eps",
    )
    terms["loss"].sum().backward()
    assert output.grad[:, 3:].abs().max() == 0


def test_min_snr_weights(cos, dg) -> None:
    t = torch.tensor([0, 500, 999])
    w = cos.min_snr_weights(t, 5.0)
    ac = torch.from_numpy(cos.alphas_cumprod[t.numpy()])
    snr = ac / (1 - ac)
    torch.testing.assert_close(w, (snr.clamp(max=5.0) / snr).float())
    assert w[0] < 1e-3 and w[2] == 1.0
    weighted = cos.training_losses(
        lambda xt, ts: dg["loss/model_output"], dg["loss/x_start"], dg["loss/t"],
        dg["loss/noise"], weights=cos.min_snr_weights(dg["loss/t"], 5.0),
    )
    expected = dg["loss/mse"] * cos.min_snr_weights(dg["loss/t"], 5.0) + dg["loss/vb"]
    _close(weighted["loss"], expected)
    _close(weighted["mse"], dg["loss/mse"])


def test_predict_eps_inverts_predict_xstart(cos) -> None:
    gen = torch.Generator().manual_seed(0)
    xt, eps = torch.randn(2, 3, 4, 4, generator=gen), torch.randn(2, 3, 4, 4, generator=gen)
    t = torch.tensor([3, 700])
    x0 = cos.predict_xstart_from_eps(xt, t, eps)
    _close(eps_from_xstart(cos, xt, t, x0), eps, rtol=1e-4, atol=1e-5)


def test_wrong_channel_count_is_rejected(cos) -> None:
    with pytest.raises(ValueError, match="channels"):
        cos.p_mean_variance(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 2), torch.tensor([1]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_losses_on_cuda_match_cpu(cos, dg) -> None:
    args = [dg[k].cuda() for k in ("loss/x_start", "loss/t", "loss/noise")]
    output = dg["loss/model_output"].cuda()
    terms = cos.training_losses(lambda xt, ts: output, *args)
    for key in ("loss", "mse", "vb"):
        _close(terms[key].cpu(), dg[f"loss/{key}"])


def test_prior_rows_train_towards_the_prior_models_prediction(cos, dg) -> None:
    """OneTrainer's PRIOR_PREDICTION: a row's target is the prior model's output at the same
    x_t and t, without gradient (ε-MSE towards its ε, L_vb the KL from its p(x_{t-1}|x_t),
    at t=0 too); the other rows are scored as before."""
    out = dg["loss/model_output"]
    other = out + 0.1 * torch.randn(out.shape, generator=torch.Generator().manual_seed(0))
    args = (dg["loss/x_start"], dg["loss/t"], dg["loss/noise"])
    rows = torch.tensor([True, False, True, False])  # t = 0, 1, 500, 999
    seen = []

    def prior_fn(xt: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
        seen.append((xt, ts.tolist(), torch.is_grad_enabled()))
        return other

    plain = cos.training_losses(lambda xt, ts: out, *args)
    terms = cos.training_losses(lambda xt, ts: out, *args, prior=(rows, prior_fn))
    [(xt, ts, grad)] = seen
    _close(xt, dg["loss/q_sample"], rtol=1e-6, atol=1e-6)
    assert ts == [0, 1, 500, 999] and not grad
    for key in ("loss", "mse", "vb"):
        assert torch.equal(terms[key][~rows], plain[key][~rows])
    mse = ((other[:, :3] - out[:, :3]) ** 2).mean(dim=(1, 2, 3))
    _close(terms["mse"][rows], mse[rows])
    assert (terms["vb"][rows] > 0).all() and not torch.equal(terms["vb"], plain["vb"])
    same = cos.training_losses(lambda xt, ts: out, *args, prior=(rows, lambda xt, ts: out))
    # its own prediction: nothing to learn (normal_kl's -1 + lv2 - lv1 + 1 rounds, ~1e-8)
    assert same["mse"][rows].abs().max() == 0 and same["vb"][rows].abs().max() < 1e-6
