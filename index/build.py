"""``build_index``: encode a video library into an index, incrementally and resumably; ``merge_indexes``.

Per run: new files are added, files whose content hash changed are re-encoded, files gone from the source are
dropped, and the rest is left alone (size + mtime unchanged means the content hash is not even recomputed;
edited manifest metadata of an unchanged file is updated in SQLite without re-encoding).
Decoding runs in ``VideoLoader`` worker processes while the main process encodes batches of segments of
many videos; each finished video is committed in one SQLite transaction, so a killed build resumes at the
first uncommitted video. Bad files are recorded as skipped with the reason and retried only when they change.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from encoder import IMAGENET_MEAN, IMAGENET_STD, plan
from encoder.video import Annotation, VideoDataset, VideoDecodeError, VideoLoader, probe, segments
from retrieval.dual_encoder import DualEncoder

from . import vectors
from .sources import SourceItem, read_source, shard_of
from .store import IndexInfo, IndexStoreError, NewVideo, SkippedFile, Store, VideoRow

log = logging.getLogger(__name__)

THUMB_SIZE = 160


@dataclass(frozen=True)
class BuildProgress:
    videos_done: int
    videos_total: int
    segments_done: int
    skipped: int
    eta_seconds: float | None


@dataclass
class BuildReport:
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    skipped: list[SkippedFile] = field(default_factory=list)
    segments: int = 0
    seconds: float = 0.0
    metadata_updated: int = 0  # unchanged files whose manifest title/caption/tags/date/columns changed

    def to_dict(self) -> dict:
        return {**{k: v for k, v in self.__dict__.items() if k != "skipped"},
                "skipped": [s.__dict__ for s in self.skipped]}


@dataclass
class _Pending:
    """A video being encoded: its rows in the loader and the results so far."""

    item: SourceItem
    sha256: str
    size: int
    mtime: float
    duration: float
    windows: list[tuple[float, float, bool]]
    first_row: int
    results: dict[int, tuple[str, np.ndarray]] = field(default_factory=dict)  # loader row -> (thumbnail, vector)
    failure: str | None = None


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def build_index(
    source: str | Path, index_dir: str | Path, model_path: str | Path, budget: int, *, window: float = 10.0,
    stride: float | None = None, index_type: str = "auto", shard: tuple[int, int] | None = None,
    batch_size: int = 8, num_workers: int = 2, progress: Callable[[BuildProgress], None] | None = None,
    show_progress: bool = True, device: str | torch.device | None = None, prune: bool = True,
) -> BuildReport:
    """Bring the index in ``index_dir`` up to date with ``source`` (see the module docstring); ``prune=False``
    adds ``source`` to the library without dropping indexed videos that are not in it."""
    started = time.perf_counter()
    stride = window if stride is None else stride
    vectors.resolve_type(index_type, 0)  # validate before any work
    index_dir = Path(index_dir)
    model = DualEncoder.load(model_path)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = model.to(device)
    store = Store(index_dir, create=True)
    try:
        _check_or_set_info(store, IndexInfo(model.model_id, str(Path(model_path).resolve()), budget, model.dim,
                                            index_type, window, stride))
        report = BuildReport()
        items = shard_of(read_source(source), shard)
        todo = _changes(store, items, report, prune)
        _encode(store, model, todo, plan(budget, model.vision.config), window, stride, batch_size, num_workers,
                progress, show_progress, device, report)
        report.skipped = store.skipped()
        report.segments = store.counts()[1]
        _write_vectors(store)
    finally:
        store.close()
    report.seconds = time.perf_counter() - started
    return report


def _check_or_set_info(store: Store, wanted: IndexInfo) -> None:
    info = store.info()
    if info is None:
        store.set_info(wanted)
        return
    if info.model_id != wanted.model_id:
        raise IndexStoreError(store.dir, f"was built with model {info.model_id} ({info.model_path}), not "
                                         f"{wanted.model_id} ({wanted.model_path}); build into a new folder")
    for name in ("budget", "window", "stride", "index_type"):
        if getattr(info, name) != getattr(wanted, name):
            raise IndexStoreError(store.dir, f"was built with {name} {getattr(info, name)}, not "
                                             f"{getattr(wanted, name)}; build into a new folder")
    if info.model_path != wanted.model_path:
        store.set_info(wanted)  # the same weights moved: remember where they are now


def _changes(store: Store, items: list[SourceItem], report: BuildReport, prune: bool
             ) -> list[tuple[SourceItem, str, int, float]]:
    """Files to (re-)encode; drops vanished ones (with ``prune``) and counts the unchanged ones."""
    known = store.videos()
    stored_metadata = store.user_metadata()
    wanted = {item.path for item in items}
    gone = [p for p in known if p not in wanted] if prune else []
    report.removed = store.remove_paths(gone)
    _drop_thumbnails(store, [known[p].sha256 for p in gone])
    todo = []
    for item in items:
        try:
            stat = os.stat(item.path)
        except OSError as exc:
            _record_unreadable(store, item.path, known.get(item.path), exc, report)
            continue
        row = known.get(item.path)
        if row is not None and row.size == stat.st_size and row.mtime == stat.st_mtime:
            report.unchanged += 1
            _update_metadata(store, item, row, stat.st_mtime, stored_metadata, report)
            continue
        sha = file_sha256(item.path)
        if row is not None and row.sha256 == sha:  # touched or copied over, same content
            store.update_stat(item.path, stat.st_size, stat.st_mtime)
            report.unchanged += 1
            _update_metadata(store, item, row, stat.st_mtime, stored_metadata, report)
            continue
        todo.append((item, sha, stat.st_size, stat.st_mtime))
    return todo


def _update_metadata(store: Store, item: SourceItem, row: VideoRow, mtime: float,
                     stored: dict[str, tuple], report: BuildReport) -> None:
    """Store the source's current title/caption/tags/date/columns for an unchanged file when they differ."""
    date = item.date if item.date is not None or row.status != "ok" else mtime
    wanted = (item.title, item.caption, tuple(item.tags), dict(item.metadata), date)
    if stored.get(item.path) != wanted:
        store.update_metadata(item.path, *wanted)
        report.metadata_updated += 1


