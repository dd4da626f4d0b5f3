"""The contract between a training recipe and the shared engine (``training.engine``).

A recipe is one ``nn.Module`` that owns everything that trains (student, decoders, projector, text tower)
plus frozen parts (a teacher, an LLM) under the prefixes it lists in ``frozen_prefixes``; the engine wraps it
for DDP / DeepSpeed, runs the optimizer, and checkpoints only the trainable state.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .data import BudgetTurn


class Recipe(nn.Module):
    """Base class: subclasses implement :meth:`forward` and usually :meth:`export`."""

    #: state-dict prefixes of frozen, externally loaded parts: neither trained nor stored in checkpoints
    frozen_prefixes: tuple[str, ...] = ()

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """One micro-batch: the scalar loss to minimise and named metrics (floats) to log."""
        raise NotImplementedError

    def param_groups(self, weight_decay: float, layer_decay: float, base_lr: float) -> list[dict[str, Any]]:
        """Optimizer groups: no weight decay on norms, biases, tokens and positional grids."""
        decay, no_decay = [], []
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            (no_decay if is_no_decay(name, param) else decay).append(param)
        return [
            {"params": decay, "weight_decay": weight_decay, "lr": base_lr, "lr_scale": 1.0},
            {"params": no_decay, "weight_decay": 0.0, "lr": base_lr, "lr_scale": 1.0},
        ]

    def budget_turns(self) -> list[BudgetTurn]:
        """Budgets (with their samplings) that training batches take in turn; empty: the data config's
        sampling (fixed or flexible) with the recipe's own token counts."""
        return []

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if not k.startswith(self.frozen_prefixes)}

    def export(self, path: str) -> None:
        """Write the product artifact (e.g. a FluxViT checkpoint with class names) at the end of training."""
        raise NotImplementedError


def is_no_decay(name: str, param: torch.Tensor) -> bool:
    leaf = name.rsplit(".", 1)[-1]
    return (param.ndim <= 1 or leaf in {"cls_token", "pos_embed", "logit_scale"} or name.endswith("_bias")
            or "depthwise_conv" in name)
