"""Flux-CLIP (paper 4.3, Table 16): video-text contrastive training of the :class:`DualEncoder`.

Per batch the text tower encodes the captions once; the vision tower runs at every token count in
``data.budgets`` (2048 / 1024 / 512), each giving an InfoNCE loss against the texts with negatives from the
whole global batch, and the pooled features distil from the largest count to the middle and from the middle
to the smallest (smoothed L1). Images are 1-frame videos. With three counts, the vision config records them
as its ``head_token_counts``, so each count trains the pooling head that inference later picks for it.

Stage 1 trains the vision projection only: ``vision_align``, FluxViT's attention-pooling heads
(``clip_projector``; InternVideo2's ``open_vision_clip_projector``) and the temperature; the vision backbone
and the text tower are frozen and, being rebuilt from their source files on resume, are left out of
checkpoints. Stage 2 trains everything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from encoder.checkpoint import load_checkpoint
from retrieval.dual_encoder import DualEncoder, build_dual_encoder
from retrieval.text_tower import DEFAULT_TEXT_TOWER

from ..config import OptimConfig, Strict, TrainConfig, data_defaults
from ..losses import TEMPERATURE_INIT, TEMPERATURE_RANGE, clamp_temperature_, info_nce, self_distillation_losses
from ..optim import layer_decay_groups
from ..recipe import Recipe

CLIP_BUDGETS = (2048, 1024, 512)


class ClipSection(Strict):
    stage: Literal[1, 2] = Field(1, description="1: train the vision projection only; 2: train everything")
    text: str | dict[str, Any] = Field(DEFAULT_TEXT_TOWER, description="open_clip config name or inline text_cfg")
    text_checkpoint: Path | None = Field(None, description="local open_clip / MobileCLIP weights of the text tower")
    init_dual_encoder: Path | None = Field(
        None, description="a saved dual encoder to start from (e.g. the stage-1 export); replaces init_checkpoint "
                          "and text_checkpoint")
    embed_dim: int = Field(512, ge=1, description="width of the shared video-text space")
    temperature: float = Field(TEMPERATURE_INIT, ge=TEMPERATURE_RANGE[0], le=TEMPERATURE_RANGE[1])
    distill_weight: float = Field(1.0, ge=0)
    selector: Literal["group_dynamic", "dynamic", "tube", "random"] = "group_dynamic"


class ClipConfig(TrainConfig):
    optim: OptimConfig = OptimConfig(lr=4e-4, betas=(0.9, 0.98), weight_decay=0.02)  # Table 16, stage 1
    drop_path: float = 0.0
    clip: ClipSection = ClipSection()

    @model_validator(mode="before")
    @classmethod
    def _clip_budgets(cls, data: Any) -> Any:
        """Flux-CLIP's own token counts unless the data section names others."""
        return data_defaults(data, budgets=CLIP_BUDGETS, crop_scales=(1.0, 0.875, 0.75, 0.625, 0.5))  # Table 16

    @model_validator(mode="after")
    def _one_source(self) -> "ClipConfig":
        if self.clip.init_dual_encoder is not None and (
                self.init_checkpoint is not None or self.clip.text_checkpoint is not None):
            raise ValueError("clip.init_dual_encoder already holds both towers; drop init_checkpoint and "
                             "clip.text_checkpoint")
        return self


class ClipRecipe(Recipe):
    """Batch: ``{"video": [Bv, 3, T, H, W], "image": [Bi, 3, 1, H, W], "text": Bv + Bi captions}`` (either
    visual part may be absent): clips and images of one batch share the text negatives, and the optional
    ``"negatives"`` (hard-negative captions from the annotations) join them on the video->text side."""

    def __init__(self, cfg: ClipConfig) -> None:
        super().__init__()
        self.cfg = cfg
        section = cfg.clip
        if section.init_dual_encoder is not None:
            self.dual = DualEncoder.load(section.init_dual_encoder)
            if self.dual.config.vision.name != cfg.model:
                raise ValueError(f"{section.init_dual_encoder} holds a {self.dual.config.vision.name} vision tower "
                                 f"but the config trains {cfg.model}")
        else:
            vision = cfg.vit_config_for_budgets()
            self.dual = build_dual_encoder(vision, section.text, section.embed_dim, section.temperature,
                                           drop_path_rate=cfg.drop_path)
            if cfg.init_checkpoint is not None:
                load_checkpoint(self.dual.vision, cfg.init_checkpoint, strict=False)
            if section.text_checkpoint is not None:
                self.dual.load_text_weights(section.text_checkpoint)
        if section.stage == 1:
            self._freeze_all_but_projection()

    def _freeze_all_but_projection(self) -> None:
        vision = self.dual.vision
        frozen = [f"dual.vision.{name}." for name, _ in vision.named_children() if name != "clip_projector"]
        frozen += [f"dual.vision.{name}" for name, _ in vision.named_parameters(recurse=False)]
        self.frozen_prefixes = tuple(frozen) + ("dual.text.",)
        for name, param in self.named_parameters():
            if name.startswith(self.frozen_prefixes):
                param.requires_grad_(False)

    def param_groups(self, weight_decay: float, layer_decay: float, base_lr: float) -> list[dict[str, Any]]:
        return layer_decay_groups(self, self.dual.vision, "dual.vision.", weight_decay, layer_decay, base_lr)

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        visuals = [batch[key] for key in ("video", "image") if key in batch]
        texts = list(batch["text"])
        count = sum(v.shape[0] for v in visuals)
        if len(texts) != count:
            raise ValueError(f"batch has {count} videos but {len(texts)} captions")
        negatives = list(batch.get("negatives", []))
        encoded = self.dual.encode_text(texts + negatives)  # one pass of the text tower for both
        text, negative = encoded[:count], encoded[count:]  # none here may still meet other ranks' negatives
        temperature = clamp_temperature_(self.dual.temp)
        loss = text.new_zeros((), dtype=torch.float32)
        metrics: dict[str, float] = {"temperature": float(temperature.detach())}
        pooled: list[torch.Tensor] = []
        for budget in self.cfg.data.budgets:
            features = torch.cat([self._pooled(v, budget) for v in visuals])
            vtc = info_nce(self.dual.project_video(features), text, temperature, negative)
            loss = loss + vtc
            metrics[f"vtc_{budget}"] = float(vtc.detach())
            pooled.append(features)
        for budget, distill in zip(self.cfg.data.budgets[1:], self_distillation_losses(pooled)):
            loss = loss + self.cfg.clip.distill_weight * distill
            metrics[f"distill_{budget}"] = float(distill.detach())
        return loss, metrics

    def _pooled(self, video: torch.Tensor, budget: int) -> torch.Tensor:
        """Pooled features keeping ``budget`` tokens, or the whole pool when it is smaller (images)."""
        config = self.dual.vision.config
        pool = video.shape[2] // config.tubelet_size * (video.shape[3] // config.patch_size) * (
            video.shape[4] // config.patch_size)
        return self.dual.vision.encode(video, keep_tokens=min(budget, pool), selector=self.cfg.clip.selector).pooled

    def export(self, path: str | Path) -> None:
        self.dual.save(path, recipe="flux-clip", stage=self.cfg.clip.stage, budgets=list(self.cfg.data.budgets))


def build_recipe(cfg: ClipConfig) -> ClipRecipe:
    return ClipRecipe(cfg)
