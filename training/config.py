"""Typed training configuration, loaded from YAML with clear validation errors.

Every recipe config extends :class:`TrainConfig` with its own section; defaults are the paper's values
(Tables 14-16) scaled to one process, and any field can be overridden from YAML.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from encoder.config import FluxViTConfig, get_config


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OptimConfig(Strict):
    lr: float = Field(1e-3, gt=0)
    min_lr: float = Field(1e-6, ge=0)
    weight_decay: float = Field(0.05, ge=0)
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = Field(0, ge=0, description="linear warm-up length, in optimizer steps")
    layer_decay: float = Field(1.0, gt=0, le=1, description="layer-wise lr decay (1 = off)")
    grad_clip: float | None = Field(None, gt=0)


class DataConfig(Strict):
    train: Path = Field(description="annotation file (CSV or JSONL) of the training set")
    val: Path | None = None
    root: Path | None = Field(None, description="folder that relative video paths start from")
    batch_size: int = Field(8, ge=1, description="per process, per micro-step")
    num_workers: int = Field(2, ge=0)
    budgets: tuple[int, ...] = Field((2048, 1536, 1024), description="token counts trained in every batch")
    flexible: bool = Field(True, description="draw frames x resolution per batch from the model's grid")
    frames: int = Field(8, ge=1, description="frames when not flexible")
    resolution: int = Field(224, ge=14, description="resolution when not flexible")
    crop_scales: tuple[float, ...] = Field((1.0, 0.875, 0.75, 0.66), description="multi-scale crop scales")
    flip: bool = Field(True, description="random horizontal flips (turn off when labels depend on direction)")
    randaug: bool = Field(False, description="RandAugment(2 ops, magnitude 9, std 0.5) on whole clips")
    cache_frames: int = Field(0, ge=0, description="0: decode every sample; K: decode K frames per video once, "
                                                   "keep them in memory and sample from them (small models)")

    @model_validator(mode="after")
    def _budgets_decrease(self) -> "DataConfig":
        if list(self.budgets) != sorted(self.budgets, reverse=True) or len(set(self.budgets)) != len(self.budgets):
            raise ValueError(f"budgets must be distinct and decreasing (largest first), got {list(self.budgets)}")
        return self


class DistributedConfig(Strict):
    backend: Literal["none", "ddp", "deepspeed"] = Field(
        "none", description="none: one process; ddp: under torchrun; deepspeed: ZeRO under torchrun/deepspeed"
    )
    zero_stage: Literal[1, 2] = 1


class TrainConfig(Strict):
    """Fields common to every recipe."""

    output_dir: Path
    model: str = "fluxvit_small_patch14"
    model_overrides: dict[str, Any] = Field(default_factory=dict, description="FluxViTConfig fields to change")
    init_checkpoint: Path | None = Field(None, description="FluxViT weights to start from")
    seed: int = 0
    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps")
    grad_accum: int = Field(1, ge=1)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 on CUDA, fp32 on CPU; fp16 (CUDA only) uses a grad scaler")
    grad_checkpointing: bool = False
    deterministic: bool = Field(False, description="torch's deterministic kernels: a rerun of one config on the "
                                "same machine and thread count is bit-identical (off: reruns drift apart); a kernel "
                                "with no deterministic version stops the run with an error naming it")
    drop_path: float = Field(0.05, ge=0, lt=1)
    log_every: int = Field(10, ge=1)
    save_every: int = Field(200, ge=1, description="checkpoint every N optimizer steps (and at the end)")
    tensorboard: bool = True
    optim: OptimConfig = OptimConfig()
    data: DataConfig
    distributed: DistributedConfig = DistributedConfig()

    @model_validator(mode="after")
    def _model_is_buildable(self) -> "TrainConfig":
        try:
            self.vit_config()
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(str(exc)) from None
        return self

    def vit_config(self) -> FluxViTConfig:
        """The registered config of ``model`` with ``model_overrides`` applied (read as
        :meth:`FluxViTConfig.from_dict` reads a saved config: ``grid`` and ``profile`` may be given as mappings)."""
        base = get_config(self.model).to_dict()
        overrides = dict(self.model_overrides)
        if isinstance(overrides.get("grid"), dict):
            overrides["grid"] = {**base["grid"], **overrides["grid"]}
        return FluxViTConfig.from_dict({**base, **overrides})

    def vit_config_for_budgets(self) -> FluxViTConfig:
        """:meth:`vit_config` whose three heads are the three trained token counts, so that the head picked at
        inference (nearest count) is the one trained for it."""
        config = self.vit_config()
        if len(self.data.budgets) == 3:
            config = config.replace(head_token_counts=tuple(sorted(self.data.budgets)))
        return config


def data_defaults(data: Any, **defaults: Any) -> Any:
    """For a ``mode="before"`` validator: a recipe's own data defaults (token counts, augmentation) for the
    fields the YAML's data section leaves out."""
    if isinstance(data, dict) and isinstance(data.get("data"), dict):
        data = {**data, "data": {**defaults, **data["data"]}}
    return data


C = TypeVar("C", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the file and each bad field."""


def load_config(path: str | Path, cls: type[C], overrides: dict | None = None) -> C:
    """Read ``path`` (YAML) into ``cls``; relative paths inside stay relative to the working directory."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping of fields, got {type(data).__name__}")
    data.update(overrides or {})
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"config {path}: {problems}") from None
