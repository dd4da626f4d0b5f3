"""Classification accuracy of a FluxViT on annotated videos at one sampling plan, with multi-view testing.

Used by the Token Optimization search (``fluxvid encoder tune-budget``) and by ``fluxvid eval classify``.
Views of one video (``clips x crops``) are scored together and their softmax averaged, as the model zoos do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from tqdm import tqdm

from .budget import Plan
from .model import FluxViT
from .video import Annotation, SkippedVideo, VideoDataset, VideoLoader


@dataclass
class ClassifyResult:
    top1: float
    top5: float
    videos: int
    probabilities: torch.Tensor  # [videos, classes], averaged over views
    labels: torch.Tensor  # [videos]
    skipped: list[SkippedVideo] = field(default_factory=list)


def topk_accuracy(probabilities: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Fraction of rows whose label is among the k highest scores."""
    if labels.numel() == 0:
        return 0.0
    top = probabilities.topk(min(k, probabilities.shape[1]), dim=1).indices
    return float((top == labels[:, None]).any(dim=1).float().mean())


@torch.inference_mode()
def evaluate_classifier(
    model: FluxViT, annotations: Sequence[Annotation], plan: Plan, clips: int = 1, crops: int = 1,
    batch_size: int = 4, num_workers: int = 2, progress: bool = True, device: torch.device | str = "cpu",
) -> ClassifyResult:
    """Top-1 / top-5 over the labelled ``annotations``; undecodable videos are skipped and reported."""
    labelled = [a for a in annotations if a.label is not None]
    if not labelled:
        raise ValueError("no annotation has a label: classification needs a 'label' column")
    views = clips * crops
    dataset = VideoDataset(labelled, plan, clips=clips, crops=crops)
    loader = VideoLoader(dataset, batch_size=batch_size, num_workers=num_workers)
    model = model.eval().to(device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=torch.device(device).type == "cuda")
    probabilities, labels = [], []
    for batch in tqdm(loader, total=len(loader), disable=not progress, desc=f"eval {plan.frames}x{plan.resolution}",
                      unit="batch"):
        video = batch["video"].to(device)
        if views > 1:
            video = video.flatten(0, 1)  # [B * V, 3, T, S, S]
        with autocast:
            logits = model(video, keep_tokens=plan.keep_tokens, head=plan.head)
        probs = logits.float().softmax(-1)
        probabilities.append(probs.reshape(-1, views, probs.shape[-1]).mean(1).cpu())
        labels.append(torch.as_tensor(batch["label"]))
    probs = torch.cat(probabilities) if probabilities else torch.zeros(0, model.num_classes)
    targets = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long)
    return ClassifyResult(topk_accuracy(probs, targets, 1), topk_accuracy(probs, targets, 5), len(targets),
                          probs, targets, loader.skipped)
