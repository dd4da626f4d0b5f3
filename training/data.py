"""Deterministic, resumable batching with one flexible (frames, resolution) draw per batch, or budgets that
batches take in turn (chat training at several token budgets).

Every piece of data randomness is a function of (seed, epoch, batch index), so a run resumed from a
checkpoint sees exactly the batches and augmentations the uninterrupted run would have seen, whatever the
number of workers.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Iterator, NamedTuple, Sequence

import torch
from torch.utils.data import Dataset, Sampler

from encoder.budget import make_plan
from encoder.config import FluxViTConfig
from encoder.video import FlexibleSampler, SkippedVideo, VideoDataset, is_image

from .frame_cache import CachedClips


@dataclass(frozen=True)
class SampleKey:
    """What a dataset is asked for: which item, at which sampling, with which augmentation seed."""

    index: int
    frames: int
    resolution: int
    seed: int
    budget: int | None = None  # the token budget of this batch when batches take budgets in turn


class BudgetTurn(NamedTuple):
    """One budget of a rotation: its token count and the sampling it is served at."""

    budget: int
    frames: int
    resolution: int


class ResumableBatchSampler(Sampler[list[SampleKey]]):
    """Shuffled, rank-sharded batches of :class:`SampleKey`, starting at any batch of an epoch.

    With ``turns``, batch ``n`` of the run (counted across epochs) takes ``turns[n % len(turns)]``: its budget
    and sampling, on every rank; otherwise each batch draws its sampling (flexible) or keeps the fixed one."""

    def __init__(
        self, size: int, batch_size: int, model: FluxViTConfig, seed: int, flexible: bool, frames: int,
        resolution: int, rank: int = 0, world_size: int = 1, drop_last: bool = True,
        turns: Sequence[BudgetTurn] = (),
    ) -> None:
        if size < 1:
            raise ValueError("the training set is empty")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.choices = FlexibleSampler(model).options if flexible else [(frames, resolution)]
        self.turns = list(turns)
        self.epoch, self.start_batch = 0, 0

    def set_position(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        per_rank = math.ceil(self.size / self.world_size)
        full, rest = divmod(per_rank, self.batch_size)
        return full if self.drop_last or not rest else full + 1

    def __iter__(self) -> Iterator[list[SampleKey]]:
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.size, generator=gen).tolist()
        per_rank = math.ceil(self.size / self.world_size)
        order = (order * math.ceil(per_rank * self.world_size / self.size))[: per_rank * self.world_size]
        mine = order[self.rank::self.world_size]
        for b in range(self.start_batch, len(self)):
            if self.turns:
                budget, frames, resolution = self.turns[(self.epoch * len(self) + b) % len(self.turns)]
            else:
                shared = random.Random(f"{self.seed}/{self.epoch}/{b}")  # the same sampling on every rank
                (frames, resolution), budget = shared.choice(self.choices), None
            local = random.Random(f"{self.seed}/{self.epoch}/{b}/{self.rank}")
            chunk = mine[b * self.batch_size:(b + 1) * self.batch_size]
            yield [SampleKey(i, frames, resolution, local.randrange(2**31), budget) for i in chunk]


class TrainingClips(Dataset):
    """A :class:`~encoder.video.VideoDataset` (or :class:`~training.frame_cache.CachedClips`) addressed by
    :class:`SampleKey`: the key's sampling, and its seed for the clip's random temporal offsets and augmentation
    (so a sample is the same in any worker)."""

    def __init__(self, videos: "VideoDataset | CachedClips", model: FluxViTConfig) -> None:
        self.videos, self.model = videos, model

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, key: SampleKey) -> dict[str, Any] | SkippedVideo:
        frames = 1 if is_image(self.videos.items[key.index].path) else key.frames  # images: one-frame videos
        plan = make_plan(self.model, frames * (key.resolution // self.model.patch_size) ** 2, frames, key.resolution)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(key.seed)
            return self.videos[(key.index, plan)]


def captioned_collate(items: list) -> dict[str, Any]:
    """Clips under ``video``, images (one-frame videos, another shape) under ``image``; ``text`` holds the
    captions of the clips, then of the images; ``negatives`` the hard-negative captions of all of them, when
    any has some."""
    good = [item for item in items if not isinstance(item, SkippedVideo)]
    batch: dict[str, Any] = {"skipped": [item for item in items if isinstance(item, SkippedVideo)]}
    texts: list[str] = []
    negatives: list[str] = []
    for key, part in (("video", [i for i in good if not is_image(i["path"])]),
                      ("image", [i for i in good if is_image(i["path"])])):
        if part:
            batch[key] = torch.stack([item["video"] for item in part])
            texts += [item["caption"] for item in part]
            negatives += [text for item in part for text in item.get("negatives", ())]
    if texts:
        batch["text"] = texts
    if negatives:
        batch["negatives"] = negatives
    return batch
