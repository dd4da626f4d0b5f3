"""FluxViT encoder: model, token selection, budgets and cost estimates."""

from .budget import BudgetProfile, Plan, make_plan, plan, tune_budget
from .config import FluxViTConfig, ProfileEntry, SamplingGrid, get_config, list_models
from .constants import IMAGENET_MEAN, IMAGENET_STD
from .cost import estimate_gmacs

__all__ = [
    "BudgetProfile", "FluxViTConfig", "IMAGENET_MEAN", "IMAGENET_STD", "Plan", "ProfileEntry", "SamplingGrid",
    "estimate_gmacs", "get_config", "list_models", "make_plan", "plan", "tune_budget",
]
