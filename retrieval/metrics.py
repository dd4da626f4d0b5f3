"""Text-video retrieval metrics: R@1/5/10, median and mean rank in both directions, optional dual softmax.

Conventions: ``similarity`` is ``[num_texts, num_videos]``; a text's ground truth is the video its caption
belongs to, a video's ground truth is every caption it has, and the video's rank is that of its best-scored
caption. Ranks are 1-based and ties are counted against the model (a wrong candidate scoring exactly as high
as the ground truth ranks before it), so a collapsed model that scores everything equally gets the worst
ranks, not the best. Recalls are percentages.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RankMetrics:
    r1: float
    r5: float
    r10: float
    median_rank: float
    mean_rank: float

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}R@1": self.r1, f"{prefix}R@5": self.r5, f"{prefix}R@10": self.r10,
                f"{prefix}MdR": self.median_rank, f"{prefix}MnR": self.mean_rank}


@dataclass(frozen=True)
class RetrievalMetrics:
    t2v: RankMetrics
    v2t: RankMetrics

    def as_dict(self) -> dict[str, float]:
        return {**self.t2v.as_dict("t2v/"), **self.v2t.as_dict("v2t/")}


def dual_softmax(scores: torch.Tensor) -> torch.Tensor:
    """``S * softmax(S, dim=0)`` for ``scores`` ``[queries, candidates]``: each candidate's scores are
    re-weighted by how strongly it prefers each query over the other queries (InternVideo2's evaluation)."""
    return scores * scores.softmax(dim=0)


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1-based rank ``[Q]`` of each query's best-scored ground truth among its candidates.

    ``scores`` ``[Q, C]``; ``targets`` ``[Q, C]`` bool, at least one True per row. A wrong candidate ranks
    ahead of the best ground truth when its score is greater or equal.
    """
    if scores.shape != targets.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and targets {tuple(targets.shape)} differ")
    if not bool(targets.any(dim=1).all()):
        missing = (~targets.any(dim=1)).nonzero()[:, 0].tolist()
        raise ValueError(f"queries {missing[:8]} have no ground-truth candidate")
    best = scores.masked_fill(~targets, -torch.inf).amax(dim=1, keepdim=True)
    return 1 + ((scores >= best) & ~targets).sum(dim=1)


def rank_metrics(ranks: torch.Tensor) -> RankMetrics:
    ranks = ranks.double()
    recall = [float((ranks <= k).double().mean() * 100) for k in (1, 5, 10)]
    return RankMetrics(*recall, median_rank=float(ranks.quantile(0.5)), mean_rank=float(ranks.mean()))


def retrieval_metrics(
    similarity: torch.Tensor, text_to_video: torch.Tensor | None = None, use_dual_softmax: bool = False,
) -> RetrievalMetrics:
    """Text->video and video->text metrics from ``similarity`` ``[num_texts, num_videos]``.

    ``text_to_video`` ``[num_texts]`` gives each caption's video (several captions per video allowed); None
    means one caption per video, caption i describing video i. With ``use_dual_softmax`` each direction's
    scores are re-weighted by :func:`dual_softmax` over its queries first.
    """
    if similarity.ndim != 2:
        raise ValueError(f"similarity must be [num_texts, num_videos], got {tuple(similarity.shape)}")
    num_texts, num_videos = similarity.shape
    if text_to_video is None:
        if num_texts != num_videos:
            raise ValueError(f"{num_texts} texts and {num_videos} videos: pass text_to_video for several captions "
                             "per video")
        text_to_video = torch.arange(num_texts)
    text_to_video = text_to_video.to(similarity.device).long()
    if text_to_video.shape != (num_texts,) or int(text_to_video.min()) < 0 or int(text_to_video.max()) >= num_videos:
        raise ValueError(f"text_to_video must hold {num_texts} video indices in [0, {num_videos})")
    scores = similarity.double()
    truth = text_to_video[:, None] == torch.arange(num_videos, device=scores.device)[None, :]  # [texts, videos]
    t2v_scores, v2t_scores = scores, scores.T
    if use_dual_softmax:
        t2v_scores, v2t_scores = dual_softmax(t2v_scores), dual_softmax(v2t_scores)
    return RetrievalMetrics(t2v=rank_metrics(target_ranks(t2v_scores, truth)),
                            v2t=rank_metrics(target_ranks(v2t_scores, truth.T)))
