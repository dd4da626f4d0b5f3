"""The index's source of truth: one SQLite file (WAL) holding videos, segments and their vectors.

Every video is committed in one transaction together with all its segments and vectors, so a build killed at
any moment leaves the database at a consistent earlier state. The FAISS file beside it is derived data
(:mod:`index.vectors`) tagged with the ``generation`` counter kept here; a stale or missing one is rebuilt.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

DB_NAME = "index.sqlite"
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS videos (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime REAL NOT NULL,
    duration REAL,
    title TEXT,
    caption TEXT,
    tags TEXT NOT NULL DEFAULT '[]',
    metadata TEXT NOT NULL DEFAULT '{}',
    date REAL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'skipped')),
    reason TEXT,
    indexed_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS segments (
    id INTEGER PRIMARY KEY,
    video_id INTEGER NOT NULL REFERENCES videos(id) ON DELETE CASCADE,
    start REAL NOT NULL,
    end REAL NOT NULL,
    whole INTEGER NOT NULL,
    thumbnail TEXT,
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS segments_by_video ON segments(video_id);
CREATE TABLE IF NOT EXISTS tags (video_id INTEGER NOT NULL REFERENCES videos(id) ON DELETE CASCADE,
                                 tag TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS tags_by_tag ON tags(tag);
"""


class IndexStoreError(Exception):
    """An index that cannot be opened or used as asked; the message names the folder and the reason."""

    def __init__(self, index_dir: str | Path, reason: str) -> None:
        super().__init__(f"index {index_dir}: {reason}")
        self.index_dir, self.reason = str(index_dir), reason


@dataclass(frozen=True)
class SkippedFile:
    """A library file that could not be indexed, and why (it is retried once its content changes)."""

    path: str
    reason: str
    size: int
    mtime: float


@dataclass(frozen=True)
class SegmentRecord:
    """One searchable entry: a time window of a video (``whole`` marks the entry spanning all of it)."""

    id: int
    video_id: int
    path: str
    start: float
    end: float
    whole: bool
    thumbnail: Path | None
    title: str | None
    caption: str | None
    tags: tuple[str, ...]
    metadata: dict[str, Any]
    duration: float


@dataclass(frozen=True)
class IndexInfo:
    """What an index was built with: embeddings are only comparable under the same model."""

    model_id: str
    model_path: str
    budget: int
    dim: int
    index_type: str
    window: float
    stride: float


@dataclass
class VideoRow:
    """A video as the store knows it (for incremental builds)."""

    id: int
    path: str
    sha256: str
    size: int
    mtime: float
    status: str


@dataclass
class NewVideo:
    """A video ready to commit: its file facts, user metadata, and encoded segments."""

    path: str
    sha256: str
    size: int
    mtime: float
    duration: float | None = None
    title: str | None = None
    caption: str | None = None
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    date: float | None = None
    segments: list[tuple[float, float, bool, str | None, np.ndarray]] = field(default_factory=list)
    reason: str | None = None  # set: the video is recorded as skipped


