"""A video file (or a time window of it) as the encoder's input plus what the prompt says about it."""

from __future__ import annotations

from pathlib import Path

import torch

from encoder.budget import Plan
from encoder.video import decode_clip as decode_encoder_clip
from encoder.video import normalize

from .prompt import VideoContext


def decode_clip(
    path: str | Path, plan: Plan, start: float | None = None, end: float | None = None, threads: int = 0
) -> tuple[torch.Tensor, VideoContext]:
    """``plan.frames`` frames sampled uniformly over ``[start, end)`` seconds (default: the whole file) as a
    uint8 ``[T, 3, S, S]`` clip (``normalize`` makes it the encoder's input), with the clip's duration and
    frame timestamps (seconds of the file).

    Raises :class:`encoder.video.VideoDecodeError` for a file (or window) that cannot give them.
    """
    clip = decode_encoder_clip(path, plan, start, end, threads=threads)
    timestamps = tuple(round(float(t), 3) for t in clip.timestamps)
    if start is None and end is None:
        return clip.video, VideoContext(clip.info.duration, timestamps)
    begin = 0.0 if start is None else float(start)
    finish = clip.info.duration if end is None else min(float(end), clip.info.duration)
    return clip.video, VideoContext(round(finish - begin, 3), timestamps, begin, finish)


def load_clip(
    path: str | Path, plan: Plan, start: float | None = None, end: float | None = None, threads: int = 0
) -> tuple[torch.Tensor, VideoContext]:
    """:func:`decode_clip` as the encoder's normalised ``[3, T, S, S]`` input."""
    video, context = decode_clip(path, plan, start, end, threads)
    return normalize(video), context
