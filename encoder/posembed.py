"""The global positional grid: 3-D sin-cos initialisation and resizing to any frames x height x width."""

from __future__ import annotations

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


def resize_grid(grid: torch.Tensor, frames: int, height: int, width: int) -> torch.Tensor:
    """Resize a positional grid ``[T0, H0, W0, C]`` to ``[frames, height, width, C]``.

    Linear in time, then bicubic in space (align_corners False), as the released model does; a dimension
    that already has the target size is left untouched. Interpolation runs in float32.
    """
    t0, h0, w0, dim = grid.shape
    out = grid.float()
    if t0 != frames:
        seq = out.permute(1, 2, 3, 0).reshape(h0 * w0, dim, t0)
        seq = F.interpolate(seq, size=frames, mode="linear", align_corners=False)
        out = seq.reshape(h0, w0, dim, frames).permute(3, 0, 1, 2)
    if (h0, w0) != (height, width):
        planes = out.permute(0, 3, 1, 2)
        planes = F.interpolate(planes, size=(height, width), mode="bicubic", align_corners=False)
        out = planes.permute(0, 2, 3, 1)
    return out.to(grid.dtype)
