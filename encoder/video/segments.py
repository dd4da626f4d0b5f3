"""Split a long video into time windows, for moment-level search and for chat over long videos."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Segment:
    """``[start, end)`` seconds of a video; ``whole`` marks the entry that spans the entire video."""

    start: float
    end: float
    whole: bool = False

    @property
    def duration(self) -> float:
        return self.end - self.start


def segments(duration: float, window: float, stride: float | None = None, include_whole: bool = True) -> list[Segment]:
    """Windows of ``window`` seconds every ``stride`` seconds (default: ``window``, no overlap) that cover
    ``[0, duration]``.

    Every window has the full length (the last one is moved back to end at ``duration``) unless the video is
    shorter than one window. ``include_whole`` prepends the whole video as its own segment when it is split
    into more than one window. ``stride > window`` is refused: it would leave gaps no search could reach.
    """
    stride = window if stride is None else stride
    if window <= 0 or stride <= 0:
        raise ValueError(f"window and stride must be positive, got window={window}, stride={stride}")
    if stride > window:
        raise ValueError(f"stride {stride} s is longer than the window {window} s: the windows would leave gaps")
    if duration <= window:
        return [Segment(0.0, float(duration), whole=True)]
    windows: list[Segment] = []
    k = 0
    while k * stride + window < duration:
        windows.append(Segment(float(round(k * stride, 6)), float(round(k * stride + window, 6))))
        k += 1
    last = Segment(float(round(duration - window, 6)), float(duration))
    if last.start > windows[-1].start:
        windows.append(last)
    return ([Segment(0.0, float(duration), whole=True)] if include_whole else []) + windows
