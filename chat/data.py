"""Instruction data for projector training: a JSONL file of videos (or time windows) with conversations.

One line per sample::

    {"path": "clips/cat.mp4", "start": 3.0, "end": 9.5,
     "conversations": [{"role": "user", "content": "What is the cat doing?"},
                       {"role": "assistant", "content": "It chases a ball."}]}

``path`` (or ``video``) is required, relative paths start at ``root`` (default: the JSONL's folder);
``start`` / ``end`` are optional seconds. Turns alternate user / assistant, starting with the user and ending
with the assistant; LLaVA-style turns (``{"from": "human" | "gpt", "value": ...}``) are accepted too, and
``<video>`` / ``<image>`` markers in them are dropped (the video always goes first). Any problem is a
:class:`~chat.errors.ChatDataError` naming the file and the line.
"""

from __future__ import annotations

import json
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, get_worker_info
from transformers import PreTrainedTokenizerBase

from encoder.budget import Plan
from encoder.video import SkippedVideo, VideoDecodeError, normalize
from encoder.video.dataset import decode_once

from .errors import ChatDataError
from .prompt import IGNORE_INDEX, VideoContext, build_messages, encode_conversation
from .video import decode_clip

log = logging.getLogger(__name__)
_ROLES = {"user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant"}
_MARKERS = ("<video>", "<image>")


@dataclass(frozen=True)
class Instruction:
    """One training sample: a video (window) and its ``(question, answer)`` turns."""

    path: str
    start: float | None
    end: float | None
    turns: tuple[tuple[str, str], ...]
    line: int


