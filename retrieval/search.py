"""Search an index: text -> moments, video -> moments ("more like this"), with metadata filters applied inside
the vector search and neighbouring hits of one video merged into one moment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from encoder import plan
from encoder.video import load_clip
from index.store import IndexStoreError, SegmentRecord
from index.video_index import VideoIndex

from .dual_encoder import DualEncoder


MERGE_MARGIN = 0.05
"""Neighbouring windows merge into one moment when their cosine scores lie this close to the best one's."""


@dataclass(frozen=True)
class SearchFilters:
    """Conditions on the video of a segment; ``after``/``before`` compare the video's date (the manifest's
    ``date`` column, else the file's modification time), in seconds since the epoch."""

    tags: tuple[str, ...] = ()
    path_prefix: str | None = None
    min_duration: float | None = None
    max_duration: float | None = None
    after: float | None = None
    before: float | None = None

    def __post_init__(self) -> None:
        tags = (self.tags,) if isinstance(self.tags, str) else tuple(self.tags)  # callers pass lists too
        object.__setattr__(self, "tags", tags)

    def sql(self) -> tuple[str, list[Any]] | None:
        """An SQL condition over ``v`` (videos), or None when nothing is filtered."""
        parts, params = ["v.status = 'ok'"], []
        for tag in self.tags:
            parts.append("EXISTS (SELECT 1 FROM tags t WHERE t.video_id = v.id AND t.tag = ?)")
            params.append(tag)
        if self.path_prefix:
            parts.append("substr(v.path, 1, ?) = ?")
            folder = Path(self.path_prefix).expanduser().resolve()
            prefix = str(folder) + (os.sep if folder.is_dir() else "")  # stored paths are resolved and absolute
            params += [len(prefix), prefix]
        for column, op, value in (("v.duration", ">=", self.min_duration), ("v.duration", "<=", self.max_duration),
                                  ("v.date", ">=", self.after), ("v.date", "<=", self.before)):
            if value is not None:
                parts.append(f"{column} {op} ?")
                params.append(float(value))
        return None if len(parts) == 1 else (" AND ".join(parts), params)


@dataclass
class Moment:
    """A search hit: a time range of one video (one segment, or several neighbouring ones merged)."""

    segment_id: int
    path: str
    start: float
    end: float
    score: float
    thumbnail: Path | None
    title: str | None
    metadata: dict[str, Any] = field(default_factory=dict)
    merged_segments: int = 1
    tags: tuple[str, ...] = ()
    caption: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"segment_id": self.segment_id, "path": self.path, "start": self.start, "end": self.end,
                "score": self.score, "thumbnail": str(self.thumbnail) if self.thumbnail else None,
                "title": self.title, "caption": self.caption, "tags": list(self.tags), "metadata": self.metadata,
                "merged_segments": self.merged_segments}


