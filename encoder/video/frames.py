"""What the decoders return, and the timing and sizing rules every backend shares.

Time comes from the stream's presentation timestamps, never from the nominal frame rate (containers and
PyAV's ``average_rate`` can be wrong, and variable-frame-rate files have no single rate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class VideoInfo:
    """A video's geometry and timing, measured from its frame timestamps.

    ``frame_times[i]`` is when frame ``i`` (presentation order) is shown, in seconds from the first frame;
    ``duration`` runs from the first frame to the end of the last one; ``fps = num_frames / duration``.
    Images are one-frame videos with ``duration == 0`` and ``fps == 0``.
    """

    path: str
    duration: float
    fps: float
    num_frames: int
    width: int
    height: int
    backend: str
    frame_times: np.ndarray = field(repr=False, compare=False)

    @property
    def is_image(self) -> bool:
        return self.backend == "pil"


@dataclass(frozen=True)
class Frames:
    """Decoded RGB frames: ``data`` is uint8 ``[T, H, W, 3]``; ``indices`` and ``timestamps`` (seconds) are
    per frame."""

    data: np.ndarray
    indices: np.ndarray
    timestamps: np.ndarray
    info: VideoInfo


def timing(pts_seconds: np.ndarray, last_frame_duration: float | None) -> tuple[np.ndarray, float, float]:
    """(frame times from 0, duration, fps) from the presentation times of every frame.

    The last frame lasts ``last_frame_duration`` when the container says so, else the median frame interval.
    """
    pts = np.sort(np.asarray(pts_seconds, dtype=np.float64))
    times = pts - pts[0]
    if last_frame_duration is not None and last_frame_duration > 0:
        last = float(last_frame_duration)
    elif len(times) > 1:
        last = float(np.median(np.diff(times)))
    else:
        last = 0.0
    times = np.round(times, 6)  # some demuxers report float32 seconds: drop the noise
    duration = round(float(times[-1] + last), 6)
    fps = len(times) / duration if duration > 0 else 0.0
    return times, duration, fps


def decode_size(width: int, height: int, short_side: int | None, max_pixels: int | None) -> tuple[int, int]:
    """The (width, height) to decode at: never upscaled, short side at most ``short_side``, at most
    ``max_pixels`` pixels, aspect ratio kept, both sides at least 1 pixel."""
    scale = 1.0
    if short_side is not None and min(width, height) > short_side:
        scale = short_side / min(width, height)
    if max_pixels is not None and width * height * scale * scale > max_pixels:
        scale = math.sqrt(max_pixels / (width * height))
    if scale >= 1.0:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def frames_at(frame_times: np.ndarray, seconds: np.ndarray) -> np.ndarray:
    """Index of the frame on screen at each time (the last frame shown at or before it, clamped to the video)."""
    idx = np.searchsorted(frame_times, np.asarray(seconds, dtype=np.float64) + 1e-9, side="right") - 1
    return np.clip(idx, 0, len(frame_times) - 1).astype(np.int64)
