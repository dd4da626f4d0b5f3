"""``fluxvid demo eval``: the shipped models on the world's held-out test split, per budget.

- search: text->video R@1 / R@5 of every test caption among all the test clips (whole clips);
- classify: action top-1 on every single-action clip and every action window of the chained clips;
- chat: exact-match accuracy (case and final period aside) of greedy answers to every test question, each asked
  as the first question about its clip; overall and per kind of question (colour, count, action, shape,
  order, swap), since the kinds test different things (appearance, number, motion, sequence).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
from tqdm import tqdm

from chat import ChatModel, GenerationSettings, Session
from encoder.budget import Plan, plan
from encoder.checkpoint import load_model
from encoder.evaluate import evaluate_classifier
from encoder.video import Annotation, read_annotations
from retrieval.dual_encoder import DualEncoder
from retrieval.evaluate import evaluate_retrieval

from .shipped import CLASSIFIER, DUAL_ENCODER, PROJECTOR, QUALITY_BARS, check_models
from .world import QUESTION_KINDS, question_kind

EVAL_BUDGETS = (128, 256)


@dataclass(frozen=True)
class DemoScores:
    """Scores at one budget (recalls and accuracies as fractions)."""

    budget: int
    sampling: str
    gmacs: float
    text_to_video_r1: float
    text_to_video_r5: float
    action_top1: float
    chat_accuracy: float
    chat_by_kind: dict[str, float]  # accuracy per kind of question (world.QUESTION_KINDS)
    clips: int
    action_windows: int
    questions: int

    def failures(self) -> list[str]:
        """The quality bars this budget misses, in words (empty when it meets them all)."""
        return [f"{name} {getattr(self, name):.3f} < {bar} at {self.budget} tokens"
                for name, bar in QUALITY_BARS.items() if getattr(self, name) < bar]


def normalise_answer(text: str) -> str:
    return " ".join(text.lower().strip().rstrip(".").split())


def _subset(rows: Sequence[Annotation], paths: set[str]) -> list[Annotation]:
    return [row for row in rows if row.path in paths]


def evaluate_demo(models: Path, world: Path, budgets: Sequence[int] = EVAL_BUDGETS, limit: int | None = None,
                  workers: int = 2, progress: bool = True) -> list[DemoScores]:
    """Scores of the models in ``models`` on the test split of ``world`` (its first ``limit`` clips when set:
    a fixed subset, with their action windows and questions)."""
    check_models(models)
    clips = read_annotations(world / "test_clips.jsonl", world)
    clips = clips[:limit] if limit else clips
    paths = {row.path for row in clips}
    actions = _subset(read_annotations(world / "test_actions.jsonl", world), paths)
    questions = questions_by_clip(world / "test_qa.jsonl", world, paths)
    dual = DualEncoder.load(models / DUAL_ENCODER).eval()
    classifier, _ = load_model(models / CLASSIFIER)
    classifier.eval()
    decoded = []  # every decoding pass first: workers forked after chat generation has run can hang
    for budget in budgets:
        search_plan = plan(budget, dual.vision.config)
        retrieval = evaluate_retrieval(dual, clips, search_plan, 16, workers, progress=False)
        classified = evaluate_classifier(classifier, actions, plan(budget, classifier.config), 1, 1, 16, workers,
                                         progress=False)
        decoded.append((search_plan, retrieval, classified))
    scores = []
    for budget, (search_plan, retrieval, classified) in zip(budgets, decoded):
        chat = chat_accuracy(models / PROJECTOR, budget, questions, progress)
        scores.append(DemoScores(
            budget=budget, sampling=f"{search_plan.frames}x{search_plan.resolution}",
            gmacs=round(search_plan.est_gmacs, 3), text_to_video_r1=retrieval.plain.t2v.r1 / 100,
            text_to_video_r5=retrieval.plain.t2v.r5 / 100, action_top1=classified.top1,
            chat_accuracy=chat.overall, chat_by_kind=chat.by_kind, clips=retrieval.videos,
            action_windows=classified.videos,
            questions=sum(len(q) for q in questions.values())))
    return scores


def questions_by_clip(path: Path, root: Path, paths: set[str]) -> dict[str, list[tuple[str, str]]]:
    """Question/answer pairs per clip (paths resolved as the annotation reader resolves them)."""
    grouped: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for line in path.read_text().splitlines():
        row = json.loads(line)
        clip = str(root / row["path"])
        if clip in paths:
            turns = row["conversations"]
            grouped[clip].append((turns[0]["content"], turns[1]["content"]))
    return grouped


@dataclass(frozen=True)
class ChatAccuracy:
    overall: float
    by_kind: dict[str, float]  # only the kinds asked


@torch.no_grad()
def chat_accuracy(projector: Path, budget: int, questions: dict[str, list[tuple[str, str]]], progress: bool,
                  sampling: Plan | None = None) -> ChatAccuracy:
    """Exact-match accuracy of greedy answers, each question asked first about its clip; ``sampling``
    overrides the budget's plan (Token Optimization tries several)."""
    model = ChatModel.load(projector, budget=budget)
    if sampling is not None:
        model.vision = model.vision.at(budget, sampling)
    session = Session(model, GenerationSettings(max_new_tokens=24, temperature=0.0, repetition_penalty=1.0))
    right: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for clip, pairs in tqdm(questions.items(), desc=f"chat at {budget} tokens", unit="clip", disable=not progress):
        session.load_video(clip)
        for question, answer in pairs:
            session.reset()
            kind = question_kind(question)
            right[kind] += normalise_answer(session.chat(question)) == normalise_answer(answer)
            total[kind] += 1
    by_kind = {kind: right[kind] / total[kind] for kind in QUESTION_KINDS if total[kind]}
    return ChatAccuracy(sum(right.values()) / max(sum(total.values()), 1), by_kind)


def scores_table(scores: Sequence[DemoScores]) -> list[dict[str, object]]:
    return [asdict(s) for s in scores]
