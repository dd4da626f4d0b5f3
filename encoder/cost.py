"""Analytic compute cost of one FluxViT view, in GMACs (the paper's "GFLOPs" are multiply-accumulates)."""

from __future__ import annotations

from .config import FluxViTConfig, get_config


def estimate_gmacs(model: str | FluxViTConfig, tokens: int, pool_tokens: int | None = None) -> float:
    """Multiply-accumulates (in billions) for ``tokens`` kept patch tokens out of ``pool_tokens`` embedded ones.

    The patch embedding runs on the whole pool (selection happens after it); the transformer blocks and the
    attention-pooling head see the kept tokens plus the CLS token. Norms, softmax and biases are ignored,
    as in the paper's Table 6.
    """
    cfg = get_config(model) if isinstance(model, str) else model
    if tokens < 1:
        raise ValueError(f"tokens must be >= 1, got {tokens}")
    pool = tokens if pool_tokens is None else pool_tokens
    if pool < tokens:
        raise ValueError(f"pool_tokens ({pool}) cannot be smaller than kept tokens ({tokens})")
    dim = cfg.embed_dim
    hidden = int(dim * cfg.mlp_ratio)
    n = tokens + 1
    patch_embed = pool * cfg.in_chans * cfg.tubelet_size * cfg.patch_size**2 * dim
    per_block = (
        3 * n * dim * dim  # qkv
        + 2 * n * n * dim  # q @ k^T and attn @ v
        + n * dim * dim  # output projection
        + 2 * n * dim * hidden  # MLP
    )
    pooling = (n * 2 + 1) * dim * dim + 2 * n * dim + dim * cfg.clip_embed_dim
    return (patch_embed + cfg.depth * per_block + pooling) / 1e9