class Store:
    """Typed access to ``index.sqlite``; one instance per process (SQLite connections are not shared)."""

    def __init__(self, index_dir: str | Path, create: bool = False) -> None:
        self.dir = Path(index_dir)
        path = self.dir / DB_NAME
        if not path.is_file():
            if not create:
                raise IndexStoreError(self.dir, "no index here (no index.sqlite); build one with `fluxvid index "
                                                "build`")
            self.dir.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.executescript(SCHEMA)
            version = self._meta("schema_version")
        except sqlite3.DatabaseError as exc:
            raise IndexStoreError(self.dir, f"index.sqlite is unreadable ({exc})") from None
        if version is None:
            self._set_meta({"schema_version": str(SCHEMA_VERSION)})
        elif int(version) != SCHEMA_VERSION:
            raise IndexStoreError(self.dir, f"schema version {version}, this FluxVid reads {SCHEMA_VERSION}")

    def close(self) -> None:
        self.db.close()

    # -- meta -------------------------------------------------------------------------------------------------
    def _meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def _set_meta(self, values: dict[str, str]) -> None:
        self.db.executemany("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                            "value = excluded.value", list(values.items()))

    def info(self) -> IndexInfo | None:
        raw = self._meta("info")
        return None if raw is None else IndexInfo(**json.loads(raw))

    def set_info(self, info: IndexInfo) -> None:
        self._set_meta({"info": json.dumps(info.__dict__)})

    @property
    def generation(self) -> int:
        """Bumped by every change to the vectors: the FAISS file of another generation is stale."""
        return int(self._meta("generation") or 0)

    @property
    def built_at(self) -> float:
        return float(self._meta("built_at") or 0.0)

    # -- writes -----------------------------------------------------------------------------------------------
    def commit_video(self, video: NewVideo) -> None:
        """Replace everything stored for ``video.path`` with ``video``, atomically."""
        now = time.time()
        with self._transaction():
            self.db.execute("DELETE FROM videos WHERE path = ?", (video.path,))
            cursor = self.db.execute(
                "INSERT INTO videos(path, sha256, size, mtime, duration, title, caption, tags, metadata, date, "
                "status, reason, indexed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (video.path, video.sha256, video.size, video.mtime, video.duration, video.title, video.caption,
                 json.dumps(list(video.tags)), json.dumps(video.metadata), video.date,
                 "skipped" if video.reason else "ok", video.reason, now))
            video_id = cursor.lastrowid
            self.db.executemany("INSERT INTO tags(video_id, tag) VALUES (?, ?)",
                                [(video_id, tag) for tag in video.tags])
            self.db.executemany(
                "INSERT INTO segments(video_id, start, end, whole, thumbnail, vector) VALUES (?, ?, ?, ?, ?, ?)",
                [(video_id, s, e, int(w), t, np.ascontiguousarray(v, dtype=np.float32).tobytes())
                 for s, e, w, t, v in video.segments])
            self._bump(now)

    def user_metadata(self) -> dict[str, tuple]:
        """path -> (title, caption, tags, metadata, date) as stored, to spot manifest edits."""
        rows = self.db.execute("SELECT path, title, caption, tags, metadata, date FROM videos")
        return {r[0]: (r[1], r[2], tuple(json.loads(r[3])), json.loads(r[4]), r[5]) for r in rows}

    def update_metadata(self, path: str, title: str | None, caption: str | None, tags: tuple[str, ...],
                        metadata: dict[str, Any], date: float | None) -> None:
        """New user metadata for an indexed file (vectors untouched: filters read it from here at query time)."""
        with self._transaction():
            (video_id,) = self.db.execute("SELECT id FROM videos WHERE path = ?", (path,)).fetchone()
            self.db.execute("UPDATE videos SET title = ?, caption = ?, tags = ?, metadata = ?, date = ? WHERE id = ?",
                            (title, caption, json.dumps(list(tags)), json.dumps(metadata), date, video_id))
            self.db.execute("DELETE FROM tags WHERE video_id = ?", (video_id,))
            self.db.executemany("INSERT INTO tags(video_id, tag) VALUES (?, ?)", [(video_id, t) for t in tags])
            self._set_meta({"built_at": repr(time.time())})

    def update_stat(self, path: str, size: int, mtime: float) -> None:
        """New size/mtime for a file whose content hash is unchanged (vectors untouched: no new generation)."""
        self.db.execute("UPDATE videos SET size = ?, mtime = ? WHERE path = ?", (size, mtime, path))

    def remove_paths(self, paths: Iterable[str]) -> int:
        paths = list(paths)
        if not paths:
            return 0
        with self._transaction():
            self.db.executemany("DELETE FROM videos WHERE path = ?", [(p,) for p in paths])
            self._bump(time.time())
        return len(paths)

    def _bump(self, now: float) -> None:
        self._set_meta({"generation": str(self.generation + 1), "built_at": repr(now)})

    def _transaction(self) -> "_Transaction":
        return _Transaction(self.db)

    # -- reads ------------------------------------------------------------------------------------------------
    def videos(self) -> dict[str, VideoRow]:
        rows = self.db.execute("SELECT id, path, sha256, size, mtime, status FROM videos")
        return {r[1]: VideoRow(*r) for r in rows}

    def counts(self) -> tuple[int, int]:
        """(indexed videos, segments)."""
        videos = self.db.execute("SELECT COUNT(*) FROM videos WHERE status = 'ok'").fetchone()[0]
        segments = self.db.execute("SELECT COUNT(*) FROM segments").fetchone()[0]
        return videos, segments

    def skipped(self) -> list[SkippedFile]:
        rows = self.db.execute("SELECT path, reason, size, mtime FROM videos WHERE status = 'skipped' ORDER BY path")
        return [SkippedFile(*r) for r in rows]

    def vectors(self, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """All segment ids and their vectors ``[N, dim]`` float32, in id order."""
        ids, blobs = [], []
        for segment_id, blob in self.db.execute("SELECT id, vector FROM segments ORDER BY id"):
            ids.append(segment_id)
            blobs.append(blob)
        matrix = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(ids), dim) if ids else \
            np.zeros((0, dim), dtype=np.float32)
        return np.asarray(ids, dtype=np.int64), matrix

    def vector(self, segment_id: int) -> np.ndarray:
        row = self.db.execute("SELECT vector FROM segments WHERE id = ?", (segment_id,)).fetchone()
        if row is None:
            raise KeyError(segment_id)
        return np.frombuffer(row[0], dtype=np.float32).copy()

    def segments(self, ids: Iterable[int]) -> dict[int, SegmentRecord]:
        ids = [int(i) for i in ids]
        found: dict[int, SegmentRecord] = {}
        for chunk in _chunks(ids, 500):
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(
                "SELECT s.id, s.video_id, v.path, s.start, s.end, s.whole, s.thumbnail, v.title, v.caption, v.tags, "
                f"v.metadata, v.duration FROM segments s JOIN videos v ON v.id = s.video_id WHERE s.id IN ({marks})",
                chunk)
            for r in rows:
                thumb = self.dir / r[6] if r[6] else None
                found[r[0]] = SegmentRecord(r[0], r[1], r[2], r[3], r[4], bool(r[5]), thumb, r[7], r[8],
                                            tuple(json.loads(r[9])), json.loads(r[10]), r[11] or 0.0)
        return found

    def filtered_ids(self, where: str, params: list[Any]) -> np.ndarray:
        """Segment ids whose video matches an SQL condition over ``v`` (videos) and ``s`` (segments)."""
        rows = self.db.execute(f"SELECT s.id FROM segments s JOIN videos v ON v.id = s.video_id WHERE {where}",
                               params)
        return np.fromiter((r[0] for r in rows), dtype=np.int64)

    def export_videos(self) -> Iterator[NewVideo]:
        """Every stored video with its segments and vectors, as :meth:`commit_video` takes them (for merging)."""
        dim = self.info().dim
        rows = self.db.execute("SELECT id, path, sha256, size, mtime, duration, title, caption, tags, metadata, date, "
                               "reason FROM videos ORDER BY path").fetchall()
        for row in rows:
            segs = [(s, e, bool(w), t, np.frombuffer(v, dtype=np.float32).reshape(dim)) for s, e, w, t, v in
                    self.db.execute("SELECT start, end, whole, thumbnail, vector FROM segments WHERE video_id = ? "
                                    "ORDER BY id", (row[0],))]
            yield NewVideo(row[1], row[2], row[3], row[4], row[5], row[6], row[7], tuple(json.loads(row[8])),
                           json.loads(row[9]), row[10], segs, row[11])

    def write_manifest(self, path: Path) -> Path:
        """The indexed library as a JSONL manifest (paths and user metadata), to rebuild it in place."""
        rows = self.db.execute("SELECT path, title, caption, tags, date, metadata FROM videos ORDER BY path")
        lines = [json.dumps({"path": p, "title": t, "caption": c, "tags": json.loads(g), "date": d, **json.loads(m)})
                 for p, t, c, g, d, m in rows]
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in lines))
        tmp.replace(path)
        return path

    def has_path(self, path: str) -> bool:
        return self.db.execute("SELECT 1 FROM videos WHERE path = ? AND status = 'ok'", (path,)).fetchone() \
            is not None


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any error (autocommit connection)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: Any, *_: Any) -> None:
        self.db.execute("ROLLBACK" if kind else "COMMIT")


def _chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]