def _record_unreadable(store: Store, path: str, row: VideoRow | None, exc: OSError, report: BuildReport) -> None:
    """A listed file that is missing or unreadable: recorded as skipped once (not every run, which would bump
    the generation); one that was indexed before counts as removed."""
    if row is not None and not row.sha256:
        return
    reason = "the file does not exist" if isinstance(exc, FileNotFoundError) else \
        f"cannot read the file: {exc.strerror}"
    store.commit_video(NewVideo(path, "", 0, 0.0, reason=reason))
    if row is not None:
        report.removed += row.status == "ok"
        _drop_thumbnails(store, [row.sha256])


def _encode(store: Store, model: DualEncoder, todo: list[tuple[SourceItem, str, int, float]], video_plan,
            window: float, stride: float, batch_size: int, num_workers: int,
            progress: Callable[[BuildProgress], None] | None, show_progress: bool, device: torch.device,
            report: BuildReport) -> None:
    pending: list[_Pending] = []
    rows: list[Annotation] = []
    owner: list[int] = []  # loader row -> position in pending
    for item, sha, size, mtime in todo:
        try:
            duration = probe(item.path).duration
        except VideoDecodeError as exc:
            _commit_skipped(store, item, sha, size, mtime, exc.reason, report)
            continue
        if duration <= 0:
            _commit_skipped(store, item, sha, size, mtime, "no video duration (a still image?)", report)
            continue
        windows = [(s.start, s.end, s.whole) for s in segments(duration, window, stride)]
        pending.append(_Pending(item, sha, size, mtime, duration, windows, len(rows)))
        for start, end, _ in windows:
            rows.append(Annotation(item.path, start=start, end=end))
            owner.append(len(pending) - 1)
    if not pending:
        return
    thumbs = store.dir / "thumbs"
    thumbs.mkdir(exist_ok=True)
    loader = VideoLoader(VideoDataset(rows, video_plan), batch_size=batch_size, num_workers=num_workers)
    done_videos, done_segments, next_video = 0, 0, 0
    started = time.perf_counter()
    bar = tqdm(total=len(rows), unit="segment", disable=not show_progress, desc="indexing", dynamic_ncols=True)
    with torch.inference_mode():
        for batch in loader:
            for bad in batch.get("skipped", []):
                video = pending[owner[bad.index]]
                video.failure = video.failure or bad.reason
                video.results[bad.index] = ("", np.zeros(0, np.float32))
            if "video" in batch:
                clips = batch["video"]
                embedded = model.encode_video(clips.to(device), keep_tokens=video_plan.keep_tokens,
                                              head=video_plan.head).float().cpu().numpy()
                for row, vector, clip in zip(batch["index"].tolist(), embedded, clips):
                    video = pending[owner[row]]
                    name = f"{video.sha256[:20]}_{row - video.first_row}.jpg"
                    _write_thumbnail(clip, thumbs / name)
                    video.results[row] = (f"thumbs/{name}", vector)
            bar.update(len(batch.get("skipped", [])) + (len(batch["index"]) if "video" in batch else 0))
            while next_video < len(pending) and len(pending[next_video].results) == len(pending[next_video].windows):
                video = pending[next_video]
                done_segments += _commit_encoded(store, video, report)
                next_video += 1
                done_videos += 1
                rate = done_videos / max(time.perf_counter() - started, 1e-9)
                bar.set_postfix(videos=f"{done_videos}/{len(pending)}", skipped=len(report.skipped))
                if progress is not None:
                    progress(BuildProgress(done_videos, len(pending), done_segments, len(report.skipped),
                                           (len(pending) - done_videos) / rate if rate > 0 else None))
    bar.close()


