"""From a file and a :class:`~encoder.Plan` to the encoder's input: one clip, or the clips x crops test views.

Each call opens the file once: the frame indices are chosen from the real frame count and timestamps inside
the decoder's read, and only the needed frames are decoded, already scaled to about the size they will have.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from .decode import DEFAULT_TIMEOUT, read_frames
from .errors import VideoDecodeError
from .frames import VideoInfo
from .sampling import clip_positions, sample_indices, window_frames
from .transforms import TrainAugment, normalize, resize_short_side, spatial_crops, to_clip


class SamplingPlan(Protocol):
    """What loading needs from a plan (:class:`encoder.Plan` has it): frames and square resolution."""

    @property
    def frames(self) -> int: ...

    @property
    def resolution(self) -> int: ...


@dataclass(frozen=True)
class Clip:
    """Encoder input for one video.

    ``video``: float32 ``[3, T, S, S]`` for one view (uint8 ``[T, 3, S, S]`` from :func:`decode_clip`), or
    ``[V, 3, T, S, S]`` for ``V = clips x crops`` views (view ``c * crops + k`` is temporal clip ``c``, spatial
    crop ``k``). ``timestamps`` (seconds) and ``indices``: ``[T]``, or ``[clips, T]`` for views.
    """

    video: torch.Tensor
    timestamps: np.ndarray
    indices: np.ndarray
    info: VideoInfo


def _picker(path: str, plan: SamplingPlan, start: float | None, end: float | None, positions: list[float] | None,
            train: bool):
    """The index choice, made inside the read once the video's frame times are known."""

    def pick(info: VideoInfo) -> np.ndarray:
        try:
            window = window_frames(info.frame_times, start, end)
        except ValueError as exc:
            raise VideoDecodeError(path, f"{exc} (video lasts {info.duration:g} s)") from None
        if train:
            return sample_indices(info.num_frames, plan.frames, "train", window)
        return np.concatenate([sample_indices(info.num_frames, plan.frames, "test", window, p) for p in positions])

    return pick


def load_clip(
    path: str | Path,
    plan: SamplingPlan,
    start: float | None = None,
    end: float | None = None,
    *,
    augment: TrainAugment | None = None,
    backend: str = "auto",
    timeout: float | None = DEFAULT_TIMEOUT,
    threads: int = 0,
) -> Clip:
    """``plan.frames`` frames sampled uniformly over ``[start, end)`` seconds (default: the whole video) as a
    normalised ``[3, T, S, S]`` clip, ``S = plan.resolution``.

    Without ``augment`` (evaluation): the middle frame of each segment, short side resized to S, centre crop.
    With ``augment`` (training): a random frame per segment and the augmentation's random crop / flip /
    RandAugment, shared by all frames. Images give ``plan.frames`` copies of the image.
    """
    if augment is None:
        clip = decode_clip(path, plan, start, end, backend=backend, timeout=timeout, threads=threads)
        return replace(clip, video=normalize(clip.video))
    path = str(path)
    pick = _picker(path, plan, start, end, [0.5], True)
    frames = read_frames(path, pick, short_side=augment.decode_short_side(plan.resolution), backend=backend,
                         timeout=timeout, threads=threads)
    return Clip(augment(to_clip(frames.data), plan.resolution), frames.timestamps, frames.indices, frames.info)


def decode_clip(
    path: str | Path,
    plan: SamplingPlan,
    start: float | None = None,
    end: float | None = None,
    *,
    backend: str = "auto",
    timeout: float | None = DEFAULT_TIMEOUT,
    threads: int = 0,
) -> Clip:
    """:func:`load_clip`'s evaluation sampling stopped before :func:`normalize`: uint8 ``[T, 3, S, S]``, a
    quarter of the memory, for caches that keep clips (``normalize(clip.video)`` is load_clip's video)."""
    path = str(path)
    pick = _picker(path, plan, start, end, [0.5], False)
    frames = read_frames(path, pick, short_side=plan.resolution, backend=backend, timeout=timeout, threads=threads)
    video = spatial_crops(resize_short_side(to_clip(frames.data), plan.resolution), plan.resolution)[0]
    return Clip(video, frames.timestamps, frames.indices, frames.info)


def load_views(
    path: str | Path,
    plan: SamplingPlan,
    clips: int = 4,
    crops: int = 3,
    start: float | None = None,
    end: float | None = None,
    *,
    backend: str = "auto",
    timeout: float | None = DEFAULT_TIMEOUT,
    threads: int = 0,
) -> Clip:
    """The ``clips x crops`` test views (model zoo "8x3x4" = 8 frames, 3 crops, 4 clips) as
    ``[clips * crops, 3, T, S, S]``.

    Temporal clip ``c`` takes the frame at ``(c + 0.5) / clips`` of every segment, so the clips interleave
    evenly; the short side is resized to S and ``crops`` (1 or 3) square crops are cut along the long side.
    All frames of all clips come from one decode.
    """
    path = str(path)
    pick = _picker(path, plan, start, end, clip_positions(clips), False)
    frames = read_frames(path, pick, short_side=plan.resolution, backend=backend, timeout=timeout, threads=threads)
    resized = resize_short_side(to_clip(frames.data), plan.resolution)
    views = spatial_crops(resized, plan.resolution, crops)  # [crops, clips * T, 3, S, S]
    views = views.unflatten(1, (clips, plan.frames)).transpose(0, 1).flatten(0, 1)  # [clips * crops, T, 3, S, S]
    return Clip(
        normalize(views), frames.timestamps.reshape(clips, plan.frames),
        frames.indices.reshape(clips, plan.frames), frames.info,
    )
