"""Budgets: the GMACs table, plans and the appendix A.1 search."""

from __future__ import annotations

from pathlib import Path

import pytest

from encoder import BudgetProfile, ProfileEntry, estimate_gmacs, get_config, plan, tune_budget

PAPER_TABLE = {  # paper Table 6 / REFERENCE.md: GMACs of one view
    "fluxvit_small_patch14": {3072: 154, 2048: 83, 1024: 32, 512: 13},
    "fluxvit_base_patch14": {3072: 440, 2048: 255, 1024: 108, 512: 49},
}


@pytest.mark.parametrize("model", sorted(PAPER_TABLE))
@pytest.mark.parametrize("tokens", [512, 1024, 2048, 3072])
def test_gmacs_reproduce_the_paper_table_within_5_percent(model: str, tokens: int) -> None:
    paper = PAPER_TABLE[model][tokens]
    assert abs(estimate_gmacs(model, tokens) - paper) / paper < 0.05


def test_gmacs_count_the_patch_embedding_on_the_whole_pool() -> None:
    cfg = get_config("fluxvit_small_patch14")
    extra = estimate_gmacs(cfg, 1024, pool_tokens=4096) - estimate_gmacs(cfg, 1024)
    assert extra == pytest.approx(3072 * 3 * 14 * 14 * 384 / 1e9)
    with pytest.raises(ValueError, match="cannot be smaller"):
        estimate_gmacs(cfg, 1024, pool_tokens=10)


@pytest.mark.parametrize("budget", [128, 300, 512, 777, 1024, 1500, 2048, 3072])
def test_plans_spend_the_budget_from_a_larger_pool(budget: int) -> None:
    cfg = get_config("fluxvit_small_patch14")
    p = plan(budget, cfg)
    per_frame = (p.resolution // 14) ** 2
    assert p.pool_tokens == p.frames * per_frame >= budget
    assert p.keep_tokens == budget and p.tokens == budget
    assert p.frames in cfg.grid.frame_options()
    assert p.est_gmacs == pytest.approx(estimate_gmacs(cfg, budget, pool_tokens=p.pool_tokens))
    assert p.head == min(range(3), key=lambda i: abs(cfg.head_token_counts[i] - budget))


def test_paper_budgets_use_the_paper_settings_and_cost_grows_with_budget() -> None:
    assert (plan(1024).frames, plan(1024).resolution) == (12, 196)
    assert (plan(512).frames, plan(512).resolution) == (8, 224)
    costs = [plan(b).est_gmacs for b in (256, 512, 1024, 2048, 3072)]
    assert costs == sorted(costs)
    assert plan(3072).relative_cost == pytest.approx(
        estimate_gmacs("fluxvit_small_patch14", 3072, 4096) / estimate_gmacs("fluxvit_small_patch14", 3072))


def test_budget_beyond_the_largest_pool_keeps_everything() -> None:
    p = plan(100_000, "fluxvit_tiny_patch14")
    assert p.keep_tokens is None and p.tokens == p.pool_tokens == 16 * 64
    image = plan(1024, image=True)
    assert image.frames == 1 and image.resolution == 280 and image.keep_tokens is None


def test_profile_json_round_trip_and_use(tmp_path: Path) -> None:
    profile = BudgetProfile("fluxvit_small_patch14", (ProfileEntry(1024, 20, 168, 0.9),))
    path = tmp_path / "profile.json"
    profile.save(path)
    loaded = BudgetProfile.load(path)
    assert loaded == profile
    p = plan(1024, profile=loaded)
    assert (p.frames, p.resolution) == (20, 168)
    (tmp_path / "bad.json").write_text('{"model": "x", "entries": []}')
    with pytest.raises(ValueError, match="bad.json is not a valid profile"):
        BudgetProfile.load(tmp_path / "bad.json")


def test_tune_budget_follows_the_appendix_search_in_linear_steps() -> None:
    # Accuracy that rises with frames up to 12 at 224 px, then prefers lower resolution with more frames,
    # peaking at (16, 168), like Table 11's anti-diagonal.
    def score(frames: int, resolution: int) -> float:
        return -abs(frames - (12 + (224 - resolution) // 28 * 2)) - abs(resolution - 168) / 28

    best, tried = tune_budget(1024, score, "fluxvit_small_patch14")
    assert (best.frames, best.resolution) == (16, 168)
    assert (tried[0].frames, tried[0].resolution) == (4, 224)
    cfg = get_config("fluxvit_small_patch14")
    assert len(tried) <= len(cfg.grid.frame_options()) + len(cfg.grid.resolution_options())
    assert len({(t.frames, t.resolution) for t in tried}) == len(tried), "no setting is tried twice"
