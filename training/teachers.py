"""Frozen teachers for Flux-UMT: features of the last N layers on the teacher's kept tokens.

Every teacher sees the student's clip on the student's patch grid: frames are resized so that the teacher's
patches tile the same (T, H', W') grid the student's do (e.g. a 16-px CLIP at 16/14 of the student's
resolution), so a flat position means the same place for both.

- :class:`FluxViTTeacher`: any model the encoder builds or loads. It keeps K tokens with its own
  group-dynamic selector and runs on those only (the Flux teacher: fixed cost, informative tokens).
- :class:`OpenCLIPTeacher`: an open_clip image tower applied frame by frame (UMT's teacher). It runs on
  every token of each frame, because a CLIP image tower was trained on whole images and its features
  degrade when patches are dropped from its attention; the group-dynamic selection on its patch embeddings
  then picks the K tokens whose features become targets. Its cost is therefore that of the whole pool
  (at most 2x the budget with the paper's token threshold), not of K tokens. Targets follow UMT:
  ``ln_post`` and ``proj`` applied to each returned layer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from encoder.checkpoint import CheckpointError, load_model, read_checkpoint
from encoder.constants import IMAGENET_MEAN, IMAGENET_STD
from encoder.model import FluxViT, create_model

from .masking import teacher_positions


@dataclass
class TeacherOutput:
    """What a teacher returns for one clip batch."""

    features: tuple[torch.Tensor, ...]  # last N layers, oldest first, each [B, K, teacher.dim]
    cls_attention: torch.Tensor  # [B, K]: last block's CLS-to-token attention (mean over heads)
    positions: torch.Tensor  # [B, K]: sorted flat positions of the kept tokens on the student's grid
    grid: tuple[int, int, int]  # (T, H', W') patch grid shared with the student


class Teacher(nn.Module, ABC):
    """A frozen feature extractor: eval mode forever, no parameters that train."""

    #: width of the returned features (what the student's decoders map to)
    dim: int
    #: number of blocks (the most layers it can return)
    depth: int
    #: patch size of the teacher's own grid
    patch_size: int

    def __init__(self, student_patch: int) -> None:
        super().__init__()
        self.student_patch = student_patch

    def freeze(self) -> None:
        for param in self.parameters():
            param.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "Teacher":
        """A teacher never leaves eval mode (no dropout or drop path), whatever the recipe asks."""
        return super().train(False)

    def student_grid(self, video: torch.Tensor) -> tuple[int, int, int]:
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"expected video [B, 3, T, H, W], got {tuple(video.shape)}")
        _, _, frames, height, width = video.shape
        if height % self.student_patch or width % self.student_patch:
            raise ValueError(f"{height}x{width} px does not divide into {self.student_patch}-px student patches")
        return frames, height // self.student_patch, width // self.student_patch

    def on_teacher_grid(self, video: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """Resize frames so that the teacher's patches tile the student's grid (bicubic, per frame)."""
        _, height, width = grid
        size = (height * self.patch_size, width * self.patch_size)
        if tuple(video.shape[-2:]) == size:
            return video
        batch, chans, frames = video.shape[:3]
        flat = video.transpose(1, 2).reshape(batch * frames, chans, *video.shape[-2:])
        flat = F.interpolate(flat.float(), size=size, mode="bicubic", align_corners=False).to(video.dtype)
        return flat.reshape(batch, frames, chans, *size).transpose(1, 2)

    def check_layers(self, num_layers: int) -> None:
        if not 1 <= num_layers <= self.depth:
            raise ValueError(f"cannot return {num_layers} layers from a teacher of depth {self.depth}")

    @abstractmethod
    def forward(self, video: torch.Tensor, keep_tokens: int, num_layers: int) -> TeacherOutput:
        """Features of the last ``num_layers`` layers on ``min(keep_tokens, pool)`` kept tokens."""


class FluxViTTeacher(Teacher):
    """A FluxViT / InternVideo2-style ViT: its own selector keeps K tokens, and it runs on those."""

    def __init__(self, model: FluxViT, student_patch: int) -> None:
        super().__init__(student_patch)
        if model.config.tubelet_size != 1:
            raise ValueError("a teacher must embed frames one by one (tubelet_size 1) to share the student's grid")
        self.model = model
        self.dim = model.config.embed_dim
        self.depth = model.config.depth
        self.patch_size = model.config.patch_size
        self.freeze()

    @torch.no_grad()
    def forward(self, video: torch.Tensor, keep_tokens: int, num_layers: int) -> TeacherOutput:
        self.check_layers(num_layers)
        grid = self.student_grid(video)
        out = self.model.encode(self.on_teacher_grid(video, grid), keep_tokens=keep_tokens,
                                num_hidden=num_layers, need_cls_attention=True)
        attention = out.cls_attention.float().mean(dim=1)[:, 1:]
        return TeacherOutput(tuple(h[:, 1:] for h in out.hidden), attention, out.positions, grid)


class OpenCLIPTeacher(Teacher):
    """An open_clip ``VisionTransformer`` run frame by frame on the student's grid."""

    def __init__(self, visual: nn.Module, student_patch: int,
                 mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__(student_patch)
        from open_clip.transformer import ResidualAttentionBlock, VisionTransformer

        if not isinstance(visual, VisionTransformer):
            raise ValueError(f"the open_clip teacher needs a native VisionTransformer tower, "
                             f"got {type(visual).__name__}")
        if visual.attn_pool is not None or not all(isinstance(b, ResidualAttentionBlock)
                                                   for b in visual.transformer.resblocks):
            raise ValueError("the open_clip teacher supports standard CLIP towers "
                             "(no attentional pool, default blocks)")
        self.visual = visual
        self.depth = len(visual.transformer.resblocks)
        self.patch_size = visual.patch_size[0]
        self.dim = visual.proj.shape[1] if visual.proj is not None else visual.transformer.width
        # Videos arrive normalised for FluxViT (ImageNet statistics); the tower expects its own.
        scale = torch.tensor(IMAGENET_STD) / torch.tensor(std)
        shift = (torch.tensor(IMAGENET_MEAN) - torch.tensor(mean)) / torch.tensor(std)
        self.register_buffer("renorm_scale", scale.reshape(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("renorm_shift", shift.reshape(1, 3, 1, 1, 1), persistent=False)
        self.freeze()

    def _positional(self, height: int, width: int) -> torch.Tensor:
        """``[1 + H'W', width]``: the tower's learned grid resized bicubically to ``height x width``."""
        table = self.visual.positional_embedding
        side = self.visual.grid_size
        if (height, width) == tuple(side):
            return table
        grid = table[1:].reshape(1, side[0], side[1], -1).permute(0, 3, 1, 2).float()
        grid = F.interpolate(grid, size=(height, width), mode="bicubic", align_corners=False)
        return torch.cat([table[:1], grid.permute(0, 2, 3, 1).reshape(height * width, -1).to(table.dtype)])

    def _project(self, hidden: torch.Tensor) -> torch.Tensor:
        out = self.visual.ln_post(hidden)
        return out @ self.visual.proj if self.visual.proj is not None else out

    @torch.no_grad()
    def forward(self, video: torch.Tensor, keep_tokens: int, num_layers: int) -> TeacherOutput:
        self.check_layers(num_layers)
        grid = self.student_grid(video)
        frames, height, width = grid
        batch = video.shape[0]
        video = self.on_teacher_grid(video * self.renorm_scale + self.renorm_shift, grid)
        images = video.transpose(1, 2).reshape(batch * frames, 3, *video.shape[-2:])
        patches = self.visual.conv1(images.to(self.visual.conv1.weight.dtype)).flatten(2).transpose(1, 2)
        positions = teacher_positions(patches.reshape(batch, frames, height * width, -1), keep_tokens)

        pos = self._positional(height, width).to(patches.dtype)
        cls = (self.visual.class_embedding + pos[0]).expand(patches.shape[0], 1, -1)
        x = self.visual.ln_pre(torch.cat([cls, patches + pos[1:]], dim=1))
        blocks = self.visual.transformer.resblocks
        hidden: list[torch.Tensor] = []
        for index, block in enumerate(blocks):
            if index < len(blocks) - 1:
                x = block(x)
            else:
                x, attention = self._last_block(block, x)
            if index >= len(blocks) - num_layers:
                hidden.append(x[:, 1:])

        def kept(per_frame: torch.Tensor) -> torch.Tensor:
            flat = per_frame.reshape(batch, frames * height * width, *per_frame.shape[2:])
            index = positions.reshape(batch, -1, *([1] * (per_frame.ndim - 2))).expand(-1, -1, *flat.shape[2:])
            return torch.gather(flat, 1, index)

        features = tuple(kept(self._project(h)) for h in hidden)
        return TeacherOutput(features, kept(attention[:, 0, 1:].float()), positions, grid)

    @staticmethod
    def _last_block(block: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The block's own computation, asking its attention for the weights (averaged over heads)."""
        y = block.ln_1(x)
        out, weights = block.attn(y, y, y, need_weights=True, average_attn_weights=True)
        x = x + block.ls_1(out)
        return x + block.ls_2(block.mlp(block.ln_2(x))), weights


def open_clip_tower(name: str | dict[str, Any]) -> tuple[nn.Module, tuple[float, ...], tuple[float, ...]]:
    """Build an open_clip image tower (random weights) from a config name or an inline model config
    ``{"embed_dim", "vision_cfg", "quick_gelu"?}``; returns it with its input mean and std."""
    import open_clip
    from open_clip.model import _build_vision_tower

    config = open_clip.get_model_config(name) if isinstance(name, str) else dict(name)
    if config is None:
        raise ValueError(f"unknown open_clip model config {name!r}; see open_clip.list_models()")
    if "vision_cfg" not in config or "embed_dim" not in config:
        raise ValueError(f"open_clip config {name!r} needs 'embed_dim' and 'vision_cfg'")
    visual = _build_vision_tower(config["embed_dim"], config["vision_cfg"], config.get("quick_gelu", False))
    preprocess = config.get("preprocess_cfg", {})
    mean = tuple(preprocess.get("mean", open_clip.OPENAI_DATASET_MEAN))
    std = tuple(preprocess.get("std", open_clip.OPENAI_DATASET_STD))
    return visual, mean, std


def load_open_clip_tower(visual: nn.Module, path: str | Path) -> None:
    """Load image-tower weights from a local open_clip checkpoint (whole CLIP with ``visual.`` keys, or the
    tower alone); every tower key must be present with its shape, or the error names the file and keys."""
    state, _ = read_checkpoint(path)
    if any(k.startswith("visual.") for k in state):
        state = {k.removeprefix("visual."): v for k, v in state.items() if k.startswith("visual.")}
    own = visual.state_dict()
    missing = sorted(set(own) - set(state))
    clashes = [f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
               if k in state and state[k].shape != own[k].shape]
    if missing or clashes:
        raise CheckpointError(path, f"does not fit the open_clip image tower: missing {missing[:8]}, "
                                    f"shape clashes {clashes[:8]}")
    visual.load_state_dict({k: state[k] for k in own})


def build_teacher(
    kind: str, name: str | dict[str, Any], student_patch: int, path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> Teacher:
    """A frozen teacher: ``kind`` "fluxvit" (``name`` a registered model, ``overrides`` FluxViTConfig fields,
    ``path`` a released or FluxVid checkpoint) or "open_clip" (``name`` an open_clip config name or inline
    config, ``path`` a local open_clip checkpoint). Without ``path`` the weights are random."""
    overrides = dict(overrides or {})
    if kind == "fluxvit":
        if not isinstance(name, str):
            raise ValueError("a fluxvit teacher is named by a registered model name")
        model = load_model(path, name=name, **overrides)[0] if path is not None else create_model(name, **overrides)
        return FluxViTTeacher(model, student_patch)
    if kind == "open_clip":
        if overrides:
            raise ValueError("overrides apply to fluxvit teachers only; give an inline open_clip config instead")
        visual, mean, std = open_clip_tower(name)
        if path is not None:
            load_open_clip_tower(visual, path)
        return OpenCLIPTeacher(visual, student_patch, mean, std)
    raise ValueError(f"unknown teacher kind {kind!r}; choose 'fluxvit' or 'open_clip'")
