"""What a build indexes: every video under a folder (recursively), or the rows of a manifest (CSV or JSONL with
``path`` and optional ``title``, ``caption``, ``tags``, ``date`` and any other columns, kept as metadata)."""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from encoder.video import AnnotationError
from encoder.video.annotations import jsonl_objects

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".wmv", ".flv",
                            ".ts", ".3gp"})
KNOWN_COLUMNS = ("path", "title", "caption", "tags", "date")


@dataclass(frozen=True)
class SourceItem:
    """One library video and the user's metadata for it."""

    path: str  # absolute, resolved
    title: str | None = None
    caption: str | None = None
    tags: tuple[str, ...] = ()
    date: float | None = None  # seconds since the epoch
    metadata: dict[str, Any] = field(default_factory=dict)


def read_source(source: str | Path) -> list[SourceItem]:
    """Items of a folder or manifest, sorted by path; duplicates keep the first row."""
    source = Path(source)
    if source.is_dir():
        items = [SourceItem(str(p.resolve())) for p in source.rglob("*")
                 if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES]
    elif source.is_file():
        items = _read_manifest(source)
    else:
        raise FileNotFoundError(f"source {source} does not exist (give a folder of videos or a CSV/JSONL manifest)")
    unique: dict[str, SourceItem] = {}
    for item in items:
        unique.setdefault(item.path, item)
    return [unique[p] for p in sorted(unique)]


def shard_of(items: list[SourceItem], shard: tuple[int, int] | None) -> list[SourceItem]:
    """The deterministic slice ``i/n`` (by a hash of the path, so it does not move when files are added)."""
    if shard is None:
        return items
    i, n = shard
    return [item for item in items
            if int.from_bytes(hashlib.sha1(item.path.encode()).digest()[:8], "big") % n == i]


def parse_shard(text: str | None, env: Mapping[str, str] = os.environ) -> tuple[int, int] | None:
    """``i/n``, or ``auto``: this process's ``RANK``/``WORLD_SIZE`` as torchrun sets them."""
    if text is None:
        return None
    if text == "auto":
        if "RANK" not in env or "WORLD_SIZE" not in env:
            raise ValueError("--shard auto reads RANK and WORLD_SIZE (set by torchrun); they are not set here")
        text = f"{env['RANK']}/{env['WORLD_SIZE']}"
    try:
        i, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard takes i/n (e.g. 0/4) or auto, got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard {text}: need 0 <= i < n")
    return i, n


def shard_folder(index_dir: str | Path, shard: tuple[int, int] | None) -> Path:
    """``index_dir`` with ``{rank}`` replaced by the shard number (one command line for every torchrun rank)."""
    if "{rank}" in str(index_dir) and shard is None:
        raise ValueError(f"--index {index_dir} has {{rank}} but no --shard is given")
    return Path(str(index_dir).replace("{rank}", str(shard[0]))) if shard else Path(index_dir)


def _read_manifest(source: Path) -> list[SourceItem]:
    suffix = source.suffix.lower()
    if suffix == ".csv":
        with source.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "path" not in [h.strip() for h in reader.fieldnames]:
                raise AnnotationError(source, 1, "no 'path' column in the header")
            rows = [(reader.line_num, {k.strip(): v for k, v in row.items() if k is not None}) for row in reader]
    elif suffix in (".jsonl", ".ndjson"):
        rows = list(jsonl_objects(source))
    else:
        raise ValueError(f"source {source} is neither a folder nor a .csv/.jsonl manifest")
    return [_item(fields, source, line) for line, fields in rows]


def _item(fields: dict[str, Any], source: Path, line: int) -> SourceItem:
    raw = fields.get("path")
    if raw is None or not str(raw).strip():
        raise AnnotationError(source, line, "the path is empty")
    path = Path(str(raw).strip())
    path = (path if path.is_absolute() else source.parent / path).resolve()
    tags = fields.get("tags") or ()
    if isinstance(tags, str):
        tags = tuple(t.strip() for t in tags.replace(";", ",").split(",") if t.strip())
    elif not isinstance(tags, (list, tuple)) or not all(isinstance(t, str) for t in tags):
        raise AnnotationError(source, line, f"tags must be a list of strings or 'a,b' text, got {tags!r}")
    return SourceItem(
        path=str(path), title=_text(fields.get("title"), "title", source, line),
        caption=_text(fields.get("caption"), "caption", source, line), tags=tuple(tags),
        date=_date(fields.get("date"), source, line),
        metadata={k: v for k, v in fields.items() if k not in KNOWN_COLUMNS and v not in (None, "")},
    )


def _text(value: Any, name: str, source: Path, line: int) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise AnnotationError(source, line, f"{name} must be text, got {value!r}")
    return value


def _date(value: Any, source: Path, line: int) -> float | None:
    """ISO date/time text (``2024-05-01``, ``2024-05-01T10:00:00``) or epoch seconds."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    try:
        parsed = datetime.fromisoformat(str(value).strip())
    except ValueError:
        raise AnnotationError(source, line, f"date must be ISO 8601 (2024-05-01) or epoch seconds, got {value!r}") \
            from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp()