def _seconds(value: Any, name: str, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ChatDataError(f"{where}: {name} must be a number of seconds >= 0, got {value!r}")
    return float(value)


def _turns(raw: Any, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, list) or not raw:
        raise ChatDataError(f"{where}: 'conversations' must be a non-empty list of turns")
    texts: list[tuple[str, str]] = []
    for number, turn in enumerate(raw, start=1):
        if not isinstance(turn, dict):
            raise ChatDataError(f"{where}: turn {number} must be an object with role/content (or from/value)")
        role, text = turn.get("role", turn.get("from")), turn.get("content", turn.get("value"))
        if role not in _ROLES or not isinstance(text, str):
            raise ChatDataError(f"{where}: turn {number} needs a role in {sorted(_ROLES)} and a text content, "
                                f"got {turn!r}")
        for marker in _MARKERS:
            text = text.replace(marker, "")
        texts.append((_ROLES[role], text.strip()))
    roles = [role for role, _ in texts]
    if len(roles) % 2 or roles != ["user", "assistant"] * (len(roles) // 2):
        raise ChatDataError(f"{where}: turns must alternate user, assistant (ending with the assistant), got "
                            f"{roles}")
    return tuple((texts[i][1], texts[i + 1][1]) for i in range(0, len(texts), 2))


def read_instructions(path: str | Path, root: str | Path | None = None) -> list[Instruction]:
    """Every sample of a JSONL instruction file, validated up front (blank lines are skipped)."""
    path = Path(path)
    base = Path(root) if root is not None else path.parent
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ChatDataError(f"instruction file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ChatDataError(f"instruction file {path} cannot be read: {exc}") from None
    samples = []
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ChatDataError(f"{where}: not valid JSON: {exc}") from None
        if not isinstance(row, dict):
            raise ChatDataError(f"{where}: each line must be a JSON object")
        video = row.get("path", row.get("video"))
        if not isinstance(video, str) or not video:
            raise ChatDataError(f"{where}: needs the video file as 'path' (or 'video')")
        start, end = _seconds(row.get("start"), "start", where), _seconds(row.get("end"), "end", where)
        if start is not None and end is not None and end <= start:
            raise ChatDataError(f"{where}: end {end} must come after start {start}")
        resolved = Path(video) if Path(video).is_absolute() else base / video
        samples.append(Instruction(str(resolved), start, end, _turns(row.get("conversations"), where), number))
    if not samples:
        raise ChatDataError(f"instruction file {path} holds no samples")
    return samples


def _decode_sample(samples: list[Instruction], plan: Plan, index: int, threads: int
                   ) -> tuple[torch.Tensor, VideoContext] | SkippedVideo:
    """Sample ``index``'s uint8 clip and its context, or why it cannot be had: the one decode of both the
    per-item and the cached path."""
    sample = samples[index]
    try:
        return decode_clip(sample.path, plan, sample.start, sample.end, threads=threads)
    except VideoDecodeError as exc:
        return SkippedVideo(index, sample.path, exc.reason)


class _DecodeOnce(Dataset):
    """Worker side of :meth:`InstructionDataset.cache_clips`: sample ``i`` -> (uint8 clip, context) or why not."""

    def __init__(self, samples: list[Instruction], plan: Plan) -> None:
        self.samples, self.plan = samples, plan

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, VideoContext] | SkippedVideo:
        return _decode_sample(self.samples, self.plan, index, threads=1)


@dataclass(frozen=True)
class ChatSampling:
    """How a budget reads a clip: the ViT's plan for it, and how many embeddings that gives the LLM."""

    plan: Plan
    num_video_tokens: int


class InstructionDataset(Dataset):
    """Samples as ``{"video": [3, T, S, S], "input_ids": [L], "labels": [L], "sample": index, "budget": b}``
    (labels only on answers; the index lets a recipe keep per-sample results).

    ``samplings`` maps each budget the data may be asked for to its :class:`ChatSampling`; an int key, or a
    :class:`~training.data.SampleKey` without a budget, gets ``budget``'s. A sample longer than ``max_length``
    tokens loses its last turns; a video that cannot be decoded, or whose first turn alone is too long, gives a
    :class:`SkippedVideo` saying why. After :meth:`cache_clips` the clips come from memory.

    ``independent_turns`` is the share of samples whose turns are each a conversation of their own, asked first
    about the clip, packed behind their shared prefix (system prompt, video, the first words they share); the
    rest stay dialogues. The choice is drawn from the key's seed (an int key: from the index). With a share above
    0 every item also carries ``position_ids`` (restarting after the prefix for every packed turn) and
    ``segments`` (0 on the prefix and on a whole dialogue, turn ``i`` on its tokens), from which the recipe builds
    the mask that hides packed turns from each other.
    """

    def __init__(
        self, source: str | Path, samples: list[Instruction], tokenizer: PreTrainedTokenizerBase,
        samplings: dict[int, ChatSampling], budget: int, video_id: int, system_prompt: str | None, max_length: int,
        independent_turns: float = 0.0,
    ) -> None:
        if budget not in samplings:
            raise ValueError(f"budget {budget} has no sampling (given: {sorted(samplings)})")
        self.source, self.samples, self.tokenizer = str(source), samples, tokenizer
        self.samplings, self.budget, self.video_id = samplings, budget, video_id
        self.system_prompt, self.max_length = system_prompt, max_length
        self.independent_turns = independent_turns
        self._clips: dict[tuple[int, int], list[tuple[torch.Tensor, VideoContext] | SkippedVideo]] | None = None

    @property
    def plan(self) -> Plan:
        """The sampling of the default budget."""
        return self.samplings[self.budget].plan

    def cache_clips(self, workers: int = 0, progress: bool = True) -> None:
        """Decode every sample's clip once per distinct sampling and keep it (uint8, ``T x S x S x 3`` bytes a
        sample): the sampling has no randomness, so each epoch would decode the same frames again. Items stay
        exactly the same."""
        self._clips = {}
        for key, plan in {_sampling_key(s.plan): s.plan for s in self.samplings.values()}.items():
            self._clips[key] = decode_once(_DecodeOnce(self.samples, plan), workers,
                                           f"decoding each chat clip once ({plan.frames} x {plan.resolution}px)",
                                           "clip", progress)
        for entry in next(iter(self._clips.values())):  # every sampling fails on the same videos
            if isinstance(entry, SkippedVideo):
                self._report(entry)

    def _report(self, skipped: SkippedVideo) -> None:
        sample = self.samples[skipped.index]
        log.warning("skipping %s (line %d of %s): %s", skipped.path, sample.line, self.source, skipped.reason)

    @property
    def nbytes(self) -> int:
        """Memory held by :meth:`cache_clips` (0 before it)."""
        return sum(entry[0].numel() for clips in (self._clips or {}).values() for entry in clips
                   if not isinstance(entry, SkippedVideo))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: Any) -> dict[str, Any] | SkippedVideo:
        index = int(getattr(key, "index", key))
        budget = getattr(key, "budget", None) or self.budget
        if budget not in self.samplings:
            raise ValueError(f"{self.source}: asked for budget {budget}, which has no sampling here "
                             f"({sorted(self.samplings)})")
        sampling = self.samplings[budget]
        sample = self.samples[index]
        if self._clips is not None:
            clip = self._clips[_sampling_key(sampling.plan)][index]  # failures were reported when cached
        else:
            clip = _decode_sample(self.samples, sampling.plan, index,
                                  threads=1 if get_worker_info() is not None else 0)
            if isinstance(clip, SkippedVideo):
                self._report(clip)
        if isinstance(clip, SkippedVideo):
            return clip
        video, context = normalize(clip[0]), clip[1]
        encode = self._conversation
        if self.independent_turns > 0:  # drawn from the batch's seed, so every epoch draws anew
            packed = random.Random(getattr(key, "seed", index)).random() < self.independent_turns
            encode = self._packed if packed else self._dialogue
        turns = sample.turns
        while True:
            tokens = encode(context, turns, sampling.num_video_tokens)
            if len(tokens["input_ids"]) <= self.max_length:
                break
            if len(turns) == 1:
                reason = (f"line {sample.line} of {self.source}: the first turn needs {len(tokens['input_ids'])} "
                          f"tokens ({sampling.num_video_tokens} for the video), more than max_length "
                          f"{self.max_length}")
                log.warning("skipping %s", reason)
                return SkippedVideo(index, sample.path, reason)
            turns = turns[:-1]
        return {"video": video, **{k: torch.tensor(v) for k, v in tokens.items()}, "sample": index, "budget": budget}

    def _conversation(self, context: VideoContext, turns: tuple[tuple[str, str], ...], video_tokens: int
                      ) -> dict[str, list[int]]:
        messages = build_messages(self.system_prompt, context, turns)
        ids, labels = encode_conversation(self.tokenizer, messages, self.video_id, video_tokens)
        return {"input_ids": ids, "labels": labels}

    def _dialogue(self, context: VideoContext, turns: tuple[tuple[str, str], ...], video_tokens: int
                  ) -> dict[str, list[int]]:
        """A dialogue in the packed layout: all of it in segment 0, positions in order."""
        tokens = self._conversation(context, turns, video_tokens)
        length = len(tokens["input_ids"])
        return {**tokens, "position_ids": list(range(length)), "segments": [0] * length}

    def _packed(self, context: VideoContext, turns: tuple[tuple[str, str], ...], video_tokens: int
                ) -> dict[str, list[int]]:
        """Every turn as its own one-question conversation, packed behind the tokens they all begin with (never
        an answer token, so each answer keeps its own copy)."""
        alone = [self._conversation(context, (turn,), video_tokens) for turn in turns]
        shared = min(len(c["input_ids"]) for c in alone)
        for position in range(shared):
            column = {(c["input_ids"][position], c["labels"][position]) for c in alone}
            if len(column) > 1 or next(iter(column))[1] != IGNORE_INDEX:
                shared = position
                break
        packed = {"input_ids": alone[0]["input_ids"][:shared], "labels": alone[0]["labels"][:shared],
                  "position_ids": list(range(shared)), "segments": [0] * shared}
        for number, conversation in enumerate(alone, start=1):
            rest = len(conversation["input_ids"]) - shared
            packed["input_ids"] += conversation["input_ids"][shared:]
            packed["labels"] += conversation["labels"][shared:]
            packed["position_ids"] += list(range(shared, shared + rest))
            packed["segments"] += [number] * rest
        return packed


def _sampling_key(plan: Plan) -> tuple[int, int]:
    """What decoding depends on: budgets with the same frames and resolution share their decoded clips."""
    return plan.frames, plan.resolution


class InstructionCollate:
    """Right-pads ids (with ``pad_id``, masked out) and labels (with the ignore index); stacks the clips.

    Bad videos are dropped and listed under ``"skipped"`` (the engine logs them); a batch may therefore have
    fewer rows, and one whose videos all failed has only the ``"skipped"`` key (the engine skips it). Packed
    independent turns also give ``position_ids`` and ``segments`` (padding in segment -1).
    """

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: list[dict[str, torch.Tensor] | SkippedVideo]) -> dict[str, Any]:
        good = [item for item in items if not isinstance(item, SkippedVideo)]
        skipped = [item for item in items if isinstance(item, SkippedVideo)]
        if not good:
            return {"skipped": skipped}
        length = max(len(item["input_ids"]) for item in good)
        input_ids = torch.full((len(good), length), self.pad_id, dtype=torch.long)
        labels = torch.full((len(good), length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(good), length), dtype=torch.long)
        packed = "segments" in good[0]  # independent turns: positions and segments, padding in segment -1
        position_ids = torch.zeros((len(good), length), dtype=torch.long)
        segments = torch.full((len(good), length), -1, dtype=torch.long)
        for row, item in enumerate(good):
            size = len(item["input_ids"])
            input_ids[row, :size], labels[row, :size], attention_mask[row, :size] = \
                item["input_ids"], item["labels"], 1
            if packed:
                position_ids[row, :size], segments[row, :size] = item["position_ids"], item["segments"]
        budgets = {item["budget"] for item in good}
        if len(budgets) > 1:
            raise ValueError(f"a batch must be read at one budget, got {sorted(budgets)}")
        batch = {"video": torch.stack([item["video"] for item in good]), "input_ids": input_ids, "labels": labels,
                 "attention_mask": attention_mask, "sample": torch.tensor([item["sample"] for item in good]),
                 "budget": budgets.pop(), "skipped": skipped}
        return {**batch, "position_ids": position_ids, "segments": segments} if packed else batch
