"""Decode each training video once: a fixed set of frames per item kept in memory for the whole run.

Decoding costs more CPU than a small model's step (8 ms per clip against 6 ms per sample of a 4-block ViT on two
cores), and an epoch decodes every clip again. With ``data.cache_frames: K`` the run first decodes, for every
item, the middle frames of ``K`` equal segments of its window at the training decode size (uncropped), then
every batch draws its ``T`` frames from those ``K`` the way the decoder draws from the video: one random frame
per segment (TSN sampling over the cached frames), followed by the usual random crop / flip / RandAugment. So
the only loss is temporal jitter finer than ``1 / K`` of the window. Memory: ``K x H x W x 3`` bytes per item.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from encoder.video import (Annotation, SkippedVideo, TrainAugment, VideoDecodeError, is_image, read_frames,
                           sample_indices, window_frames)
from encoder.video.dataset import dataset_item, decode_once
from encoder.video.load import SamplingPlan
from encoder.video.transforms import to_clip

log = logging.getLogger(__name__)


class _DecodeOnce(Dataset):
    """Worker side of the cache build: item ``i`` -> (uint8 ``[K, 3, H, W]``, timestamps) or SkippedVideo."""

    def __init__(self, items: Sequence[Annotation], frames: int, short_side: int) -> None:
        self.items, self.frames, self.short_side = items, frames, short_side

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, np.ndarray] | SkippedVideo:
        item = self.items[index]
        count = 1 if is_image(item.path) else self.frames

        def pick(info) -> np.ndarray:
            try:
                window = window_frames(info.frame_times, item.start, item.end)
            except ValueError as exc:
                raise VideoDecodeError(item.path, f"{exc} (video lasts {info.duration:g} s)") from None
            return sample_indices(info.num_frames, count, "test", window)

        try:
            decoded = read_frames(item.path, pick, short_side=self.short_side, threads=1)
        except VideoDecodeError as exc:
            return SkippedVideo(index, item.path, exc.reason)
        return to_clip(decoded.data), decoded.timestamps


class CachedClips(Dataset):
    """Training clips drawn from frames decoded once; indexed like :class:`~encoder.video.VideoDataset` in
    training (``(index, plan)``), with the same item dict, and a :class:`SkippedVideo` for a video that could
    not be decoded when the cache was built."""

    def __init__(self, items: Sequence[Annotation], augment: TrainAugment, frames: int, max_resolution: int,
                 workers: int = 0, progress: bool = True) -> None:
        if frames < 1:
            raise ValueError(f"cache_frames must be >= 1, got {frames}")
        self.items = list(items)
        self.augment = augment
        self.frames = frames
        decode = _DecodeOnce(self.items, frames, augment.decode_short_side(max_resolution))
        self._cache: list[tuple[torch.Tensor, torch.Tensor] | SkippedVideo] = decode_once(
            decode, workers, f"decoding {frames} frames per video once", "video", progress)
        for entry in self._cache:
            if isinstance(entry, SkippedVideo):
                log.warning("skipping %s (item %d): %s", entry.path, entry.index, entry.reason)
        self.skipped = [entry for entry in self._cache if isinstance(entry, SkippedVideo)]

    @property
    def nbytes(self) -> int:
        return sum(entry[0].numel() for entry in self._cache if not isinstance(entry, SkippedVideo))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: tuple[int, SamplingPlan]) -> dict[str, Any] | SkippedVideo:
        index, plan = key
        entry = self._cache[index]
        if isinstance(entry, SkippedVideo):
            return entry
        frames, times = entry
        chosen = torch.from_numpy(sample_indices(len(frames), plan.frames, "train"))
        return dataset_item(self.items[index], index, self.augment(frames[chosen], plan.resolution), times[chosen])
