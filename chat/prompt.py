"""Prompts: the video placeholder inside the LLM's own chat template, and splicing video embeddings into it.

The first user message of every prompt starts with the placeholder and a sentence giving the clip's duration
and sampled timestamps; one placeholder token is expanded to the clip's N video tokens, whose embeddings are
replaced by the projected ViT features. Training and chatting build prompts with the same functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from .errors import ChatError
from .llm import VIDEO_TOKEN

IGNORE_INDEX = -100
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant that answers questions about a video."


@dataclass(frozen=True)
class VideoContext:
    """What the prompt tells the LLM about the clip (times in seconds of the source file)."""

    duration: float  # of the clip shown (the segment, or the whole file)
    timestamps: tuple[float, ...]
    start: float | None = None  # set for an indexed segment of a longer file
    end: float | None = None

    def describe(self) -> str:
        times = ", ".join(f"{t:.1f}s" for t in self.timestamps)
        if self.start is not None and self.end is not None:
            span = (f"The video is the segment from {self.start:.1f}s to {self.end:.1f}s of a longer video "
                    f"({self.duration:.1f} seconds).")
        else:
            span = f"The video lasts {self.duration:.1f} seconds."
        return f"{VIDEO_TOKEN}\n{span} {len(self.timestamps)} frames were sampled at {times}."


def _clean(text: str) -> str:
    """User text must not smuggle in extra placeholders."""
    return text.replace(VIDEO_TOKEN, "")


def build_messages(
    system: str | None, video: VideoContext, turns: Sequence[tuple[str, str]], question: str | None = None
) -> list[dict[str, str]]:
    """Chat-template messages: past ``(question, answer)`` turns, then ``question``; the first user message
    carries the video, so trimming old turns never drops it."""
    messages = [{"role": "system", "content": system}] if system else []
    pairs: list[tuple[str, str | None]] = [*turns, *([(question, None)] if question is not None else [])]
    for index, (asked, answer) in enumerate(pairs):
        content = f"{video.describe()}\n{_clean(asked)}" if index == 0 else _clean(asked)
        messages.append({"role": "user", "content": content})
        if answer is not None:
            messages.append({"role": "assistant", "content": _clean(answer)})
    return messages


def expand_video(ids: list[int], video_id: int, num_video_tokens: int) -> list[int]:
    """Replace the single placeholder with ``num_video_tokens`` copies (one per video embedding)."""
    count = ids.count(video_id)
    if count != 1:
        raise ChatError(f"the rendered prompt holds {count} video placeholders instead of 1; the LLM's chat "
                        "template must keep the user message text as is")
    at = ids.index(video_id)
    return ids[:at] + [video_id] * num_video_tokens + ids[at + 1:]


def encode_prompt(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], video_id: int, num_video_tokens: int
) -> list[int]:
    """Token ids of a prompt that ends with the assistant's turn opening (for generation)."""
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return expand_video(tokenizer.encode(text, add_special_tokens=False), video_id, num_video_tokens)


def encode_conversation(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], video_id: int, num_video_tokens: int
) -> tuple[list[int], list[int]]:
    """Token ids and labels of a whole conversation: labels are the ids on answer tokens (the answer and the
    template's end-of-turn), :data:`IGNORE_INDEX` elsewhere, so the loss covers only the answers."""
    pieces: list[tuple[str, bool]] = []
    rendered = ""
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prefix = tokenizer.apply_chat_template(messages[:index], add_generation_prompt=True, tokenize=False)
        full = tokenizer.apply_chat_template(messages[:index + 1], tokenize=False)
        if not prefix.startswith(rendered) or not full.startswith(prefix):
            raise ChatError("the LLM's chat template does not render a conversation as a growing prefix; "
                            "answer tokens cannot be located for the loss")
        pieces += [(prefix[len(rendered):], False), (full[len(prefix):], True)]
        rendered = full
    ids: list[int] = []
    labels: list[int] = []
    for text, is_answer in pieces:
        piece = tokenizer.encode(text, add_special_tokens=False)
        ids += piece
        labels += piece if is_answer else [IGNORE_INDEX] * len(piece)
    expanded = expand_video(ids, video_id, num_video_tokens)
    at = ids.index(video_id)
    labels = labels[:at] + [IGNORE_INDEX] * num_video_tokens + labels[at + 1:]
    return expanded, labels


def splice_video(
    embedding: nn.Module, input_ids: torch.Tensor, video: torch.Tensor, video_id: int
) -> torch.Tensor:
    """Input embeddings ``[B, L, D]`` with the placeholder positions of row ``b`` holding ``video[b]``
    (``[B, N, D]``, in order). The placeholder id itself is never looked up, so it may lie outside the
    embedding table."""
    mask = input_ids == video_id
    counts = mask.sum(dim=1)
    if bool((counts != video.shape[1]).any()):
        raise ChatError(f"each prompt needs {video.shape[1]} video positions, found {counts.tolist()}")
    embeds = embedding(input_ids.masked_fill(mask, 0))
    return embeds.masked_scatter(mask[..., None], video.to(embeds.dtype))
