"""The global positional grid: 3-D sin-cos initialisation and resizing to any frames x height x width."""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F


def _sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    angles = positions.reshape(-1, 1).double() * omega
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_3d(dim: int, frames: int, side: int) -> torch.Tensor:
    """``[frames * side * side, dim]`` sin-cos table: the first quarter of channels encodes time, the rest
    space (half by column, half by row), rows ordered (t, y, x) with x fastest."""
    spatial_dim, temporal_dim = dim // 4 * 3, dim // 4
    ys, xs = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    spatial = torch.cat([_sincos_1d(spatial_dim // 2, xs), _sincos_1d(spatial_dim // 2, ys)], dim=1)
    temporal = _sincos_1d(temporal_dim, torch.arange(frames))
    table = torch.cat(
        [temporal[:, None, :].expand(-1, side * side, -1), spatial[None, :, :].expand(frames, -1, -1)], dim=-1
    )
    return table.reshape(frames * side * side, dim).float()


@functools.lru_cache(maxsize=64)
def _interpolation_matrix(source: tuple[int, ...], target: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """``[prod(target), prod(source)]`` float32 on ``device`` (cached, so a GPU forward copies nothing): the map
    that torch's linear (1-D) or bicubic (2-D) interpolation, align_corners False, applies to a grid of ``source``
    points, read off in float64 by interpolating each basis grid. Built outside inference mode even when first
    asked for inside it, so that a later training step can save it for its backward pass."""
    with torch.inference_mode(False):
        count = math.prod(source)
        basis = torch.eye(count, dtype=torch.float64).reshape(count, 1, *source)
        mode = "linear" if len(source) == 1 else "bicubic"
        weights = F.interpolate(basis, size=target, mode=mode, align_corners=False).reshape(count, -1).T
        return weights.to(device, torch.float32).contiguous()


def resize_grid(grid: torch.Tensor, frames: int, height: int, width: int) -> torch.Tensor:
    """Resize a positional grid ``[T0, H0, W0, C]`` to ``[frames, height, width, C]``.

    Linear in time, then bicubic in space (align_corners False), as the released model does; a dimension
    that already has the target size is left untouched. Interpolation runs in float32, as matrix products
    with the interpolation's own weights: the same values as ``F.interpolate``, but a backward pass that is
    deterministic on CUDA too (upsampling's backward kernels accumulate with atomics there).
    """
    t0, h0, w0, dim = grid.shape
    out = grid.float()
    if t0 != frames:
        weights = _interpolation_matrix((t0,), (frames,), out.device)
        out = (weights @ out.reshape(t0, -1)).reshape(frames, h0, w0, dim)
    if (h0, w0) != (height, width):
        weights = _interpolation_matrix((h0, w0), (height, width), out.device)
        out = (weights @ out.reshape(frames, h0 * w0, dim)).reshape(frames, height, width, dim)
    return out.to(grid.dtype)
