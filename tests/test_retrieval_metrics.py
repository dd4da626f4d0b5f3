"""Retrieval metrics against hand-computed ranks on small similarity matrices."""

from __future__ import annotations

import pytest
import torch

from retrieval.metrics import dual_softmax, rank_metrics, retrieval_metrics, target_ranks


def test_one_caption_per_video_both_directions() -> None:
    # rows: texts, columns: videos; text i describes video i
    sim = torch.tensor([[0.9, 0.1, 0.3],
                        [0.2, 0.8, 0.7],
                        [0.6, 0.5, 0.4]])
    result = retrieval_metrics(sim)
    # t2v ranks: text0 -> 1, text1 -> 1 (0.8 > 0.7), text2 -> 3 (0.4 < 0.6, 0.5)
    assert result.t2v.r1 == pytest.approx(200 / 3) and result.t2v.r5 == 100 and result.t2v.r10 == 100
    assert result.t2v.median_rank == 1 and result.t2v.mean_rank == pytest.approx(5 / 3)
    # v2t ranks (columns): video0 -> 1, video1 -> 1 (0.8 > 0.5), video2 -> 2 (0.4 < 0.7, > 0.3)
    assert result.v2t.r1 == pytest.approx(200 / 3)
    assert result.v2t.median_rank == 1 and result.v2t.mean_rank == pytest.approx(4 / 3)
    assert result.as_dict()["t2v/MnR"] == pytest.approx(5 / 3)


def test_recall_at_five_and_ten_and_even_median() -> None:
    scores = -torch.arange(12.0).repeat(4, 1)  # every query ranks candidate 0 first, then 1, 2, ...
    truth = torch.zeros(4, 12, dtype=torch.bool)
    for query, candidate in enumerate([0, 4, 6, 11]):
        truth[query, candidate] = True
    ranks = target_ranks(scores, truth)
    assert ranks.tolist() == [1, 5, 7, 12]
    metrics = rank_metrics(ranks)
    assert (metrics.r1, metrics.r5, metrics.r10) == (25.0, 50.0, 75.0)
    assert metrics.median_rank == 6.0 and metrics.mean_rank == 6.25


def test_ties_count_against_the_model() -> None:
    result = retrieval_metrics(torch.zeros(4, 4))
    assert result.t2v.r1 == 0 and result.t2v.median_rank == 4 and result.v2t.mean_rank == 4


def test_several_captions_per_video() -> None:
    sim = torch.tensor([[0.1, 0.9],
                        [0.8, 0.2],
                        [0.3, 0.4],
                        [0.6, 0.5]])
    result = retrieval_metrics(sim, text_to_video=torch.tensor([0, 0, 1, 1]))
    # t2v: text0 -> 2, text1 -> 1, text2 -> 1, text3 -> 2
    assert (result.t2v.r1, result.t2v.median_rank, result.t2v.mean_rank) == (50.0, 1.5, 1.5)
    # v2t: video0's best caption (0.8) beats every other caption -> 1;
    #      video1's best caption (0.5) is beaten by text0 (0.9) -> 2
    assert (result.v2t.r1, result.v2t.median_rank, result.v2t.mean_rank) == (50.0, 1.5, 1.5)


def test_dual_softmax_normalises_over_the_queries_of_each_direction() -> None:
    sim = torch.tensor([[0.5, 0.6],
                        [0.1, 0.9]])  # video 1 is a hub: every text prefers it
    assert torch.allclose(dual_softmax(sim), sim * torch.tensor([[0.5987, 0.4256], [0.4013, 0.5744]]), atol=1e-4)
    plain, dsl = retrieval_metrics(sim), retrieval_metrics(sim, use_dual_softmax=True)
    assert plain.t2v.r1 == 50.0
    # text0: 0.5 * 0.5987 = 0.299 beats 0.6 * 0.4256 = 0.255 once the hub's score is shared among texts
    assert dsl.t2v.r1 == 100.0 and dsl.v2t.r1 == 100.0
    # softmax over the candidates instead would leave the hub on top: 0.5 * 0.475 < 0.6 * 0.525
    wrong = sim * sim.softmax(dim=1)
    assert wrong[0, 1] > wrong[0, 0]


def test_invalid_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="pass text_to_video"):
        retrieval_metrics(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="queries \\[1\\] have no ground-truth"):
        retrieval_metrics(torch.zeros(2, 2), text_to_video=torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="video indices"):
        retrieval_metrics(torch.zeros(2, 2), text_to_video=torch.tensor([0, 2]))
