"""UNet building blocks: float32 norms, timestep embedding, resampling, ResBlock, AttentionBlock.

Parameter names and shapes follow OpenAI's glide-text2im so their checkpoints load unchanged.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn


class GroupNorm32(nn.GroupNorm):
    """GroupNorm with 32 groups that always computes in float32 (also under autocast)."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__(32, channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            y = F.group_norm(x.float(), self.num_groups, self._f32(self.weight),
                             self._f32(self.bias), self.eps)
        return y.to(x.dtype)

    @staticmethod
    def _f32(p: torch.Tensor | None) -> torch.Tensor | None:
        return None if p is None else p.float()


class LayerNorm32(nn.LayerNorm):
    """LayerNorm that always computes in float32 and returns the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            y = F.layer_norm(x.float(), self.normalized_shape, self.weight.float(),
                             self.bias.float(), self.eps)
        return y.to(x.dtype)


def timestep_frequencies(dim: int, max_period: float = 10000.0, device=None,
                         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The dim // 2 angular frequencies (radians per timestep) of the sinusoidal embedding."""
    half = dim // 2
    return torch.exp(-math.log(max_period) * torch.arange(half, dtype=dtype, device=device) / half)


def kept_timestep_features(dim: int, max_freq: float, device=None,
                           max_period: float = 10000.0) -> torch.Tensor:
    """[dim] bools: the embedding features of frequency <= ``max_freq`` (all when it is 0).

    Decided in float64 with a relative margin of 1e-6, so that a frequency equal to
    ``max_freq`` (10000^-1/2 = 0.01 for every width divisible by 4) is kept on every machine,
    whatever the last bit of its float32 ``exp``. Built once per width, cut-off and device
    (every forward pass asks), except under a FakeTensorMode (``model_cost`` counts FLOPs in
    one): a tensor made there is fake, and a cached one must serve neither mode in the other,
    so there it is built afresh (nothing is allocated) and not cached."""
    device = str(torch.device(device or "cpu"))
    if _fake_mode_active():
        return _build_kept(dim, max_freq, device, max_period)
    return _kept(dim, max_freq, device, max_period)


def _fake_mode_active() -> bool:
    """Whether tensors made now would be FakeTensors (a FakeTensorMode is active)."""
    from torch._guards import detect_fake_mode

    return detect_fake_mode() is not None


