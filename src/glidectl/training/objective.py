"""What a training step minimises: timesteps, noise and inpainting masks drawn for the
global batch, the noise shaping knobs, and each sample's loss weight.

Every draw is made for the whole global batch from one generator and sliced to this
process's rows, so N processes train exactly what one process with the whole batch would.
"""

from __future__ import annotations

from typing import Any

import torch

from ..config import TrainConfig
from .data_stream import DataStream
from .prior_prediction import prior_targets


def random_masks(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """Inpainting masks (1 = keep): a random rectangle hidden per sample, a quarter to a
    half of each side, placed uniformly among the positions where it fits (every pixel,
    the last row and column too, can be hidden)."""
    masks = torch.ones(n, 1, size, size)
    extent = torch.randint(size // 4, size // 2 + 1, (n, 2), generator=gen)
    room = size - extent + 1  # the positions where each side fits
    lo = (torch.rand(n, 2, generator=gen) * room).long().minimum(room - 1)
    for i in range(n):
        y, x = lo[i].tolist()
        h, w = extent[i].tolist()
        masks[i, :, y:y + h, x:x + w] = 0
    return masks


class Objective:
    """The loss of one micro-batch, drawn from ``noise`` (a generator the resume state
    keeps) for the global batch of ``world`` processes."""

    def __init__(self, tc: TrainConfig, bundle: Any, stream: DataStream, noise: torch.Generator,
                 *, world: int, device: torch.device, total_steps: int):
        self.tc, self.diffusion, self.options = tc, bundle.diffusion, bundle.options
        self.stream, self.noise = stream, noise
        self.world, self.device, self.total_steps = world, device, total_steps

    def losses(self, model: torch.nn.Module, batch: dict[str, Any], step: int,
               adapter: Any = None, base: torch.nn.Module | None = None
               ) -> dict[str, torch.Tensor]:
        """The per-sample loss terms (``loss``, ``mse``, ``vb``) of ``model`` on ``batch``;
        PRIOR_PREDICTION samples train towards ``base`` (the unwrapped model) inside
        ``adapter.prior_model`` (:mod:`glidectl.training.prior_prediction`)."""
        dev = self.device
        x0 = batch["image"].to(dev)
        if self.tc.channels_last:
            x0 = x0.contiguous(memory_format=torch.channels_last)
        tokens, mask = batch["tokens"].to(dev), batch["mask"].to(dev)
        t, noise, inpaint_mask = self._draw(x0.shape, step)
        noise, q_noise = self._shaped(noise)
        extra: dict[str, Any] = {}
        if "low_res" in batch and self.options.super_res:
            extra["low_res"] = batch["low_res"].to(dev)
        if inpaint_mask is not None:
            extra["inpaint_image"], extra["inpaint_mask"] = x0, inpaint_mask

        def model_fn(x_t: torch.Tensor, ts: torch.Tensor,
                     net: torch.nn.Module | None = None) -> torch.Tensor:
            return (model if net is None else net)(x_t, ts, tokens, mask, **extra)

        tc = self.tc
        weights = None
        if tc.min_snr_gamma > 0 or tc.snr_floor > 0:
            weights = self.diffusion.snr_weights(t, gamma=tc.min_snr_gamma, floor=tc.snr_floor)
        return self.diffusion.training_losses(
            model_fn, x0, t, noise, loss_type=tc.loss, weights=weights, q_noise=q_noise,
            prior=prior_targets(batch, adapter, base, model_fn),
        )

    def weighted(self, loss: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """The per-sample ``loss`` with each regularisation sample's times
        ``train.prior_loss_weight`` (kohya's ``loss_weights``) and each sample's times its
        own ``loss_weight`` (OneTrainer's per-concept one), before the batch mean (a batch
        with no regularisation sample and every own weight 1 is returned untouched)."""
        reg = batch.get("is_reg") or [False] * len(loss)
        own = batch.get("loss_weight") or [1.0] * len(loss)
        if not any(reg) and all(w == 1 for w in own):
            return loss
        prior = self.tc.prior_loss_weight
        weights = [(prior if r else 1.0) * float(w) for r, w in zip(reg, own, strict=True)]
        return loss * torch.tensor(weights, dtype=loss.dtype, device=loss.device)

    def t_low(self, step: int) -> int:
        """``train.t_curriculum`` f: over the first f of training t is drawn from the top
        10 % of noise levels for the first half, then from a range whose lowest timestep
        falls linearly to 0; after that t is uniform. High noise, where the caption decides
        colour, layout and background, is learned first (Kim et al. 2024)."""
        f, T = self.tc.t_curriculum, self.diffusion.num_timesteps
        if f <= 0:
            return 0
        progress = step / max(1.0, f * self.total_steps)
        return int(0.9 * T * min(1.0, max(0.0, 2.0 * (1.0 - progress))))

    def _mine(self, b: int) -> torch.Tensor:
        """This process's rows of the global batch."""
        return torch.tensor(self.stream.global_positions(b))

    def _draw(self, shape: torch.Size, step: int) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """Timesteps, noise (and inpaint masks) for images of ``shape``, this rank's rows."""
        b, n, gen = shape[0], shape[0] * self.world, self.noise
        t = torch.randint(self.t_low(step), self.diffusion.num_timesteps, (n,), generator=gen)
        noise = torch.randn((n, *shape[1:]), generator=gen)
        masks = random_masks(n, shape[-1], gen) if self.options.inpaint else None
        mine, dev = self._mine(b), self.device
        return t[mine].to(dev), noise[mine].to(dev), None if masks is None else \
            masks[mine].to(dev)

    def _shaped(self, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``train.noise_offset`` (a per-image, per-channel constant added to the noise, for
        both x_t and the target) and ``train.input_perturbation`` (extra noise in x_t only):
        (target noise, noise for q_sample or None = the same). Drawn for the global batch
        and only when on, so runs without them are unchanged."""
        tc = self.tc
        if tc.noise_offset <= 0 and tc.input_perturbation <= 0:
            return noise, None
        b = noise.shape[0]
        n, mine = b * self.world, self._mine(b)
        if tc.noise_offset > 0:
            offset = torch.randn((n, noise.shape[1], 1, 1), generator=self.noise)
            noise = noise + tc.noise_offset * offset[mine].to(noise.device)
        if tc.input_perturbation <= 0:
            return noise, None
        extra = torch.randn((n, *noise.shape[1:]), generator=self.noise)
        return noise, noise + tc.input_perturbation * extra[mine].to(noise.device)
