"""All-gather that keeps the autograd graph, so contrastive negatives from other ranks carry gradient.

``torch.distributed.all_gather`` returns tensors cut from the graph. Here the backward pass sums, over every
rank, the gradient each rank's loss sends to a gathered slice and hands each rank the part that belongs to
its own input: the gradient of the sum of all ranks' losses. DDP then averages over ranks, which gives the
gradient of the mean loss, exactly as if one process had seen the global batch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def distributed_world() -> tuple[int, int]:
    """(rank, world size) of the default process group, or (0, 1) when none is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rows_per_rank(rows: int) -> list[int]:
    """Every rank's row count (ranks differ when a video of one rank's batch could not be decoded)."""
    _, world = distributed_world()
    if world == 1:
        return [rows]
    counts = torch.zeros(world, dtype=torch.long, device=_device())
    counts[dist.get_rank()] = rows
    dist.all_reduce(counts)
    return counts.tolist()


def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, counts: list[int]) -> torch.Tensor:
        rank, world = distributed_world()
        ctx.start, ctx.rows = sum(counts[:rank]), tensor.shape[0]
        padded = tensor.new_zeros((max(counts), *tensor.shape[1:]))  # all_gather needs one shape
        padded[:tensor.shape[0]] = tensor
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded.contiguous())
        return torch.cat([part[:n] for part, n in zip(parts, counts)], dim=0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.start:ctx.start + ctx.rows], None


def gather_with_grad(tensor: torch.Tensor, counts: list[int] | None = None) -> torch.Tensor:
    """Concatenate ``tensor`` ``[N, ...]`` from every rank in rank order (identity without a process group).

    Ranks may hold different N; pass ``counts`` (from :func:`rows_per_rank`) when it is already known.
    """
    _, world = distributed_world()
    if world == 1:
        return tensor
    return _GatherWithGrad.apply(tensor, counts if counts is not None else rows_per_rank(tensor.shape[0]))
