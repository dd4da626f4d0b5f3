"""Flux-UMT (paper 3.1, 3.4, Table 14): masked alignment of a FluxViT student to a frozen teacher.

Per batch the teacher keeps ``teacher_budget`` tokens of the flexibly sampled pool with its group-dynamic
selector and returns its last ``num_layers`` layers on them plus its CLS attention (:mod:`training.teachers`).
The student then runs once per token count in ``data.budgets`` (Table 14: 2048 / 1536 / 1024), each time on
tokens drawn from the teacher's kept set by the CLS-attention mask (:mod:`training.masking`); the outputs of
its last ``num_layers`` blocks pass through per-layer :class:`~encoder.layers.LinearDecoder` s and align with
the teacher's layers on the visible tokens (``2 - 2 cos``). The loss is the sum over the counts.

``data.budgets`` are the student's visible counts, as in Table 14. ``mask_ratio`` / ``image_mask_ratio``
additionally hide that fraction of each count (UMT's 0.8 for video and 0.5 for images with a single count
equal to the teacher's reproduces plain UMT); Flux-UMT's default is 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from encoder.checkpoint import load_checkpoint, save_checkpoint
from encoder.layers import LinearDecoder
from encoder.model import create_model

from ..config import Strict, TrainConfig
from ..losses import alignment_loss
from ..masking import student_positions, visible_count
from ..optim import layer_decay_groups
from ..recipe import Recipe
from ..teachers import build_teacher


class TeacherSection(Strict):
    kind: Literal["open_clip", "fluxvit"] = Field(
        "open_clip", description="open_clip: a CLIP image tower frame by frame (UMT); fluxvit: any FluxViT / ViT")
    name: str | dict[str, Any] = Field(
        "ViT-B-16", description="open_clip config name (OpenAI weights need the -quickgelu name) or inline "
                                "config {embed_dim, vision_cfg}; for fluxvit a registered model name")
    overrides: dict[str, Any] = Field(default_factory=dict, description="FluxViTConfig fields (fluxvit only)")
    path: Path | None = Field(None, description="local weights of the teacher")
    random_init: bool = Field(False, description="allow a teacher without weights (tests and smoke runs only)")

    @model_validator(mode="after")
    def _has_weights(self) -> "TeacherSection":
        if self.path is None and not self.random_init:
            raise ValueError("umt.teacher.path is required: a teacher with random weights teaches nothing "
                             "(set random_init: true for a smoke run)")
        return self


class UMTSection(Strict):
    teacher: TeacherSection
    num_layers: int = Field(6, ge=1, description="last student / teacher blocks aligned")
    teacher_budget: int = Field(2048, ge=1, description="tokens the teacher keeps from the pool")
    mask_ratio: float = Field(0.0, ge=0, lt=1, description="extra fraction of each video count hidden (UMT: 0.8)")
    image_mask_ratio: float = Field(0.0, ge=0, lt=1, description="the same for 1-frame inputs (UMT: 0.5)")


class UMTConfig(TrainConfig):
    umt: UMTSection


class UMTRecipe(Recipe):
    """Batch: ``{"video": [B, 3, T, H, W]}`` (normalised as FluxViT expects)."""

    frozen_prefixes = ("teacher.",)

    def __init__(self, cfg: UMTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.student = create_model(cfg.vit_config(), num_classes=0, drop_path_rate=cfg.drop_path)
        if self.student.config.tubelet_size != 1:
            raise ValueError("Flux-UMT pairs student and teacher tokens frame by frame: use tubelet_size 1")
        if cfg.init_checkpoint is not None:
            load_checkpoint(self.student, cfg.init_checkpoint, strict=False)
        section = cfg.umt.teacher
        self.teacher = build_teacher(section.kind, section.name, self.student.config.patch_size, section.path,
                                     section.overrides)
        layers = cfg.umt.num_layers
        if layers > self.student.config.depth or layers > self.teacher.depth:
            raise ValueError(f"umt.num_layers={layers} exceeds the student's depth ({self.student.config.depth}) "
                             f"or the teacher's ({self.teacher.depth})")
        self.decoders = nn.ModuleList(
            LinearDecoder(self.student.config.embed_dim, self.teacher.dim) for _ in range(layers)
        )

    def param_groups(self, weight_decay: float, layer_decay: float, base_lr: float) -> list[dict[str, Any]]:
        return layer_decay_groups(self, self.student, "student.", weight_decay, layer_decay, base_lr)

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        video = batch["video"]
        umt = self.cfg.umt
        frames, height, width = (video.shape[2], video.shape[3] // self.student.config.patch_size,
                                 video.shape[4] // self.student.config.patch_size)
        kept = min(umt.teacher_budget, frames * height * width)
        teacher = self.teacher(video, kept, umt.num_layers)
        ratio = umt.image_mask_ratio if frames == 1 else umt.mask_ratio
        loss = video.new_zeros((), dtype=torch.float32)
        metrics: dict[str, float] = {}
        for budget in self.cfg.data.budgets:
            positions, index = student_positions(teacher.positions, teacher.cls_attention, teacher.grid,
                                                 visible_count(min(budget, kept), ratio))
            out = self.student.encode(video, positions=positions, num_hidden=umt.num_layers)
            predicted = torch.stack([decoder(h[:, 1:]) for decoder, h in zip(self.decoders, out.hidden)])
            target = torch.stack([
                torch.gather(f, 1, index[..., None].expand(-1, -1, f.shape[-1])) for f in teacher.features
            ])
            align = alignment_loss(predicted, target)
            loss = loss + align
            metrics[f"align_{budget}"] = float(align.detach())
        return loss, metrics

    def export(self, path: str | Path) -> None:
        save_checkpoint(self.student, path, recipe="flux-umt", budgets=list(self.cfg.data.budgets),
                        teacher_budget=self.cfg.umt.teacher_budget)


def build_recipe(cfg: UMTConfig) -> UMTRecipe:
    return UMTRecipe(cfg)
