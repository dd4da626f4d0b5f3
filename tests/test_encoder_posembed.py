"""The positional grid: sin-cos initialisation and resizing."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from encoder import create_model
from encoder.posembed import resize_grid, sincos_3d


def test_sincos_table_layout() -> None:
    dim, frames, side = 16, 3, 4
    table = sincos_3d(dim, frames, side).reshape(frames, side, side, dim)
    # Temporal quarter: sin(t * omega_0) with omega_0 = 1 on the first channel, constant over space.
    assert torch.allclose(table[:, :, :, 0], torch.sin(torch.arange(frames).float())[:, None, None].expand(-1, side, side))
    # Spatial part: first half follows the column (x), second half the row (y), constant over time.
    x_part = table[0, :, :, 4]
    y_part = table[0, :, :, 4 + 6]
    assert torch.allclose(x_part, torch.sin(torch.arange(side).float())[None, :].expand(side, -1))
    assert torch.allclose(y_part, torch.sin(torch.arange(side).float())[:, None].expand(-1, side))
    assert torch.allclose(table[1, ..., 4:], table[2, ..., 4:])


def test_resize_to_same_size_is_identity_and_constants_stay_constant() -> None:
    grid = torch.randn(4, 5, 5, 8)
    assert torch.equal(resize_grid(grid, 4, 5, 5), grid)
    const = torch.full((4, 5, 5, 3), 2.5)
    torch.testing.assert_close(resize_grid(const, 9, 7, 3), torch.full((9, 7, 3, 3), 2.5))


def test_temporal_resize_is_linear_with_half_pixel_centres() -> None:
    t0, t1 = 4, 8
    grid = torch.arange(t0).float()[:, None, None, None].expand(t0, 2, 2, 1).contiguous()
    out = resize_grid(grid, t1, 2, 2)[:, 0, 0, 0]
    # align_corners=False: target i samples source (i + 0.5) * t0 / t1 - 0.5, clamped to [0, t0 - 1].
    expected = [min(max((i + 0.5) * t0 / t1 - 0.5, 0.0), t0 - 1) for i in range(t1)]
    torch.testing.assert_close(out, torch.tensor(expected))


def test_spatial_resize_handles_non_square_targets() -> None:
    grid = torch.randn(2, 6, 6, 4)
    out = resize_grid(grid, 2, 3, 9)
    assert out.shape == (2, 3, 9, 4)
    # A grid that varies only along x keeps varying only along x.
    ramp = torch.linspace(0, 1, 6)[None, None, :, None].expand(1, 6, 6, 1).contiguous()
    resized = resize_grid(ramp, 1, 3, 9)[0, :, :, 0]
    assert torch.allclose(resized, resized[:1].expand(3, -1), atol=1e-6)
    assert (resized[0].diff() > 0).all()


def test_model_positional_embedding_applies_gpe_before_resizing() -> None:
    model = create_model("fluxvit_tiny_patch14")
    with torch.no_grad():
        model.gpe_proj.depthwise_conv.weight.fill_(2.0)
        model.gpe_proj.depthwise_conv.bias.fill_(0.5)
    pos = model.positional_embedding(16, 8, 8)
    raw = model.pos_embed[0]
    torch.testing.assert_close(pos[1:], raw[1:] * 2.0 + 0.5)
    torch.testing.assert_close(pos[0], raw[0], msg="the CLS row is kept as is")
    assert model.positional_embedding(5, 3, 7).shape == (1 + 5 * 3 * 7, 96)


def _interpolate(grid: torch.Tensor, frames: int, height: int, width: int) -> torch.Tensor:
    """The resize written with torch's upsampling kernels, as the released code does it."""
    t0, h0, w0, dim = grid.shape
    seq = grid.permute(1, 2, 3, 0).reshape(h0 * w0, dim, t0)
    seq = F.interpolate(seq, size=frames, mode="linear", align_corners=False)
    planes = seq.reshape(h0, w0, dim, frames).permute(3, 2, 0, 1)
    planes = F.interpolate(planes, size=(height, width), mode="bicubic", align_corners=False)
    return planes.permute(0, 2, 3, 1)


def test_resize_matches_torch_upsampling_values_and_gradients() -> None:
    """Up and down in every dimension, non-square too: same values and same gradient as F.interpolate."""
    for source, target in [((4, 6, 6), (8, 16, 16)), ((8, 16, 16), (4, 6, 6)), ((2, 14, 14), (5, 8, 12))]:
        grid = torch.randn(*source, 8, dtype=torch.float64)
        upstream = torch.randn(*target, 8, dtype=torch.float64)
        ours, theirs = grid.clone().requires_grad_(), grid.clone().requires_grad_()
        got, expected = resize_grid(ours.float(), *target), _interpolate(theirs, *target)
        torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)
        (got.double() * upstream).sum().backward()
        (expected * upstream).sum().backward()
        torch.testing.assert_close(ours.grad, theirs.grad, atol=1e-5, rtol=1e-5)


def test_a_resize_first_run_in_inference_mode_still_trains_afterwards() -> None:
    """The resize weights are cached: the ones made under ``torch.inference_mode`` (search, the app) must still
    serve a training step's backward pass in the same process."""
    grid = torch.randn(3, 7, 7, 4)
    with torch.inference_mode():
        resize_grid(grid, 5, 9, 9)
    trained = grid.clone().requires_grad_()
    resize_grid(trained, 5, 9, 9).square().sum().backward()
    assert trained.grad is not None and trained.grad.abs().sum() > 0
