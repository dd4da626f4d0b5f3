"""Learning-rate schedule and layer-wise lr decay groups."""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from encoder.model import FluxViT

from .recipe import is_no_decay


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Multiplier of the base lr: linear warm-up from 0, then cosine decay to ``min_ratio``."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def vit_layer_id(name: str, depth: int) -> int:
    """0 for the embeddings, i + 1 for block i, depth + 1 for the pooling heads and everything after."""
    if name.startswith(("cls_token", "pos_embed", "patch_embed", "gpe_proj")):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


def layer_decay_groups(
    module: nn.Module, vit: FluxViT, vit_prefix: str, weight_decay: float, layer_decay: float, base_lr: float
) -> list[dict[str, Any]]:
    """Param groups where the lr of ViT layer ``l`` is scaled by ``layer_decay ** (depth + 1 - l)``."""
    depth = len(vit.blocks)
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        layer = vit_layer_id(name[len(vit_prefix):], depth) if name.startswith(vit_prefix) else depth + 1
        no_decay = is_no_decay(name, param)
        group = groups.setdefault((layer, no_decay), {
            "params": [], "weight_decay": 0.0 if no_decay else weight_decay, "lr": base_lr,
            "lr_scale": layer_decay ** (depth + 1 - layer),
        })
        group["params"].append(param)
    return list(groups.values())
