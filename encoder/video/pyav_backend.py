"""PyAV backend: the fallback decoder (reads whatever this FFmpeg build reads; decodes frame by frame).

Frame count and times come from the demuxed packets' timestamps (sorted into presentation order), not from
``average_rate``; a frame is identified by its pts, so seeking lands on exactly the requested frames.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from .errors import VideoDecodeError
from .frames import VideoInfo, timing
from .header import QUICK_OPEN, Pick, Size

NAME = "pyav"


class _Cancelled(Exception):
    """The caller stopped waiting (deadline passed): stop decoding."""


@dataclass
class _Index:
    pts: list[int]  # presentation order
    keyframes: list[int]  # pts of keyframe packets, sorted
    last_duration: int | None


def _index(path: str, container, stream, cancel: threading.Event) -> _Index:
    """Read every packet of the stream (no decoding) to learn each frame's pts and the keyframes."""
    pts: list[int] = []
    keyframes: list[int] = []
    last_duration = None
    last_pts = None
    fallback = 0
    for packet in container.demux(stream):
        if packet.size == 0:
            continue
        if cancel.is_set():
            raise _Cancelled
        stamp = packet.pts if packet.pts is not None else packet.dts
        if stamp is None:  # no timestamps in the container (raw streams): count packets
            stamp = fallback
        fallback += 1
        pts.append(stamp)
        if packet.is_keyframe:
            keyframes.append(stamp)
        if last_pts is None or stamp >= last_pts:
            last_pts, last_duration = stamp, packet.duration
    pts.sort()
    keyframes.sort()
    if stream.frames and len(pts) < stream.frames:
        raise VideoDecodeError(path, f"truncated: the index lists {stream.frames} frames, the file holds {len(pts)}")
    return _Index(pts, keyframes or pts[:1], last_duration or None)


def _decoded(container, stream, cancel: threading.Event) -> Iterator:
    for packet in container.demux(stream):
        for frame in packet.decode():
            if cancel.is_set():
                raise _Cancelled
            yield frame


def _decode(path: str, container, stream, index: _Index, wanted: np.ndarray, out: tuple[int, int],
            cancel: threading.Event) -> np.ndarray:
    """Decode the frames at ``wanted`` (sorted unique indices).

    Seeks to a target's keyframe only when the target lies behind the decoder or beyond the next keyframe, so
    consecutive targets decode sequentially. Should a seek land after its target (odd timestamps), decoding
    restarts once from the first frame and runs sequentially.
    """
    targets = [index.pts[i] for i in wanted]
    slot = {stamp: k for k, stamp in enumerate(targets)}
    result: list[np.ndarray | None] = [None] * len(targets)
    width, height = out
    frames: Iterator | None = None
    position: int | None = None
    from_start = False
    k = 0
    while k < len(targets):
        target = targets[k]
        key = index.keyframes[max(0, bisect.bisect_right(index.keyframes, target) - 1)]
        jump = key > position if position is not None and not from_start else False
        fresh = frames is None or position is None or position >= target or jump
        if fresh:
            container.seek(index.pts[0] if from_start else key, stream=stream, backward=True, any_frame=False)
            frames, position = _decoded(container, stream, cancel), None
        for frame in frames:
            stamp = frame.pts if frame.pts is not None else frame.dts
            if stamp is None:
                continue
            if fresh and position is None and stamp > target and not from_start:
                break
            position = stamp
            if stamp in slot and result[slot[stamp]] is None:
                result[slot[stamp]] = frame.to_ndarray(width=width, height=height, format="rgb24")
            if stamp >= target:
                break
        else:
            frames = None
        if result[k] is None:
            if from_start:
                break
            from_start, frames = True, None
            continue
        while k < len(targets) and result[k] is not None:
            k += 1
    missing = sum(r is None for r in result)
    if missing:
        raise VideoDecodeError(
            path, f"truncated or corrupt: {missing} of {len(targets)} requested frames did not decode")
    return np.stack(result)


def _open(path: str):
    """Open reading only the header; fall back to FFmpeg's full stream probe when that leaves the size unknown."""
    import av

    container = av.open(path, metadata_errors="ignore", options=QUICK_OPEN)
    video = container.streams.video
    if video and video[0].codec_context.width > 0:
        return container
    container.close()
    return av.open(path, metadata_errors="ignore")


def read(
    path: str, pick: Pick, size: Size, threads: int, cancel: threading.Event
) -> tuple[VideoInfo, np.ndarray | None]:
    import av

    try:
        with _open(path) as container:
            if not container.streams.video:
                kinds = sorted({s.type for s in container.streams}) or ["no"]
                raise VideoDecodeError(path, f"no video stream (the file has {', '.join(kinds)} streams)")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            if width <= 0 or height <= 0:
                raise VideoDecodeError(path, "the video stream has no frame size")
            index = _index(path, container, stream, cancel)
            if not index.pts:
                raise VideoDecodeError(path, "no video frames")
            base = stream.time_base or av.time_base
            last = float(index.last_duration * base) if index.last_duration else None
            times, duration, fps = timing(np.asarray(index.pts, dtype=np.float64) * float(base), last)
            info = VideoInfo(path, duration, fps, len(index.pts), width, height, NAME, times)
            wanted = pick(info)
            if wanted is None:
                return info, None
            stream.thread_type = "AUTO"
            stream.codec_context.thread_count = threads
            return info, _decode(path, container, stream, index, wanted, size(width, height), cancel)
    except _Cancelled:
        raise VideoDecodeError(path, "cancelled: the deadline passed") from None
    except av.error.EOFError:
        raise VideoDecodeError(path, "pyav: unexpected end of file (truncated, or no video data)") from None
    except av.error.FFmpegError as exc:
        raise VideoDecodeError(path, f"pyav: {exc.strerror or exc}") from None
    except (OSError, EOFError) as exc:
        raise VideoDecodeError(path, f"pyav: {exc}") from None
