"""Shared by the backends: the callback types of a read, and a cheap look at the stream header."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .frames import VideoInfo

Pick = Callable[[VideoInfo], "np.ndarray | None"]
"""Given the probed video, the sorted unique frame indices to decode (None: probe only)."""

Size = Callable[[int, int], tuple[int, int]]
"""Given the native (width, height), the (width, height) to decode at."""


QUICK_OPEN = {"probesize": "32", "analyzeduration": "0"}
"""FFmpeg options that read only the container header (about 1 ms instead of 12 ms for a 720p mp4, which
would otherwise decode frames to probe the streams). Containers whose header lacks the frame size (raw or
transport streams) are opened again with the full probe."""


@dataclass(frozen=True)
class StreamHeader:
    """What the container header says about the first video stream."""

    width: int
    height: int
    codec: str


def read_header(path: str) -> StreamHeader | None:
    """The first video stream's size and codec from the container header (no decoding), if FFmpeg can parse it.

    decord takes its output size at open, before it can tell the frame size: this lets it decode a huge
    video at a reduced size from the start, and lets ``auto`` route codecs decord mishandles to PyAV.
    """
    import av

    for options in (QUICK_OPEN, {}):
        try:
            with av.open(path, metadata_errors="ignore", options=options) as container:
                streams = container.streams.video
                if streams and streams[0].codec_context.width > 0:
                    context = streams[0].codec_context
                    return StreamHeader(context.width, context.height, context.name)
        except (av.error.FFmpegError, OSError, ValueError):
            return None
    return None
