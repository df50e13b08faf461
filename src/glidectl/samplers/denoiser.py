"""The one interface every sampler sees: a denoiser D(x, σ) → x0 with guidance applied.

x is on the variance-exploding scale x = x0 + σ·ε. GLIDE's discrete ε-prediction network is
adapted once, here: x_t = x/√(1+σ²) goes in at the original-scale (fractional) t whose σ_t
matches, and D = x − σ·ε comes out.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch

from ..greyscale import to_grey
from .guidance import check_guidance_tools, dynamic_threshold, in_interval, rescale_guidance
from .schedules import sigmas_from_alphas_cumprod


class Denoiser(Protocol):
    """``D(x, σ)`` → predicted clean x0 (same shape as x). Extra keywords are sampler options
    a denoiser may honour (GLIDE's: ``t=`` the model timestep, ``variance=True``)."""

    def __call__(self, x: torch.Tensor, sigma: float, **kwargs: Any) -> torch.Tensor: ...


def to_d(x: torch.Tensor, sigma: float, denoised: torch.Tensor) -> torch.Tensor:
    """The probability-flow ODE's derivative dx/dσ = (x − D)/σ (the implied ε)."""
    return (x - denoised) / sigma


def one_sigma(sigma: Any) -> float:
    """σ as one number: k-diffusion's samplers pass ``sigma * s_in``, the same σ for every
    image of the batch; σ's that differ across it are a sampler's mistake."""
    from ..errors import MisuseError

    if torch.is_tensor(sigma) and sigma.numel() > 1:
        flat = sigma.detach().flatten()
        if not bool((flat == flat[0]).all()):
            raise MisuseError(f"it called the denoiser with {flat.numel()} different σ's; it "
                              "takes one σ for the whole batch (a number, or k-diffusion's "
                              "sigma * s_in)")
        sigma = flat[0]
    value = float(sigma)
    if not math.isfinite(value) or value < 0:
        raise MisuseError(f"it called the denoiser with σ {value:g}; it takes one finite σ "
                          ">= 0")
    return value


def alpha_bar(sigma: float) -> float:
    """ᾱ = 1/(1+σ²), the VP signal fraction at noise level σ."""
    return 1.0 / (1.0 + sigma * sigma)


Callback = Callable[[dict[str, Any]], None] | None
NoiseSampler = Callable[[float, float], torch.Tensor] | None


def report(callback: Callback, i: int, x, sigma: float, sigma_next: float, denoised) -> None:
    """Tell a sampler's ``callback`` about step ``i`` (k-diffusion's dict keys)."""
    if callback:
        callback({"i": i, "x": x, "sigma": sigma, "sigma_next": sigma_next, "denoised": denoised})



class GlideDenoiser:
    """A GLIDE network (ε and learned-variance output) as a σ-space denoiser.

    ``text_emb`` comes from ``model.encode_text`` once per sample: N rows, or 2N rows
    ``[cond, uncond]`` when ``guidance`` is set, in which case one forward runs over both and
    ε = ε_u + s·(ε_c − ε_u) (the variance channels keep the conditional rows). ``model_kwargs``
    (``low_res``, ``inpaint_image``, ``inpaint_mask``) hold N rows. ``denoised_fn`` post-processes
    x0 before the [−1, 1] clip (``clip``), as GLIDE's ``p_mean_variance`` does.

    Guidance tools (off by default, see :mod:`.guidance`): ``guidance_interval=(lo, hi)``
    guides only for lo ≤ σ ≤ hi (outside, the forward runs the conditional rows alone);
    ``guidance_rescale=φ`` rescales the guided x0 towards the conditional one's standard
    deviation; ``dynamic_threshold=p`` replaces the static clip by Imagen's percentile one.
    ``grey=True`` projects x0 onto grey images (R = G = B, their mean) before ``denoised_fn``
    (as the dynamic threshold is), so every sampler draws grey pictures and chroma errors do
    not feed later steps, while what ``denoised_fn`` pastes (inpainting's kept pixels) keeps
    its colour.
    ``learned_variance``: the network's variance channels were trained (a network trained on
    ``train.loss = "eps"`` leaves them at zero; ancestral DDPM then takes β̃).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        alphas_cumprod: np.ndarray,
        *,
        text_emb: dict[str, torch.Tensor] | None = None,
        guidance: float | None = None,
        model_kwargs: dict[str, torch.Tensor] | None = None,
        clip: bool = True,
        denoised_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
        quantize_t: bool = False,
        autocast_dtype: torch.dtype | None = None,
        on_call: Callable[[], None] | None = None,
        guidance_interval: tuple[float, float] | None = None,
        guidance_rescale: float = 0.0,
        dynamic_threshold: float | None = None,
        grey: bool = False,
    ):
        self.model = model
        net = getattr(model, "_orig_mod", model)  # torch.compile's wrapper
        self.learned_variance = getattr(net, "variance_trained", True)
        self.alphas_cumprod = np.asarray(alphas_cumprod, dtype=np.float64)
        self.sigmas = sigmas_from_alphas_cumprod(self.alphas_cumprod)
        self._log_sigmas = np.log(self.sigmas)
        self.text_emb = text_emb
        self.guidance = guidance
        self.model_kwargs = dict(model_kwargs or {})
        self.clip = clip
        self.denoised_fn = denoised_fn
        self.quantize_t = quantize_t
        self.autocast_dtype = autocast_dtype
        self.on_call = on_call
        self.guidance_interval = check_guidance_tools(guidance_interval, guidance_rescale,
                                                      dynamic_threshold)
        self.guidance_rescale = guidance_rescale
        self.dynamic_threshold = dynamic_threshold
        self.grey = grey
        self.calls = 0
        self._finite: torch.Tensor | None = None  # all outputs finite so far (no sync per call)
        # the x a call takes (None: any): this sample's rows, 3 channels, the model's size
        rows = next((v.shape[0] for v in self.model_kwargs.values() if torch.is_tensor(v)),
                    None)
        if rows is None and text_emb:  # [cond, uncond] rows when guided
            rows = next(iter(text_emb.values())).shape[0] // (2 if guidance is not None else 1)
        size = getattr(getattr(net, "options", None), "image_size", None)
        self._x_shape = (rows, 3, size, size)

    @property
    def nonfinite(self) -> bool:
        """True once the network has returned a NaN or infinite value from a finite x_t."""
        return self._finite is not None and not bool(self._finite)

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def sigma_to_t(self, sigma: float) -> float:
        """The original-scale timestep with this σ (log-σ interpolation of the table)."""
        return float(np.interp(np.log(max(sigma, 1e-30)), self._log_sigmas,
                               np.arange(len(self.sigmas), dtype=np.float64)))

    def t_to_sigma(self, t: float) -> float:
        """σ at a fractional original-scale timestep (log-σ interpolation of the table)."""
        return float(np.exp(np.interp(t, np.arange(len(self.sigmas)), self._log_sigmas)))

    def model_output(self, x_t: torch.Tensor, t: float, sigma: float | None = None
                     ) -> torch.Tensor:
        """The guided 6-channel output for N rows of x_t at timestep t; ``sigma`` (default:
        t's on the table) is the noise level the guidance interval and rescale judge."""
        rows = x_t.shape[0]
        guided = self.guidance is not None
        if sigma is None:
            sigma = self.t_to_sigma(float(t.detach()) if torch.is_tensor(t) else t)
        text_emb = self.text_emb
        if guided and not in_interval(sigma, self.guidance_interval):
            guided = False  # the conditional rows alone: half the work of a guided forward
            text_emb = {k: v[:rows] for k, v in text_emb.items()} if text_emb else text_emb
        x_in = torch.cat([x_t, x_t]) if guided else x_t
        kwargs = {k: (torch.cat([v, v]) if guided else v) for k, v in self.model_kwargs.items()}
        ts = (t.to(device=x_t.device, dtype=torch.float32).expand(x_in.shape[0])
              if torch.is_tensor(t) else
              torch.full((x_in.shape[0],), t, dtype=torch.float32, device=x_t.device))
        ctx = (
            torch.autocast(x_t.device.type, dtype=self.autocast_dtype)
            if self.autocast_dtype is not None
            else contextlib.nullcontext()
        )
        with ctx:
            out = self.model(x_in, ts, text_emb=text_emb, **kwargs)
        out = out.float()
        # the network's own NaN only: fed a NaN x_t, it is the sampler's (named as such)
        finite = torch.isfinite(out.detach()).all() | ~torch.isfinite(x_t.detach()).all()
        self._finite = finite if self._finite is None else self._finite & finite
        self.calls += 1
        if self.on_call is not None:
            self.on_call()
        if not guided:
            return out
        eps, rest = out[:, :3], out[:rows, 3:]
        cond, uncond = eps[:rows], eps[rows:]
        guided_eps = uncond + self.guidance * (cond - uncond)
        if self.guidance_rescale:  # on x0 = (x_t − √(1−ᾱ)·ε)/√ᾱ, then back to ε
            a = alpha_bar(sigma)
            x0_c, x0_g = ((x_t - (1 - a) ** 0.5 * e) / a**0.5 for e in (cond, guided_eps))
            x0 = rescale_guidance(x0_g, x0_c, self.guidance_rescale)
            guided_eps = (x_t - a**0.5 * x0) / (1 - a) ** 0.5
        return torch.cat([guided_eps, rest], dim=1)

    def _check_x(self, x: Any) -> None:
        """x as the network takes it: [N, 3, H, W] with this sample's N rows and the model's
        size (a sampler that passes another shape is told so, not met by a torch error)."""
        want = self._x_shape
        if torch.is_tensor(x) and x.ndim == 4 and all(
                w is None or g == w for g, w in zip(x.shape, want, strict=True)):
            return
        from ..errors import MisuseError

        got = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        shown = ", ".join("N" if w is None else str(w) for w in want[:2]) + (
            f", {want[2]}, {want[2]}" if want[2] else ", H, W")
        raise MisuseError(f"it called the denoiser with x of {got}; it takes a tensor [{shown}]")

    def differentiable_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """:meth:`sigma_to_t` for a σ tensor, passing gradients (bespoke fitting moves σ)."""
        table = torch.as_tensor(self._log_sigmas, dtype=sigma.dtype, device=sigma.device)
        log_sigma = sigma.log()
        i = int(torch.searchsorted(table, log_sigma.detach().reshape(1)).clamp(1, len(table) - 1))
        return (i - 1) + (log_sigma - table[i - 1]) / (table[i] - table[i - 1])

    def __call__(
        self, x: torch.Tensor, sigma: float, *, t: float | None = None, variance: bool = False
    ) -> Any:
        self._check_x(x)
        if torch.is_tensor(sigma) and sigma.requires_grad:  # gradients flow to σ
            t = self.differentiable_t(sigma)
        else:
            sigma = one_sigma(sigma)
            if t is None:
                t = self.sigma_to_t(sigma)
            if self.quantize_t:
                t = float(round(t))
            elif abs(t - round(t)) < 1e-6:
                t = float(round(t))
        # the interval judges the sampler's σ, not t's round trip (σ_max 80 came back as
        # 80.0000000000002, outside an interval 0,80)
        out = self.model_output(x / (1.0 + sigma * sigma) ** 0.5, t,
                                float(sigma.detach()) if torch.is_tensor(sigma) else sigma)
        denoised = x - sigma * out[:, :3]
        if self.grey:
            denoised = to_grey(denoised)
        if self.dynamic_threshold is not None:  # before denoised_fn: it rescales x0, and
            denoised = dynamic_threshold(denoised, self.dynamic_threshold)  # kept pixels stay
        if self.denoised_fn is not None:  # after grey: the pixels it pastes stay as given
            denoised = self.denoised_fn(denoised)
        if self.clip:
            denoised = denoised.clamp(-1, 1)
        return (denoised, out[:, 3:]) if variance else denoised
