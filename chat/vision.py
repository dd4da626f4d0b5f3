"""FluxViT as the chat model's eyes: the tokens kept at a budget, in time order, optionally pooled per frame.

The number of tokens sent to the LLM follows the budget (``Plan.tokens``), or, with ``tokens_per_frame``,
``frames x tokens_per_frame`` where each frame's kept tokens are averaged over a square grid of cells.
A second FluxViT may look at the same kept tokens: its features are concatenated to the first's, so a chat
can read one model trained on what happens (Flux-FT) and one trained on what is there (Flux-CLIP).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from encoder import FluxViT, Plan, create_model, list_models, load_model, plan

from .errors import ChatError
from .features import VisionFeatures

#: the seed of the weights a registered name gets when no checkpoint is given (tests and demos only)
RANDOM_VIT_SEED = 0


def load_vision(source: str, model_name: str | None = None) -> FluxViT:
    """A frozen FluxViT (eval mode) from a checkpoint file, or from a registered name with weights drawn from
    a fixed seed so that training and chatting see the same untrained ViT. ``model_name`` is the architecture
    of a released checkpoint (FluxVid checkpoints carry their own config)."""
    path = Path(source).expanduser()
    if path.is_file():
        model, _ = load_model(path, name=model_name)
    elif source in list_models():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_VIT_SEED)
            model = create_model(source)
    else:
        raise ChatError(f"vision model {source!r} is neither a FluxViT checkpoint file nor a registered model "
                        f"({', '.join(list_models())})")
    model.requires_grad_(False)
    return model.eval()


def pool_per_frame(
    tokens: torch.Tensor, positions: torch.Tensor, grid: tuple[int, int, int], tokens_per_frame: int
) -> torch.Tensor:
    """Average kept tokens ``[B, K, C]`` into ``tokens_per_frame`` square cells per frame: ``[B, T * n, C]``.

    ``positions`` (flat ``t*H*W + y*W + x``) say where each kept token lies. A cell that kept no token takes
    its frame's mean, and a frame that kept none takes the clip's mean, so the count stays fixed.
    """
    batch, kept, dim = tokens.shape
    frames, height, width = grid
    side = math.isqrt(tokens_per_frame)
    t = positions // (height * width)
    y = positions % (height * width) // width
    x = positions % width
    cell = t * tokens_per_frame + (y * side // height) * side + x * side // width
    offsets = torch.arange(batch, device=tokens.device)[:, None]
    flat = tokens.reshape(-1, dim).float()  # counts above 256 are not exact in bf16

    def segment_mean(index: torch.Tensor, segments: int) -> tuple[torch.Tensor, torch.Tensor]:
        sums = flat.new_zeros(batch * segments, dim).index_add_(0, index.reshape(-1), flat)
        counts = flat.new_zeros(batch * segments).index_add_(0, index.reshape(-1), flat.new_ones(flat.shape[0]))
        return sums.reshape(batch, segments, dim), counts.reshape(batch, segments, 1)

    cell_sum, cell_count = segment_mean(cell + offsets * frames * tokens_per_frame, frames * tokens_per_frame)
    frame_sum, frame_count = segment_mean(t + offsets * frames, frames)
    clip_mean = flat.reshape(batch, kept, dim).mean(dim=1, keepdim=True)
    frame_mean = torch.where(frame_count > 0, frame_sum / frame_count.clamp(min=1), clip_mean)
    fallback = frame_mean.repeat_interleave(tokens_per_frame, dim=1)
    return torch.where(cell_count > 0, cell_sum / cell_count.clamp(min=1), fallback).to(tokens.dtype)


def check_tokens_per_frame(model_plan: Plan, patch_size: int, tokens_per_frame: int | None) -> None:
    """Per-frame pooling needs a square count no finer than the frame's patch grid."""
    if tokens_per_frame is None:
        return
    side = math.isqrt(tokens_per_frame)
    patches = model_plan.resolution // patch_size
    if tokens_per_frame < 1 or side * side != tokens_per_frame:
        raise ChatError(f"tokens per frame must be a square number (1, 4, 16, 64...), got {tokens_per_frame}")
    if side > patches:
        raise ChatError(f"{tokens_per_frame} tokens per frame need at least {side}x{side} patches per frame, but "
                        f"budget {model_plan.budget} samples {model_plan.resolution}px = {patches}x{patches} patches")


