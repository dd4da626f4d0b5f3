"""The offline video-library index: SQLite (source of truth) + FAISS (derived), built incrementally.

See docs/index.md for the storage layout, crash-safety guarantees and cluster use.
"""

from .build import BuildProgress, BuildReport, build_index, file_sha256, merge_indexes
from .sources import SourceItem, parse_shard, read_source, shard_folder
from .store import IndexInfo, IndexStoreError, SegmentRecord, SkippedFile
from .video_index import IndexStats, VideoIndex

IndexError_ = IndexStoreError
"""The contract's name for :class:`IndexStoreError` (``IndexError`` itself is a Python builtin)."""

__all__ = [
    "BuildProgress", "BuildReport", "IndexError_", "IndexInfo", "IndexStats", "IndexStoreError", "SegmentRecord",
    "SkippedFile", "SourceItem", "VideoIndex", "build_index", "file_sha256", "merge_indexes", "parse_shard",
    "read_source", "shard_folder",
]
