"""Frame sampling, time windows, segments and the flexible (frames, resolution) sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from encoder import get_config
from encoder.video import FlexibleSampler, clip_positions, sample_indices, segments, window_frames


def test_test_mode_takes_the_middle_of_each_segment() -> None:
    assert sample_indices(100, 4).tolist() == [12, 37, 62, 87]
    assert sample_indices(100, 4, window=(20, 60)).tolist() == [25, 35, 45, 55]
    assert sample_indices(8, 8).tolist() == list(range(8))


def test_exactly_count_frames_even_from_a_short_window() -> None:
    picks = sample_indices(3, 8)
    assert len(picks) == 8 and picks.tolist() == sorted(picks.tolist())
    assert set(picks.tolist()) == {0, 1, 2}
    assert sample_indices(1, 5).tolist() == [0] * 5


def test_train_mode_draws_one_random_frame_inside_each_segment() -> None:
    generator = torch.Generator().manual_seed(0)
    draws = np.stack([sample_indices(120, 6, "train", window=(0, 120), generator=generator) for _ in range(300)])
    for k in range(6):  # every pick stays in its own segment and the segment is explored
        assert draws[:, k].min() >= 20 * k and draws[:, k].max() < 20 * (k + 1)
        assert len(set(draws[:, k].tolist())) > 10
    again = sample_indices(120, 6, "train", generator=torch.Generator().manual_seed(0))
    assert again.tolist() == draws[0].tolist()


def test_clip_positions_interleave_the_test_clips() -> None:
    assert clip_positions(4) == [0.125, 0.375, 0.625, 0.875]
    clips = [sample_indices(160, 8, position=p) for p in clip_positions(4)]
    merged = np.sort(np.concatenate(clips))
    assert len(set(merged.tolist())) == 32  # no two clips share a frame
    assert np.diff(merged).max() - np.diff(merged).min() <= 1  # evenly spread


def test_bad_sampling_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        sample_indices(10, 0)
    with pytest.raises(ValueError):
        sample_indices(10, 4, window=(5, 12))
    with pytest.raises(ValueError):
        sample_indices(10, 4, mode="eval")


def test_window_frames_is_the_frames_on_screen() -> None:
    times = np.arange(50) / 10.0  # 10 fps, 5 s
    assert window_frames(times, 1.0, 2.0) == (10, 20)
    assert window_frames(times, 1.05, 1.07) == (10, 11)  # shorter than a frame: the frame on screen
    assert window_frames(times, None, None) == (0, 50)
    assert window_frames(times, 4.5, 99.0) == (45, 50)
    with pytest.raises(ValueError, match="after the last frame"):
        window_frames(times, 6.0, 7.0)
    with pytest.raises(ValueError, match="empty"):
        window_frames(times, 2.0, 2.0)


@pytest.mark.parametrize("duration, window, stride", [(25.0, 10.0, 5.0), (20.0, 10.0, 10.0), (61.3, 8.0, 3.0),
                                                      (10.0, 4.0, 4.0), (7.5, 10.0, 5.0)])
def test_segments_cover_the_video_with_full_windows(duration: float, window: float, stride: float) -> None:
    parts = segments(duration, window, stride)
    whole = [s for s in parts if s.whole]
    assert len(whole) == 1 and (whole[0].start, whole[0].end) == (0.0, duration)
    windows = [s for s in parts if not s.whole] or whole
    assert windows[0].start == 0.0 and windows[-1].end == pytest.approx(duration)
    for a, b in zip(windows, windows[1:]):
        assert b.start <= a.end  # no gap
        assert b.start > a.start
    if duration > window:
        assert all(s.duration == pytest.approx(window) for s in windows)


def test_segments_without_the_whole_video_and_bad_strides() -> None:
    parts = segments(21.0, 10.0, include_whole=False)
    assert [(s.start, s.end) for s in parts] == [(0.0, 10.0), (10.0, 20.0), (11.0, 21.0)]
    with pytest.raises(ValueError, match="gaps"):
        segments(30.0, 5.0, 10.0)
    with pytest.raises(ValueError):
        segments(30.0, 0.0)


@pytest.mark.parametrize("model", ["fluxvit_small_patch14", "fluxvit_tiny_patch14"])
def test_flexible_sampler_stays_inside_the_token_threshold(model: str) -> None:
    config = get_config(model)
    lo, hi = config.grid.token_threshold
    sampler = FlexibleSampler(config, generator=torch.Generator().manual_seed(1))
    seen = set()
    for _ in range(400):
        plan = sampler.draw()
        pool = plan.frames * (plan.resolution // config.patch_size) ** 2
        assert lo <= pool <= hi
        assert plan.frames in config.grid.frame_options()
        assert plan.resolution in config.grid.resolution_options()
        assert plan.keep_tokens is None and plan.pool_tokens == pool
        seen.add((plan.frames, plan.resolution))
    assert seen == set(sampler.options)  # every admissible pair gets drawn
    assert len({r for _, r in seen}) > 1 and len({f for f, _ in seen}) > 1


def test_flexible_sampler_with_a_token_budget_picks_the_head() -> None:
    sampler = FlexibleSampler("fluxvit_small_patch14", keep_tokens=1024, generator=torch.Generator().manual_seed(0))
    plan = sampler.draw()
    assert plan.keep_tokens == 1024 and plan.head == 0 and plan.pool_tokens >= 2048


def test_flexible_sampler_refuses_an_empty_grid() -> None:
    config = get_config("fluxvit_tiny_patch14")
    impossible = config.replace(grid=config.grid.__class__(token_threshold=(10**6, 2 * 10**6)))
    with pytest.raises(ValueError, match="no \\(frames, resolution\\)"):
        FlexibleSampler(impossible)
