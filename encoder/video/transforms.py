"""Whole-clip tensor transforms: one call per clip, the same random parameters for every frame of it.

Random choices come from torch's global RNG, which DataLoader seeds per worker and epoch (``torch.manual_seed``
makes a run repeatable).

Clips are uint8 ``[T, 3, H, W]`` tensors until :func:`normalize` turns them into the encoder's float32
``[3, T, S, S]`` layout (RGB, ImageNet statistics from :mod:`encoder.constants`).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from ..constants import IMAGENET_MEAN, IMAGENET_STD

TRAIN_DECODE_RATIO = 256 / 224
"""Training decodes at a short side this much larger than the crop (the usual 256 -> 224), so that the
multi-scale crop cuts real pixels rather than upsampling."""


def to_clip(frames: np.ndarray) -> torch.Tensor:
    """Decoded ``[T, H, W, 3]`` uint8 frames as a ``[T, 3, H, W]`` uint8 tensor (no copy of the pixels)."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2)


def resize_short_side(clip: torch.Tensor, size: int) -> torch.Tensor:
    """Resize every frame so that its short side is ``size`` (antialiased bilinear, aspect kept)."""
    if min(clip.shape[-2:]) == size:
        return clip
    return TF.resize(clip.contiguous(), [size], antialias=True)


def _crop_starts(length: int, size: int, count: int) -> list[int]:
    if count == 1:
        return [(length - size) // 2]
    return [round(i * (length - size) / (count - 1)) for i in range(count)]


def spatial_crops(clip: torch.Tensor, size: int, crops: int = 1) -> torch.Tensor:
    """``crops`` square crops of side ``size`` along the long side ([V, T, 3, S, S]).

    One crop is the centre; three are start / centre / end (left-centre-right for landscape frames,
    top-centre-bottom for portrait), as in the model zoo's 3-crop test protocol.
    """
    if crops not in (1, 3):
        raise ValueError(f"crops must be 1 or 3, got {crops}")
    height, width = clip.shape[-2:]
    if min(height, width) < size:
        raise ValueError(f"frames of {width}x{height} are smaller than the crop {size}")
    if width >= height:
        ys = [(height - size) // 2] * crops
        xs = _crop_starts(width, size, crops)
    else:
        xs = [(width - size) // 2] * crops
        ys = _crop_starts(height, size, crops)
    return torch.stack([clip[..., y:y + size, x:x + size] for y, x in zip(ys, xs)])


def normalize(clip: torch.Tensor) -> torch.Tensor:
    """uint8 ``[..., T, 3, H, W]`` -> float32 ``[..., 3, T, H, W]`` scaled to [0, 1] and normalised."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)
    out = clip.to(torch.float32).div_(255.0).sub_(mean).div_(std)
    return out.transpose(-4, -3).contiguous()


class MultiScaleCrop:
    """TSN multi-scale crop: crop height and width each ``scale * short side`` for scales from ``scales``
    (at most ``max_distort`` steps apart, so the aspect changes little), at a random place, resized to
    ``size x size``."""

    def __init__(self, scales: Sequence[float] = (1.0, 0.875, 0.75, 0.66), max_distort: int = 1) -> None:
        if not scales or any(not 0 < s <= 1 for s in scales):
            raise ValueError(f"scales must lie in (0, 1], got {scales}")
        self.scales = tuple(scales)
        self.max_distort = max_distort

    def __call__(self, clip: torch.Tensor, size: int) -> torch.Tensor:
        height, width = clip.shape[-2:]
        base = min(height, width)
        sides = [max(1, int(base * s)) for s in self.scales]
        pairs = [(h, w) for i, h in enumerate(sides) for j, w in enumerate(sides) if abs(i - j) <= self.max_distort]
        crop_h, crop_w = pairs[int(torch.randint(len(pairs), (1,)))]
        y = int(torch.randint(height - crop_h + 1, (1,)))
        x = int(torch.randint(width - crop_w + 1, (1,)))
        crop = clip[..., y:y + crop_h, x:x + crop_w].contiguous()
        return F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


class RandAug:
    """RandAugment on a whole clip: ``num_ops`` ops at ``magnitude`` (of 30), the magnitude drawn per clip
    from N(magnitude, magnitude_std) as timm's ``rand-m9-mstd0.5`` (the paper's "RandAug(9, 0.5)")."""

    def __init__(self, num_ops: int = 2, magnitude: float = 9, magnitude_std: float = 0.5) -> None:
        self.magnitude = magnitude
        self.magnitude_std = magnitude_std
        self._op = v2.RandAugment(num_ops=num_ops, magnitude=round(magnitude), num_magnitude_bins=31)

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        if self.magnitude_std > 0:
            drawn = float(torch.normal(float(self.magnitude), float(self.magnitude_std), (1,)))
            self._op.magnitude = int(min(30, max(0, round(drawn))))
        return self._op(tv_tensors.Video(clip)).as_subclass(torch.Tensor)


class TrainAugment:
    """Training augmentation of a decoded clip: multi-scale crop -> horizontal flip (when the labels allow
    it) -> RandAugment; uint8 ``[T, 3, H, W]`` in, normalised float ``[3, T, S, S]`` out."""

    def __init__(
        self,
        scales: Sequence[float] = (1.0, 0.875, 0.75, 0.66),
        flip: bool = True,
        randaug: RandAug | None = None,
    ) -> None:
        self.crop = MultiScaleCrop(scales)
        self.flip = flip
        self.randaug = randaug

    def decode_short_side(self, size: int) -> int:
        return math.ceil(size * TRAIN_DECODE_RATIO)

    def __call__(self, clip: torch.Tensor, size: int) -> torch.Tensor:
        clip = self.crop(clip, size)
        if self.flip and bool(torch.rand(()) < 0.5):
            clip = clip.flip(-1)
        if self.randaug is not None:
            clip = self.randaug(clip)
        return normalize(clip)
