"""From a file and a plan to the encoder's normalised input: clips, test views, training augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from encoder import IMAGENET_MEAN, IMAGENET_STD, make_plan, get_config, plan
from encoder.video import (MultiScaleCrop, RandAug, TrainAugment, decode_clip, load_clip, load_views, normalize,
                           resize_short_side, spatial_crops)
from tests.clips import frame_index, sample_video, write_clip, write_image

pytestmark = pytest.mark.timeout(120)

TINY = get_config("fluxvit_tiny_patch14")
MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)


def _indices_in(video: torch.Tensor) -> list[int]:
    """The stripe index of every frame of a normalised [3, T, S, S] clip."""
    pixels = (video * STD + MEAN).clamp(0, 1)
    return [frame_index(pixels[:, t].numpy(), channels_first=True) for t in range(video.shape[1])]


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory: pytest.TempPathFactory):
    # 160 frames at 20 fps = 8 s, landscape 160x96.
    return write_clip(tmp_path_factory.mktemp("load") / "ramp.mp4", 160, (160, 96), 20)


def test_load_clip_is_normalised_and_has_the_plan_shape(clip_path) -> None:
    p = make_plan(TINY, 256, 8, 84)
    clip = load_clip(clip_path, p)
    assert clip.video.shape == (3, 8, 84, 84) and clip.video.dtype == torch.float32
    assert _indices_in(clip.video) == [10, 30, 50, 70, 90, 110, 130, 150]  # segment middles
    assert clip.indices.tolist() == [10, 30, 50, 70, 90, 110, 130, 150]
    np.testing.assert_allclose(clip.timestamps, clip.indices / 20, atol=1e-4)
    # Frame 10 = 0b00001010: stripe 1 is white, stripe 0 black; normalised with the ImageNet statistics.
    white = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    black = -torch.tensor(IMAGENET_MEAN) / torch.tensor(IMAGENET_STD)
    stripe = 84 // 8
    torch.testing.assert_close(clip.video[:, 0, stripe + stripe // 2, 40], white, atol=0.05, rtol=0)
    torch.testing.assert_close(clip.video[:, 0, stripe // 2, 40], black, atol=0.05, rtol=0)


def test_load_clip_within_a_time_window(clip_path) -> None:
    clip = load_clip(clip_path, make_plan(TINY, 256, 4, 56), start=2.0, end=4.0)
    assert clip.indices.tolist() == [45, 55, 65, 75]
    assert _indices_in(clip.video) == [45, 55, 65, 75]
    assert all(2.0 <= t < 4.0 for t in clip.timestamps)


def test_decode_clip_is_load_clip_before_normalising(clip_path) -> None:
    p = make_plan(TINY, 256, 4, 56)
    raw, loaded = decode_clip(clip_path, p, start=2.0, end=4.0), load_clip(clip_path, p, start=2.0, end=4.0)
    assert raw.video.shape == (4, 3, 56, 56) and raw.video.dtype == torch.uint8  # a quarter of the bytes
    assert torch.equal(normalize(raw.video), loaded.video)
    assert raw.indices.tolist() == loaded.indices.tolist() == [45, 55, 65, 75]


def test_test_views_are_clips_by_crops(clip_path) -> None:
    p = make_plan(TINY, 256, 8, 56)
    views = load_views(clip_path, p, clips=4, crops=3)
    assert views.video.shape == (12, 3, 8, 56, 56)
    assert views.indices.shape == (4, 8) and views.timestamps.shape == (4, 8)
    for c in range(4):
        for k in range(3):
            assert _indices_in(views.video[c * 3 + k]) == views.indices[c].tolist()
    merged = np.sort(views.indices.ravel())
    assert len(set(merged.tolist())) == 32  # the 4 clips interleave


def test_three_crops_are_left_centre_right_on_real_video() -> None:
    path = sample_video("bikes.mp4")  # 640x272: wide
    views = load_views(path, make_plan(TINY, 256, 2, 56), clips=1, crops=3)
    assert views.video.shape == (3, 3, 2, 56, 56)
    # The crops come from one 132x56 resized frame: compare with it directly.
    centre = load_clip(path, make_plan(TINY, 256, 2, 56))
    torch.testing.assert_close(views.video[1], centre.video)
    assert (views.video[0] - views.video[2]).abs().mean() > 0.1


def test_spatial_crop_positions() -> None:
    x = torch.arange(100).view(1, 1, 1, 100).expand(2, 3, 40, 100)  # value = column
    crops = spatial_crops(x, 40, 3)
    assert crops.shape == (3, 2, 3, 40, 40)
    assert [int(c[0, 0, 0, 0]) for c in crops] == [0, 30, 60]
    tall = x.transpose(-1, -2)  # 100 high, 40 wide: crops go top / centre / bottom
    assert [int(c[0, 0, 0, 0]) for c in spatial_crops(tall, 40, 3)] == [0, 30, 60]
    assert int(spatial_crops(x, 40, 1)[0, 0, 0, 0, 0]) == 30


def test_resize_short_side_keeps_the_aspect() -> None:
    clip = torch.zeros(3, 3, 272, 640, dtype=torch.uint8)
    assert resize_short_side(clip, 56).shape == (3, 3, 56, 131)
    assert resize_short_side(clip.transpose(-1, -2), 56).shape == (3, 3, 131, 56)
    assert resize_short_side(clip, 272) is clip


def test_normalize_layout_and_values() -> None:
    clip = torch.zeros(4, 3, 2, 2, dtype=torch.uint8)
    clip[:, 0] = 255
    out = normalize(clip)
    assert out.shape == (3, 4, 2, 2) and out.dtype == torch.float32
    assert out[0].unique().item() == pytest.approx((1 - IMAGENET_MEAN[0]) / IMAGENET_STD[0])
    assert out[2].unique().item() == pytest.approx(-IMAGENET_MEAN[2] / IMAGENET_STD[2])


def test_augmentation_uses_one_set_of_parameters_per_clip() -> None:
    """Identical frames stay identical after crop + flip + RandAugment: nothing is drawn per frame."""
    torch.manual_seed(0)
    frame = torch.randint(0, 256, (1, 3, 90, 120), dtype=torch.uint8)
    clip = frame.expand(6, 3, 90, 120).contiguous()
    augment = TrainAugment(flip=True, randaug=RandAug(2, 9, 0.5))
    outputs = [augment(clip, 56) for _ in range(8)]
    for out in outputs:
        assert out.shape == (3, 6, 56, 56)
        assert torch.equal(out[:, 0:1].expand_as(out), out)
    assert len({round(float(o.sum()), 2) for o in outputs}) > 1  # but clips differ from each other


def test_multiscale_crop_sizes_follow_the_scales() -> None:
    torch.manual_seed(0)
    x = torch.arange(200).view(1, 1, 1, 200).expand(2, 3, 100, 200).to(torch.uint8)
    crop = MultiScaleCrop(scales=(1.0, 0.5), max_distort=0)
    widths = set()
    for _ in range(40):
        out = crop(x, 20)
        assert out.shape == (2, 3, 20, 20)
        row = out[0, 0, 0].float()
        widths.add(round(float(row[-1] - row[0]) / 10) * 10)  # span of columns the crop covered
    assert widths == {50, 100}  # square crops (max_distort 0) of 100 or 50 pixels


def test_flip_only_when_allowed() -> None:
    torch.manual_seed(0)
    x = torch.arange(60).view(1, 1, 1, 60).expand(2, 3, 60, 60).to(torch.uint8)
    no_flip = TrainAugment(scales=(1.0,), flip=False)
    flip = TrainAugment(scales=(1.0,), flip=True)
    assert all(float(no_flip(x, 30)[0, 0, 0, 0]) < float(no_flip(x, 30)[0, 0, 0, -1]) for _ in range(10))
    directions = {float(flip(x, 30)[0, 0, 0, 0]) < float(flip(x, 30)[0, 0, 0, -1]) for _ in range(20)}
    assert directions == {True, False}


def test_training_clip_is_random_but_inside_its_segments(clip_path) -> None:
    torch.manual_seed(0)
    p = make_plan(TINY, 256, 8, 56)
    augment = TrainAugment(scales=(1.0,), flip=False)  # full-height crops keep every stripe
    seen = set()
    for _ in range(5):
        clip = load_clip(clip_path, p, augment=augment)
        assert clip.video.shape == (3, 8, 56, 56)
        assert _indices_in(clip.video) == clip.indices.tolist()
        for k, i in enumerate(clip.indices):
            assert 20 * k <= i < 20 * (k + 1)
        seen.add(tuple(clip.indices.tolist()))
    assert len(seen) > 1


def test_image_as_a_clip(tmp_path) -> None:
    path = write_image(tmp_path / "still.png", index=77, size=(90, 60))
    image_plan = plan(64, "fluxvit_tiny_patch14", image=True)
    clip = load_clip(path, image_plan)
    assert clip.video.shape == (3, image_plan.frames, image_plan.resolution, image_plan.resolution)
    p = make_plan(TINY, 256, 4, 56)
    clip = load_clip(path, p)
    assert clip.video.shape == (3, 4, 56, 56) and _indices_in(clip.video) == [77] * 4
    assert load_views(path, p, clips=2, crops=3).video.shape == (6, 3, 4, 56, 56)


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_real_video_clip_at_the_1024_token_plan(backend: str) -> None:
    p = plan(1024)  # fluxvit_small_patch14: 12 x 196
    clip = load_clip(sample_video("bigbuckbunny.mp4"), p, backend=backend)
    assert clip.video.shape == (3, p.frames, p.resolution, p.resolution)
    assert clip.info.backend == backend and clip.info.num_frames == 132
    assert -2.2 < float(clip.video.min()) and float(clip.video.max()) < 2.7  # inside the normalised range
    assert float(clip.video.std()) > 0.3  # real content, not a constant frame
