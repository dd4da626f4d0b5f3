"""Text-video retrieval evaluation of a dual encoder on a captioned annotation file (MSR-VTT style)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

import torch
from tqdm import tqdm

from encoder.budget import Plan
from encoder.video import Annotation, SkippedVideo, VideoDataset, VideoLoader

from .dual_encoder import DualEncoder
from .metrics import RetrievalMetrics, retrieval_metrics

if TYPE_CHECKING:
    from index.video_index import VideoIndex


@dataclass
class RetrievalResult:
    plain: RetrievalMetrics
    dual_softmax: RetrievalMetrics
    videos: int
    captions: int
    skipped: list[SkippedVideo] = field(default_factory=list)


@torch.inference_mode()
def evaluate_retrieval(
    model: DualEncoder, annotations: Sequence[Annotation], plan: Plan, batch_size: int = 8, num_workers: int = 2,
    progress: bool = True, device: torch.device | str = "cpu",
) -> RetrievalResult:
    """Rows with the same video (path and window) are one video with several captions; undecodable videos are
    skipped with their captions and reported."""
    captioned = [a for a in annotations if a.caption]
    if not captioned:
        raise ValueError("no annotation has a caption: retrieval needs a 'caption' column")
    keys = list(dict.fromkeys((a.path, a.start, a.end) for a in captioned))
    position = {key: i for i, key in enumerate(keys)}
    dataset = VideoDataset([Annotation(p, start=s, end=e) for p, s, e in keys], plan)
    loader = VideoLoader(dataset, batch_size=batch_size, num_workers=num_workers)
    model = model.eval().to(device)
    embeddings: dict[int, torch.Tensor] = {}
    for batch in tqdm(loader, total=len(loader), disable=not progress, unit="batch",
                      desc=f"videos {plan.frames}x{plan.resolution}"):
        vectors = model.encode_video(batch["video"].to(device), keep_tokens=plan.keep_tokens, head=plan.head)
        embeddings.update(zip(batch["index"].tolist(), vectors.float().cpu()))
    kept = sorted(embeddings)
    if not kept:
        raise ValueError("no video of the benchmark could be decoded")
    column = {video: j for j, video in enumerate(kept)}
    rows = [a for a in captioned if position[(a.path, a.start, a.end)] in column]
    text = torch.cat([model.encode_text([a.caption for a in rows[i:i + 256]]).float().cpu()
                      for i in range(0, len(rows), 256)])
    video = torch.stack([embeddings[i] for i in kept])
    targets = torch.tensor([column[position[(a.path, a.start, a.end)]] for a in rows])
    similarity = text @ video.T
    return RetrievalResult(retrieval_metrics(similarity, targets), retrieval_metrics(similarity, targets, True),
                           len(kept), len(rows), loader.skipped)


@torch.inference_mode()
def evaluate_index_retrieval(index: "VideoIndex", model: DualEncoder, annotations: Sequence[Annotation]
                             ) -> RetrievalResult:
    """Text->video over an index's stored whole-video vectors (no re-encoding): every captioned row's video
    must be in the index; rows whose video was skipped or is absent are left out and reported."""
    captioned = [a for a in annotations if a.caption]
    if not captioned:
        raise ValueError("no annotation has a caption: retrieval needs a 'caption' column")
    whole = {record.path: record.id for record in index.segments(list(index.allowed_ids("s.whole = 1", []))).values()}
    paths = sorted({str(Path(a.path).resolve()) for a in captioned} & set(whole))
    if not paths:
        raise ValueError(f"none of the annotated videos is in the index {index.dir}")
    column = {p: j for j, p in enumerate(paths)}
    rows = [a for a in captioned if str(Path(a.path).resolve()) in column]
    missing = sorted({a.path for a in captioned} - {a.path for a in rows})
    video = torch.from_numpy(np.stack([index.vector(whole[p]) for p in paths]))
    text = torch.cat([model.encode_text([a.caption for a in rows[i:i + 256]]).float().cpu()
                      for i in range(0, len(rows), 256)])
    targets = torch.tensor([column[str(Path(a.path).resolve())] for a in rows])
    similarity = text @ video.T
    return RetrievalResult(retrieval_metrics(similarity, targets), retrieval_metrics(similarity, targets, True),
                           len(paths), len(rows), [SkippedVideo(-1, p, "not in the index") for p in missing])
