"""Gaussian diffusion with GLIDE's learned-range variance: forward process, posterior,
the model's reverse step, the hybrid training loss, and σ/timestep helpers for samplers.

Schedule arrays are float64 numpy, named as in OpenAI's code; torch methods gather them
at integer (respaced) timesteps and cast to float32 (or the input's wider dtype).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from .losses import discretized_gaussian_log_likelihood, mean_flat, normal_kl
from .respace import respaced_betas, space_timesteps

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LOSS_TYPES = ("hybrid", "eps")


class GaussianDiffusion:
    """A discrete diffusion over ``len(betas)`` steps, possibly a respaced subset of an original
    chain: ``timestep_map[i]`` is the original timestep of index ``i`` (what the network sees)
    and ``original_betas`` the full chain's betas (identity map and same betas when not
    respaced)."""

    def __init__(
        self,
        betas: np.ndarray,
        timestep_map: np.ndarray | None = None,
        original_betas: np.ndarray | None = None,
    ) -> None:
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or not ((betas > 0) & (betas <= 1)).all():
            raise ValueError("betas must be a 1-D array with values in (0, 1]")
        self.betas = betas
        self.num_timesteps = len(betas)
        if timestep_map is None:
            timestep_map = np.arange(self.num_timesteps)
        self.timestep_map = np.asarray(timestep_map, dtype=np.int64)
        if self.timestep_map.shape != betas.shape:
            raise ValueError("timestep_map must have one entry per beta")
        self.original_betas = betas if original_betas is None else np.asarray(
            original_betas, dtype=np.float64
        )
        self.original_alphas_cumprod = np.cumprod(1.0 - self.original_betas)

        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.alphas_cumprod_next = np.append(self.alphas_cumprod[1:], 0.0)
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.log_one_minus_alphas_cumprod = np.log(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1.0)
        # Variance of q(x_{t-1} | x_t, x_0); it is 0 at t=0, so the log uses index 1 there.
        self.posterior_variance = (
            betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        )
        self.posterior_log_variance_clipped = np.log(
            np.append(self.posterior_variance[1], self.posterior_variance[1:])
        )
        self.posterior_mean_coef1 = (
            betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        )
        self.posterior_mean_coef2 = (
            (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)
        )
        self.log_betas = np.log(betas)
        self._device_arrays: dict[tuple[str, str], torch.Tensor] = {}

    def __repr__(self) -> str:
        respaced = len(self.original_betas) != self.num_timesteps
        extra = f" of {len(self.original_betas)}" if respaced else ""
        return f"GaussianDiffusion(num_timesteps={self.num_timesteps}{extra})"

    def respace(self, section: str) -> GaussianDiffusion:
        """The chain over the original timesteps that ``section`` keeps ("" = all of them)."""
        if not section:
            return GaussianDiffusion(self.original_betas)
        kept = space_timesteps(len(self.original_betas), section)
        betas, timestep_map = respaced_betas(self.original_alphas_cumprod, kept)
        return GaussianDiffusion(betas, timestep_map, original_betas=self.original_betas)

    # -- gathering schedule values at timesteps ---------------------------------------------

    def _array(self, name: str, device: torch.device) -> torch.Tensor:
        key = (name, str(device))
        if key not in self._device_arrays:
            values = torch.from_numpy(np.ascontiguousarray(getattr(self, name)))
            # MPS has no float64: gather on the CPU there (see _gather).
            self._device_arrays[key] = values if device.type == "mps" else values.to(device)
        return self._device_arrays[key]

    def _gather(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``name[t]`` cast to ``like``'s float dtype (at least float32), shaped to broadcast."""
        values = self._array(name, t.device)
        picked = values[t.to(values.device).long()]
        dtype = torch.promote_types(like.dtype, torch.float32)
        picked = picked.to(device=like.device, dtype=dtype)
        return picked.reshape(-1, *([1] * (like.ndim - 1)))

    def model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """Original-scale timesteps the network sees: ``timestep_map[t]`` for integer ``t``
        (int64); for fractional ``t`` a linear interpolation of the map (as PLMS sends)."""
        tmap = self._array("timestep_map", t.device)
        if not torch.is_floating_point(t):
            return tmap[t.to(tmap.device)].to(t.device)
        return _lerp(tmap.to(torch.float64), t.to(tmap.device)).to(device=t.device, dtype=t.dtype)

    # -- forward process and posterior ------------------------------------------------------

    def q_sample(
        self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·noise."""
        if noise is None:
            noise = torch.randn_like(x0)
        return (
            self._gather("sqrt_alphas_cumprod", t, x0) * x0
            + self._gather("sqrt_one_minus_alphas_cumprod", t, x0) * noise
        )

    def q_posterior_mean_variance(
        self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0)."""
        mean = (
            self._gather("posterior_mean_coef1", t, xt) * x0
            + self._gather("posterior_mean_coef2", t, xt) * xt
        )
        variance = self._gather("posterior_variance", t, xt).expand_as(xt)
        log_variance = self._gather("posterior_log_variance_clipped", t, xt).expand_as(xt)
        return mean, variance, log_variance

    def predict_xstart_from_eps(
        self, xt: torch.Tensor, t: torch.Tensor, eps: torch.Tensor
    ) -> torch.Tensor:
        """x0 = √(1/ᾱ_t)·x_t − √(1/ᾱ_t − 1)·ε."""
        return (
            self._gather("sqrt_recip_alphas_cumprod", t, xt) * xt
            - self._gather("sqrt_recipm1_alphas_cumprod", t, xt) * eps
        )

    # -- the model's reverse step -----------------------------------------------------------

    def p_mean_variance(
        self,
        model_output: torch.Tensor,
        x: torch.Tensor,
        t: torch.Tensor,
        clip_denoised: bool = True,
        denoised_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """p(x_{t-1} | x_t) from a ``[B, 2C, ...]`` output (ε, then v in [-1, 1]) with learned-
        range variance: log σ² = frac·log β_t + (1−frac)·log β̃_t, frac = (v+1)/2, using this
        (possibly respaced) chain's own β_t and β̃_t. Returns mean, variance, log_variance,
        pred_xstart (after ``denoised_fn``, then clipped to [-1, 1] if asked) and eps."""
        eps, v = _split_output(model_output, x)
        max_log = self._gather("log_betas", t, x)
        min_log = self._gather("posterior_log_variance_clipped", t, x)
        frac = (v + 1) / 2
        log_variance = frac * max_log + (1 - frac) * min_log
        pred_xstart = self.predict_xstart_from_eps(x, t, eps)
        if denoised_fn is not None:
            pred_xstart = denoised_fn(pred_xstart)
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1, 1)
        mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x, t)
        return {
            "mean": mean,
            "variance": torch.exp(log_variance),
            "log_variance": log_variance,
            "pred_xstart": pred_xstart,
            "eps": eps,
        }

    # -- training ---------------------------------------------------------------------------

    def vb_terms_bpd(
        self, model_output: torch.Tensor, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        """One term of the variational bound per sample, in bits per dimension: the
        discretised-Gaussian decoder NLL at t=0, KL(q(x_{t-1}|x_t,x_0) ‖ p(x_{t-1}|x_t))
        for t>0 (no clipping of the x0 prediction)."""
        true_mean, _, true_log_variance = self.q_posterior_mean_variance(x0, xt, t)
        p = self.p_mean_variance(model_output, xt, t, clip_denoised=False)
        kl = mean_flat(normal_kl(true_mean, true_log_variance, p["mean"], p["log_variance"]))
        nll = -mean_flat(
            discretized_gaussian_log_likelihood(x0, p["mean"], 0.5 * p["log_variance"])
        )
        return torch.where(t.to(kl.device) == 0, nll, kl) / math.log(2.0)

    def prior_kl_bpd(self, prior_output: torch.Tensor, model_output: torch.Tensor,
                     xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """KL(p_prior(x_{t-1}|x_t) ‖ p(x_{t-1}|x_t)) per sample in bits per dimension, at
        t=0 too: the variational term of a sample whose target is another model's
        prediction (``prior_output``) instead of the data's posterior."""
        ref = self.p_mean_variance(prior_output, xt, t, clip_denoised=False)
        p = self.p_mean_variance(model_output, xt, t, clip_denoised=False)
        kl = normal_kl(ref["mean"], ref["log_variance"], p["mean"], p["log_variance"])
        return mean_flat(kl) / math.log(2.0)

    def training_losses(
        self,
        model_fn: ModelFn,
        x0: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor | None = None,
        loss_type: str = "hybrid",
        weights: torch.Tensor | None = None,
        q_noise: torch.Tensor | None = None,
        prior: tuple[torch.Tensor, ModelFn] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Per-sample loss terms ``loss``, ``mse`` and ``vb`` for a batch.

        ``model_fn(x_t, timesteps)`` gets original-scale timesteps. ``hybrid`` (GLIDE's):
        loss = MSE(ε) + L_vb, where L_vb sees the ε half detached so it only trains the
        variance channels. ``eps``: loss = MSE(ε); vb is still reported, without gradient.
        ``weights`` (e.g. :meth:`min_snr_weights`) scale the MSE part of the loss; ``mse``
        is reported unweighted. ``q_noise`` (input perturbation) noises x_t instead of
        ``noise``, which stays the target. ``prior`` = (rows, prior_fn): the rows (a bool
        per sample) whose target is ``prior_fn``'s output at the same x_t and t, computed
        without gradient (OneTrainer's PRIOR_PREDICTION concepts: ``GenericTrainer.train``
        puts the prior model's prediction in their target): the MSE is towards its ε and
        L_vb is :meth:`prior_kl_bpd`.
        """
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
        if noise is None:
            noise = torch.randn_like(x0)
        xt = self.q_sample(x0, t, noise if q_noise is None else q_noise)
        ts = self.model_timesteps(t)
        model_output = model_fn(xt, ts)
        eps, v = _split_output(model_output, x0)
        target, ref, rows = noise, None, None
        if prior is not None:
            rows = prior[0].to(device=x0.device, dtype=torch.bool)
            with torch.no_grad():
                ref = prior[1](xt, ts)
            target = torch.where(rows[:, None, None, None], _split_output(ref, x0)[0], noise)
        mse = mean_flat((target - eps) ** 2)
        frozen = torch.cat([eps.detach(), v], dim=1)

        def vb_terms() -> torch.Tensor:
            vb = self.vb_terms_bpd(frozen, x0, xt, t)
            if ref is None:
                return vb
            return torch.where(rows, self.prior_kl_bpd(ref, frozen, xt, t), vb)

        if loss_type == "hybrid":
            vb = vb_terms()
        else:
            with torch.no_grad():
                vb = vb_terms()
        weighted = mse if weights is None else mse * weights.to(mse)
        loss = weighted + vb if loss_type == "hybrid" else weighted
        return {"loss": loss, "mse": mse, "vb": vb}

    def min_snr_weights(self, t: torch.Tensor, gamma: float) -> torch.Tensor:
        """Min-SNR-γ weights for the ε-MSE: min(SNR_t, γ)/SNR_t, SNR_t = ᾱ_t/(1−ᾱ_t)."""
        if gamma <= 0:
            raise ValueError("min-SNR gamma must be positive")
        return self.snr_weights(t, gamma=gamma)

    def snr_weights(self, t: torch.Tensor, gamma: float = 0.0, floor: float = 0.0,
                    sigma_max: float = 80.0) -> torch.Tensor:
        """ε-MSE weights that make the loss an x0-MSE weighted by clamp(SNR_t, floor, γ).

        The ε-MSE is SNR_t times the x0-MSE, so plain ε training all but ignores x0 errors
        at high noise, where colour and layout are decided. ``gamma`` > 0 caps the weight of
        the easy low-noise steps (Min-SNR-γ, Hang et al. 2023); ``floor`` > 0 lifts the
        high-noise ones so an x0 error there counts as at SNR ``floor`` (truncated SNR,
        Salimans & Ho 2022). Above ``sigma_max`` (where samplers start) SNR is held at
        1/σ_max² so the weights stay bounded.
        """
        values = self._array("alphas_cumprod", t.device)
        ac = values[t.to(device=values.device, dtype=torch.long)]
        snr = ac / (1.0 - ac)
        x0_weight, base = snr, snr
        if floor > 0:
            x0_weight = snr.clamp(min=floor)
            base = snr.clamp(min=1.0 / sigma_max**2)
        if gamma > 0:
            x0_weight = x0_weight.clamp(max=gamma)
        return (x0_weight / base).to(device=t.device, dtype=torch.float32)

    # -- σ view and fractional timesteps, for samplers --------------------------------------

    def sigmas(self) -> np.ndarray:
        """σ_t = √((1−ᾱ_t)/ᾱ_t) over the ORIGINAL chain (float64, increasing in t)."""
        ac = self.original_alphas_cumprod
        return np.sqrt((1.0 - ac) / ac)

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """Fractional original-scale timestep whose σ is ``sigma``, interpolating log σ
        linearly between integer timesteps; clamped to [0, T−1]."""
        log_sigmas = torch.from_numpy(np.log(self.sigmas()))
        log_sigma = sigma.detach().cpu().to(torch.float64).log()
        idx = torch.searchsorted(log_sigmas, log_sigma.reshape(-1)).reshape(log_sigma.shape)
        low = (idx - 1).clamp(0, len(log_sigmas) - 2)
        lo, hi = log_sigmas[low], log_sigmas[low + 1]
        w = ((log_sigma - lo) / (hi - lo)).clamp(0, 1)
        dtype = sigma.dtype if torch.is_floating_point(sigma) else torch.float32
        return _on_device(low + w, sigma.device).to(dtype)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        """σ at a fractional original-scale timestep (log σ interpolated linearly), float64."""
        log_sigmas = torch.from_numpy(np.log(self.sigmas()))
        return _on_device(_lerp(log_sigmas, t.detach().cpu().to(torch.float64)).exp(), t.device)


def _on_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a float64 result to ``device`` (as float32 on MPS, which has no float64)."""
    return x.to(device=device, dtype=torch.float32) if device.type == "mps" else x.to(device)


def _lerp(values: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``values`` at fractional indices ``t`` (linear interpolation, clamped to the ends)."""
    t = t.to(values.device).clamp(0, len(values) - 1)
    low = t.floor().long()
    high = t.ceil().long()
    frac = (t - low).to(values.dtype)
    return values[low] * (1 - frac) + values[high] * frac


def _split_output(model_output: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    channels = x.shape[1]
    if model_output.shape[1] != 2 * channels:
        raise ValueError(
            f"model output has {model_output.shape[1]} channels; expected {2 * channels} "
            "(ε then the learned-range variance values)"
        )
    return model_output[:, :channels], model_output[:, channels:]
