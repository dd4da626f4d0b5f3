"""Video input: from a video or image file to the encoder's ``[B, 3, T, H, W]`` input (issue 3).

Decoding (decord, PyAV fallback, timeouts, one error type), sampling, test views, flexible training
sampling with whole-clip augmentation, time segments, annotation datasets and a loader that skips bad files.
See docs/video-input.md.
"""

from .annotations import Annotation, AnnotationError, read_annotations
from .dataset import SkippedVideo, VideoDataset, VideoLoader, skip_bad_collate
from .decode import BACKENDS, DEFAULT_TIMEOUT, MAX_PIXELS, is_image, probe, read_frames
from .errors import VideoDecodeError
from .flexible import FlexibleSampler, trained_samplings
from .frames import Frames, VideoInfo
from .load import Clip, decode_clip, load_clip, load_views
from .sampling import clip_positions, sample_indices, window_frames
from .segments import Segment, segments
from .transforms import MultiScaleCrop, RandAug, TrainAugment, normalize, resize_short_side, spatial_crops

__all__ = [
    "Annotation", "AnnotationError", "BACKENDS", "Clip", "DEFAULT_TIMEOUT",
    "FlexibleSampler", "Frames", "MAX_PIXELS", "MultiScaleCrop", "RandAug", "Segment", "SkippedVideo",
    "TrainAugment", "VideoDataset", "VideoDecodeError", "VideoInfo", "VideoLoader", "clip_positions",
    "decode_clip", "is_image", "load_clip", "load_views", "normalize", "probe", "read_annotations", "read_frames",
    "resize_short_side",
    "sample_indices", "segments", "skip_bad_collate", "spatial_crops", "trained_samplings", "window_frames",
]