def _commit_encoded(store: Store, video: _Pending, report: BuildReport) -> int:
    old = store.videos().get(video.item.path)
    item = video.item
    if video.failure is not None:
        _commit_skipped(store, item, video.sha256, video.size, video.mtime, video.failure, report)
        for thumb, _ in video.results.values():
            if thumb:
                (store.dir / thumb).unlink(missing_ok=True)
        return 0
    store.commit_video(NewVideo(
        item.path, video.sha256, video.size, video.mtime, video.duration, item.title, item.caption, item.tags,
        item.metadata, item.date if item.date is not None else video.mtime,
        [(start, end, whole, *video.results[video.first_row + k])
         for k, (start, end, whole) in enumerate(video.windows)],
    ))
    if old is not None and old.sha256 != video.sha256:
        _drop_thumbnails(store, [old.sha256])
    if old is None:
        report.added += 1
    else:
        report.updated += 1
    return len(video.windows)


def _commit_skipped(store: Store, item: SourceItem, sha: str, size: int, mtime: float, reason: str,
                    report: BuildReport) -> None:
    log.warning("skipping %s: %s", item.path, reason)
    store.commit_video(NewVideo(item.path, sha, size, mtime, title=item.title, caption=item.caption, tags=item.tags,
                                metadata=item.metadata, date=item.date, reason=reason))
    report.skipped.append(SkippedFile(item.path, reason, size, mtime))


def _drop_thumbnails(store: Store, hashes: list[str]) -> None:
    still_used = {row.sha256 for row in store.videos().values()}
    for sha in hashes:
        if sha and sha not in still_used:
            for thumb in (store.dir / "thumbs").glob(f"{sha[:20]}_*.jpg"):
                thumb.unlink(missing_ok=True)


def _write_thumbnail(clip: torch.Tensor, path: Path) -> None:
    """The middle frame of a normalised clip ``[3, T, H, W]`` as a JPEG, written atomically."""
    frame = clip[:, clip.shape[1] // 2].float()
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    pixels = ((frame * std + mean).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    image = Image.fromarray(pixels)
    image.thumbnail((THUMB_SIZE, THUMB_SIZE))
    tmp = path.with_suffix(".jpg.tmp")
    image.save(tmp, format="JPEG", quality=85)
    os.replace(tmp, path)


def _write_vectors(store: Store) -> None:
    """The FAISS file for the store's current generation (skipped when it already exists)."""
    generation = store.generation
    if vectors.file_for(store.dir, generation).is_file():
        return
    info = store.info()
    ids, matrix = store.vectors(info.dim)
    kind = vectors.resolve_type(info.index_type, len(ids))
    vectors.save(vectors.build(ids, matrix, kind), store.dir, generation)


def merge_indexes(out_dir: str | Path, shard_dirs: list[str | Path], show_progress: bool = True) -> BuildReport:
    """Combine shard indexes built with the same model and settings into ``out_dir`` (a new folder).

    The merge is written to ``OUT.merging`` and renamed to ``OUT`` when complete, so a killed merge leaves no
    half index behind; running it again starts over."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        reason = "already holds an index" if (out_dir / "index.sqlite").exists() else "exists and is not empty"
        raise IndexStoreError(out_dir, f"{reason}; merge into a new folder")
    shards = [Store(d) for d in shard_dirs]
    work = out_dir.with_name(out_dir.name + ".merging")
    try:
        infos = [s.info() for s in shards]
        if any(i is None for i in infos):
            raise IndexStoreError(shard_dirs[infos.index(None)], "has no build settings (an empty index?)")
        first = infos[0]
        for directory, info in zip(shard_dirs, infos):
            if (info.model_id, info.budget, info.window, info.stride, info.dim) != \
                    (first.model_id, first.budget, first.window, first.stride, first.dim):
                raise IndexStoreError(directory, f"was built with other settings than {shard_dirs[0]} "
                                                 f"({info} vs {first})")
        shutil.rmtree(work, ignore_errors=True)  # what a killed merge left
        out = Store(work, create=True)
        report = BuildReport()
        try:
            out.set_info(first)
            (work / "thumbs").mkdir(exist_ok=True)
            for shard in tqdm(shards, unit="shard", disable=not show_progress, desc="merging"):
                for video in shard.export_videos():
                    for *_, thumb, _ in video.segments:
                        if thumb:
                            shutil.copy2(shard.dir / thumb, work / thumb)
                    out.commit_video(video)
                    report.added += video.reason is None
            report.skipped = out.skipped()
            report.segments = out.counts()[1]
            _write_vectors(out)
        finally:
            out.close()
        os.replace(work, out_dir)  # an empty out_dir is replaced too
    finally:
        for shard in shards:
            shard.close()
    report.seconds = time.perf_counter() - started
    return report
