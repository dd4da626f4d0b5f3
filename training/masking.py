"""The Double Mask Module of Flux-UMT (paper 3.1).

Teacher side: the group-dynamic selector keeps K tokens of the flexibly sampled pool (the teacher's own
patch embeddings decide; see :mod:`training.teachers`). Student side: UMT's semantic mask, drawn inside the
teacher's kept set: in every frame, visible tokens are sampled without replacement with probability
proportional to the teacher's last-block CLS attention (mean over heads). The student sees a subset of the
teacher's tokens, so every visible student token has a teacher target.

The student runs at several visible counts per batch (Flux-UMT: 2048 / 1536 / 1024);
:func:`student_positions` draws the positions for one requested count. UMT's own mask ratios (0.8 for video,
0.5 for images) turn a token count into a visible count with :func:`visible_count`.
"""

from __future__ import annotations

import torch

from encoder.selectors import select_tokens

UMT_VIDEO_MASK_RATIO = 0.8
UMT_IMAGE_MASK_RATIO = 0.5


def visible_count(tokens: int, mask_ratio: float) -> int:
    """Tokens left visible when ``mask_ratio`` of ``tokens`` are hidden (UMT's ``N - int(N * ratio)``)."""
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {mask_ratio}")
    return tokens - int(tokens * mask_ratio)


def teacher_positions(patches: torch.Tensor, keep: int) -> torch.Tensor:
    """Teacher-side mask: group-dynamic selection of ``keep`` of the patch tokens ``[B, T, L, C]``.

    Returns sorted flat positions ``[B, keep]`` (index ``t * L + l``); the whole pool when it is not larger.
    """
    batch, frames, per_frame, _ = patches.shape
    if keep >= frames * per_frame:
        return torch.arange(frames * per_frame, device=patches.device).expand(batch, -1).contiguous()
    return select_tokens(patches, keep, "group_dynamic")


def proportional_split(total: int, sizes: torch.Tensor) -> torch.Tensor:
    """Split ``total`` over the columns of ``sizes`` ``[B, N]`` in proportion to them, per row.

    Exact integer largest-remainder rounding (ties to the earliest column): every row sums to ``total`` and
    no part exceeds its size when ``total <= sizes.sum(1)``.
    """
    sizes = sizes.long()
    whole = sizes.sum(dim=1, keepdim=True)
    numerator = total * sizes
    base = numerator // whole
    remainder = numerator % whole
    deficit = total - base.sum(dim=1, keepdim=True)
    order = torch.argsort(-remainder, dim=1, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(sizes.shape[1], device=sizes.device)
                                            .expand_as(order).contiguous())
    return base + (rank < deficit).long()


def student_positions(
    teacher_kept: torch.Tensor, cls_attention: torch.Tensor, grid: tuple[int, int, int], count: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Student-side mask: ``count`` visible tokens drawn from the teacher's kept tokens.

    ``teacher_kept``: the teacher's sorted kept positions ``[B, K]`` on the ``grid`` (T, H', W');
    ``cls_attention``: the teacher's CLS attention on those tokens ``[B, K]`` (mean over heads).
    Each frame gets a share of ``count`` proportional to how many kept tokens it holds, and its tokens are
    drawn without replacement with probability proportional to their attention (Gumbel-top-k, the same
    distribution as UMT's ``torch.multinomial``). Tokens of zero attention are taken only when a frame's
    share exceeds its tokens of positive attention, earliest first.

    Returns ``(positions, index)``, both ``[B, count]`` and sorted: the flat positions (for
    ``FluxViT.encode(positions=...)``) and their indices into the teacher's kept set (to pick its targets).
    Randomness comes from ``generator`` (torch's global RNG when None).
    """
    batch, kept = teacher_kept.shape
    if cls_attention.shape != teacher_kept.shape:
        raise ValueError(f"attention {tuple(cls_attention.shape)} does not match kept tokens "
                         f"{tuple(teacher_kept.shape)}")
    if not 1 <= count <= kept:
        raise ValueError(f"cannot show the student {count} of the teacher's {kept} tokens")
    frames, height, width = grid
    device = teacher_kept.device
    frame = teacher_kept // (height * width)
    per_frame = torch.zeros(batch, frames, dtype=torch.long, device=device)
    per_frame.scatter_add_(1, frame, torch.ones_like(frame))
    quota = proportional_split(count, per_frame)

    noise = torch.empty(batch, kept, device=generator.device if generator is not None else device)
    noise = noise.exponential_(generator=generator).to(device)
    weights = cls_attention.detach().float()
    log_weights = torch.where(weights > 0, weights.clamp_min(1e-30).log(), torch.full_like(weights, -torch.inf))
    keys = log_weights - noise.log()  # Gumbel-top-k keys: the top k per frame are a weighted draw of k

    by_key = torch.argsort(keys, dim=1, descending=True, stable=True)
    by_frame = torch.argsort(torch.gather(frame, 1, by_key), dim=1, stable=True)
    order = torch.gather(by_key, 1, by_frame)  # grouped by frame, each frame by descending key
    frame_in_order = torch.gather(frame, 1, order)
    start = torch.cumsum(per_frame, dim=1) - per_frame
    rank = torch.arange(kept, device=device).expand(batch, -1) - torch.gather(start, 1, frame_in_order)
    chosen = rank < torch.gather(quota, 1, frame_in_order)
    keep = torch.zeros_like(chosen).scatter_(1, order, chosen)
    index = keep.nonzero()[:, 1].reshape(batch, count)
    return torch.gather(teacher_kept, 1, index), index
