"""The training losses of Flux-UMT and Flux-CLIP.

- :func:`alignment_loss`: UMT's masked alignment, ``2 - 2 cos`` between the student's decoded tokens and the
  teacher's features on the student's visible tokens.
- :func:`self_distillation_losses`: Flux's smoothed-L1 chain over pooled features, largest token count ->
  middle -> smallest, each teacher detached (paper 3.4).
- :func:`info_nce`: symmetric video-text contrastive loss (VTC) with a learnable temperature, whose negatives
  are the whole global batch (gathered across ranks with gradient).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .gather import distributed_world, gather_with_grad, rows_per_rank

#: UMT's VTC temperature: initialised at 0.07 (logit scale 1 / 0.07) and kept inside [0.001, 0.5].
TEMPERATURE_INIT = 0.07
TEMPERATURE_RANGE = (0.001, 0.5)


def alignment_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean of ``2 - 2 cos(student, teacher)`` over every leading index (layers, batch, tokens).

    Both sides are L2-normalised here, so the loss is the squared distance of unit vectors whatever scale the
    decoder or teacher produce; the teacher side never receives gradient.
    """
    if student.shape != teacher.shape:
        raise ValueError(f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} features differ")
    s = F.normalize(student.float(), dim=-1)
    t = F.normalize(teacher.detach().float(), dim=-1)
    return (2 - 2 * (s * t).sum(dim=-1)).mean()


def self_distillation_losses(pooled: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Smoothed-L1 from each pooled feature to the next: ``pooled[i + 1]`` learns from detached ``pooled[i]``.

    ``pooled`` is ordered largest token count first, so the largest teaches the middle and the middle teaches
    the smallest. Returns one loss per link (``len(pooled) - 1``).
    """
    return [F.smooth_l1_loss(student.float(), teacher.detach().float())
            for teacher, student in zip(pooled, pooled[1:])]


def clamp_temperature_(temperature: nn.Parameter, low: float = TEMPERATURE_RANGE[0],
                       high: float = TEMPERATURE_RANGE[1]) -> torch.Tensor:
    """Clamp a learnable temperature in place (as UMT does before every step) and return it.

    Clamping the stored value, rather than the value used, keeps the gradient alive at the boundary: the
    optimizer can always move the temperature back inside.
    """
    with torch.no_grad():
        temperature.clamp_(low, high)
    return temperature


def info_nce(video: torch.Tensor, text: torch.Tensor, temperature: torch.Tensor,
             negatives: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE between ``video`` ``[B, D]`` and ``text`` ``[B, D]`` (row i of each is a pair).

    Each rank scores its own B videos against the texts of every rank (and its texts against every rank's
    videos); the loss is the mean of the video->text and text->video cross-entropies. Features are
    L2-normalised here; logits are cosine similarities divided by ``temperature``. ``negatives`` ``[N, D]``:
    hard-negative texts (captions that describe no video of the batch, e.g. one attribute changed), which every
    video must also score below its own caption (NegCLIP's video->text side; they have no video to retrieve).
    """
    if video.shape != text.shape or video.ndim != 2:
        raise ValueError(f"video {tuple(video.shape)} and text {tuple(text.shape)} must both be [B, D]")
    v = F.normalize(video.float(), dim=-1)
    t = F.normalize(text.float(), dim=-1)
    counts = rows_per_rank(v.shape[0])
    all_v, all_t = gather_with_grad(v, counts), gather_with_grad(t, counts)
    if negatives is not None:
        if negatives.ndim != 2 or negatives.shape[1] != t.shape[1]:
            raise ValueError(f"negatives {tuple(negatives.shape)} must be [N, {t.shape[1]}]")
        negative_counts = rows_per_rank(negatives.shape[0])  # every rank calls: the same collectives on all
        if sum(negative_counts):
            all_t = torch.cat([all_t, gather_with_grad(F.normalize(negatives.float(), dim=-1), negative_counts)])
    rank, _ = distributed_world()
    targets = torch.arange(v.shape[0], device=v.device) + sum(counts[:rank])
    scale = 1.0 / temperature.float()
    v2t = F.cross_entropy(v @ all_t.T * scale, targets)
    t2v = F.cross_entropy(t @ all_v.T * scale, targets)
    return (v2t + t2v) / 2
