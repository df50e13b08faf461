"""The text-conditional GLIDE UNet for all four kinds: base, upsample and their inpaint twins.

One class covers the kinds; they differ only in what is concatenated to ``x_t``:
``[x_t, inpaint_image * inpaint_mask, inpaint_mask, bilinear(low_res)]`` (parts present per kind).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .layers import (
    AttentionBlock,
    Downsample,
    EmbedSequential,
    GroupNorm32,
    LayerNorm32,
    ResBlock,
    Upsample,
    kept_timestep_features,
    timestep_embedding,
)
from .options import ModelOptions
from .transformer import Transformer

TextEmb = dict[str, torch.Tensor]


class GlideUNet(nn.Module):
    """OpenAI's Text2ImUNet family with OpenAI's parameter names, order and shapes."""

    def __init__(self, options: ModelOptions):
        super().__init__()
        o = options
        self.options = o
        self.model_channels = o.num_channels
        self.gradient_checkpointing = False
        mc, ted, mults = o.num_channels, o.time_embed_dim, o.channel_mults
        attention_ds = set(o.attention_ds)
        heads_up = o.num_heads if o.num_heads_upsample == -1 else o.num_heads_upsample

        # Owned parameters come first in state_dict() order, as in OpenAI's checkpoints.
        self.positional_embedding = nn.Parameter(torch.empty(o.text_ctx, o.xf_width))
        if o.xf_padding:
            self.padding_embedding = nn.Parameter(torch.empty(o.text_ctx, o.xf_width))

        self.time_embed = nn.Sequential(nn.Linear(mc, ted), nn.SiLU(), nn.Linear(ted, ted))

        def res(ch_in: int, ch_out: int, **kw: bool) -> ResBlock:
            return ResBlock(ch_in, ted, o.dropout, ch_out, o.use_scale_shift_norm, **kw)

        def attn(ch: int, heads: int) -> AttentionBlock:
            return AttentionBlock(ch, heads, o.num_head_channels, encoder_channels=o.xf_width)

        ch = int(mults[0] * mc)
        self.input_blocks = nn.ModuleList(
            [EmbedSequential(nn.Conv2d(o.in_channels, ch, 3, padding=1))]
        )
        skip_chans, ds = [ch], 1
        for level, mult in enumerate(mults):
            for _ in range(o.num_res_blocks):
                layers: list[nn.Module] = [res(ch, int(mult * mc))]
                ch = int(mult * mc)
                if ds in attention_ds:
                    layers.append(attn(ch, o.num_heads))
                self.input_blocks.append(EmbedSequential(*layers))
                skip_chans.append(ch)
            if level != len(mults) - 1:
                down = res(ch, ch, down=True) if o.resblock_updown else Downsample(ch, True)
                self.input_blocks.append(EmbedSequential(down))
                skip_chans.append(ch)
                ds *= 2

        self.middle_block = EmbedSequential(res(ch, ch), attn(ch, o.num_heads), res(ch, ch))

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(mults))):
            for i in range(o.num_res_blocks + 1):
                layers = [res(ch + skip_chans.pop(), int(mc * mult))]
                ch = int(mc * mult)
                if ds in attention_ds:
                    layers.append(attn(ch, heads_up))
                if level and i == o.num_res_blocks:
                    layers.append(res(ch, ch, up=True) if o.resblock_updown else Upsample(ch, True))
                    ds //= 2
                self.output_blocks.append(EmbedSequential(*layers))

        self.out = nn.Sequential(
            GroupNorm32(ch), nn.SiLU(), nn.Conv2d(int(mults[0] * mc), o.out_channels, 3, padding=1)
        )
        nn.init.zeros_(self.out[2].weight)
        nn.init.zeros_(self.out[2].bias)

        self.transformer = Transformer(o.xf_width, o.xf_layers, o.xf_heads)
        if o.xf_final_ln:
            self.final_ln = LayerNorm32(o.xf_width)
        self.token_embedding = nn.Embedding(o.n_vocab, o.xf_width)
        self.transformer_proj = nn.Linear(o.xf_width, ted)

        # OpenAI leaves these two uninitialised (th.empty); small normals train well from scratch.
        nn.init.normal_(self.positional_embedding, std=0.01)
        if o.xf_padding:
            nn.init.normal_(self.padding_embedding, std=0.01)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        w = self.time_embed[0].weight
        if o.time_embed_max_freq > 0 and not w.is_meta:  # the inputs forward() drops weigh 0,
            with torch.no_grad():  # so OpenAI's code computes the same function
                w[:, ~kept_timestep_features(mc, o.time_embed_max_freq, w.device)] = 0
        if o.use_fp16:
            self.convert_to_fp16()

    # ------------------------------------------------------------------ options
    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each UNet block and transformer layer in backward instead of storing it."""
        self.gradient_checkpointing = bool(enabled)
        self.transformer.gradient_checkpointing = bool(enabled)

    def convert_to_fp16(self) -> None:
        """Cast what OpenAI's ``convert_to_fp16`` casts and run the UNet torso in float16.

        Torso convs, transformer Linears, token_embedding and transformer_proj become float16;
        norms, ``emb_layers``, ``time_embed``, ``out`` and the positional/padding embeddings stay
        float32.
        """
        for blocks in (self.input_blocks, self.middle_block, self.output_blocks):
            for m in blocks.modules():
                if isinstance(m, (nn.Conv1d, nn.Conv2d)):
                    m.half()
        for m in self.transformer.modules():
            if isinstance(m, nn.Linear):
                m.half()
        self.token_embedding.half()
        self.transformer_proj.half()

    @property
    def torso_dtype(self) -> torch.dtype:
        """The dtype the UNet torso and the text transformer compute in: their weights' (float16
        after :meth:`convert_to_fp16`, whatever ``model.to(dtype)`` made them)."""
        return next(p.dtype for n, p in self.input_blocks[0].named_parameters()
                    if "lora_" not in n)

    @property
    def variance_trained(self) -> bool:
        """Whether the learned-variance output channels carry anything: their weights and
        bias start at zero, and a network trained without the variance term (``train.loss =
        "eps"``) keeps them there, so its v is 0 everywhere, a variance no sampler should
        take (ancestral DDPM then uses the posterior variance β̃)."""
        conv = self.out[2]
        conv = getattr(conv, "base_layer", conv)  # a LoRA on it adds no variance to a zero head
        if conv.out_channels <= 3:
            return False
        return bool(conv.weight[3:].detach().any() or conv.bias[3:].detach().any())

    # ------------------------------------------------------------------ forward
    def encode_text(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> TextEmb:
        """Text conditioning, computed once per prompt batch and reused on every step.

        Returns ``xf_proj`` [B, 4*num_channels] (added to the time embedding, from the LAST
        position even when it is padding) and ``xf_out`` [B, xf_width, text_ctx] (NCL).
        """
        xf_in = self.token_embedding(tokens.long()) + self.positional_embedding[None]
        if self.options.xf_padding:
            if mask is None:
                mask = torch.ones(tokens.shape, dtype=torch.bool, device=tokens.device)
            xf_in = torch.where(mask[..., None].bool(), xf_in, self.padding_embedding[None])
        xf_out = self.transformer(xf_in.to(self.torso_dtype))
        if self.options.xf_final_ln:
            xf_out = self.final_ln(xf_out)
        xf_proj = self.transformer_proj(xf_out[:, -1])
        return {"xf_proj": xf_proj, "xf_out": xf_out.permute(0, 2, 1)}

    def _inputs(
        self,
        x: torch.Tensor,
        low_res: torch.Tensor | None,
        inpaint_image: torch.Tensor | None,
        inpaint_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        parts = [x]
        if self.options.inpaint:
            image = torch.zeros_like(x) if inpaint_image is None else inpaint_image.to(x)
            mask = torch.zeros_like(x[:, :1]) if inpaint_mask is None else inpaint_mask.to(x)
            parts += [image * mask, mask]
        if self.options.super_res:
            if low_res is None:
                raise ValueError(f"a {self.options.kind} model needs low_res=")
            parts.append(
                F.interpolate(low_res.to(x), x.shape[-2:], mode="bilinear", align_corners=False)
            )
        return torch.cat(parts, dim=1) if len(parts) > 1 else x

    def _block(self, block: nn.Module, h: torch.Tensor, emb: torch.Tensor,
               xf_out: torch.Tensor) -> torch.Tensor:
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, h, emb, xf_out, use_reentrant=False)
        return block(h, emb, xf_out)

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor | float,
        tokens: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        *,
        low_res: torch.Tensor | None = None,
        inpaint_image: torch.Tensor | None = None,
        inpaint_mask: torch.Tensor | None = None,
        text_emb: TextEmb | None = None,
    ) -> torch.Tensor:
        """[B, 6, H, W]: ε then the variance values v, for timesteps on the 0..T-1 scale."""
        t = torch.as_tensor(timesteps, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        if text_emb is None:
            if tokens is None:
                raise ValueError("GlideUNet needs tokens= (with mask=) or text_emb=")
            text_emb = self.encode_text(tokens, mask)
        emb = self.time_embed(
            timestep_embedding(t, self.model_channels, max_freq=self.options.time_embed_max_freq)
            .to(next(self.time_embed.parameters()).dtype)
        )
        emb = emb + text_emb["xf_proj"].to(emb)
        xf_out = text_emb["xf_out"]

        h = self._inputs(x, low_res, inpaint_image, inpaint_mask).to(self.torso_dtype)
        skips = []
        for block in self.input_blocks:
            h = self._block(block, h, emb, xf_out)
            skips.append(h)
        h = self._block(self.middle_block, h, emb, xf_out)
        for block in self.output_blocks:
            h = self._block(block, torch.cat([h, skips.pop()], dim=1), emb, xf_out)
        return self.out(h.to(next(self.out.parameters()).dtype))


def create_model(options: ModelOptions) -> GlideUNet:
    """Build the network for ``options`` (on the current default device, e.g. ``meta``)."""
    return GlideUNet(options)
