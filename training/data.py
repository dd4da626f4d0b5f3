"""Deterministic, resumable batching with one flexible (frames, resolution) draw per batch.

Every piece of data randomness is a function of (seed, epoch, batch index), so a run resumed from a
checkpoint sees exactly the batches and augmentations the uninterrupted run would have seen, whatever the
number of workers.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Iterator

import torch
from torch.utils.data import Sampler

from encoder.config import FluxViTConfig, SamplingGrid


@dataclass(frozen=True)
class SampleKey:
    """What a dataset is asked for: which item, at which sampling, with which augmentation seed."""

    index: int
    frames: int
    resolution: int
    seed: int


def flexible_choices(grid: SamplingGrid, patch_size: int) -> list[tuple[int, int]]:
    """All (frames, resolution) on the grid whose token pool lies inside the threshold (paper 3.1)."""
    low, high = grid.token_threshold
    choices = [(f, r) for f in grid.frame_options() for r in grid.resolution_options()
               if low <= f * (r // patch_size) ** 2 <= high]
    if not choices:
        raise ValueError(f"no frames x resolution on {grid} has a token pool inside {grid.token_threshold}")
    return choices


class ResumableBatchSampler(Sampler[list[SampleKey]]):
    """Shuffled, rank-sharded batches of :class:`SampleKey`, starting at any batch of an epoch."""

    def __init__(
        self, size: int, batch_size: int, model: FluxViTConfig, seed: int, flexible: bool, frames: int,
        resolution: int, rank: int = 0, world_size: int = 1, drop_last: bool = True,
    ) -> None:
        if size < 1:
            raise ValueError("the training set is empty")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.choices = flexible_choices(model.grid, model.patch_size) if flexible else [(frames, resolution)]
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
            shared = random.Random(f"{self.seed}/{self.epoch}/{b}")  # the same sampling on every rank
            frames, resolution = shared.choice(self.choices)
            local = random.Random(f"{self.seed}/{self.epoch}/{b}/{self.rank}")
            chunk = mine[b * self.batch_size:(b + 1) * self.batch_size]
            yield [SampleKey(i, frames, resolution, local.randrange(2**31)) for i in chunk]
