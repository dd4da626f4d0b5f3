"""A literal, slow re-statement of the released FluxViT forward pass, written from its description
(REFERENCE.md and the paper) for numerical comparison: functional over a state dict, naive attention,
Conv3d patch embedding, the release's masking-ratio selector and its square-grid positional resizing.
It shares no code with ``encoder/``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


def _depthwise(x: torch.Tensor, sd: dict, prefix: str) -> torch.Tensor:
    return F.conv3d(x, sd[f"{prefix}.depthwise_conv.weight"], sd[f"{prefix}.depthwise_conv.bias"], groups=x.shape[1])


def patch_embed(sd: dict, video: torch.Tensor, patch: int, tubelet: int) -> torch.Tensor:
    b, c, t, h, w = video.shape
    x = video.permute(0, 2, 3, 4, 1)
    x = x.reshape(b, t // tubelet, tubelet, h // patch, patch, w // patch, patch, c)
    x = x.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(b, -1, tubelet * patch * patch * c)
    x = _rms(x, sd["patch_embed.norm_before.weight"])
    x = x.reshape(b, t // tubelet, h // patch, w // patch, tubelet, patch, patch, c)
    x = x.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, t, h, w, c).permute(0, 4, 1, 2, 3)
    x = F.conv3d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=(tubelet, patch, patch))
    x = x.flatten(3).permute(0, 2, 3, 1)
    return _rms(x, sd["patch_embed.norm.weight"])


def release_mask(x: torch.Tensor, masking_ratio: float) -> torch.Tensor:
    """True = dropped. Groups of consecutive frames: 4 if T % 4 == 0, 1 if T == 2, else 2.

    A group's first frame copies its second frame's scores, so equal scores always occur; the release's
    unstable sort breaks them arbitrarily, and the definition used here (and in encoder/) keeps the earlier.
    """
    b, t, l, c = x.shape
    groups = 4 if t % 4 == 0 else (1 if t == 2 else 2)
    tg = t // groups
    v = x.reshape(b * groups, tg, l, c)
    distance = torch.norm(v[:, : tg - 1] - v[:, 1:], p=2, dim=3)
    importance = torch.cat((distance[:, 0, :], distance.flatten(1)), dim=1)
    order = torch.argsort(importance, dim=1, descending=True, stable=True)
    keep = int((1 - masking_ratio) * (tg * l))
    mask = torch.ones(b * groups, tg * l)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, torch.argsort(order, dim=1))
    return mask.reshape(b, t * l).bool()


def positional(sd: dict, t0: int, g0: int, t: int, g: int) -> torch.Tensor:
    pe = sd["pos_embed"]
    dim = pe.shape[-1]
    cls_pos, grid = pe[:, :1], pe[:, 1:].reshape(1, t0, g0, g0, dim).permute(0, 4, 1, 2, 3)
    grid = _depthwise(grid, sd, "gpe_proj").permute(0, 2, 3, 4, 1).reshape(1, -1, dim)
    if t != t0:
        seq = grid.reshape(1, t0, -1, dim).permute(0, 2, 3, 1).reshape(-1, dim, t0)
        seq = F.interpolate(seq, size=t, mode="linear")
        grid = seq.reshape(1, -1, dim, t).permute(0, 3, 1, 2).reshape(1, -1, dim)
    if g != g0:
        planes = grid.reshape(t, g0, g0, dim).permute(0, 3, 1, 2)
        planes = F.interpolate(planes, size=(g, g), mode="bicubic", align_corners=False)
        grid = planes.permute(0, 2, 3, 1).reshape(1, -1, dim)
    return torch.cat((cls_pos, grid), dim=1)


def _block(sd: dict, i: int, x: torch.Tensor, heads: int) -> torch.Tensor:
    p = f"blocks.{i}"
    b, n, c = x.shape
    h = _rms(x, sd[f"{p}.norm1.weight"])
    qkv = (h @ sd[f"{p}.attn.qkv.weight"].T).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    q = _rms(q.transpose(1, 2).flatten(-2), sd[f"{p}.attn.q_norm.weight"]).view(b, n, heads, -1).transpose(1, 2)
    k = _rms(k.transpose(1, 2).flatten(-2), sd[f"{p}.attn.k_norm.weight"]).view(b, n, heads, -1).transpose(1, 2)
    v_flat = v.permute(0, 2, 1, 3).reshape(b, n, c)
    lpe = _depthwise(v_flat.permute(0, 2, 1).reshape(b, c, 1, n, 1), sd, f"{p}.attn.lpe")
    lpe = lpe.reshape(b, c, n).permute(0, 2, 1)
    attn = ((q * (c // heads) ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
    out = (attn @ v).transpose(1, 2).reshape(b, n, c)
    out = F.linear(out + lpe, sd[f"{p}.attn.proj.weight"], sd[f"{p}.attn.proj.bias"])
    x = x + sd[f"{p}.ls1.gamma"] * out
    h = _rms(x, sd[f"{p}.norm2.weight"])
    h = F.linear(F.gelu(F.linear(h, sd[f"{p}.mlp.fc1.weight"], sd[f"{p}.mlp.fc1.bias"])),
                 sd[f"{p}.mlp.fc2.weight"], sd[f"{p}.mlp.fc2.bias"])
    return x + sd[f"{p}.ls2.gamma"] * h


def _pool(sd: dict, i: int, x: torch.Tensor, heads: int) -> torch.Tensor:
    p = f"clip_projector.{i}"
    c = x.shape[-1]

    def ln(y: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(y, (c,), sd[f"{p}.{name}.weight"], sd[f"{p}.{name}.bias"], eps=1e-5)

    q_in, k_in, v_in = ln(x.mean(1, keepdim=True), "norm1_q"), ln(x, "norm1_k"), ln(x, "norm1_v")
    q = F.linear(q_in, sd[f"{p}.cross_attn.q.weight"], sd[f"{p}.cross_attn.q_bias"])
    k = F.linear(k_in, sd[f"{p}.cross_attn.k.weight"], sd[f"{p}.cross_attn.k_bias"])
    v = F.linear(v_in, sd[f"{p}.cross_attn.v.weight"], sd[f"{p}.cross_attn.v_bias"])
    b, n, _ = k.shape
    q = q.reshape(b, 1, heads, -1).transpose(1, 2)
    k = k.reshape(b, n, heads, -1).transpose(1, 2)
    v = v.reshape(b, n, heads, -1).transpose(1, 2)
    attn = ((q * (c // heads) ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
    out = (attn @ v).transpose(1, 2).reshape(b, 1, c)
    return F.linear(out, sd[f"{p}.cross_attn.proj.weight"], sd[f"{p}.cross_attn.proj.bias"]).squeeze(1)


def release_forward(
    sd: dict, video: torch.Tensor, *, patch: int, tubelet: int, t0: int, g0: int, depth: int, heads: int,
    pool_heads: int, masking_ratio: float | None = None, output_head: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (logits, pooled feature)."""
    x = patch_embed(sd, video, patch, tubelet)
    b, t, l, c = x.shape
    mask = release_mask(x, masking_ratio) if masking_ratio is not None else None
    x = torch.cat((sd["cls_token"].expand(b, -1, -1), x.reshape(b, t * l, c)), dim=1)
    x = x + positional(sd, t0, g0, t, int(l**0.5))
    if mask is not None:
        x = torch.cat((x[:, :1], x[:, 1:][~mask].view(b, -1, c)), dim=1)
    for i in range(depth):
        x = _block(sd, i, x, heads)
    pooled = _pool(sd, output_head, x, pool_heads)
    h = F.layer_norm(pooled, (pooled.shape[-1],), sd["fc_norm.weight"], sd["fc_norm.bias"])
    logits = F.linear(h, sd[f"head.{output_head}.weight"], sd[f"head.{output_head}.bias"])
    return logits, pooled
