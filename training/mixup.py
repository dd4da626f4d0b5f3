"""Mixup / CutMix for video batches with label smoothing: the same box on every frame of a clip."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def smooth_targets(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    off = smoothing / num_classes
    return F.one_hot(labels, num_classes).float() * (1.0 - smoothing) + off


def mix_batch(
    video: torch.Tensor, labels: torch.Tensor, num_classes: int, mixup_alpha: float, cutmix_alpha: float,
    switch_prob: float, smoothing: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix each clip with the batch reversed; returns the mixed video ``[B, C, T, H, W]`` and soft targets.

    With both alphas > 0, CutMix is chosen with probability ``switch_prob``. The CutMix weight is corrected
    to the box area actually pasted. Randomness comes from torch's global RNG (checkpointed by the engine).
    """
    targets = smooth_targets(labels, num_classes, smoothing)
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or float(torch.rand(())) < switch_prob)
    alpha = cutmix_alpha if use_cutmix else mixup_alpha
    if alpha <= 0:
        return video, targets
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    flipped = video.flip(0)
    if use_cutmix:
        height, width = video.shape[-2:]
        cut = (1 - lam) ** 0.5
        ch, cw = int(height * cut), int(width * cut)
        cy, cx = int(torch.randint(height, ())), int(torch.randint(width, ()))
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, height)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, width)
        video = video.clone()
        video[..., y0:y1, x0:x1] = flipped[..., y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (height * width)
    else:
        video = video * lam + flipped * (1 - lam)
    return video, targets * lam + targets.flip(0) * (1 - lam)
