"""Double Mask Module: UMT visible counts, exact per-frame quotas, attention-weighted sampling, determinism."""

from __future__ import annotations

import pytest
import torch

from training.masking import (
    UMT_IMAGE_MASK_RATIO, UMT_VIDEO_MASK_RATIO, proportional_split, student_positions, teacher_positions,
    visible_count,
)


def test_visible_count_follows_umt_rule() -> None:
    assert visible_count(1568, UMT_VIDEO_MASK_RATIO) == 314  # UMT: 8 x 224^2 / 16^2 tokens, 0.8 masked
    assert visible_count(2048, 0.8) == 410
    assert visible_count(196, UMT_IMAGE_MASK_RATIO) == 98
    assert visible_count(7, 0.0) == 7
    with pytest.raises(ValueError):
        visible_count(10, 1.0)


def test_proportional_split_is_exact_and_breaks_ties_to_the_earliest() -> None:
    sizes = torch.tensor([[3, 1, 0, 4], [2, 2, 2, 2], [1, 1, 0, 0]])
    # row 0: 5 * [3,1,0,4] / 8 = [1.875, .625, 0, 2.5] -> floors [1,0,0,2], two more to the largest remainders
    assert proportional_split(5, sizes[:1]).tolist() == [[2, 1, 0, 2]]
    assert proportional_split(3, sizes[1:2]).tolist() == [[1, 1, 1, 0]]
    assert proportional_split(1, sizes[2:]).tolist() == [[1, 0, 0, 0]]
    split = proportional_split(2, sizes)
    assert split.sum(dim=1).tolist() == [2, 2, 2] and bool((split <= sizes).all())


def _kept_setup() -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Grid 4 frames x 2 x 2; the teacher kept 4 tokens of frame 0, 2 of frame 1, 2 of frame 2, 0 of frame 3."""
    kept = torch.tensor([[0, 1, 2, 3, 4, 6, 9, 11], [0, 1, 2, 3, 5, 7, 8, 10]])
    return kept, (4, 2, 2)


def test_student_positions_keep_exact_counts_per_frame_inside_the_teacher_set() -> None:
    kept, grid = _kept_setup()
    attention = torch.rand(kept.shape)
    positions, index = student_positions(kept, attention, grid, count=4, generator=torch.Generator().manual_seed(0))
    assert positions.shape == index.shape == (2, 4)
    assert torch.equal(torch.gather(kept, 1, index), positions)
    assert bool((positions[:, 1:] > positions[:, :-1]).all()), "sorted, no duplicates"
    for row in range(2):
        frames = torch.bincount(positions[row] // 4, minlength=4).tolist()
        assert frames == [2, 1, 1, 0]  # 4 split as 4:2:2:0
        assert set(positions[row].tolist()) <= set(kept[row].tolist())


def test_student_positions_follow_the_cls_attention() -> None:
    kept, grid = _kept_setup()
    attention = torch.zeros(kept.shape)
    attention[:, 2] = 1.0  # frame 0: only its third kept token has attention
    attention[:, 3] = 0.5
    attention[:, 5] = 1.0  # frame 1: its second kept token
    attention[:, 6] = 1.0  # frame 2: its first kept token
    for seed in range(5):
        positions, _ = student_positions(kept, attention, grid, 4, torch.Generator().manual_seed(seed))
        assert sorted(positions[0].tolist()) == [2, 3, 6, 9]
        assert sorted(positions[1].tolist()) == [2, 3, 7, 8]


def test_sampling_is_multinomial_without_replacement() -> None:
    trials = 6000
    kept = torch.arange(3).expand(trials, -1)
    attention = torch.tensor([0.6, 0.3, 0.1]).expand(trials, -1)
    gen = torch.Generator().manual_seed(0)
    one, _ = student_positions(kept, attention, (1, 1, 3), 1, gen)
    frequency = torch.bincount(one[:, 0], minlength=3).float() / trials
    assert torch.allclose(frequency, torch.tensor([0.6, 0.3, 0.1]), atol=0.025)
    two, _ = student_positions(kept, attention, (1, 1, 3), 2, gen)
    # P(token 2 drawn in two draws without replacement) = 1 - (0.6*0.3/0.4 + 0.3*0.6/0.7) = 0.2929
    assert (two == 2).any(dim=1).float().mean().item() == pytest.approx(0.2929, abs=0.025)


def test_student_positions_are_deterministic_under_a_generator() -> None:
    kept = torch.arange(0, 256, 2).expand(3, -1).contiguous()
    attention = torch.rand(kept.shape, generator=torch.Generator().manual_seed(3))
    draw = [student_positions(kept, attention, (4, 8, 8), 40, torch.Generator().manual_seed(s))[0] for s in (1, 1, 2)]
    assert torch.equal(draw[0], draw[1])
    assert not torch.equal(draw[0], draw[2])


def test_student_positions_reject_impossible_counts() -> None:
    kept, grid = _kept_setup()
    with pytest.raises(ValueError, match="cannot show"):
        student_positions(kept, torch.ones(kept.shape), grid, 9)
    with pytest.raises(ValueError, match="does not match"):
        student_positions(kept, torch.ones(2, 7), grid, 2)


def test_teacher_positions_keep_the_moving_tokens_or_the_whole_pool() -> None:
    patches = torch.zeros(1, 4, 9, 8)
    patches[0, 1::2, 4] = 5.0  # the centre token flickers between frames
    assert teacher_positions(patches, 36).tolist() == [list(range(36))]
    kept = teacher_positions(patches, 4)
    assert kept.tolist() == [[4, 13, 22, 31]]  # the centre of every frame
