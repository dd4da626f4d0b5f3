"""decord backend: the primary decoder (fast batched random access; it indexes every packet at open)."""

from __future__ import annotations

import logging
import re
import threading

import numpy as np

from .errors import VideoDecodeError
from .frames import VideoInfo, timing
from .header import Pick, Size, read_header

log = logging.getLogger(__name__)

NAME = "decord"
UNRELIABLE_CODECS = frozenset({"hevc"})
"""Codecs decord seeks inaccurately in: on open-GOP HEVC (x265's default) ``get_batch`` returns frames a few
positions off after a seek (measured with decord 0.6.0; the tests check it). ``auto`` sends them to PyAV."""


def available() -> bool:
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


def _reason(exc: BaseException) -> str:
    """decord's messages carry a time stamp and a C++ source location; keep the words."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.sub(r"^\[[0-9:]+\]\s*\S+:\d+:\s*", "", text)
    text = re.sub(r"^Check failed: .*?\)\s*(ERROR\s*)?", "", text)
    return text.strip() or type(exc).__name__


def read(
    path: str, pick: Pick, size: Size, threads: int, cancel: threading.Event
) -> tuple[VideoInfo, np.ndarray | None]:
    import decord
    from decord._ffi.base import DECORDError

    decord.logging.set_level(decord.logging.QUIET)
    header = read_header(path)
    native = (header.width, header.height) if header is not None else None
    if header is not None and header.codec in UNRELIABLE_CODECS:
        log.warning("decord may return the wrong frames of %s (%s); backend='auto' would use PyAV", path, header.codec)
    kwargs = {}
    if native is not None and size(*native) != native:
        kwargs = dict(zip(("width", "height"), size(*native)))
    try:
        reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=threads, **kwargs)
        count = len(reader)
        if count == 0:
            raise VideoDecodeError(path, "no video frames")
        stamps = np.asarray(reader.get_frame_timestamp(np.arange(count)), dtype=np.float64)
        nominal_fps = float(reader.get_avg_fps())
        if native is None:  # no header size: learn it from the first frame, reopen scaled if it is too big
            first = reader[0].shape
            native = (int(first[1]), int(first[0]))
            if size(*native) != native:
                reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=threads,
                                            **dict(zip(("width", "height"), size(*native))))
    except (DECORDError, RuntimeError, OSError) as exc:
        raise VideoDecodeError(path, f"decord: {_reason(exc)}") from None
    if count > 1 and stamps[-1, 0] <= stamps[0, 0] and nominal_fps > 0:  # no usable timestamps at all
        stamps = np.stack([np.arange(count), np.arange(1, count + 1)], axis=1) / nominal_fps
    times, duration, fps = timing(stamps[:, 0], stamps[-1, 1] - stamps[-1, 0])
    info = VideoInfo(path, duration, fps, count, native[0], native[1], NAME, times)
    wanted = pick(info)
    if wanted is None:
        return info, None
    if cancel.is_set():
        raise VideoDecodeError(path, "cancelled: the deadline passed")
    try:
        data = reader.get_batch(wanted.tolist()).asnumpy()
    except (DECORDError, RuntimeError, OSError) as exc:
        raise VideoDecodeError(path, f"decord: {_reason(exc)}") from None
    return info, data
