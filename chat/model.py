"""The shared, stateless part of a video chat: FluxViT at a budget, the projector, the LLM and its tokenizer.

Several :class:`~chat.session.Session` objects share one :class:`ChatModel`; all conversation state lives in
the sessions, the model holds none.
"""

from __future__ import annotations

from pathlib import Path
from typing import Generator

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .generation import GenerationSettings, stream_generate
from .llm import llm_dim, load_llm, load_lora, stop_token_ids, video_token_id
from .projector import Projector, ProjectorInfo, load_projector
from .prompt import VideoContext, encode_prompt, splice_video
from .video import load_clip
from .vision import VisionTower, load_vision


class ChatModel:
    """The frozen models of a chat; :meth:`load` builds one from a projector file."""

    def __init__(
        self, vision: VisionTower, projector: Projector, llm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
        info: ProjectorInfo, vision_name: str, llm_name: str,
    ) -> None:
        info.check_fits(vision.dim, llm_dim(llm), vision_name, llm_name, vision.summary_dim)
        self.vision, self.projector, self.llm, self.tokenizer = vision, projector.eval(), llm.eval(), tokenizer
        self.info, self.vision_name, self.llm_name = info, vision_name, llm_name
        self.video_id = video_token_id(tokenizer)
        self.stop_ids = stop_token_ids(llm, tokenizer)

    @classmethod
    def load(
        cls, projector: str | Path, llm: str | None = None, vision: str | None = None, budget: int | None = None,
        device: str | torch.device = "cpu", dtype: torch.dtype | str = "auto",
    ) -> "ChatModel":
        """Everything from a projector file; ``llm`` / ``vision`` / ``budget`` default to what it was trained
        with (the budget may differ: FluxViT is trained to work across budgets)."""
        proj, info = load_projector(projector)
        llm_name = llm or beside(projector, info.llm)
        vision_name = vision or beside(projector, info.vision)
        vit = load_vision(vision_name, info.vision_model)
        language_model, tokenizer = load_llm(llm_name, dtype=dtype)
        if info.lora:
            language_model = load_lora(language_model, Path(projector).parent / info.lora)
        second = load_vision(beside(projector, info.second_vision), info.vision_model) if info.second_vision else None
        tower = VisionTower(vit, budget or info.budget, info.tokens_per_frame, second=second,
                            summary=info.summary_dim > 0)
        return cls(tower, proj, language_model, tokenizer, info, vision_name, llm_name).to(device)

    def to(self, device: str | torch.device) -> "ChatModel":
        for module in (self.vision, self.projector, self.llm):
            module.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return self.projector.norm.weight.device

    @property
    def context_length(self) -> int:
        """The LLM's maximum sequence length (prompt plus answer)."""
        return int(getattr(self.llm.config, "max_position_embeddings", 32768))

    @property
    def num_video_tokens(self) -> int:
        return self.vision.num_tokens

    def load_video(self, path: str | Path, start: float | None = None, end: float | None = None
                   ) -> tuple[torch.Tensor, VideoContext]:
        """The clip's projected embeddings ``[N, D]`` and what the prompt says about it."""
        video, context = load_clip(path, self.vision.plan, start, end)
        return self.embed_video(video), context

    @torch.no_grad()
    def embed_video(self, video: torch.Tensor) -> torch.Tensor:
        """Projected embeddings ``[N, D]`` of one normalised clip ``[3, T, H, W]``."""
        features = self.vision(video[None].to(self.device))
        return self.projector(features)[0]

    def encode_prompt(self, messages: list[dict[str, str]]) -> list[int]:
        return encode_prompt(self.tokenizer, messages, self.video_id, self.num_video_tokens)

    def stream(self, prompt_ids: list[int], video: torch.Tensor, settings: GenerationSettings
               ) -> Generator[str, None, None]:
        """Stream the answer to a prompt from :meth:`encode_prompt` about a clip from :meth:`load_video`."""
        ids = torch.tensor([prompt_ids], device=self.device)
        with torch.no_grad():
            embeds = splice_video(self.llm.get_input_embeddings(), ids, video[None], self.video_id)
        # generate reads ids only for the repetition penalty: a prompt token stands in for the placeholder
        stand_in = next(i for i in prompt_ids if i != self.video_id)
        ids = ids.masked_fill(ids == self.video_id, stand_in)
        return stream_generate(self.llm, self.tokenizer, ids, embeds, settings, self.stop_ids)


def beside(projector: str | Path, source: str) -> str:
    """A source the projector info names relative to its own file (a trained LLM or ViT shipped with it, so
    the folder can move), else the source as recorded (an absolute path, a hub id or a registered name)."""
    local = Path(projector).parent / source
    return str(local) if not Path(source).is_absolute() and local.exists() else source
