"""Token Optimization of the demo models on the validation split (paper 3.3: pick frames x resolution per
budget by measured accuracy), written into each shipped model's config so that every consumer (eval, index,
app) plans the budget the same way.

Each model is tuned for itself: the search model by text->video recall, the classifier by top-1, the chat
model by answer accuracy; the held-out test split is never looked at.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from encoder import FluxViT, FluxViTConfig
from encoder.budget import Plan, make_plan
from encoder.checkpoint import load_model, save_checkpoint
from encoder.config import ProfileEntry
from encoder.evaluate import evaluate_classifier
from encoder.video import read_annotations, trained_samplings
from retrieval.dual_encoder import DualEncoder
from retrieval.evaluate import evaluate_retrieval

from .evaluate import chat_accuracy, questions_by_clip
from .shipped import CHAT_VISION, CLASSIFIER, DUAL_ENCODER, PROJECTOR


def _best(config: FluxViTConfig, budgets: Sequence[int], score: Callable[[Plan], float]) -> list[ProfileEntry]:
    """Per budget the candidate with the highest score (the first on ties: fewer frames)."""
    chosen = []
    for budget in budgets:
        plans = [make_plan(config, budget, f, r) for f, r in trained_samplings(config)]
        scored = [(score(p), -p.frames, p.frames, p.resolution) for p in plans if p.pool_tokens >= budget]
        best, _, frames, resolution = max(scored)
        chosen.append(ProfileEntry(budget, frames, resolution, round(best, 4)))
    return chosen


def _with_profile(config: FluxViTConfig, entries: list[ProfileEntry]) -> FluxViTConfig:
    tuned = {e.budget for e in entries}
    kept = [e for e in config.profile if e.budget not in tuned]
    return config.replace(profile=tuple(sorted(entries + kept, key=lambda e: e.budget)))


def tune_models(models: Path, world: Path, budgets: Sequence[int], workers: int = 2) -> dict[str, list[dict]]:
    """Tune and rewrite the search model, the classifier and the chat ViT in ``models``; returns the choices."""
    choices: dict[str, list[dict]] = {}
    clips = read_annotations(world / "val_clips.jsonl", world)
    dual = DualEncoder.load(models / DUAL_ENCODER)
    entries = _best(dual.vision.config, budgets, lambda p: evaluate_retrieval(
        dual, clips, p, 16, workers, progress=False).plain.t2v.r1)
    vision = _with_profile(dual.vision.config, entries)
    dual.config = dataclasses.replace(dual.config, vision=vision)
    dual.vision.config = vision
    dual.save(models / DUAL_ENCODER, dtype=torch.float16, **DualEncoder.saved_metadata(models / DUAL_ENCODER))
    choices["search"] = [dataclasses.asdict(e) for e in entries]

    actions = read_annotations(world / "val_actions.jsonl", world)
    classifier, metadata = load_model(models / CLASSIFIER)
    entries = _best(classifier.config, budgets, lambda p: evaluate_classifier(
        classifier, actions, p, 1, 1, 16, workers, progress=False).top1)
    _rewrite(models / CLASSIFIER, classifier, metadata, entries)
    choices["classify"] = [dataclasses.asdict(e) for e in entries]

    questions = questions_by_clip(world / "val_qa.jsonl", world, {c.path for c in clips})
    chat_vit, metadata = load_model(models / CHAT_VISION)
    entries = _best(chat_vit.config, budgets, lambda p: chat_accuracy(models / PROJECTOR, p.budget, questions,
                                                                      False, sampling=p).overall)
    _rewrite(models / CHAT_VISION, chat_vit, metadata, entries)
    choices["chat"] = [dataclasses.asdict(e) for e in entries]
    return choices


def _rewrite(path: Path, model: FluxViT, metadata: dict[str, Any], entries: list[ProfileEntry]) -> None:
    model.config = _with_profile(model.config, entries)
    save_checkpoint(model, path, **{k: v for k, v in metadata.items() if k != "config"})
