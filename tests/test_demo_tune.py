"""Token Optimization of the demo models: per budget the best-scoring sampling (fewer frames on ties), written
into the config without losing the entries it did not tune."""

from __future__ import annotations

from app.demo.train import DEMO_GRID
from app.demo.tune import _best, _with_profile
from encoder import get_config
from encoder.config import ProfileEntry, SamplingGrid
from encoder.video import trained_samplings


def test_the_best_sampling_wins_and_ties_go_to_fewer_frames() -> None:
    config = get_config("fluxvit_tiny_patch14").replace(grid=SamplingGrid(4, 8, 4, 84, 84, 28, (128, 512)))
    seen = []

    def score(plan) -> float:
        seen.append((plan.budget, plan.frames, plan.resolution, plan.keep_tokens))
        return {(128, 4): 0.6, (128, 8): 0.7, (140, 4): 0.5, (140, 8): 0.5, (256, 8): 0.4}[(plan.budget, plan.frames)]

    chosen = _best(config, [128, 140, 256], score)
    assert [(e.budget, e.frames, e.resolution, e.score) for e in chosen] == [
        (128, 8, 84, 0.7), (140, 4, 84, 0.5), (256, 8, 84, 0.4)]
    assert (128, 8, 84, 128) in seen and (256, 4, 84, 144) not in seen, "4 x 84 (144 tokens) cannot hold 256"


def test_candidates_are_the_training_grid_and_count_tokens_per_tubelet() -> None:
    """The demo models see two frames per patch: 8 frames x 84 px make 144 tokens, too few for 256."""
    config = get_config("fluxvit_tiny_patch14").replace(grid=SamplingGrid(**DEMO_GRID), tubelet_size=2)
    assert trained_samplings(config) == [(8, 84), (16, 84)]
    seen = []

    def score(plan) -> float:
        seen.append((plan.budget, plan.frames, plan.keep_tokens))
        return 0.5

    chosen = _best(config, [128, 256], score)
    assert seen == [(128, 8, 128), (128, 16, 128), (256, 16, 256)]
    assert [(e.budget, e.frames) for e in chosen] == [(128, 8), (256, 16)]


def test_tuned_entries_replace_theirs_and_keep_the_rest_sorted() -> None:
    config = get_config("fluxvit_tiny_patch14")
    tuned = _with_profile(config, [ProfileEntry(256, 4, 84, 0.5)])
    assert [(e.budget, e.frames, e.resolution) for e in tuned.profile] == [
        (128, 4, 84), (256, 4, 84), (512, 8, 112), (1024, 16, 112)]
