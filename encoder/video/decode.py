"""Open a video (or image) and decode exactly the requested frames, whatever goes wrong raising VideoDecodeError.

decord is the primary backend, PyAV the fallback (``backend="auto"``), or either can be forced. Every read
runs in a helper thread with a deadline, so a decoder stuck on a bad file or a stalled file system costs the
caller ``timeout`` seconds, not the epoch. Frames are decoded at a reduced size when the caller asks for a
smaller short side or when they would exceed ``max_pixels`` (an 8K file does not exhaust memory).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import decord_backend, image_backend, pyav_backend
from .errors import VideoDecodeError
from .frames import Frames, VideoInfo, decode_size, frames_at
from .header import read_header

log = logging.getLogger(__name__)

BACKENDS = ("auto", "decord", "pyav")
DEFAULT_TIMEOUT = 60.0
"""Seconds one read may take (open + index + decode) before it is abandoned."""
MAX_PIXELS = 1920 * 1080
"""Frames larger than this are decoded scaled down (aspect kept): the model never needs more."""

Indices = Sequence[int] | np.ndarray | Callable[[VideoInfo], Sequence[int] | np.ndarray]


def _check_file(path: str) -> None:
    """Reasons that need no decoder, stated plainly."""
    p = Path(path)
    if not p.exists():
        raise VideoDecodeError(path, "file does not exist")
    if p.is_dir():
        raise VideoDecodeError(path, "is a directory, not a video file")
    if not os.access(p, os.R_OK):
        raise VideoDecodeError(path, "permission denied")
    if p.is_file() and p.stat().st_size == 0:
        raise VideoDecodeError(path, "empty file (0 bytes)")


def is_image(path: str | Path) -> bool:
    """Still images are one-frame videos; training batches them apart from multi-frame clips."""
    return Path(path).suffix.lower() in image_backend.SUFFIXES


def _backends(path: str, backend: str) -> list:
    if backend not in BACKENDS:
        raise ValueError(f"unknown video backend {backend!r}; choose one of {BACKENDS}")
    if is_image(path):
        return [image_backend]
    if backend == "decord":
        if not decord_backend.available():
            raise VideoDecodeError(path, "the decord backend was requested but decord is not installed")
        return [decord_backend]
    if backend == "pyav":
        return [pyav_backend]
    return [decord_backend, pyav_backend] if decord_backend.available() else [pyav_backend]


def _with_deadline(path: str, timeout: float | None, work: Callable[[threading.Event], object]) -> object:
    """Run ``work(cancel)`` in a daemon thread; past ``timeout`` seconds, set ``cancel`` and raise.

    A decoder blocked inside C code cannot be killed from Python: its thread is abandoned (it is a daemon and
    exits when the call returns; PyAV checks ``cancel`` between frames and stops early).
    """
    cancel = threading.Event()
    if timeout is None:
        return work(cancel)
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["value"] = work(cancel)
        except BaseException as exc:  # handed to the caller's thread below
            outcome["error"] = exc

    thread = threading.Thread(target=run, name=f"decode:{Path(path).name}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        cancel.set()
        log.warning("decoding %s passed its %.3g s deadline; the decoder thread is abandoned", path, timeout)
        raise VideoDecodeError(path, f"timed out after {timeout:.3g} s")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]


def _read(path: str, pick, size, backend: str, threads: int, timeout: float | None):
    candidates = _backends(path, backend)

    caller_errors: list[BaseException] = []

    def checked_pick(info: VideoInfo):
        try:
            return pick(info)
        except Exception as exc:  # the caller's choice failed: final, no fallback
            caller_errors.append(exc)
            raise

    def work(cancel: threading.Event):
        _check_file(path)  # inside the deadline too: a stalled file system can hang a stat()
        failures: list[VideoDecodeError] = []
        if backend == "auto" and decord_backend in candidates:
            header = read_header(path)
            # Not a container FFmpeg parses (PyAV says why; decord only logs), or a codec decord mis-seeks.
            if header is None or header.codec in decord_backend.UNRELIABLE_CODECS:
                candidates.remove(decord_backend)
        for module in candidates:
            try:
                return module.read(path, checked_pick, size, threads, cancel)
            except Exception as exc:
                if any(exc is e for e in caller_errors) or cancel.is_set():
                    raise
                if not isinstance(exc, VideoDecodeError):  # a decoder failing in a way nobody foresaw
                    log.debug("%s raised on %s", module.NAME, path, exc_info=True)
                    exc = VideoDecodeError(path, f"{module.NAME}: unexpected {type(exc).__name__}: {exc}")
                log.debug("%s could not read %s: %s", module.NAME, path, exc.reason)
                failures.append(exc)
        if len(failures) == 1:
            raise failures[0]
        # Report the fallback's reason (PyAV's are the clearer), with the primary's after it.
        raise VideoDecodeError(path, f"{failures[-1].reason} (also {failures[0].reason})")

    return _with_deadline(path, timeout, work)


def probe(path: str | Path, backend: str = "auto", timeout: float | None = DEFAULT_TIMEOUT) -> VideoInfo:
    """Duration, fps, frame count and size of a video (or image), from its frame timestamps; no decoding."""
    path = str(path)
    info, _ = _read(path, lambda info: None, lambda w, h: (w, h), backend, 0, timeout)
    return info


def read_frames(
    path: str | Path,
    indices: Indices | None = None,
    *,
    timestamps: Sequence[float] | np.ndarray | None = None,
    short_side: int | None = None,
    max_pixels: int | None = MAX_PIXELS,
    backend: str = "auto",
    timeout: float | None = DEFAULT_TIMEOUT,
    threads: int = 0,
) -> Frames:
    """Decode the frames at ``indices`` (presentation order; repeats allowed), or the frames on screen at
    ``timestamps`` (seconds from the first frame), or every frame when both are None.

    ``indices`` may be a function of the probed :class:`VideoInfo`, so that a sampler picks frames from the
    real frame count with a single open. Frames come back RGB uint8 ``[T, H, W, 3]`` in the requested order,
    with the short side reduced to ``short_side`` (never enlarged) and at most ``max_pixels`` pixels.
    ``threads``: decoder threads (0: the decoder's choice). Raises :class:`VideoDecodeError` for any file that
    cannot deliver them; ``IndexError`` for indices outside the video (a caller's bug, not a bad file).
    """
    if indices is not None and timestamps is not None:
        raise ValueError("give indices or timestamps, not both")
    path = str(path)
    requested: dict[str, np.ndarray] = {}

    def pick(info: VideoInfo) -> np.ndarray:
        if timestamps is not None:
            chosen = frames_at(info.frame_times, np.asarray(timestamps, dtype=np.float64))
        elif indices is None:
            chosen = np.arange(info.num_frames)
        else:
            chosen = np.asarray(indices(info) if callable(indices) else indices, dtype=np.int64).reshape(-1)
        if chosen.size == 0:
            raise ValueError("no frames requested")
        if chosen.min() < 0 or chosen.max() >= info.num_frames:
            raise IndexError(f"frame indices must lie in [0, {info.num_frames}) for {path}, got "
                             f"{chosen.min()}..{chosen.max()}")
        requested["indices"] = chosen
        return np.unique(chosen)

    def size(width: int, height: int) -> tuple[int, int]:
        return decode_size(width, height, short_side, max_pixels)

    info, data = _read(path, pick, size, backend, threads, timeout)
    chosen = requested["indices"]
    unique, inverse = np.unique(chosen, return_inverse=True)
    if len(data) != len(unique):
        raise VideoDecodeError(path, f"{info.backend} returned {len(data)} of {len(unique)} requested frames")
    frames = data if len(unique) == len(chosen) and np.array_equal(unique, chosen) else data[inverse]
    return Frames(np.ascontiguousarray(frames), chosen, info.frame_times[chosen], info)
