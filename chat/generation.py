"""Generation settings and streamed decoding: tokens arrive through an iterator while the LLM runs."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, fields
from typing import Any, Generator

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, StoppingCriteria, TextIteratorStreamer


@dataclass
class GenerationSettings:
    """Decoding settings; ``temperature == 0`` means greedy decoding (then ``top_p`` is unused)."""

    max_new_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 0.8
    repetition_penalty: float = 1.05

    def __post_init__(self) -> None:
        problems = []
        if self.max_new_tokens < 1:
            problems.append(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            problems.append(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p must be in (0, 1], got {self.top_p}")
        if self.repetition_penalty <= 0:
            problems.append(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if problems:
            raise ValueError("invalid generation settings: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GenerationSettings":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown generation setting(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    def generate_kwargs(self) -> dict[str, Any]:
        sampled = self.temperature > 0
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "do_sample": sampled,
                                  "repetition_penalty": self.repetition_penalty}
        if sampled:
            kwargs.update(temperature=self.temperature, top_p=self.top_p)
        else:  # keep a model's sampling defaults from warning that they are unused
            kwargs.update(temperature=None, top_p=None, top_k=None)
        return kwargs


class _Cancelled(StoppingCriteria):
    """Stops generation once the consumer has stopped reading the stream."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def stream_generate(
    llm: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    input_ids: torch.Tensor,
    inputs_embeds: torch.Tensor,
    settings: GenerationSettings,
    stop_ids: list[int],
) -> Generator[str, None, None]:
    """Yield the answer's text as it is decoded (batch of one).

    ``input_ids`` only serve the repetition penalty (a placeholder id must already be replaced by an id of the
    prompt); the model reads ``inputs_embeds``. Generation runs in a thread; leaving the loop early stops it
    after the current token, and an error inside generation is raised here.
    """
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    cancel = threading.Event()
    failure: list[BaseException] = []
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]

    def run() -> None:
        try:
            llm.generate(
                input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=torch.ones_like(input_ids),
                streamer=streamer, eos_token_id=stop_ids, pad_token_id=pad_id,
                stopping_criteria=[_Cancelled(cancel)], **settings.generate_kwargs(),
            )
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer's thread
            failure.append(exc)
            streamer.end()

    worker = threading.Thread(target=run, name="fluxvid-generate", daemon=True)
    worker.start()
    try:
        for piece in streamer:
            if piece:
                yield piece
    finally:
        cancel.set()
        worker.join()
    if failure:
        raise failure[0]
