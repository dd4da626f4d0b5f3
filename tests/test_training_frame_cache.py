"""The training frame cache: frames decoded once, drawn per batch the way the decoder would draw them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from encoder import IMAGENET_MEAN, IMAGENET_STD, get_config, make_plan
from encoder.video import Annotation, SkippedVideo, TrainAugment, sample_indices
from tests.clips import frame_index, write_clip, write_garbage
from training.frame_cache import CachedClips

pytestmark = pytest.mark.timeout(120)

TINY = get_config("fluxvit_tiny_patch14")
FOUR = make_plan(TINY, 4 * 16, 4, 56)
EIGHT = make_plan(TINY, 8 * 16, 8, 56)


def _shown(video: torch.Tensor) -> list[int]:
    """The stripe index painted on every frame of a normalised [3, T, S, S] clip."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)
    pixels = (video * std + mean).clamp(0, 1)
    return [frame_index(pixels[:, t].numpy(), channels_first=True) for t in range(pixels.shape[1])]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> CachedClips:
    folder = tmp_path_factory.mktemp("cache")
    write_clip(folder / "long.mp4", 40, (96, 64), 20)
    write_clip(folder / "short.mp4", 6, (96, 64), 20)
    write_garbage(folder / "random.mp4", 4000)
    items = [Annotation(str(folder / "long.mp4"), 3, "a window", 0.5, 1.5), Annotation(str(folder / "random.mp4")),
             Annotation(str(folder / "short.mp4"), 1)]
    return CachedClips(items, TrainAugment(scales=(1.0,), flip=False), frames=8, max_resolution=56, workers=1,
                       progress=False)


def test_the_cache_keeps_the_segment_middles_of_each_window_at_the_decode_size(cache: CachedClips) -> None:
    assert [(s.index, s.path.endswith("random.mp4")) for s in cache.skipped] == [(1, True)]
    assert cache.skipped[0].reason
    assert cache.nbytes == 2 * 8 * 64 * 96 * 3, "8 uncropped frames per good video, short side ceil(56 * 256/224)"
    middles = sample_indices(40, 8, "test", (10, 30))  # 0.5-1.5 s at 20 fps: frames 10..29
    drawn = set()
    for seed in range(12):
        torch.manual_seed(seed)
        item = cache[(0, FOUR)]
        shown = _shown(item["video"])
        assert item["video"].shape == (3, 4, 56, 56) and (item["label"], item["start"]) == (3, 0.5)
        for segment, frame in enumerate(shown):  # one cached frame of each quarter of the window
            assert frame in middles[2 * segment:2 * segment + 2], (shown, middles)
        np.testing.assert_allclose(item["timestamps"].numpy(), np.array(shown) / 20, atol=1e-6)
        drawn.update(shown)
    assert drawn == set(middles.tolist()), "the random draw reaches every cached frame"


def test_cached_draws_are_repeatable_and_a_short_video_repeats_frames(cache: CachedClips) -> None:
    torch.manual_seed(5)
    first = cache[(0, EIGHT)]["video"]
    torch.manual_seed(5)
    assert torch.equal(first, cache[(0, EIGHT)]["video"])
    short = cache[(2, EIGHT)]
    assert short["label"] == 1 and sorted(_shown(short["video"])) == _shown(short["video"])
    assert set(_shown(short["video"])) == set(range(6)), "six frames fill eight segments, each shown"


def test_an_undecodable_video_stays_skipped_with_its_reason(cache: CachedClips) -> None:
    skipped = cache[(1, FOUR)]
    assert isinstance(skipped, SkippedVideo) and skipped.index == 1 and "invalid data" in skipped.reason.lower()
