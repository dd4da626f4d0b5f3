"""FluxViT building blocks. Parameter names and shapes follow the released checkpoints (REFERENCE.md)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """RMSNorm computed in float32 and cast back before the weight, as the release does."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


class LayerScale(nn.Module):
    """Per-channel residual scale, applied in float32 like the release (it disables autocast there)."""

    def __init__(self, dim: int, init_values: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() * self.gamma.float()).to(x.dtype)


class DepthwiseConv3D(nn.Module):
    """A kernel-1 depthwise Conv3d: a learnable per-channel affine map, initialised to the identity.

    Used twice: ``gpe_proj`` (the global part of GLPE, on the positional grid) and ``attn.lpe`` (the local
    part, on V). Kept as a Conv3d so that checkpoint keys and shapes (``[C, 1, 1, 1, 1]``) match the release.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.depthwise_conv = nn.Conv3d(dim, dim, kernel_size=1, groups=dim)
        nn.init.ones_(self.depthwise_conv.weight)
        nn.init.zeros_(self.depthwise_conv.bias)

    def channelwise(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the map to a channels-last tensor ``[..., C]`` (same math as the conv, no reshapes)."""
        weight = self.depthwise_conv.weight.reshape(-1)
        return x * weight.to(x.dtype) + self.depthwise_conv.bias.to(x.dtype)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        """``grid``: ``[B, C, T, H, W]``."""
        return self.depthwise_conv(grid)


class DropPath(nn.Module):
    """Stochastic depth per sample."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class Attention(nn.Module):
    """Multi-head self-attention with qk-RMSNorm over the full width and the LPE term on V.

    Z = (softmax(QK^T / sqrt(d)) + LPE) V, where LPE(V) is a per-channel affine map of V (paper eq. 1),
    added to the attention output before the output projection.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, qk_norm: bool, use_lpe: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = RMSNorm(dim) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(dim) if qk_norm else nn.Identity()
        self.lpe = DepthwiseConv3D(dim) if use_lpe else None
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, need_cls_attention: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns the output and, if asked, the CLS token's attention over all tokens ``[B, heads, N]``."""
        batch, n, dim = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q, k = self.q_norm(q), self.k_norm(k)
        local = self.lpe.channelwise(v) if self.lpe is not None else None
        q, k, v = (t.reshape(batch, n, self.num_heads, self.head_dim).transpose(1, 2) for t in (q, k, v))
        cls_attention = None
        if need_cls_attention:
            scores = (q * self.head_dim**-0.5) @ k.transpose(-2, -1)
            attn = scores.float().softmax(dim=-1).to(q.dtype)
            cls_attention = attn[:, :, 0, :]
            out = attn @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).reshape(batch, n, dim)
        if local is not None:
            out = out + local
        return self.proj(out), cls_attention


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: RMSNorm, attention, LayerScale; RMSNorm, MLP, LayerScale."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, qk_norm: bool, use_lpe: bool,
        init_values: float, drop_path: float,
    ) -> None:
        super().__init__()
        self.norm1 = RMSNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias, qk_norm, use_lpe)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.norm2 = RMSNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, need_cls_attention: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn_out, cls_attention = self.attn(self.norm1(x), need_cls_attention)
        x = x + self.drop_path(self.ls1(attn_out))
        x = x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))
        return x, cls_attention


class PatchEmbed(nn.Module):
    """Tubelet patch embedding with Dual Patch Norm (RMSNorm on raw patches, and again after the projection).

    ``norm_before`` normalises each flattened patch laid out as (tubelet, row, column, channel), the order the
    released weights were trained with. It is computed without materialising the flattened patches: RMSNorm
    scales a whole patch by one number, so its weight folds into the Conv3d kernel and the per-patch
    1 / rms (an average pool of the squared pixels) scales the projection's output. Same math; on a CPU its
    forward and backward take about a third of the time of the permuted patch tensor's (28 against 78 ms).
    """

    def __init__(self, patch_size: int, tubelet_size: int, in_chans: int, dim: int, use_dpn: bool) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.tubelet_size = tubelet_size
        patch_dim = tubelet_size * patch_size * patch_size * in_chans
        self.norm_before = RMSNorm(patch_dim) if use_dpn else None
        self.proj = nn.Conv3d(in_chans, dim, kernel_size=(tubelet_size, patch_size, patch_size),
                              stride=(tubelet_size, patch_size, patch_size))
        self.norm = RMSNorm(dim) if use_dpn else nn.Identity()

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """``video`` ``[B, C, T, H, W]`` -> patch tokens ``[B, T', H', W', dim]``."""
        _, chans, frames, height, width = video.shape
        tp, p = self.tubelet_size, self.patch_size
        if frames % tp or height % p or width % p:
            raise ValueError(
                f"input of {frames} frames x {height}x{width} px does not divide into {tp}x{p}x{p} patches"
            )
        if self.norm_before is None:
            tokens = self.proj(video)  # [B, dim, T', H', W']
            return self.norm(tokens.permute(0, 2, 3, 4, 1))
        pixels = video.float()
        mean_square = F.avg_pool3d(pixels * pixels, self.proj.kernel_size).mean(1, keepdim=True)
        inv_rms = torch.rsqrt(mean_square + self.norm_before.eps)  # [B, 1, T', H', W']
        # norm_before.weight is laid out (t, row, col, c); the Conv3d kernel is (c, t, row, col).
        patch_weight = self.norm_before.weight.float().reshape(tp, p, p, chans).permute(3, 0, 1, 2)
        kernel = self.proj.weight.float() * patch_weight
        tokens = F.conv3d(pixels, kernel, stride=self.proj.stride) * inv_rms
        tokens = tokens + self.proj.bias.float().view(1, -1, 1, 1, 1)
        return self.norm(tokens.permute(0, 2, 3, 4, 1).to(video.dtype))


class CrossAttention(nn.Module):
    """Attention of a few queries over all tokens, with separate q/k/v biases as in the release."""

    def __init__(self, dim: int, num_heads: int, out_dim: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.k_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, out_dim)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        batch, nq, dim = query.shape
        heads, head_dim = self.num_heads, dim // self.num_heads
        q = F.linear(query, self.q.weight, self.q_bias).reshape(batch, nq, heads, head_dim).transpose(1, 2)
        k = F.linear(key, self.k.weight, self.k_bias).reshape(batch, -1, heads, head_dim).transpose(1, 2)
        v = F.linear(value, self.v.weight, self.v_bias).reshape(batch, -1, heads, head_dim).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, nq, dim))


class AttentionPoolingBlock(nn.Module):
    """Pools all tokens into one vector: the query is the mean token; LayerNorms on q, k and v inputs."""

    def __init__(self, dim: int, num_heads: int, out_dim: int) -> None:
        super().__init__()
        self.norm1_q = nn.LayerNorm(dim, eps=1e-5)
        self.norm1_k = nn.LayerNorm(dim, eps=1e-5)
        self.norm1_v = nn.LayerNorm(dim, eps=1e-5)
        self.cross_attn = CrossAttention(dim, num_heads, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        query = self.norm1_q(x.mean(1, keepdim=True))
        return self.cross_attn(query, self.norm1_k(x), self.norm1_v(x)).squeeze(1)


class LinearDecoder(nn.Module):
    """Linear + LayerNorm + L2 normalisation: the alignment heads used for distillation."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.head = nn.Linear(in_dim, out_dim)
        self.norm = nn.LayerNorm(out_dim, eps=1e-5)
        nn.init.xavier_uniform_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.norm(self.head(x)), dim=-1)
