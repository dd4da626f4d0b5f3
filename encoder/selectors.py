"""Token selectors: which K of the T x H x W patch tokens the transformer sees (paper 3.1, Table 2).

Every selector takes the patch tokens ``[B, T, L, C]`` (after the patch embedding, before positions) and
returns the kept flat positions ``[B, K]`` (index ``t * L + l``), sorted ascending so tokens keep their order.
"""

from __future__ import annotations

from typing import Callable

import torch

SELECTORS = ("group_dynamic", "dynamic", "tube", "random")


def frame_groups(frames: int) -> list[int]:
    """Sizes of the consecutive frame groups used by the group-dynamic selector.

    The release uses 4 groups when T % 4 == 0, 2 for other even T and 1 for T == 2. It crashes when a group
    would hold a single frame (T == 4) and assumes T is even; here a group always holds at least two frames
    (T == 4 -> 2 groups) and odd T splits into near-equal groups (e.g. 7 -> 4 + 3).
    """
    if frames % 4 == 0 and frames >= 8:
        count = 4
    elif frames >= 4:
        count = 2
    else:
        count = 1
    base, extra = divmod(frames, count)
    return [base + 1 if i < extra else base for i in range(count)]


def _split(total: int, weights: list[int]) -> list[int]:
    """Split ``total`` in proportion to ``weights`` (largest remainder, ties to the earliest)."""
    whole = sum(weights)
    exact = [total * w / whole for w in weights]
    parts = [int(e) for e in exact]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - parts[i]), i))
    for i in order[: total - sum(parts)]:
        parts[i] += 1
    return parts


def _keep_by_group_rank(scores: torch.Tensor, group_of_token: torch.Tensor, quota: torch.Tensor) -> torch.Tensor:
    """Keep, in every group, the ``quota[g]`` tokens with the highest scores. ``scores``: ``[B, N]``."""
    batch, n = scores.shape
    by_score = torch.argsort(scores, dim=1, descending=True, stable=True)
    groups_sorted = group_of_token[by_score]
    by_group = torch.argsort(groups_sorted, dim=1, stable=True)
    order = torch.gather(by_score, 1, by_group)  # grouped, each group by descending score
    group_sizes = torch.bincount(group_of_token, minlength=len(quota))
    group_start = torch.cumsum(group_sizes, 0) - group_sizes
    group_in_order = group_of_token[order]
    rank = torch.arange(n, device=scores.device).expand(batch, n) - group_start[group_in_order]
    keep_sorted = rank < quota[group_in_order]
    keep = torch.zeros_like(keep_sorted).scatter_(1, order, keep_sorted)
    return keep.nonzero()[:, 1].reshape(batch, -1)


def group_dynamic(tokens: torch.Tensor, keep: int, groups: list[int] | None = None) -> torch.Tensor:
    """Keep the tokens that change most from the previous frame, ``K * |group| / T`` from each frame group.

    A token's score is the L2 distance between its embedding and the same spatial position one frame
    earlier; a group's first frame takes the scores of its second frame, so equal scores are common: the
    earlier token wins a tie (the release's unstable sort leaves this arbitrary). A single frame has no
    motion: its tokens are then taken evenly over the image.
    """
    batch, frames, per_frame, _ = tokens.shape
    if frames == 1:
        positions = torch.linspace(0, per_frame - 1, keep, device=tokens.device).round().long()
        return positions.expand(batch, keep).contiguous()
    sizes = groups if groups is not None else frame_groups(frames)
    if sum(sizes) != frames or min(sizes) < 2:
        raise ValueError(f"frame groups {sizes} must cover {frames} frames with at least 2 frames each")
    x = tokens.detach().float()
    distance = torch.linalg.vector_norm(x[:, 1:] - x[:, :-1], dim=-1)  # distance[t-1]: frame t vs t-1
    starts = torch.tensor([0] + sizes[:-1], device=tokens.device).cumsum(0)
    source = torch.arange(frames, device=tokens.device)
    source[starts] += 1  # a group's first frame borrows its second frame's scores
    scores = distance[:, source - 1].reshape(batch, frames * per_frame)
    group_of_frame = torch.repeat_interleave(torch.arange(len(sizes), device=tokens.device),
                                             torch.tensor(sizes, device=tokens.device))
    group_of_token = group_of_frame.repeat_interleave(per_frame)
    quota = torch.tensor(_split(keep, sizes), device=tokens.device)
    return _keep_by_group_rank(scores, group_of_token, quota)


def dynamic(tokens: torch.Tensor, keep: int) -> torch.Tensor:
    """The ungrouped baseline: the K highest-motion tokens over the whole clip."""
    frames = tokens.shape[1]
    return group_dynamic(tokens, keep, groups=[frames] if frames > 1 else None)


def tube(tokens: torch.Tensor, keep: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """The same random spatial positions in every frame (VideoMAE's tube mask), per sample."""
    batch, frames, per_frame, _ = tokens.shape
    per_frame_keep = torch.tensor(_split(keep, [1] * frames))
    perms = torch.argsort(torch.rand(batch, per_frame, generator=generator), dim=1)
    rank = torch.empty_like(perms).scatter_(1, perms, torch.arange(per_frame).expand(batch, -1).contiguous())
    mask = rank[:, None, :] < per_frame_keep[None, :, None]  # [B, T, L]
    return mask.reshape(batch, -1).nonzero()[:, 1].reshape(batch, keep).to(tokens.device)


def random(tokens: torch.Tensor, keep: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """K uniformly random positions per sample."""
    batch, frames, per_frame, _ = tokens.shape
    scores = torch.rand(batch, frames * per_frame, generator=generator)
    chosen = torch.topk(scores, keep, dim=1).indices
    return chosen.sort(dim=1).values.to(tokens.device)


def select_tokens(
    tokens: torch.Tensor, keep: int, method: str = "group_dynamic", generator: torch.Generator | None = None
) -> torch.Tensor:
    """Dispatch to a selector by name; ``generator`` makes the random ones deterministic."""
    table: dict[str, Callable[[], torch.Tensor]] = {
        "group_dynamic": lambda: group_dynamic(tokens, keep),
        "dynamic": lambda: dynamic(tokens, keep),
        "tube": lambda: tube(tokens, keep, generator),
        "random": lambda: random(tokens, keep, generator),
    }
    if method not in table:
        raise ValueError(f"unknown token selector {method!r}; choose one of {SELECTORS}")
    total = tokens.shape[1] * tokens.shape[2]
    if not 1 <= keep <= total:
        raise ValueError(f"cannot keep {keep} tokens out of {total}")
    return table[method]()
