"""Pixels for a :class:`~app.demo.world.ClipSpec`: textured background plus the objects, rasterised for all
frames at once with numpy, written as h264 mp4 with PyAV (temporary file, then rename)."""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np

from .world import COLOURS, SIZES, ClipSpec, object_state


def background(spec: ClipSpec) -> np.ndarray:
    """``[H, W, 3]`` uint8: stripes, checks, a gradient or smooth noise in two muted colours."""
    rng = np.random.default_rng(spec.seed)
    h, w = spec.height, spec.width
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    if spec.background == "stripes":
        period = rng.integers(10, 24)
        weight = (np.sin(2 * np.pi * (x + 0.5 * y) / period) > 0).astype(np.float32)
    elif spec.background == "checks":
        cell = rng.integers(10, 20)
        weight = ((x // cell + y // cell) % 2).astype(np.float32)
    elif spec.background == "gradient":
        weight = (x / w * 0.6 + y / h * 0.4).astype(np.float32)
    else:
        coarse = rng.random((h // 16 + 2, w // 16 + 2)).astype(np.float32)
        weight = np.kron(coarse, np.ones((16, 16), np.float32))[:h, :w]
    dark, light = (np.array(c, np.float32) for c in spec.background_colours)
    image = dark + weight[..., None] * (light - dark)
    image += rng.normal(0, 4, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def object_masks(spec: ClipSpec, index: int, times: np.ndarray) -> np.ndarray:
    """``[T, H, W]`` bool: where object ``index`` covers each frame."""
    obj = spec.objects[index]
    states = [object_state(spec, index, float(t)) for t in times]
    cx = np.array([s.x * spec.width for s in states], np.float32)[:, None, None]
    cy = np.array([s.y * spec.height for s in states], np.float32)[:, None, None]
    half = np.array([SIZES[obj.size] * min(spec.width, spec.height) * s.scale for s in states],
                    np.float32)[:, None, None]
    angle = np.radians(np.array([s.angle for s in states], np.float32))[:, None, None]
    visible = np.array([s.visible for s in states])[:, None, None]
    y, x = np.mgrid[0:spec.height, 0:spec.width].astype(np.float32)
    dx, dy = x[None] - cx, y[None] - cy
    # object coordinates: rotate the pixel offsets back by the object's angle (clockwise on screen, y down)
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    if obj.shape == "circle":
        inside = u * u + v * v <= half * half
    elif obj.shape == "square":
        inside = (np.abs(u) <= half * 0.85) & (np.abs(v) <= half * 0.85)
    elif obj.shape == "bar":
        inside = (np.abs(u) <= half * 1.3) & (np.abs(v) <= half * 0.4)
    elif obj.shape == "triangle":
        # tall and narrow: only a mirror symmetry, so a quarter turn either way reads as that turn and no other
        top = -half * 1.25
        inside = (v >= top) & (v <= half * 0.75) & (np.abs(u) <= (v - top) / (half * 2.0) * half * 0.6)
    else:
        raise ValueError(f"unknown shape {obj.shape!r}")
    return inside & visible


def render(spec: ClipSpec) -> np.ndarray:
    """``[T, H, W, 3]`` uint8 frames."""
    times = np.arange(spec.num_frames) / spec.fps
    frames = np.repeat(background(spec)[None], spec.num_frames, axis=0)
    for index, obj in enumerate(spec.objects):
        mask = object_masks(spec, index, times)
        frames[mask] = COLOURS[obj.colour]
    return frames


#: Repeatable x264 settings (see :func:`write_mp4`).
X264_OPTIONS = {"crf": "20", "preset": "veryfast", "threads": "1", "x264-params": "asm=0"}


def write_mp4(frames: np.ndarray, fps: int, path: Path) -> Path:
    """h264 (yuv420p, even sizes) via PyAV, written to a temporary file and renamed. x264's assembly kernels make
    the same frames encode to different files from run to run, even on one thread (3 distinct files in 25
    encodes of one clip), so a world rendered twice from one seed differed. Turning off macroblock-tree rate
    control made it repeat too but changed the encode enough to move the shipped models' scores (chat 0.80 to
    0.74); plain C kernels keep the encode's character (the same scores within 0.02) for about three times the
    encoding time. One encoder thread as well: the render already runs a process per core."""
    tmp = path.with_name(path.name + ".tmp.mp4")
    with av.open(str(tmp), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps, options=X264_OPTIONS)
        stream.height, stream.width = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2
        stream.pix_fmt = "yuv420p"
        for image in frames[:, :stream.height, :stream.width]:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")))
        container.mux(stream.encode(None))
    os.replace(tmp, path)
    return path


def colour_mask(frames: np.ndarray, colour: tuple[int, int, int], tolerance: float = 60.0) -> np.ndarray:
    """``[T, H, W]`` bool: the pixels near ``colour`` (decoded video is lossy, hence the tolerance)."""
    return np.linalg.norm(frames.astype(np.float32) - np.array(colour, np.float32), axis=-1) < tolerance


def centroid_track(frames: np.ndarray, colour: tuple[int, int, int], tolerance: float = 60.0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: the centroid ``[T, 2]`` (x, y; NaN when absent) and the area of pixels near ``colour``."""
    mask = colour_mask(frames, colour, tolerance)
    area = mask.sum(axis=(1, 2))
    y, x = np.mgrid[0:frames.shape[1], 0:frames.shape[2]]
    with np.errstate(invalid="ignore", divide="ignore"):
        cx = (mask * x).sum(axis=(1, 2)) / area
        cy = (mask * y).sum(axis=(1, 2)) / area
    return np.stack([cx, cy], axis=1), area
