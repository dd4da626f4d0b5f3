"""UMT alignment, self-distillation chain, InfoNCE and temperature clamping, against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from training.gather import gather_with_grad
from training.losses import (
    TEMPERATURE_INIT, TEMPERATURE_RANGE, alignment_loss, clamp_temperature_, info_nce, self_distillation_losses,
)


def test_alignment_loss_is_two_minus_two_cos_averaged_and_scale_free() -> None:
    student = torch.tensor([[3.0, 0.0], [0.0, 0.5], [1.0, 1.0]], requires_grad=True)
    teacher = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-2.0, -2.0]], requires_grad=True)
    loss = alignment_loss(student, teacher)
    # cos = 1, 0, -1  ->  2 - 2cos = 0, 2, 4  -> mean 2
    assert loss.item() == pytest.approx(2.0)
    loss.backward()
    assert teacher.grad is None, "the teacher side must be detached"
    assert student.grad is not None and student.grad[1].abs().sum() > 0


def test_alignment_loss_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="differ"):
        alignment_loss(torch.zeros(2, 3, 4), torch.zeros(2, 3, 5))


def test_self_distillation_chain_detaches_each_teacher() -> None:
    largest = torch.tensor([0.0, 0.0], requires_grad=True)
    middle = torch.tensor([0.5, 3.0], requires_grad=True)
    smallest = torch.tensor([1.5, 3.0], requires_grad=True)
    first, second = self_distillation_losses([largest, middle, smallest])
    # smooth L1 (beta 1): |0.5| -> 0.125, |3| -> 2.5; mean 1.3125.  |1.0| -> 0.5, 0 -> 0; mean 0.25
    assert first.item() == pytest.approx(1.3125)
    assert second.item() == pytest.approx(0.25)
    (first + second).backward()
    assert largest.grad is None
    # the middle learns only as a student of the largest: d/dm mean(smoothL1(m - 0)) = [0.5 / 2, 1 / 2]
    assert torch.allclose(middle.grad, torch.tensor([0.25, 0.5]))
    assert torch.allclose(smallest.grad, torch.tensor([0.5, 0.0]))


def test_info_nce_matches_hand_computed_symmetric_loss() -> None:
    video = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[2.0, 0.0], [2.0, 0.0]])  # both captions point at video 0; scale is normalised away
    loss = info_nce(video, text, torch.tensor(1.0))
    v2t = math.log(2)  # video 0 sees logits [1, 1], video 1 sees [0, 0]
    t2v = (math.log(1 + math.exp(-1)) + math.log(1 + math.e)) / 2  # texts see [1, 0]; targets 0 then 1
    assert loss.item() == pytest.approx((v2t + t2v) / 2, rel=1e-6)


def test_info_nce_temperature_gradient_matches_the_derivative() -> None:
    temperature = torch.tensor(0.5, requires_grad=True)
    loss = info_nce(torch.eye(2), torch.eye(2), temperature)
    # aligned pairs: loss = log(1 + exp(-1 / T)); d/dT = exp(-1/T) / T^2 / (1 + exp(-1/T))
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-2)), rel=1e-6)
    loss.backward()
    expected = math.exp(-2) / 0.25 / (1 + math.exp(-2))
    assert temperature.grad.item() == pytest.approx(expected, rel=1e-5)


def test_info_nce_equals_cross_entropy_over_the_whole_batch_without_a_process_group() -> None:
    gen = torch.Generator().manual_seed(1)
    video, text = torch.randn(5, 8, generator=gen), torch.randn(5, 8, generator=gen)
    assert gather_with_grad(video) is video
    logits = F.normalize(video, dim=-1) @ F.normalize(text, dim=-1).T / 0.07
    targets = torch.arange(5)
    expected = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
    assert info_nce(video, text, torch.tensor(0.07)).item() == pytest.approx(expected.item(), rel=1e-5)


def test_hard_negatives_join_the_video_to_text_side_only() -> None:
    gen = torch.Generator().manual_seed(2)
    video, text, negatives = (torch.randn(4, 8, generator=gen) for _ in range(3))
    v, t, n = (F.normalize(x, dim=-1) for x in (video, text, negatives))
    targets = torch.arange(4)
    v2t = F.cross_entropy(v @ torch.cat([t, n]).T / 0.07, targets)  # every video also scores every negative
    t2v = F.cross_entropy(t @ v.T / 0.07, targets)  # a negative is no video's caption: nothing to retrieve
    loss = info_nce(video, text, torch.tensor(0.07), negatives)
    assert loss.item() == pytest.approx(((v2t + t2v) / 2).item(), rel=1e-5)
    assert loss.item() > info_nce(video, text, torch.tensor(0.07)).item()
    assert info_nce(video, text, torch.tensor(0.07), negatives[:0]).item() == pytest.approx(
        info_nce(video, text, torch.tensor(0.07)).item(), rel=1e-6), "no negatives: the plain loss"


def test_a_hard_negative_is_pushed_away_from_the_video() -> None:
    video = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    negative = torch.tensor([[0.9, 0.1, 0.3]], requires_grad=True)  # close to video 0's caption direction
    info_nce(video, video.clone(), torch.tensor(0.1), negative).backward()
    assert negative.grad is not None
    step = F.normalize(negative.detach() - 0.1 * negative.grad, dim=-1)
    assert (step @ video[0]).item() < (F.normalize(negative.detach(), dim=-1) @ video[0]).item()


def test_hard_negatives_of_the_wrong_width_are_refused() -> None:
    with pytest.raises(ValueError, match="negatives"):
        info_nce(torch.eye(2), torch.eye(2), torch.tensor(0.07), torch.zeros(3, 5))


def test_temperature_is_clamped_in_place_and_keeps_its_gradient() -> None:
    assert TEMPERATURE_INIT == pytest.approx(0.07) and TEMPERATURE_RANGE == (0.001, 0.5)
    low = torch.nn.Parameter(torch.tensor(1e-5))
    high = torch.nn.Parameter(torch.tensor(3.0))
    inside = torch.nn.Parameter(torch.tensor(0.07))
    assert clamp_temperature_(low).item() == pytest.approx(0.001)
    assert clamp_temperature_(high).item() == pytest.approx(0.5)
    assert clamp_temperature_(inside).item() == pytest.approx(0.07)
    info_nce(torch.eye(3), torch.eye(3), clamp_temperature_(high)).backward()
    assert high.grad is not None and high.grad.item() > 0, "at the upper bound the gradient still points down"
