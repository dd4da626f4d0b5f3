"""All-gather with gradient under a real 2-process gloo group (CPU): gathered negatives and gradients, with equal
and with unequal rows per rank (a rank whose batch lost an undecodable video)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

WORLD, TOTAL, DIM, TEMPERATURE = 2, 6, 4, 0.1


def _global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    return torch.randn(TOTAL, DIM, generator=gen), torch.randn(TOTAL, DIM, generator=gen)


def _rows(rank: int, split: tuple[int, ...]) -> slice:
    return slice(sum(split[:rank]), sum(split[:rank + 1]))


def _reference_sum_of_rank_losses(video: torch.Tensor, text: torch.Tensor, split: tuple[int, ...]) -> torch.Tensor:
    """Each rank's loss written out by hand: its rows against every column, both directions."""
    v, t = F.normalize(video, dim=-1), F.normalize(text, dim=-1)
    total = video.new_zeros(())
    for rank in range(WORLD):
        rows = _rows(rank, split)
        targets = torch.arange(rows.start, rows.stop)
        total = total + (F.cross_entropy(v[rows] @ t.T / TEMPERATURE, targets)
                         + F.cross_entropy(t[rows] @ v.T / TEMPERATURE, targets)) / 2
    return total


def _worker(rank: int, port: int, out_dir: str, split: tuple[int, ...]) -> None:
    from training.gather import gather_with_grad
    from training.losses import info_nce

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        video_all, text_all = _global_batch()
        rows = _rows(rank, split)
        video = video_all[rows].clone().requires_grad_(True)
        text = text_all[rows].clone().requires_grad_(True)

        gathered = gather_with_grad(video)
        weights = torch.arange(gathered.numel(), dtype=torch.float32).reshape(gathered.shape) * (rank + 1)
        (gathered * weights).sum().backward()
        linear_grad = video.grad.clone()
        video.grad = None

        loss = info_nce(video, text, torch.tensor(TEMPERATURE))
        loss.backward()
        torch.save({"gathered": gathered.detach(), "linear_grad": linear_grad, "loss": loss.detach(),
                    "video_grad": video.grad, "text_grad": text.grad}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("split", [(3, 3), (4, 2)])
def test_gather_with_grad_and_info_nce_across_two_gloo_ranks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, split: tuple[int, int]) -> None:
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")  # loopback only: the sandbox has no other network
    mp.spawn(_worker, args=(_free_port(), str(tmp_path), split), nprocs=WORLD, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    video_all, text_all = _global_batch()

    for rank, result in enumerate(results):
        # every rank sees the whole batch, in rank order
        assert torch.equal(result["gathered"], video_all)
        # d/dx of sum_r sum(gathered * W_r), W_r = arange * (r + 1): each rank's slice of sum_r W_r = 3 * arange
        rows = _rows(rank, split)
        expected = 3 * torch.arange(TOTAL * DIM, dtype=torch.float32).reshape(TOTAL, DIM)[rows]
        assert torch.equal(result["linear_grad"], expected)

    video = video_all.clone().requires_grad_(True)
    text = text_all.clone().requires_grad_(True)
    reference = _reference_sum_of_rank_losses(video, text, split)
    reference.backward()
    assert torch.isclose(sum(r["loss"] for r in results), reference.detach(), rtol=1e-5)
    for rank, result in enumerate(results):
        rows = _rows(rank, split)
        # gradients include what the other rank's loss sends back through the gathered negatives
        assert torch.allclose(result["video_grad"], video.grad[rows], atol=1e-6)
        assert torch.allclose(result["text_grad"], text.grad[rows], atol=1e-6)

    if split[0] == split[1]:  # the mean of equal ranks' losses is the plain CLIP loss over the global batch
        logits = F.normalize(video_all, dim=-1) @ F.normalize(text_all, dim=-1).T / TEMPERATURE
        targets = torch.arange(TOTAL)
        global_loss = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
        assert torch.isclose(sum(r["loss"] for r in results) / WORLD, global_loss, rtol=1e-5)


NEGATIVES = 3


def _negatives_worker(rank: int, port: int, out_dir: str, split: tuple[int, int]) -> None:
    from training.losses import info_nce

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        video_all, text_all = _global_batch()
        negatives_all = torch.randn(NEGATIVES, DIM, generator=torch.Generator().manual_seed(8))
        rows = _rows(rank, (3, 3))
        negatives = negatives_all[_rows(rank, split)].clone().requires_grad_(True)
        video = video_all[rows].clone().requires_grad_(True)
        loss = info_nce(video, text_all[rows], torch.tensor(TEMPERATURE), negatives)
        loss.backward()
        torch.save({"loss": loss.detach(), "negative_grad": negatives.grad}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("split", [(2, 1), (3, 0), (0, 0)])
def test_hard_negatives_are_shared_by_every_rank_even_where_a_rank_has_none(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, split: tuple[int, int]) -> None:
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    mp.spawn(_negatives_worker, args=(_free_port(), str(tmp_path), split), nprocs=WORLD, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    video_all, text_all = _global_batch()
    held = sum(split)
    negatives = torch.randn(NEGATIVES, DIM, generator=torch.Generator().manual_seed(8))[:held].requires_grad_(True)
    v, t, n = F.normalize(video_all, dim=-1), F.normalize(text_all, dim=-1), F.normalize(negatives, dim=-1)
    reference = video_all.new_zeros(())
    for rank in range(WORLD):  # each rank's videos score every rank's texts and every rank's negatives
        rows = _rows(rank, (3, 3))
        targets = torch.arange(rows.start, rows.stop)
        reference = reference + (F.cross_entropy(v[rows] @ torch.cat([t, n]).T / TEMPERATURE, targets)
                                 + F.cross_entropy(t[rows] @ v.T / TEMPERATURE, targets)) / 2
    assert torch.isclose(sum(r["loss"] for r in results), reference.detach(), rtol=1e-5)
    if held:
        reference.backward()
        for rank, result in enumerate(results):  # a negative learns from every rank's videos
            assert torch.allclose(result["negative_grad"], negatives.grad[_rows(rank, split)], atol=1e-6)
