"""Flux-FT (paper 3.2, 3.4, Table 15): supervised tuning with flexible sampling, token selection and three
token counts per batch, each with its own head, plus smoothed-L1 self-distillation largest -> smallest."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from encoder.budget import head_for_tokens
from encoder.checkpoint import load_checkpoint, save_checkpoint
from encoder.model import create_model

from ..config import OptimConfig, Strict, TrainConfig, data_defaults
from ..mixup import mix_batch
from ..optim import layer_decay_groups
from ..recipe import Recipe


class FTSection(Strict):
    class_names: tuple[str, ...] = Field((), description="filled from the training labels when empty")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    mixup_alpha: float = Field(0.8, ge=0)
    cutmix_alpha: float = Field(1.0, ge=0)
    switch_prob: float = Field(0.5, ge=0, le=1)
    distill_weight: float = Field(1.0, ge=0)
    selector: Literal["group_dynamic", "dynamic", "tube", "random"] = "group_dynamic"


FT_BUDGETS = (3072, 2048, 1024)  # Table 15


class FTConfig(TrainConfig):
    optim: OptimConfig = OptimConfig(lr=2e-4, betas=(0.9, 0.999), weight_decay=0.05, layer_decay=0.75)
    drop_path: float = 0.1
    ft: FTSection = FTSection()

    @model_validator(mode="before")
    @classmethod
    def _ft_budgets(cls, data: Any) -> Any:
        return data_defaults(data, budgets=FT_BUDGETS, randaug=True)  # Table 15: RandAug(9, 0.5)


class FTRecipe(Recipe):
    """Batch: ``{"video": [B, 3, T, H, W], "label": [B] long}``."""

    def __init__(self, cfg: FTConfig, class_names: list[str]) -> None:
        super().__init__()
        self.cfg = cfg
        self.class_names = list(class_names)
        self.model = create_model(cfg.vit_config_for_budgets(), num_classes=len(class_names),
                                  drop_path_rate=cfg.drop_path)
        if cfg.init_checkpoint is not None:
            load_checkpoint(self.model, cfg.init_checkpoint, strict=False)

    def param_groups(self, weight_decay: float, layer_decay: float, base_lr: float) -> list[dict[str, Any]]:
        return layer_decay_groups(self, self.model, "model.", weight_decay, layer_decay, base_lr)

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        ft = self.cfg.ft
        video, targets = mix_batch(batch["video"], batch["label"], len(self.class_names), ft.mixup_alpha,
                                   ft.cutmix_alpha, ft.switch_prob, ft.label_smoothing)
        budgets = self.cfg.data.budgets
        pool = video.shape[2] // self.model.config.tubelet_size * (video.shape[3] // self.model.config.patch_size) \
            * (video.shape[4] // self.model.config.patch_size)
        pooled: list[torch.Tensor] = []
        metrics: dict[str, float] = {}
        loss = video.new_zeros(())
        for budget in budgets:
            head = head_for_tokens(self.model.config, budget)
            out = self.model.encode(video, keep_tokens=min(budget, pool), head=head, selector=ft.selector)
            logits = self.model.classify(out.pooled, head)
            ce = torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
            loss = loss + ce
            metrics[f"ce_{budget}"] = float(ce.detach())
            pooled.append(out.pooled)
        for teacher, student, budget in zip(pooled, pooled[1:], budgets[1:]):
            distill = F.smooth_l1_loss(student.float(), teacher.detach().float())
            loss = loss + ft.distill_weight * distill
            metrics[f"distill_{budget}"] = float(distill.detach())
        return loss, metrics

    def export(self, path: str | Path) -> None:
        save_checkpoint(self.model, path, class_names=self.class_names, recipe="flux-ft",
                        budgets=list(self.cfg.data.budgets))


def build_recipe(cfg: FTConfig, class_names: list[str]) -> FTRecipe:
    return FTRecipe(cfg, class_names)
