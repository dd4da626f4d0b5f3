"""``VideoIndex``: a built index opened for searching (thread-safe; follows a build running beside it)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import vectors
from .store import IndexStoreError, SegmentRecord, SkippedFile, Store

REBUILD_GAP_S = 2.0
"""Least time between two rebuilds of the search structure from SQLite by one reader (see ``_refresh``)."""


@dataclass(frozen=True)
class IndexStats:
    videos: int
    segments: int
    skipped: list[SkippedFile]
    model_id: str
    model_path: str
    budget: int
    dim: int
    index_type: str
    built_at: float
    window: float
    stride: float

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "skipped": [s.__dict__ for s in self.skipped]}


class VideoIndex:
    def __init__(self, store: Store) -> None:
        self.store = store
        info = store.info()
        if info is None:
            raise IndexStoreError(store.dir, "holds no build yet")
        self.info = info
        self._lock = threading.RLock()
        self._generation = -1
        self._faiss = None
        self._gpu = None
        self._next_rebuild = 0.0
        self._positions: np.ndarray | None = None
        self._kind: vectors.IndexType = "flat"

    @classmethod
    def open(cls, index_dir: str | Path) -> "VideoIndex":
        """Open an index for searching; :class:`IndexStoreError` when there is none or it is unreadable."""
        index = cls(Store(index_dir))
        index._refresh()
        return index

    @property
    def dir(self) -> Path:
        return self.store.dir

    def _refresh(self) -> None:
        """Load the FAISS file of the store's generation; rebuild it from SQLite when it is stale or missing
        (a build that was killed before writing it, or one that is still running).

        While a build runs beside this reader the generation moves with every committed video; rebuilding each
        time would spend the reader's CPU on rebuilds (minutes for a large HNSW), so after a rebuild that took t
        seconds the older structure keeps serving for max(REBUILD_GAP_S, 10 t) seconds. That is safe: hits of
        segments since deleted are dropped against SQLite, and new videos appear at the next rebuild or as
        soon as the build writes its FAISS file."""
        with self._lock:
            generation = self.store.generation
            if generation == self._generation:
                return
            loaded = vectors.load(self.dir, generation)
            if loaded is not None and not vectors.is_current(loaded, vectors.resolve_type(self.info.index_type,
                                                                                           loaded.ntotal)):
                loaded = None  # written by an older FluxVid: rebuilt below
            if loaded is None:
                if self._faiss is not None and time.monotonic() < self._next_rebuild:
                    return
                started = time.monotonic()
                ids, matrix = self.store.vectors(self.info.dim)
                kind = vectors.resolve_type(self.info.index_type, len(ids))
                loaded = vectors.build(ids, matrix, kind)
                try:
                    vectors.save(loaded, self.dir, generation)
                except OSError:
                    pass  # a read-only index folder: keep the rebuilt index in memory
                self._next_rebuild = time.monotonic() + max(REBUILD_GAP_S, 10 * (time.monotonic() - started))
            count = loaded.ntotal
            self._kind = vectors.resolve_type(self.info.index_type, count)
            self._faiss = loaded
            self._gpu = vectors.on_gpu(loaded, self._kind)
            self._positions = vectors.id_map(loaded) if self._kind == "ivfpq" else None
            self._generation = generation

    def stats(self) -> IndexStats:
        with self._lock:
            videos, segments = self.store.counts()
            i = self.info
            return IndexStats(videos, segments, self.store.skipped(), i.model_id, i.model_path, i.budget, i.dim,
                              i.index_type, self.store.built_at, i.window, i.stride)

    def segment_count(self) -> int:
        """Segments to search: the store's count, or the search structure's while it still holds more (it
        lags behind a build running beside this reader; see ``_refresh``)."""
        with self._lock:
            return max(self.store.counts()[1], self._faiss.ntotal if self._faiss is not None else 0)

    def segment(self, segment_id: int) -> SegmentRecord:
        with self._lock:
            found = self.store.segments([segment_id])
        if segment_id not in found:
            raise KeyError(f"no segment {segment_id} in index {self.dir}")
        return found[segment_id]

    def segments(self, ids: list[int]) -> dict[int, SegmentRecord]:
        with self._lock:
            return self.store.segments(ids)

    def vector(self, segment_id: int) -> np.ndarray:
        with self._lock:
            return self.store.vector(segment_id)

    def contains_path(self, path: str | Path) -> bool:
        """Whether ``path`` (resolved, so ``..`` tricks do not pass) is an indexed video of this library."""
        try:
            resolved = str(Path(path).resolve(strict=True))
        except (OSError, RuntimeError):
            return False
        with self._lock:
            return self.store.has_path(resolved)

    def allowed_ids(self, where: str, params: list[Any]) -> np.ndarray:
        with self._lock:
            return self.store.filtered_ids(where, params)

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, segment ids) ``[Q, k]`` by inner product; ids -1 pad when fewer segments qualify."""
        self._refresh()
        with self._lock:
            return vectors.search(self._faiss, self._kind, queries, k, allowed, gpu=self._gpu,
                                  positions=self._positions)

    def close(self) -> None:
        self.store.close()
