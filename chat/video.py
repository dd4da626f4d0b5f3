"""A video file (or a time window of it) as the encoder's input plus what the prompt says about it."""

from __future__ import annotations

from pathlib import Path

import torch

from encoder.budget import Plan
from encoder.video import load_clip as load_encoder_clip

from .prompt import VideoContext


def load_clip(
    path: str | Path, plan: Plan, start: float | None = None, end: float | None = None, threads: int = 0
) -> tuple[torch.Tensor, VideoContext]:
    """``plan.frames`` frames sampled uniformly over ``[start, end)`` seconds (default: the whole file) as a
    normalised ``[3, T, S, S]`` clip, with the clip's duration and frame timestamps (seconds of the file).

    Raises :class:`encoder.video.VideoDecodeError` for a file (or window) that cannot give them.
    """
    clip = load_encoder_clip(path, plan, start, end, threads=threads)
    timestamps = tuple(round(float(t), 3) for t in clip.timestamps)
    if start is None and end is None:
        return clip.video, VideoContext(clip.info.duration, timestamps)
    begin = 0.0 if start is None else float(start)
    finish = clip.info.duration if end is None else min(float(end), clip.info.duration)
    return clip.video, VideoContext(round(finish - begin, 3), timestamps, begin, finish)
