"""What the vision tower hands the projector."""

from __future__ import annotations

from typing import NamedTuple

import torch


class VisionFeatures(NamedTuple):
    """``tokens [B, N, C]``: the kept tokens (pooled per frame); ``summary [B, S]`` or None: the ViTs'
    attention-pooled features side by side (what the classifier and the CLIP head read), when asked for."""

    tokens: torch.Tensor
    summary: torch.Tensor | None = None
