"""Model configurations as data, and the registry of named configs (as timm / open_clip do).

A config describes the architecture *and* the sampling grid the model was trained on, because Token
Optimization (budget -> frames x resolution) needs both.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SamplingGrid:
    """The flexible-sampling grid (paper 3.1): frames and square resolutions the model accepts well."""

    min_frames: int = 4
    max_frames: int = 26
    frame_step: int = 2
    min_resolution: int = 168
    max_resolution: int = 280
    resolution_step: int = 28
    token_threshold: tuple[int, int] = (2048, 4096)

    def frame_options(self) -> list[int]:
        return list(range(self.min_frames, self.max_frames + 1, self.frame_step))

    def resolution_options(self) -> list[int]:
        return list(range(self.min_resolution, self.max_resolution + 1, self.resolution_step))


@dataclass(frozen=True)
class ProfileEntry:
    """One Token Optimization setting: for ``budget`` tokens, sample ``frames`` x ``resolution``^2."""

    budget: int
    frames: int
    resolution: int
    score: float | None = None


@dataclass(frozen=True)
class FluxViTConfig:
    """Architecture of a FluxViT (or, with the Flux modules off, a plain InternVideo2-style ViT)."""

    name: str
    embed_dim: int
    depth: int
    num_heads: int
    patch_size: int = 14
    tubelet_size: int = 1
    in_chans: int = 3
    mlp_ratio: float = 4.0
    qkv_bias: bool = False
    qk_norm: bool = True
    init_values: float = 1e-5
    # Largest positional grid the model was built for: pos_embed has 1 + num_frames * (img_size/patch)^2 rows.
    num_frames: int = 8
    img_size: int = 224
    attn_pool_num_heads: int = 16
    clip_embed_dim: int = 768
    num_classes: int = 0
    # Token counts the three pooling/classification heads were trained for (head i <-> head_token_counts[i]).
    head_token_counts: tuple[int, int, int] = (1024, 2048, 3072)
    num_align_heads: int = 2
    use_gpe: bool = True
    use_lpe: bool = True
    use_dpn: bool = True
    drop_path_rate: float = 0.0
    fc_drop_rate: float = 0.0
    grid: SamplingGrid = field(default_factory=SamplingGrid)
    # Default Token Optimization table (budget -> frames x resolution); see encoder.budget.
    profile: tuple[ProfileEntry, ...] = ()

    def __post_init__(self) -> None:
        problems = []
        if self.embed_dim % self.num_heads:
            problems.append(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.embed_dim % self.attn_pool_num_heads:
            problems.append(
                f"embed_dim {self.embed_dim} is not divisible by attn_pool_num_heads {self.attn_pool_num_heads}"
            )
        if self.embed_dim % 4:
            problems.append(f"embed_dim {self.embed_dim} must be divisible by 4 (3-D sin-cos embedding)")
        if self.img_size % self.patch_size:
            problems.append(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        if self.num_frames % self.tubelet_size:
            problems.append(f"num_frames {self.num_frames} is not a multiple of tubelet_size {self.tubelet_size}")
        if self.depth < 1 or self.num_classes < 0:
            problems.append("depth must be >= 1 and num_classes >= 0")
        if list(self.head_token_counts) != sorted(self.head_token_counts) or len(self.head_token_counts) != 3:
            problems.append(f"head_token_counts must be three increasing counts, got {self.head_token_counts}")
        if problems:
            raise ValueError(f"invalid FluxViT config {self.name!r}: " + "; ".join(problems))

    @property
    def grid_size(self) -> int:
        """Side of the stored spatial positional grid (G0)."""
        return self.img_size // self.patch_size

    def replace(self, **overrides: Any) -> "FluxViTConfig":
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unknown FluxViT config field(s) {unknown}; known fields: {sorted(known)}")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FluxViTConfig":
        data = dict(data)
        if "grid" in data and isinstance(data["grid"], dict):
            grid = dict(data["grid"])
            grid["token_threshold"] = tuple(grid.get("token_threshold", (2048, 4096)))
            data["grid"] = SamplingGrid(**grid)
        if "profile" in data:
            data["profile"] = tuple(
                p if isinstance(p, ProfileEntry) else ProfileEntry(**p) for p in data["profile"]
            )
        if "head_token_counts" in data:
            data["head_token_counts"] = tuple(data["head_token_counts"])
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown FluxViT config field(s) {unknown}")
        return cls(**data)


# Token Optimization defaults for the released models, from the paper's best settings at each count:
# 512 -> 8x224 (Table 12), 1024 -> 12x196 (Table 11), 2048 and 3072 -> 16x224 (Table 1, within Tthres 4096).
PAPER_PROFILE = (
    ProfileEntry(512, 8, 224),
    ProfileEntry(1024, 12, 196),
    ProfileEntry(2048, 16, 224),
    ProfileEntry(3072, 16, 224),
)

_REGISTRY: dict[str, FluxViTConfig] = {}


def register(config: FluxViTConfig) -> FluxViTConfig:
    _REGISTRY[config.name] = config
    return config


register(FluxViTConfig(
    name="fluxvit_small_patch14", embed_dim=384, depth=12, num_heads=6,
    num_frames=24, img_size=252, profile=PAPER_PROFILE,
))
register(FluxViTConfig(
    name="fluxvit_base_patch14", embed_dim=768, depth=12, num_heads=12,
    num_frames=32, img_size=280, profile=PAPER_PROFILE,
))
# Not released; same recipe at the InternVideo2-L scale.
register(FluxViTConfig(
    name="fluxvit_large_patch14", embed_dim=1024, depth=24, num_heads=16,
    num_frames=32, img_size=280, profile=PAPER_PROFILE,
))
# Small enough to train on a laptop CPU: used by the tests and the offline demo.
register(FluxViTConfig(
    name="fluxvit_tiny_patch14", embed_dim=96, depth=4, num_heads=4,
    num_frames=16, img_size=112, attn_pool_num_heads=4, clip_embed_dim=128,
    head_token_counts=(256, 512, 1024),
    grid=SamplingGrid(min_frames=2, max_frames=16, frame_step=2, min_resolution=56, max_resolution=112,
                      resolution_step=28, token_threshold=(256, 1024)),
    profile=(ProfileEntry(128, 4, 84), ProfileEntry(256, 8, 84), ProfileEntry(512, 8, 112),
             ProfileEntry(1024, 16, 112)),
))


class UnknownModelError(KeyError):
    """A model name that is not in the registry."""

    def __str__(self) -> str:
        return str(self.args[0])


def get_config(name: str) -> FluxViTConfig:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}; registered models: {list_models()}") from None


def list_models() -> list[str]:
    return sorted(_REGISTRY)
