"""Where a model's predictions go wrong, by noise level: the x0 error split into its
low-frequency part (each image's channel means: colour casts, backgrounds) and the rest
(shape, edges), and how much the caption changes the prediction (conditional minus
unconditional) at each noise level.

Colour and background are decided at the highest noise levels, where an ε error is
amplified by 1/√SNR in x0; a model whose caption gap vanishes there cannot follow colour
prompts however well it draws shapes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

# Timestep buckets on the 0..999 scale, from clean to pure noise. With GLIDE's cosine
# schedule σ is about 2 at t=700, 3 at 800, 6 at 900, 13 at 950 and 60 at 990.
DEFAULT_BUCKETS: tuple[tuple[int, int], ...] = (
    (0, 100), (100, 300), (300, 500), (500, 700), (700, 800), (800, 900), (900, 950),
    (950, 990), (990, 1000),
)


@dataclass
class BucketReport:
    """Errors of one timestep bucket, on the 0..255 pixel scale (mean over images)."""

    t_lo: int
    t_hi: int
    n: int
    eps_mse: float          # the training objective, unweighted
    x0_lowfreq: float       # mean |channel-mean error| of the x0 prediction
    x0_rest: float          # RMS of the x0 error with its channel means removed
    cond_gap: float         # RMS of x0(cond) − x0(uncond)
    cond_gap_lowfreq: float  # mean |channel-mean difference| of x0(cond) − x0(uncond)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def split_lowfreq(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-image channel means [N,3], the rest [N,3,H,W]) of an image batch."""
    means = x.mean(dim=(2, 3))
    return means, x - means[:, :, None, None]


@torch.no_grad()
def x0_report(
    model: torch.nn.Module,
    diffusion: Any,
    images: torch.Tensor,
    captions: Sequence[str],
    tokenizer: Any,
    *,
    buckets: Sequence[tuple[int, int]] = DEFAULT_BUCKETS,
    seed: int = 0,
    batch_size: int = 64,
) -> list[BucketReport]:
    """Per-bucket x0-prediction errors of ``model`` on ``images`` ([N,3,H,W] in [−1, 1]).

    Each image gets one timestep drawn uniformly inside each bucket and one noise draw, both
    from ``seed``, so two models (or two checkpoints of one run) are compared on the same
    noisy inputs. The unconditional prediction uses the empty caption, as guidance does.
    """
    opts = model.options
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    n = images.shape[0]
    tokens, mask = tokenizer.encode_batch(list(captions), opts.text_ctx)
    empty_tokens, empty_mask = tokenizer.encode_batch([""], opts.text_ctx)
    scale = 127.5
    reports = []
    for lo, hi in buckets:
        t_all = torch.randint(lo, hi, (n,), generator=gen)
        noise_all = torch.randn(images.shape, generator=gen)
        sums = torch.zeros(5, dtype=torch.float64)
        for start in range(0, n, batch_size):
            sl = slice(start, start + batch_size)
            x0, t, noise = images[sl].to(device), t_all[sl].to(device), noise_all[sl].to(device)
            b = x0.shape[0]
            xt = diffusion.q_sample(x0, t, noise)
            tok = torch.cat([tokens[sl], empty_tokens.expand(b, -1)]).to(device)
            msk = torch.cat([mask[sl], empty_mask.expand(b, -1)]).to(device)
            out = model(torch.cat([xt, xt]), diffusion.model_timesteps(torch.cat([t, t])),
                        tok, msk).float()
            eps_c, eps_u = out[:b, :3], out[b:, :3]
            x0_c = diffusion.predict_xstart_from_eps(xt, t, eps_c)
            x0_u = diffusion.predict_xstart_from_eps(xt, t, eps_u)
            err_means, err_rest = split_lowfreq((x0_c - x0) * scale)
            gap_means, _ = split_lowfreq((x0_c - x0_u) * scale)
            sums += torch.stack([
                ((eps_c - noise) ** 2).mean(dim=(1, 2, 3)).sum(),
                err_means.abs().mean(dim=1).sum(),
                err_rest.pow(2).mean(dim=(1, 2, 3)).sqrt().sum(),
                (x0_c - x0_u).mul(scale).pow(2).mean(dim=(1, 2, 3)).sqrt().sum(),
                gap_means.abs().mean(dim=1).sum(),
            ]).double().cpu()
        values = (sums / n).tolist()
        reports.append(BucketReport(lo, hi, n, *values))
    return reports


@torch.no_grad()
def swap_gap(
    model: torch.nn.Module,
    diffusion: Any,
    images: torch.Tensor,
    captions: Sequence[str],
    swapped: Sequence[str],
    tokenizer: Any,
    *,
    timesteps: Sequence[int] = (700, 850, 900, 940, 970, 990),
    seed: int = 0,
    part: str = "lowfreq",
) -> dict[int, float]:
    """How far one word moves the prediction: per timestep, the difference (0..255) between
    x0 for ``captions`` and for ``swapped`` (the same captions with one word changed, e.g.
    white ↔ black background) on the same noisy inputs. ``part`` "lowfreq": mean |channel-mean
    difference| (background, colour); "rest": RMS of the rest (shape).

    The conditional-minus-unconditional gap mixes every word; this isolates one. A model whose
    text encoder has dropped a word shows ~0 here at every noise level.
    """
    index = {"lowfreq": 0, "rest": 1}[part]
    opts = model.options
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    tokens = [tokenizer.encode_batch(list(c), opts.text_ctx) for c in (captions, swapped)]
    out = {}
    for step in timesteps:
        t = torch.full((images.shape[0],), int(step), device=device)
        noise = torch.randn(images.shape, generator=gen).to(device)
        xt = diffusion.q_sample(images.to(device), t, noise)
        parts = []
        for tok, msk in tokens:
            eps = model(xt, diffusion.model_timesteps(t), tok.to(device), msk.to(device))
            x0 = diffusion.predict_xstart_from_eps(xt, t, eps[:, :3].float())
            parts.append(split_lowfreq(x0.clamp(-1, 1) * 127.5)[index])
        diff = parts[0] - parts[1]
        out[int(step)] = float(diff.abs().mean() if index == 0 else diff.pow(2).mean().sqrt())
    return out


def format_report(reports: Sequence[BucketReport], title: str = "") -> str:
    """A plain-text table of :func:`x0_report`'s buckets."""
    lines = [title] if title else []
    lines.append(f"{'t':>9} {'eps mse':>8} {'x0 lowfreq':>10} {'x0 rest':>8} "
                 f"{'cond gap':>8} {'gap lowfreq':>11}")
    for r in reports:
        lines.append(f"{r.t_lo:>4}-{r.t_hi:<4} {r.eps_mse:8.4f} {r.x0_lowfreq:10.1f} "
                     f"{r.x0_rest:8.1f} {r.cond_gap:8.1f} {r.cond_gap_lowfreq:11.1f}")
    return "\n".join(lines)
