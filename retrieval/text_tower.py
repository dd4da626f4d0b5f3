"""open_clip text towers on their own: config resolution, construction, tokenizer and weight-name mapping.

Only the text half of an open_clip model is built (``open_clip.model._build_text_tower``), so a dual encoder
pays for no image tower it never uses (MobileCLIP-B's image tower alone is a timm ViT-B). Weights come from
local files only, in either naming:

- open_clip: a whole model (``text.*`` for custom-text models such as MobileCLIP-B, top-level
  ``token_embedding`` / ``transformer.*`` / ``ln_final`` / ``text_projection`` for classic CLIP) or the tower;
- Apple MobileCLIP / InternVideo2 (``text_encoder.*``: ``embedding_layer``, ``transformer.{i}.pre_norm_mha``,
  ``pre_norm_ffn``, ``final_layer_norm``, ``projection_layer``), renamed to open_clip's layout.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

DEFAULT_TEXT_TOWER = "MobileCLIP-B"
_CLIP_TEXT_KEYS = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")


def resolve_text_config(text: str | dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """``(text_cfg, quick_gelu)`` for an open_clip model config name or an inline ``text_cfg`` dict."""
    import open_clip

    if isinstance(text, dict):
        return dict(text), False
    config = open_clip.get_model_config(text)
    if config is None or "text_cfg" not in config:
        raise ValueError(f"{text!r} is not an open_clip model config with a text tower; "
                         f"choose one of open_clip.list_models() (e.g. {DEFAULT_TEXT_TOWER!r})")
    return dict(config["text_cfg"]), bool(config.get("quick_gelu", False))


def _check_supported(text_cfg: dict[str, Any]) -> None:
    if text_cfg.get("hf_model_name") or text_cfg.get("hf_tokenizer_name"):
        raise ValueError("HuggingFace text towers / tokenizers need downloads; use an open_clip config with the "
                         "CLIP BPE tokenizer (e.g. MobileCLIP-B, ViT-B-16)")


def build_text_tower(text_cfg: dict[str, Any], embed_dim: int, quick_gelu: bool) -> nn.Module:
    """A randomly initialised open_clip ``TextTransformer`` projecting to ``embed_dim``."""
    from open_clip.model import _build_text_tower

    _check_supported(text_cfg)
    return _build_text_tower(embed_dim, text_cfg, quick_gelu)


def build_tokenizer(text_cfg: dict[str, Any]) -> Any:
    """The CLIP BPE tokenizer (vocabulary shipped in the open_clip wheel) at the tower's context length."""
    from open_clip.tokenizer import DEFAULT_CONTEXT_LENGTH, SimpleTokenizer

    _check_supported(text_cfg)
    return SimpleTokenizer(context_length=text_cfg.get("context_length", DEFAULT_CONTEXT_LENGTH),
                           **text_cfg.get("tokenizer_kwargs", {}))


_MOBILECLIP_RENAMES = (
    (r"^embedding_layer\.", "token_embedding."),
    (r"^positional_embedding\.pos_embed\.pos_embed$", "positional_embedding"),
    (r"^final_layer_norm\.", "ln_final."),
    (r"^projection_layer$", "text_projection"),
    (r"^transformer\.(\d+)\.pre_norm_mha\.0\.", r"transformer.resblocks.\1.ln_1."),
    (r"^transformer\.(\d+)\.pre_norm_mha\.1\.qkv_proj\.(weight|bias)$", r"transformer.resblocks.\1.attn.in_proj_\2"),
    (r"^transformer\.(\d+)\.pre_norm_mha\.1\.out_proj\.", r"transformer.resblocks.\1.attn.out_proj."),
    (r"^transformer\.(\d+)\.pre_norm_ffn\.0\.", r"transformer.resblocks.\1.ln_2."),
    (r"^transformer\.(\d+)\.pre_norm_ffn\.1\.", r"transformer.resblocks.\1.mlp.c_fc."),
    (r"^transformer\.(\d+)\.pre_norm_ffn\.4\.", r"transformer.resblocks.\1.mlp.c_proj."),
)


def _from_mobileclip(key: str) -> str | None:
    for pattern, replacement in _MOBILECLIP_RENAMES:
        renamed, hits = re.subn(pattern, replacement, key)
        if hits:
            return renamed
    return None


def text_tower_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Pick the text tower's weights out of a checkpoint's state dict, in open_clip ``TextTransformer`` names.

    Raises ``ValueError`` naming the first keys when a MobileCLIP key has no open_clip counterpart, or when
    the state holds no recognisable text tower.
    """
    if any(k.startswith("text_encoder.") for k in state):
        out, unknown = {}, []
        for key, value in state.items():
            if not key.startswith("text_encoder."):
                continue
            renamed = _from_mobileclip(key.removeprefix("text_encoder."))
            if renamed is None:
                unknown.append(key)
            elif renamed == "positional_embedding":
                out[renamed] = value.reshape(value.shape[-2], value.shape[-1])  # [1, 1, L, C] -> [L, C]
            else:
                out[renamed] = value
        if unknown:
            raise ValueError(f"MobileCLIP text keys without an open_clip counterpart: {unknown[:8]}")
        return out
    if any(k.startswith("text.") for k in state):
        return {k.removeprefix("text."): v for k, v in state.items() if k.startswith("text.")}
    if "token_embedding.weight" in state:
        return {k: v for k, v in state.items() if k.startswith(_CLIP_TEXT_KEYS)}
    raise ValueError(f"no text tower found (expected text_encoder.*, text.* or token_embedding.*; "
                     f"first keys: {sorted(state)[:6]})")
