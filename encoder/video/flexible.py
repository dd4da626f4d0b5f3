"""Flexi-sampling for training (paper 3.1): a random (frames, resolution) from the model's grid whose token pool
``frames * (resolution / patch)^2`` lies inside the grid's token threshold.

A batch must share one shape to stack, so training draws once per batch (``training.data.ResumableBatchSampler``
uses :attr:`FlexibleSampler.options`) and hands the draw to the dataset with every index.
"""

from __future__ import annotations

import torch

from ..budget import Plan, make_plan, tokens_per_frame
from ..config import FluxViTConfig, get_config


def trained_samplings(config: FluxViTConfig) -> list[tuple[int, int]]:
    """The (frames, resolution) pairs of the model's grid that flexible training draws: whole tubelets, and a
    token pool inside the grid's threshold (Token Optimization tries the same ones)."""
    grid = config.grid
    lo, hi = grid.token_threshold
    return [(frames, resolution)
            for frames in grid.frame_options()
            for resolution in grid.resolution_options()
            if frames % config.tubelet_size == 0
            and lo <= (frames // config.tubelet_size) * tokens_per_frame(config, resolution) <= hi]


class FlexibleSampler:
    """Draws training plans uniformly over the grid's admissible (frames, resolution) pairs.

    ``keep_tokens``: the token budget the selector keeps (None: keep the whole pool); it sets the plan's head.
    """

    def __init__(self, config: FluxViTConfig | str, keep_tokens: int | None = None,
                 generator: torch.Generator | None = None) -> None:
        self.config = get_config(config) if isinstance(config, str) else config
        self.options = trained_samplings(self.config)
        if not self.options:
            lo, hi = self.config.grid.token_threshold
            raise ValueError(f"no (frames, resolution) of {self.config.name}'s grid has a token pool in [{lo}, {hi}]")
        self.keep_tokens = keep_tokens
        self.generator = generator

    def draw(self) -> Plan:
        frames, resolution = self.options[int(torch.randint(len(self.options), (1,), generator=self.generator))]
        pool = (frames // self.config.tubelet_size) * tokens_per_frame(self.config, resolution)
        return make_plan(self.config, self.keep_tokens or pool, frames, resolution)
