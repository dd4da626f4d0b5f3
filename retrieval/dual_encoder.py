"""Flux-CLIP: the video-text dual encoder used by CLIP training and by the video index.

Vision: a FluxViT whose attention-pooled feature goes through ``vision_align`` (LayerNorm + Linear to the
shared width, InternVideo2's layout). Text: an open_clip text tower (MobileCLIP-B's by default). Both sides
are L2-normalised, so a dot product is a cosine similarity. ``temp`` is the learnable contrastive temperature
(logits = cosine / temp), stored under InternVideo2's name.

A saved file holds the weights and the full configuration (vision config, resolved text config), so the
file alone rebuilds the model; :attr:`DualEncoder.model_id` names weights + config for index staleness checks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from encoder.checkpoint import CheckpointError, atomic_torch_save, read_checkpoint
from encoder.config import FluxViTConfig, get_config
from encoder.model import FluxViT

from .text_tower import DEFAULT_TEXT_TOWER, build_text_tower, build_tokenizer, resolve_text_config, text_tower_state

FILE_KIND = "flux_clip_dual_encoder"
FILE_FORMAT = 1


@dataclass(frozen=True)
class DualEncoderConfig:
    """Everything needed to rebuild a :class:`DualEncoder` (weights aside)."""

    vision: FluxViTConfig
    text_cfg: dict[str, Any]  # resolved open_clip CLIPTextCfg fields
    text_name: str | None = DEFAULT_TEXT_TOWER  # the open_clip config it came from, None when inline
    quick_gelu: bool = False
    embed_dim: int = 512
    temperature: float = 0.07  # initial value of ``temp``

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["vision"] = self.vision.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DualEncoderConfig":
        data = dict(data)
        data["vision"] = FluxViTConfig.from_dict(data["vision"])
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown dual-encoder config field(s) {unknown}")
        return cls(**data)


class DualEncoder(nn.Module):
    def __init__(self, config: DualEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.vision = FluxViT(config.vision)
        width = config.vision.clip_embed_dim
        self.vision_align = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, config.embed_dim))
        self.text = build_text_tower(config.text_cfg, config.embed_dim, config.quick_gelu)
        self.temp = nn.Parameter(torch.tensor(float(config.temperature)))
        self.tokenizer = build_tokenizer(config.text_cfg)
        self._id_cache: tuple[tuple, str] | None = None

    @property
    def dim(self) -> int:
        """Width of the shared embedding space."""
        return self.config.embed_dim

    @property
    def device(self) -> torch.device:
        return self.temp.device

    # -- vision -------------------------------------------------------------------------------------------
    def project_video(self, pooled: torch.Tensor) -> torch.Tensor:
        """L2-normalised shared-space embedding of FluxViT pooled features ``[B, clip_embed_dim]``."""
        return F.normalize(self.vision_align(pooled), dim=-1)

    def encode_video(
        self, video: torch.Tensor, keep_tokens: int | None = None, head: int | None = None,
        selector: str = "group_dynamic",
    ) -> torch.Tensor:
        """``[B, dim]`` unit vectors for ``video`` ``[B, 3, T, H, W]`` (images: T = 1), keeping ``keep_tokens``."""
        out = self.vision.encode(video, keep_tokens=keep_tokens, head=head, selector=selector)
        return self.project_video(out.pooled)

    # -- text ---------------------------------------------------------------------------------------------
    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """Token ids ``[B, context_length]`` on the model's device (long texts are truncated)."""
        if isinstance(texts, str):
            raise TypeError("encode_text / tokenize take a list of strings")
        return self.tokenizer(list(texts)).to(self.device)

    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text(tokens), dim=-1)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """``[B, dim]`` unit vectors for a list of captions or queries."""
        return self.encode_tokens(self.tokenize(texts))

    # -- identity and files -------------------------------------------------------------------------------
    def load_text_weights(self, path: str | Path) -> None:
        """Load the text tower from a local open_clip or MobileCLIP checkpoint (every tower key required)."""
        state, _ = read_checkpoint(path)
        try:
            text_state = text_tower_state(state)
        except ValueError as exc:
            raise CheckpointError(path, str(exc)) from None
        load_state_strict(self.text, text_state, path)

    @property
    def model_id(self) -> str:
        """A digest of the configuration and every weight: equal ids mean interchangeable embeddings.

        Hashing reads every weight once; the result is cached until any tensor is modified in place (tensor
        version counters), so it stays correct during training and cheap when the model is frozen.
        """
        state = self.state_dict()
        versions = tuple((k, v.data_ptr(), v._version) for k, v in state.items())
        if self._id_cache is not None and self._id_cache[0] == versions:
            return self._id_cache[1]
        digest = hashlib.sha256(json.dumps(self.config.to_dict(), sort_keys=True).encode())
        for key in sorted(state):
            tensor = state[key].detach().cpu().contiguous()
            digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        model_id = f"fluxclip-{digest.hexdigest()[:20]}"
        self._id_cache = (versions, model_id)
        return model_id

    def save(self, path: str | Path, dtype: torch.dtype | None = None, **metadata: Any) -> None:
        """Write weights + config atomically (temporary file, then rename); ``metadata`` is stored alongside.
        ``dtype`` (e.g. ``torch.float16``) stores floating weights smaller; :meth:`load` casts them back."""
        state = {k: v.to(dtype) if dtype is not None and v.is_floating_point() else v
                 for k, v in self.state_dict().items()}
        atomic_torch_save({"state_dict": state,
                           "fluxvid": {"kind": FILE_KIND, "format": FILE_FORMAT, "config": self.config.to_dict(),
                                       "model_id": self.model_id, **metadata}}, path)

    @staticmethod
    def saved_metadata(path: str | Path) -> dict[str, Any]:
        """What a saved file records beyond the model itself (e.g. recipe, stage, budgets): the ``metadata``
        given to :meth:`save`, to carry over when the model is saved again."""
        return {k: v for k, v in read_checkpoint(path)[1].items() if k not in ("kind", "format", "config", "model_id")}

    @classmethod
    def load(cls, path: str | Path) -> "DualEncoder":
        """Rebuild a saved dual encoder (eval mode); :class:`CheckpointError` names the file and the problem."""
        state, metadata = read_checkpoint(path)
        if metadata.get("kind") != FILE_KIND:
            raise CheckpointError(path, "is not a Flux-CLIP dual-encoder file (for released InternVideo2 CLIP "
                                        "checkpoints use retrieval.internvideo2.load_internvideo2_clip)")
        try:
            config = DualEncoderConfig.from_dict(metadata["config"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(path, f"has an unusable dual-encoder config: {exc}") from None
        model = cls(config)
        load_state_strict(model, state, path)
        return model.eval()


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], path: str | Path,
                      optional: tuple[str, ...] = ()) -> None:
    """Load ``state`` into ``model``; any missing key (outside ``optional`` prefixes), unexpected key or
    shape clash raises :class:`CheckpointError` listing them."""
    own = model.state_dict()
    missing = sorted(k for k in own if k not in state and not k.startswith(optional))
    unexpected = sorted(k for k in state if k not in own)
    clashes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
               for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or clashes:
        parts = [f"{title} ({len(items)}): {', '.join(items[:8])}" for title, items in
                 (("missing keys", missing), ("unexpected keys", unexpected), ("shape clashes", clashes)) if items]
        raise CheckpointError(path, "does not fit the dual encoder; " + "; ".join(parts))
    model.load_state_dict(state, strict=False)


def build_dual_encoder(
    vision: str | FluxViTConfig, text: str | dict[str, Any] = DEFAULT_TEXT_TOWER, embed_dim: int = 512,
    temperature: float = 0.07, **vision_overrides: Any,
) -> DualEncoder:
    """A randomly initialised dual encoder: ``vision`` a registered FluxViT (``vision_overrides`` change its
    config), ``text`` an open_clip config name or an inline ``text_cfg`` dict."""
    vision_config = (get_config(vision) if isinstance(vision, str) else vision).replace(num_classes=0,
                                                                                        **vision_overrides)
    text_cfg, quick_gelu = resolve_text_config(text)
    return DualEncoder(DualEncoderConfig(vision_config, text_cfg, text if isinstance(text, str) else None,
                                         quick_gelu, embed_dim, temperature))
