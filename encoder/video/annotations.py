"""Annotation files (CSV with a header row, or JSONL): one video (or time window of one) per row.

Columns: ``path`` (required; relative paths are taken from ``root``, by default the annotation file's folder),
``label`` (optional integer class id), ``caption`` (optional text), ``start`` / ``end`` (optional seconds);
in JSONL, ``negatives`` (optional list of captions that do NOT describe the video: Flux-CLIP's hard negatives).
Other columns are ignored. Any problem is an :class:`AnnotationError` naming the file and the line.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

COLUMNS = ("path", "label", "caption", "start", "end")


class AnnotationError(ValueError):
    """A malformed annotation file: ``source`` and ``line`` say where."""

    def __init__(self, source: str | Path, line: int, problem: str) -> None:
        super().__init__(str(source), line, problem)
        self.source, self.line, self.problem = str(source), line, problem

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.problem}"


@dataclass(frozen=True)
class Annotation:
    """One row: a video (or the ``[start, end)`` window of it) with its optional label, caption and hard
    negatives (captions that are wrong for it)."""

    path: str
    label: int | None = None
    caption: str | None = None
    start: float | None = None
    end: float | None = None
    negatives: tuple[str, ...] = ()


def _number(value: Any, name: str, source: Path, line: int) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise AnnotationError(source, line, f"{name} must be a number of seconds, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise AnnotationError(source, line, f"{name} must be a number of seconds, got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise AnnotationError(source, line, f"{name} must be a finite number >= 0, got {value!r}")
    return number


def _label(value: Any, source: Path, line: int) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise AnnotationError(source, line, f"label must be an integer class id, got {value!r}")
    try:
        label = int(value) if not isinstance(value, str) else int(value.strip())
    except (TypeError, ValueError):
        raise AnnotationError(source, line, f"label must be an integer class id, got {value!r}") from None
    if label < 0:
        raise AnnotationError(source, line, f"label must be >= 0, got {label}")
    return label


def _row(fields: dict[str, Any], source: Path, line: int, root: Path) -> Annotation:
    raw_path = fields.get("path")
    if raw_path is None or not str(raw_path).strip():
        raise AnnotationError(source, line, "the path is empty")
    path = Path(str(raw_path).strip())
    start = _number(fields.get("start"), "start", source, line)
    end = _number(fields.get("end"), "end", source, line)
    if start is not None and end is not None and end <= start:
        raise AnnotationError(source, line, f"end ({end:g}) must be after start ({start:g})")
    caption = fields.get("caption")
    if caption is not None and not isinstance(caption, str):
        raise AnnotationError(source, line, f"caption must be text, got {caption!r}")
    return Annotation(
        path=str(path if path.is_absolute() else root / path), label=_label(fields.get("label"), source, line),
        caption=caption or None, start=start, end=end, negatives=_negatives(fields.get("negatives"), source, line),
    )


def _negatives(value: Any, source: Path, line: int) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise AnnotationError(source, line, f"negatives must be a JSON list of non-empty captions, got {value!r}")
    return tuple(value)


def _read_csv(source: Path, root: Path) -> list[Annotation]:
    with source.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames
        if not header:
            raise AnnotationError(source, 1, "no header row (expected columns: " + ", ".join(COLUMNS) + ")")
        header = [h.strip() for h in header]
        reader.fieldnames = header
        if "path" not in header:
            raise AnnotationError(source, 1, f"no 'path' column in the header {header}")
        rows = []
        for fields in reader:
            if None in fields:
                raise AnnotationError(source, reader.line_num, f"more values than the {len(header)} header columns")
            if all(not (v or "").strip() for v in fields.values()):
                continue
            rows.append(_row(fields, source, reader.line_num, root))
    return rows


def jsonl_objects(source: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of every non-blank line; a line that is not a JSON object is an AnnotationError."""
    with source.open(encoding="utf-8") as f:
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                fields = json.loads(text)
            except json.JSONDecodeError as exc:
                raise AnnotationError(source, line, f"not valid JSON: {exc.msg}") from None
            if not isinstance(fields, dict):
                raise AnnotationError(source, line, "each line must be a JSON object")
            yield line, fields


def _read_jsonl(source: Path, root: Path) -> list[Annotation]:
    rows = []
    for line, fields in jsonl_objects(source):
        if "path" not in fields:
            raise AnnotationError(source, line, "no 'path' field")
        rows.append(_row(fields, source, line, root))
    return rows


def read_annotations(path: str | Path, root: str | Path | None = None) -> list[Annotation]:
    """Every row of a ``.csv`` or ``.jsonl`` annotation file, validated."""
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"annotation file {source} does not exist")
    base = Path(root) if root is not None else source.parent
    suffix = source.suffix.lower()
    if suffix == ".csv":
        rows = _read_csv(source, base)
    elif suffix in (".jsonl", ".ndjson"):
        rows = _read_jsonl(source, base)
    else:
        raise ValueError(f"annotation file {source} must end in .csv or .jsonl")
    if not rows:
        raise AnnotationError(source, 1, "no annotations")
    return rows
