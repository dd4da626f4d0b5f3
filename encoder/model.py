"""FluxViT (paper 3.3): a ViT with Dual Patch Norm, Global-Local positional embedding, token selection and
three attention-pooling heads, one per token-count regime. State-dict compatible with the release."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.utils.checkpoint
from torch import nn

from .budget import head_for_tokens
from .config import FluxViTConfig, get_config
from .layers import AttentionPoolingBlock, Block, DepthwiseConv3D, LinearDecoder, PatchEmbed
from .posembed import resize_grid, sincos_3d
from .selectors import select_tokens


@dataclass
class EncoderOutput:
    """What :meth:`FluxViT.encode` returns."""

    pooled: torch.Tensor  # [B, clip_embed_dim]: attention-pooled feature (before fc_norm / head)
    tokens: torch.Tensor  # [B, 1 + K, C]: last-block features, CLS first, then the kept patch tokens
    positions: torch.Tensor  # [B, K]: flat (t * H' * W' + y * W' + x) index of every kept patch token
    grid: tuple[int, int, int]  # (T', H', W') patch grid of the input
    head: int
    hidden: tuple[torch.Tensor, ...] = ()  # outputs of the last ``num_hidden`` blocks, oldest first
    cls_attention: torch.Tensor | None = None  # [B, heads, 1 + K]: last block's CLS attention, if asked


class FluxViT(nn.Module):
    def __init__(self, config: FluxViTConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.embed_dim
        t0 = config.num_frames // config.tubelet_size
        g0 = config.grid_size
        self.patch_embed = PatchEmbed(config.patch_size, config.tubelet_size, config.in_chans, dim, config.use_dpn)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + t0 * g0 * g0, dim))
        self.gpe_proj = DepthwiseConv3D(dim) if config.use_gpe else None
        rates = torch.linspace(0, config.drop_path_rate, config.depth).tolist()
        self.blocks = nn.ModuleList([
            Block(dim, config.num_heads, config.mlp_ratio, config.qkv_bias, config.qk_norm, config.use_lpe,
                  config.init_values, rates[i])
            for i in range(config.depth)
        ])
        self.clip_projector = nn.ModuleList([
            AttentionPoolingBlock(dim, config.attn_pool_num_heads, config.clip_embed_dim) for _ in range(3)
        ])
        self.fc_norm = nn.LayerNorm(config.clip_embed_dim)
        self.fc_dropout = nn.Dropout(config.fc_drop_rate) if config.fc_drop_rate > 0 else nn.Identity()
        self.head = nn.ModuleList([
            nn.Linear(config.clip_embed_dim, config.num_classes) if config.num_classes else nn.Identity()
            for _ in range(3)
        ])
        self.final_clip_decoder_for_projs = nn.ModuleList([
            LinearDecoder(config.clip_embed_dim, config.clip_embed_dim) for _ in range(config.num_align_heads)
        ])
        self.grad_checkpointing = False
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        t0, g0 = self.config.num_frames // self.config.tubelet_size, self.config.grid_size
        with torch.no_grad():
            self.pos_embed[0, 1:] = sincos_3d(self.config.embed_dim, t0, g0)
            for depth, block in enumerate(self.blocks, start=1):  # residual-branch rescaling, as the release
                block.attn.proj.weight.div_(math.sqrt(2.0 * depth))
                block.mlp.fc2.weight.div_(math.sqrt(2.0 * depth))

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        self.grad_checkpointing = enabled

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def positional_embedding(self, frames: int, height: int, width: int) -> torch.Tensor:
        """``[1 + frames*height*width, C]`` for a patch grid: GPE on the stored grid, then resize; CLS row kept."""
        t0, g0, dim = self.config.num_frames // self.config.tubelet_size, self.config.grid_size, self.config.embed_dim
        cls_row, grid = self.pos_embed[0, :1], self.pos_embed[0, 1:].reshape(t0, g0, g0, dim)
        if self.gpe_proj is not None:
            grid = self.gpe_proj.channelwise(grid)
        grid = resize_grid(grid, frames, height, width)
        return torch.cat([cls_row, grid.reshape(-1, dim)], dim=0)

    def select(
        self, video: torch.Tensor, keep_tokens: int, selector: str = "group_dynamic",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Kept positions ``[B, K]`` for a video, as the model's forward would choose them."""
        with torch.no_grad():
            patches = self.patch_embed(video.to(self.pos_embed.dtype))
        batch, t, h, w, dim = patches.shape
        return select_tokens(patches.reshape(batch, t, h * w, dim), keep_tokens, selector, generator)

    def encode(
        self,
        video: torch.Tensor,
        keep_tokens: int | None = None,
        head: int | None = None,
        selector: str = "group_dynamic",
        positions: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        num_hidden: int = 0,
        need_cls_attention: bool = False,
    ) -> EncoderOutput:
        """Encode ``video`` ``[B, 3, T, H, W]`` (normalised RGB).

        ``keep_tokens``: run the selector to keep that many patch tokens (None or >= all: keep all).
        ``positions``: explicit kept positions ``[B, K]`` instead (e.g. a teacher-guided mask).
        ``head``: pooling head; None picks the one trained for the token count nearest to the tokens used.
        """
        if video.ndim != 5 or video.shape[1] != self.config.in_chans:
            raise ValueError(f"expected video [B, {self.config.in_chans}, T, H, W], got {tuple(video.shape)}")
        patches = self.patch_embed(video.to(self.pos_embed.dtype))
        batch, t, h, w, dim = patches.shape
        flat = patches.reshape(batch, t * h * w, dim)
        if positions is None:
            if keep_tokens is not None and keep_tokens < t * h * w:
                positions = select_tokens(patches.reshape(batch, t, h * w, dim), keep_tokens, selector, generator)
            else:
                positions = torch.arange(t * h * w, device=flat.device).expand(batch, -1)
        elif positions.shape[0] != batch or positions.ndim != 2:
            raise ValueError(f"positions must be [B={batch}, K], got {tuple(positions.shape)}")
        pos = self.positional_embedding(t, h, w).to(flat.dtype)
        kept = torch.gather(flat, 1, positions[..., None].expand(-1, -1, dim)) + pos[1:][positions]
        x = torch.cat([(self.cls_token[0] + pos[:1]).expand(batch, -1, -1), kept], dim=1)

        hidden: list[torch.Tensor] = []
        cls_attention = None
        last = len(self.blocks) - 1
        for index, block in enumerate(self.blocks):
            want_attention = need_cls_attention and index == last
            if self.grad_checkpointing and self.training and not want_attention:
                x, _ = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x, attention = block(x, want_attention)
                cls_attention = attention if want_attention else cls_attention
            if index > last - num_hidden:
                hidden.append(x)

        used = positions.shape[1]
        head_index = head_for_tokens(self.config, used) if head is None else head
        if not 0 <= head_index < 3:
            raise ValueError(f"head must be 0, 1 or 2, got {head}")
        pooled = self.clip_projector[head_index](x)
        return EncoderOutput(pooled=pooled, tokens=x, positions=positions, grid=(t, h, w), head=head_index,
                             hidden=tuple(hidden), cls_attention=cls_attention)

    def classify(self, pooled: torch.Tensor, head: int) -> torch.Tensor:
        """Logits from a pooled feature: fc_norm, dropout, then the head of that regime."""
        return self.head[head](self.fc_dropout(self.fc_norm(pooled)))

    def align(self, pooled: torch.Tensor, index: int = 0) -> torch.Tensor:
        """L2-normalised alignment projection of a pooled feature (used in distillation / CLIP training)."""
        return self.final_clip_decoder_for_projs[index](pooled)

    def forward(
        self, video: torch.Tensor, keep_tokens: int | None = None, head: int | None = None, **kwargs: Any
    ) -> torch.Tensor:
        """Logits ``[B, num_classes]`` (with ``num_classes == 0``: the normalised pooled feature)."""
        out = self.encode(video, keep_tokens=keep_tokens, head=head, **kwargs)
        return self.classify(out.pooled, out.head)


def create_model(name: str | FluxViTConfig, num_classes: int = 0, **overrides: Any) -> FluxViT:
    """Build a registered FluxViT (``encoder.list_models()``) with optional config overrides."""
    config = get_config(name) if isinstance(name, str) else name
    return FluxViT(config.replace(num_classes=num_classes, **overrides))