class Searcher:
    """Queries one index with the dual encoder it was built with."""

    def __init__(self, index: VideoIndex, model: DualEncoder) -> None:
        if model.model_id != index.info.model_id:
            raise IndexStoreError(index.dir, f"was built with model {index.info.model_id} "
                                             f"({index.info.model_path}); the given model is {model.model_id}")
        self.index, self.model = index, model.eval()

    @torch.inference_mode()
    def search_text(self, query: str, k: int = 10, filters: SearchFilters | None = None, merge: bool = True,
                    offset: int = 0) -> list[Moment]:
        if not query.strip():
            raise ValueError("the query is empty")
        vector = self.model.encode_text([query]).float().cpu().numpy()
        return self.search_vector(vector[0], k, filters, merge, offset)

    @torch.inference_mode()
    def search_video(self, path: str | Path, k: int = 10, filters: SearchFilters | None = None, merge: bool = True,
                     offset: int = 0, budget: int | None = None, start: float | None = None,
                     end: float | None = None) -> list[Moment]:
        """Moments like the video at ``path`` (encoded at ``budget``, by default the index's)."""
        video_plan = plan(budget or self.index.info.budget, self.model.vision.config)
        clip = load_clip(path, video_plan, start, end)
        vector = self.model.encode_video(clip.video[None].to(self.model.device), keep_tokens=video_plan.keep_tokens,
                                         head=video_plan.head).float().cpu().numpy()
        return self.search_vector(vector[0], k, filters, merge, offset)

    def similar(self, segment_id: int, k: int = 10, filters: SearchFilters | None = None, merge: bool = True,
                offset: int = 0) -> list[Moment]:
        """More like an indexed segment; the segment's own video is left out."""
        record = self.index.segment(segment_id)
        return self.search_vector(self.index.vector(segment_id), k, filters, merge, offset, exclude_path=record.path)

    def search_vector(self, vector: np.ndarray, k: int = 10, filters: SearchFilters | None = None,
                      merge: bool = True, offset: int = 0, exclude_path: str | None = None) -> list[Moment]:
        """Top moments for a unit query vector in the index's space, leaving out the video ``exclude_path``."""
        if k < 1 or offset < 0:
            raise ValueError("k must be >= 1 and offset >= 0")
        condition = (filters or SearchFilters()).sql()
        allowed = self.index.allowed_ids(*condition) if condition else None
        if allowed is not None and len(allowed) == 0:
            return []
        wanted = offset + k
        fetch = wanted * (4 if merge else 1)
        total = self.index.segment_count() if allowed is None else len(allowed)
        while True:
            scores, ids = self.index.search(vector[None].astype(np.float32), min(fetch, max(total, 1)), allowed)
            hits = [(float(s), int(i)) for s, i in zip(scores[0], ids[0]) if i >= 0]
            records = self.index.segments([i for _, i in hits])
            hits = [(s, i) for s, i in hits if i in records and records[i].path != exclude_path]
            moments = _merge(hits, records) if merge else [_moment(s, records[i]) for s, i in hits]
            if len(moments) >= wanted or fetch >= total:
                return moments[offset:wanted]
            fetch *= 4


def _moment(score: float, record: SegmentRecord, merged: int = 1) -> Moment:
    return Moment(record.id, record.path, record.start, record.end, score, record.thumbnail, record.title,
                  record.metadata, merged, record.tags, record.caption)


def _merge(hits: list[tuple[float, int]], records: dict[int, SegmentRecord],
           margin: float = MERGE_MARGIN) -> list[Moment]:
    """One moment per run of overlapping or touching windows of a video whose scores lie within ``margin`` of
    the run's best (so a library of few videos does not merge every window of a video into one); a whole-video
    entry joins the video's best moment when windows of it were hit too."""
    by_video: dict[str, list[tuple[float, SegmentRecord]]] = {}
    for score, segment_id in hits:
        record = records[segment_id]
        by_video.setdefault(record.path, []).append((score, record))
    moments: list[Moment] = []
    for found in by_video.values():
        windows = sorted(((s, r) for s, r in found if not r.whole), key=lambda x: x[1].start)
        wholes = [(s, r) for s, r in found if r.whole]
        taken = [False] * len(windows)
        video_moments = []
        for seed in sorted(range(len(windows)), key=lambda i: -windows[i][0]):
            if taken[seed]:
                continue
            best_score, best = windows[seed]
            low = high = seed
            taken[seed] = True
            while low > 0 and not taken[low - 1] and windows[low - 1][0] >= best_score - margin \
                    and windows[low - 1][1].end >= windows[low][1].start - 1e-6:
                low -= 1
                taken[low] = True
            while high + 1 < len(windows) and not taken[high + 1] and windows[high + 1][0] >= best_score - margin \
                    and windows[high + 1][1].start <= windows[high][1].end + 1e-6:
                high += 1
                taken[high] = True
            moment = _moment(best_score, best, high - low + 1)
            moment.start, moment.end = windows[low][1].start, max(r.end for _, r in windows[low:high + 1])
            video_moments.append(moment)
        if wholes:
            whole_score, whole = max(wholes, key=lambda x: x[0])
            if video_moments:
                top = max(video_moments, key=lambda m: m.score)
                top.score = max(top.score, whole_score)
                top.merged_segments += 1
            else:
                video_moments.append(_moment(whole_score, whole))
        moments += video_moments
    return sorted(moments, key=lambda m: -m.score)
