"""``fluxvid index build|merge|stats`` and ``fluxvid search``."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from encoder.checkpoint import CheckpointError
from encoder.cli import fail
from encoder.video import AnnotationError, VideoDecodeError

from .build import build_index, merge_indexes
from .sources import parse_shard, shard_folder
from .store import IndexStoreError
from .vectors import INDEX_TYPES
from .video_index import VideoIndex

app = typer.Typer(help="Index a video library for search: build (incremental, resumable), merge shards, stats.",
                  no_args_is_help=True)
console = Console()
FAILURES = (IndexStoreError, CheckpointError, AnnotationError, VideoDecodeError, FileNotFoundError, ValueError)


@app.command("build")
def build(
    source: Path = typer.Argument(..., help="A folder of videos (searched recursively) or a CSV/JSONL manifest."),
    index: Path = typer.Option(..., "--index", help="Index folder (created, or brought up to date); `{rank}` in it "
                                                    "becomes the shard number."),
    model: Path = typer.Option(..., help="Dual-encoder file (from `fluxvid train clip` or `retrieval "
                                         "import-internvideo2`)."),
    budget: int = typer.Option(1024, min=1, help="Token budget per segment (see `fluxvid encoder plan`)."),
    window: float = typer.Option(10.0, min=0.1, help="Segment length in seconds."),
    stride: float | None = typer.Option(None, min=0.1, help="Seconds between segment starts (default: window)."),
    index_type: str = typer.Option("auto", help=f"One of {', '.join(INDEX_TYPES)} (auto: exact up to 200k "
                                                "segments, then HNSW)."),
    shard: str | None = typer.Option(None, help="Encode only slice i/n of the library (e.g. 0/4), or `auto` under "
                                                "torchrun (RANK/WORLD_SIZE; GPU LOCAL_RANK)."),
    batch_size: int = typer.Option(8, min=1),
    workers: int = typer.Option(2, min=0, help="Decoding worker processes."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Encode new and changed videos, drop deleted ones, skip (and list) bad files; safe to kill and rerun."""
    try:
        part = parse_shard(shard)
        report = build_index(source, shard_folder(index, part), model, budget, window=window, stride=stride,
                             index_type=index_type, shard=part, batch_size=batch_size, num_workers=workers,
                             device=_device())
    except FAILURES as exc:
        fail(exc)
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
        return
    console.print(f"added {report.added}, updated {report.updated}, removed {report.removed}, unchanged "
                  f"{report.unchanged} (new metadata for {report.metadata_updated}); {report.segments} segments in "
                  f"the index ({report.seconds:.1f} s)")
    for skipped in report.skipped:
        console.print(f"  skipped {skipped.path}: {skipped.reason}", highlight=False, soft_wrap=True)


@app.command("merge")
def merge(
    out: Path = typer.Argument(..., help="New index folder to create."),
    shards: list[Path] = typer.Argument(..., help="Shard index folders built with --shard."),
) -> None:
    """Combine shard indexes (same model, budget and windows) into one; a killed merge leaves no half index."""
    try:
        report = merge_indexes(out, shards)
    except FAILURES as exc:
        fail(exc)
    console.print(f"merged {len(shards)} shards: {report.added} videos, {report.segments} segments, "
                  f"{len(report.skipped)} skipped files")


@app.command("stats")
def stats(
    index: Path = typer.Argument(..., help="Index folder."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Videos, segments, skipped files with reasons, model and budget of an index."""
    try:
        found = VideoIndex.open(index).stats()
    except FAILURES as exc:
        fail(exc)
    if as_json:
        print(json.dumps(found.to_dict(), indent=2))
        return
    built = datetime.fromtimestamp(found.built_at, timezone.utc).isoformat(timespec="seconds")
    console.print(f"{found.videos} videos, {found.segments} segments, {len(found.skipped)} skipped; model "
                  f"{found.model_id} ({found.model_path}); budget {found.budget}; {found.dim}-d; index "
                  f"{found.index_type}; windows {found.window:g} s every {found.stride:g} s; updated {built}",
                  soft_wrap=True)
    for skipped in found.skipped:
        console.print(f"  skipped {skipped.path}: {skipped.reason}", highlight=False, soft_wrap=True)


def search(
    index: Path = typer.Argument(..., help="Index folder."),
    query: str | None = typer.Argument(None, help="What to look for, in words."),
    k: int = typer.Option(10, "--k", "-k", min=1, help="Moments to return."),
    offset: int = typer.Option(0, min=0, help="Skip this many moments (paging)."),
    tag: list[str] = typer.Option([], help="Only videos with this tag (repeatable: all must match)."),
    path_prefix: str | None = typer.Option(None, help="Only videos under this folder."),
    min_duration: float | None = typer.Option(None, min=0),
    max_duration: float | None = typer.Option(None, min=0),
    after: str | None = typer.Option(None, help="Only videos dated on/after (ISO date, e.g. 2024-05-01)."),
    before: str | None = typer.Option(None, help="Only videos dated on/before (ISO date)."),
    like_video: Path | None = typer.Option(None, help="Query by this video file instead of words."),
    like_segment: int | None = typer.Option(None, help="More like this indexed segment id."),
    no_merge: bool = typer.Option(False, "--no-merge", help="One result per segment."),
    model: Path | None = typer.Option(None, help="Dual-encoder file (default: the one the index was built with)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Search an index by text, by a video file, or by an indexed segment."""
    from retrieval.dual_encoder import DualEncoder
    from retrieval.search import Searcher, SearchFilters

    if sum(x is not None for x in (query, like_video, like_segment)) != 1:
        fail("give exactly one of QUERY, --like-video or --like-segment")
    try:
        opened = VideoIndex.open(index)
        searcher = Searcher(opened, DualEncoder.load(model or opened.info.model_path))
        filters = SearchFilters(tuple(tag), path_prefix, min_duration, max_duration, _date(after), _date(before))
        if like_video is not None:
            moments = searcher.search_video(like_video, k, filters, not no_merge, offset)
        elif like_segment is not None:
            moments = searcher.similar(like_segment, k, filters, not no_merge, offset)
        else:
            moments = searcher.search_text(query, k, filters, not no_merge, offset)
    except (*FAILURES, KeyError) as exc:
        fail(exc)
    if as_json:
        print(json.dumps([m.to_dict() for m in moments], indent=2))
        return
    table = Table(title=f"{len(moments)} moments")
    for column in ("score", "file", "start-end", "segment", "title"):
        table.add_column(column)
    for m in moments:
        table.add_row(f"{m.score:.3f}", m.path, f"{m.start:.1f}-{m.end:.1f} s", str(m.segment_id), m.title or "")
    console.print(table)


def _device() -> str | None:
    """The GPU of this torchrun rank (``LOCAL_RANK``) when there is one; None lets the build choose."""
    import torch

    local = os.environ.get("LOCAL_RANK")
    return f"cuda:{int(local)}" if local is not None and torch.cuda.is_available() else None


def _date(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"dates are ISO 8601 (2024-05-01), got {text!r}") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp()
