"""FluxViT encoder: model, token selection, budgets and cost estimates."""

from .checkpoint import CheckpointError, LoadReport, load_checkpoint, load_model, save_checkpoint
from .budget import BudgetProfile, Plan, make_plan, plan, tune_budget
from .config import FluxViTConfig, ProfileEntry, SamplingGrid, get_config, list_models
from .constants import IMAGENET_MEAN, IMAGENET_STD
from .cost import estimate_gmacs
from .model import EncoderOutput, FluxViT, create_model
from .selectors import SELECTORS, select_tokens

__all__ = [
    "CheckpointError", "EncoderOutput", "FluxViT", "LoadReport", "SELECTORS", "create_model", "load_checkpoint",
    "load_model", "save_checkpoint", "select_tokens",
    "BudgetProfile", "FluxViTConfig", "IMAGENET_MEAN", "IMAGENET_STD", "Plan", "ProfileEntry", "SamplingGrid",
    "estimate_gmacs", "get_config", "list_models", "make_plan", "plan", "tune_budget",
]