def _build_kept(dim: int, max_freq: float, device: str, max_period: float) -> torch.Tensor:
    freqs = timestep_frequencies(dim, max_period, device="cpu", dtype=torch.float64)
    if max_freq > 0:
        keep = freqs <= max_freq * (1 + 1e-6)
    else:
        keep = torch.ones(dim // 2, dtype=torch.bool, device="cpu")
    return torch.cat([keep, keep, keep.new_ones(dim % 2)]).to(device)


@functools.lru_cache(maxsize=32)
def _kept(dim: int, max_freq: float, device: str, max_period: float) -> torch.Tensor:
    return _build_kept(dim, max_freq, device, max_period)


def timestep_embedding(
    t: torch.Tensor, dim: int, max_period: float = 10000.0, max_freq: float = 0.0
) -> torch.Tensor:
    """Sinusoidal embedding [cos | sin] of (possibly fractional) timesteps, shape [B, dim].

    ``max_freq`` > 0 zeroes the features whose frequency is above it.
    """
    args = t[:, None].float() * timestep_frequencies(dim, max_period, t.device)[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    if max_freq > 0:
        emb = emb * kept_timestep_features(dim, max_freq, t.device, max_period)
    return emb


class Downsample(nn.Module):
    """Halve the resolution: a strided 3x3 conv (``op``) or 2x2 average pooling."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        out_channels = out_channels or channels
        if use_conv:
            self.op: nn.Module = nn.Conv2d(channels, out_channels, 3, stride=2, padding=1)
        else:
            self.op = nn.AvgPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Double the resolution (nearest), optionally followed by a 3x3 conv."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        if use_conv:
            self.conv = nn.Conv2d(channels, out_channels or channels, 3, padding=1)
        self.use_conv = use_conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class ResBlock(nn.Module):
    """Residual block conditioned on the embedding, optionally resampling (up/down)."""

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: int | None = None,
        use_scale_shift_norm: bool = True,
        up: bool = False,
        down: bool = False,
    ):
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(
            GroupNorm32(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.updown = up or down
        if up:
            self.h_upd: nn.Module = Upsample(channels, False)
            self.x_upd: nn.Module = Upsample(channels, False)
        elif down:
            self.h_upd = Downsample(channels, False)
            self.x_upd = Downsample(channels, False)
        self.emb_layers = nn.Sequential(
            nn.SiLU(),
            nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels),
        )
        self.out_layers = nn.Sequential(
            GroupNorm32(out_channels),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        nn.init.zeros_(self.out_layers[3].weight)
        nn.init.zeros_(self.out_layers[3].bias)
        if out_channels == channels:
            self.skip_connection: nn.Module = nn.Identity()
        else:
            self.skip_connection = nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.updown:
            h = self.in_layers[1](self.in_layers[0](x))
            h = self.in_layers[2](self.h_upd(h))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            for layer in self.out_layers[1:]:
                h = layer(h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


def _conv1x1(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """A kernel-1 Conv1d applied to channels-last tokens [B, T, Cin] -> [B, T, Cout].

    A wrapped conv (e.g. a peft LoRA layer) is called as a module so that its adapter applies;
    its output is made contiguous, else attention falls back to a slow, memory-hungry kernel.
    """
    if not isinstance(conv, nn.Conv1d):
        return conv(x.transpose(1, 2)).transpose(1, 2).contiguous()
    return F.linear(x, conv.weight.squeeze(-1), conv.bias)


class AttentionBlock(nn.Module):
    """Spatial self-attention whose keys/values are prefixed by the text's (``encoder_kv``).

    The 1x1 convs keep OpenAI's per-head channel layout: ``qkv`` holds [q_h, k_h, v_h] for
    each head h in turn, ``encoder_kv`` holds [k_h, v_h]; text keys come before image keys.
    """

    def __init__(
        self,
        channels: int,
        num_heads: int = 1,
        num_head_channels: int = -1,
        encoder_channels: int | None = None,
    ):
        super().__init__()
        self.channels = channels
        self.num_heads = num_heads if num_head_channels == -1 else channels // num_head_channels
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        if encoder_channels is not None:
            self.encoder_kv = nn.Conv1d(encoder_channels, 2 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor, encoder_out: torch.Tensor | None = None) -> torch.Tensor:
        b, c, *spatial = x.shape
        heads, ch = self.num_heads, c // self.num_heads
        tokens = self.norm(x).reshape(b, c, -1).transpose(1, 2)  # [B, T, C]
        t = tokens.shape[1]
        qkv = _conv1x1(tokens, self.qkv).view(b, t, heads, 3 * ch).transpose(1, 2)
        q, k, v = qkv.split(ch, dim=-1)  # each [B, H, T, ch]
        if encoder_out is not None:
            ekv = _conv1x1(encoder_out.transpose(1, 2).to(tokens.dtype), self.encoder_kv)
            ek, ev = ekv.view(b, -1, heads, 2 * ch).transpose(1, 2).split(ch, dim=-1)
            k = torch.cat([ek.to(k.dtype), k], dim=2)
            v = torch.cat([ev.to(v.dtype), v], dim=2)
        a = F.scaled_dot_product_attention(q, k, v)  # [B, H, T, ch]
        a = a.transpose(1, 2).reshape(b, t, c)
        h = _conv1x1(a, self.proj_out).transpose(1, 2).reshape(b, c, *spatial)
        return x + h.to(x.dtype)


class EmbedSequential(nn.Sequential):
    """A UNet block: layers that take the embedding or the text get it, others just ``h``."""

    def forward(  # type: ignore[override]
        self, h: torch.Tensor, emb: torch.Tensor, encoder_out: torch.Tensor | None = None
    ) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                h = layer(h, emb)
            elif isinstance(layer, AttentionBlock):
                h = layer(h, encoder_out)
            else:
                h = layer(h)
        return h
