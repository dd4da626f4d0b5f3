"""Token selectors: counts, motion preference, grouping rules, determinism."""

from __future__ import annotations

import pytest
import torch

from encoder import create_model
from encoder.selectors import frame_groups, group_dynamic, select_tokens


@pytest.mark.parametrize("frames,expected", [
    (2, [2]), (3, [3]), (4, [2, 2]), (5, [3, 2]), (6, [3, 3]), (7, [4, 3]), (8, [2, 2, 2, 2]),
    (10, [5, 5]), (12, [3, 3, 3, 3]), (16, [4, 4, 4, 4]),
])
def test_frame_groups_follow_the_release_and_never_hold_one_frame(frames: int, expected: list[int]) -> None:
    assert frame_groups(frames) == expected


@pytest.mark.parametrize("method", ["group_dynamic", "dynamic", "tube", "random"])
@pytest.mark.parametrize("frames,keep", [(1, 5), (4, 7), (7, 33), (8, 64), (8, 127)])
def test_every_selector_keeps_exactly_k_sorted_unique_positions(method: str, frames: int, keep: int) -> None:
    tokens = torch.randn(3, frames, 16, 8)
    positions = select_tokens(tokens, keep, method, torch.Generator().manual_seed(0))
    assert positions.shape == (3, keep)
    assert (positions.diff(dim=1) > 0).all(), "positions must be strictly increasing (unique, sorted)"
    assert positions.min() >= 0 and positions.max() < frames * 16


def test_group_dynamic_keeps_exactly_the_changing_tokens_of_each_group() -> None:
    frames, per_frame = 8, 10
    tokens = torch.zeros(1, frames, per_frame, 4)
    # In every group (pairs of frames) exactly one spatial position changes between its two frames.
    moving = {0: 3, 1: 7, 2: 1, 3: 9}
    for group, spot in moving.items():
        tokens[0, 2 * group + 1, spot] = 5.0
    positions = group_dynamic(tokens, keep=8)[0].tolist()
    expected = sorted(t * per_frame + moving[t // 2] for t in range(frames))
    assert positions == expected


def test_group_quota_is_per_group_not_global() -> None:
    tokens = torch.zeros(1, 8, 4, 2)
    tokens[0, 1] = 100.0  # a huge change in group 0 only
    tokens[0, 3, 0] = 0.1  # small changes in the other groups
    tokens[0, 5, 0] = 0.1
    tokens[0, 7, 0] = 0.1
    positions = group_dynamic(tokens, keep=8)[0]
    frames_of_kept = (positions // 4).tolist()
    per_group = [sum(1 for f in frames_of_kept if f // 2 == g) for g in range(4)]
    assert per_group == [2, 2, 2, 2]
    dynamic = select_tokens(tokens, 8, "dynamic")[0]
    assert set((dynamic // 4).tolist()) == {0, 1}, "the ungrouped baseline spends everything on group 0"


def test_model_selector_prefers_the_region_that_moves() -> None:
    model = create_model("fluxvit_tiny_patch14").eval()
    gen = torch.Generator().manual_seed(0)
    frames, side, patch = 8, 112, 14
    background = torch.randn(3, side, side, generator=gen)
    video = background[:, None].repeat(1, frames, 1, 1).clone()
    square = torch.randn(3, 28, 28, generator=gen) * 3
    for t in range(frames):  # a textured square slides right along the top band (rows 0..1 of patches)
        x = 4 + 8 * t
        video[:, t, 0:28, x:x + 28] = square
    positions = model.select(video[None], keep_tokens=64)[0]
    rows = (positions % ((side // patch) ** 2)) // (side // patch)
    assert positions.numel() == 64
    assert (rows <= 1).all(), f"selected rows outside the moving band: {sorted(set(rows.tolist()))}"


def test_random_and_tube_are_deterministic_for_a_seed_and_tube_is_a_tube() -> None:
    tokens = torch.randn(2, 6, 16, 4)
    for method in ("random", "tube"):
        a = select_tokens(tokens, 30, method, torch.Generator().manual_seed(7))
        b = select_tokens(tokens, 30, method, torch.Generator().manual_seed(7))
        c = select_tokens(tokens, 30, method, torch.Generator().manual_seed(8))
        assert torch.equal(a, b) and not torch.equal(a, c)
    tube = select_tokens(tokens, 48, "tube", torch.Generator().manual_seed(0))
    spatial = (tube % 16).reshape(2, 6, 8)
    assert (spatial == spatial[:, :1]).all(), "a tube keeps the same spatial positions in every frame"


def test_single_frame_selection_spreads_over_the_image() -> None:
    positions = group_dynamic(torch.randn(2, 1, 100, 4), keep=10)
    assert positions[0].tolist() == [0, 11, 22, 33, 44, 55, 66, 77, 88, 99]
    assert torch.equal(positions[0], positions[1])


def test_unknown_selector_and_bad_counts_are_rejected() -> None:
    tokens = torch.randn(1, 4, 4, 2)
    with pytest.raises(ValueError, match="unknown token selector 'bogus'"):
        select_tokens(tokens, 3, "bogus")
    with pytest.raises(ValueError, match="cannot keep 17 tokens out of 16"):
        select_tokens(tokens, 17)