def video_token_count(model_plan: Plan, tubelet_size: int, tokens_per_frame: int | None, summary: bool = False
                      ) -> int:
    """How many embeddings one clip sends to the LLM (a summary is one more)."""
    tokens = model_plan.tokens if tokens_per_frame is None else model_plan.frames // tubelet_size * tokens_per_frame
    return tokens + summary


def check_second_vision(vit: FluxViT, second: FluxViT) -> None:
    """The second ViT reads the first's kept positions, so both must cut the video into the same patches."""
    ours = (vit.config.patch_size, vit.config.tubelet_size)
    theirs = (second.config.patch_size, second.config.tubelet_size)
    if ours != theirs:
        raise ChatError(f"the second vision model cuts {theirs[0]}px x {theirs[1]}-frame patches but the first "
                        f"cuts {ours[0]}px x {ours[1]}-frame ones: both must read the same tokens")


class VisionTower(nn.Module):
    """A FluxViT at one budget: video ``[B, 3, T, H, W]`` -> :class:`VisionFeatures`: tokens ``[B, N, C]``
    (CLS dropped) and, with ``summary``, the attention-pooled features ``[B, S]``. Frozen, unless a recipe makes
    its parameters trainable (``chat.train_vision``): then gradients flow through it. ``second`` encodes the
    tokens the first kept; its features follow the first's channels."""

    def __init__(self, vit: FluxViT, budget: int, tokens_per_frame: int | None = None,
                 sampling: Plan | None = None, second: FluxViT | None = None, summary: bool = False) -> None:
        """``sampling`` overrides the plan the ViT's Token Optimization table gives ``budget``."""
        super().__init__()
        self.vit = vit
        self.plan = sampling if sampling is not None else plan(budget, vit.config)
        check_tokens_per_frame(self.plan, vit.config.patch_size, tokens_per_frame)
        self.tokens_per_frame = tokens_per_frame
        if second is not None:
            check_second_vision(vit, second)
        self.second = second
        self.summary = summary

    def at(self, budget: int, sampling: Plan | None = None) -> "VisionTower":
        """The same models at another budget (or sampling), sharing their weights."""
        return VisionTower(self.vit, budget, self.tokens_per_frame, sampling, self.second, self.summary)

    def _models(self) -> list[FluxViT]:
        return [self.vit] + ([self.second] if self.second is not None else [])

    @property
    def dim(self) -> int:
        return sum(model.config.embed_dim for model in self._models())

    @property
    def summary_dim(self) -> int:
        return sum(model.config.clip_embed_dim for model in self._models()) if self.summary else 0

    @property
    def num_tokens(self) -> int:
        return video_token_count(self.plan, self.vit.config.tubelet_size, self.tokens_per_frame, self.summary)

    def forward(self, video: torch.Tensor) -> VisionFeatures:
        expected = (self.plan.frames, self.plan.resolution, self.plan.resolution)
        if video.ndim != 5 or tuple(video.shape[2:]) != expected:
            raise ValueError(f"budget {self.plan.budget} expects video [B, 3, {expected[0]}, {expected[1]}, "
                             f"{expected[2]}], got {tuple(video.shape)}")
        trains = torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters())
        with torch.set_grad_enabled(trains):
            out = self.vit.encode(video, keep_tokens=self.plan.keep_tokens)
            tokens, pooled = out.tokens[:, 1:], out.pooled
            if self.second is not None:
                seen = self.second.encode(video, positions=out.positions)
                tokens = torch.cat([tokens, seen.tokens[:, 1:].to(tokens.dtype)], dim=-1)
                pooled = torch.cat([pooled, seen.pooled.to(pooled.dtype)], dim=-1)
        if self.tokens_per_frame is not None:
            tokens = pool_per_frame(tokens, out.positions, out.grid, self.tokens_per_frame)
        return VisionFeatures(tokens, pooled if self.summary else None)
