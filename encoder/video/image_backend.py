"""Still images (jpg, png, webp, ...) as one-frame videos, decoded with Pillow."""

from __future__ import annotations

import threading

import numpy as np

from .errors import VideoDecodeError
from .frames import VideoInfo
from .header import Pick, Size

NAME = "pil"
SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})


def read(
    path: str, pick: Pick, size: Size, threads: int, cancel: threading.Event
) -> tuple[VideoInfo, np.ndarray | None]:
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height = image.size
            info = VideoInfo(path, 0.0, 0.0, 1, width, height, NAME, np.zeros(1))
            if pick(info) is None:
                return info, None
            out = size(width, height)
            image.draft("RGB", out)  # JPEG: decode at a reduced scale directly
            rgb = image.convert("RGB")
            if rgb.size != out:
                rgb = rgb.resize(out, Image.Resampling.BILINEAR, reducing_gap=2.0)
            return info, np.array(rgb)[None]
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as exc:
        raise VideoDecodeError(path, f"image: {exc}") from None
