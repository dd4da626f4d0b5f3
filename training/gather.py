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


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        rank, world = distributed_world()
        ctx.rank, ctx.rows = rank, tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` ``[N, ...]`` from every rank in rank order (identity without a process group).

    Every rank must pass the same shape.
    """
    _, world = distributed_world()
    if world == 1:
        return tensor
    return _GatherWithGrad.apply(tensor)
