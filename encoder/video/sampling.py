"""Which frames to decode: uniform sparse (segment-based, TSN-style) sampling over a video or a time window.

The window is split into ``count`` equal segments and one frame is taken from each: at a fixed position
inside every segment for evaluation (the middle by default; other positions give the extra temporal clips of
multi-view testing), at an independent random position per segment for training. Exactly ``count`` indices
come back, repeated when the window holds fewer frames than asked for.
"""

from __future__ import annotations

import numpy as np
import torch

MODES = ("test", "train")


def sample_indices(
    num_frames: int,
    count: int,
    mode: str = "test",
    window: tuple[int, int] | None = None,
    position: float = 0.5,
    generator: torch.Generator | None = None,
) -> np.ndarray:
    """``count`` frame indices in ``[start, end)`` of ``window`` (default: the whole video), sorted.

    ``mode="test"``: frame at ``position`` (in [0, 1)) of each segment; ``mode="train"``: a uniformly random
    frame of each segment, drawn from ``generator`` (torch's global RNG when None, which DataLoader seeds per
    worker and epoch).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    start, end = window if window is not None else (0, num_frames)
    if not 0 <= start < end <= num_frames:
        raise ValueError(f"window {start}..{end} is not a non-empty range inside 0..{num_frames}")
    if not 0.0 <= position < 1.0:
        raise ValueError(f"position must lie in [0, 1), got {position}")
    length = end - start
    segment = length / count
    if mode == "train":
        offsets = torch.rand(count, generator=generator, dtype=torch.float64).numpy()
    else:
        offsets = np.full(count, position)
    picks = np.floor((np.arange(count) + offsets) * segment).astype(np.int64)
    return start + np.clip(picks, 0, length - 1)


def clip_positions(clips: int) -> list[float]:
    """In-segment positions of ``clips`` temporal test clips: evenly spread, centred ((c + 0.5) / clips)."""
    if clips < 1:
        raise ValueError(f"clips must be >= 1, got {clips}")
    return [(c + 0.5) / clips for c in range(clips)]


def window_frames(frame_times: np.ndarray, start: float | None, end: float | None) -> tuple[int, int]:
    """The frame range ``[lo, hi)`` shown during ``[start, end)`` seconds (None: from the first / to the last).

    A window shorter than a frame still yields the frame on screen at ``start``. Raises ``ValueError`` for a
    window that is empty or starts after the last frame.
    """
    count = len(frame_times)
    begin = 0.0 if start is None else float(start)
    if end is not None and end <= begin:
        raise ValueError(f"time window {begin:g}..{end:g} s is empty")
    if begin > frame_times[-1] and count > 1:
        raise ValueError(f"time window starts at {begin:g} s, after the last frame ({frame_times[-1]:g} s)")
    lo = max(0, int(np.searchsorted(frame_times, begin + 1e-9, side="right")) - 1)
    hi = count if end is None else int(np.searchsorted(frame_times, float(end) - 1e-9, side="left"))
    return lo, max(hi, lo + 1)
