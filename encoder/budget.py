"""Token Optimization: turn a token budget into a sampling plan (frames x resolution x kept tokens).

The paper's rule (3.2, appendix A.1): for a budget of K tokens, sample a larger pool of tokens from a denser /
finer grid and keep the K most informative with the token selector. The best (frames, resolution) per budget
comes from a profile: the paper's table for the released models, or one measured on the user's data with
:func:`tune_budget` (``fluxvid encoder tune-budget``).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

from .config import FluxViTConfig, ProfileEntry, get_config
from .cost import estimate_gmacs


@dataclass(frozen=True)
class Plan:
    """How to spend a token budget on one view of a video."""

    model: str
    budget: int
    frames: int
    resolution: int
    keep_tokens: int | None  # None: the whole pool fits in the budget, no selection
    pool_tokens: int
    head: int
    est_gmacs: float
    full_gmacs: float  # cost of the model's largest head regime with no selection, for comparison

    @property
    def tokens(self) -> int:
        """Patch tokens the transformer actually processes."""
        return self.pool_tokens if self.keep_tokens is None else self.keep_tokens

    @property
    def relative_cost(self) -> float:
        return self.est_gmacs / self.full_gmacs

    def describe(self) -> str:
        kept = "all" if self.keep_tokens is None else f"{self.keep_tokens} of"
        return (
            f"{self.frames} frames x {self.resolution}px -> {kept} {self.pool_tokens} tokens, head {self.head}, "
            f"~{self.est_gmacs:.2f} GMACs ({100 * self.relative_cost:.0f}% of full)"
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "tokens": self.tokens, "relative_cost": self.relative_cost}


def tokens_per_frame(cfg: FluxViTConfig, resolution: int) -> int:
    side = resolution // cfg.patch_size
    return side * side


def head_for_tokens(cfg: FluxViTConfig, tokens: int) -> int:
    """Index of the pooling/classification head trained for the token count nearest to ``tokens``."""
    counts = cfg.head_token_counts
    return min(range(len(counts)), key=lambda i: (abs(counts[i] - tokens), i))


def _round_frames(cfg: FluxViTConfig, frames: float) -> int:
    grid = cfg.grid
    steps = max(0, math.ceil((frames - grid.min_frames) / grid.frame_step))
    return min(grid.max_frames, grid.min_frames + steps * grid.frame_step)


def _nearest_entry(entries: Iterable[ProfileEntry], budget: int) -> ProfileEntry:
    return min(entries, key=lambda e: (abs(math.log(e.budget / budget)), -e.budget))


def _default_entry(cfg: FluxViTConfig) -> ProfileEntry:
    middle = cfg.head_token_counts[1]
    return ProfileEntry(middle, max(cfg.grid.min_frames, middle // tokens_per_frame(cfg, cfg.img_size)), cfg.img_size)


def make_plan(cfg: FluxViTConfig, budget: int, frames: int, resolution: int) -> Plan:
    """A plan for an explicit (frames, resolution) choice; the selector keeps ``budget`` tokens of the pool."""
    if resolution % cfg.patch_size:
        raise ValueError(f"resolution {resolution} is not a multiple of the patch size {cfg.patch_size}")
    if frames < 1 or frames % cfg.tubelet_size:
        raise ValueError(f"frames must be a positive multiple of the tubelet size {cfg.tubelet_size}, got {frames}")
    pool = (frames // cfg.tubelet_size) * tokens_per_frame(cfg, resolution)
    keep = budget if budget < pool else None
    used = pool if keep is None else keep
    return Plan(
        model=cfg.name, budget=budget, frames=frames, resolution=resolution, keep_tokens=keep,
        pool_tokens=pool, head=head_for_tokens(cfg, used),
        est_gmacs=estimate_gmacs(cfg, used, pool_tokens=pool),
        full_gmacs=estimate_gmacs(cfg, cfg.head_token_counts[-1]),
    )


def plan(
    budget_tokens: int,
    model: str | FluxViTConfig = "fluxvit_small_patch14",
    profile: "BudgetProfile | None" = None,
    image: bool = False,
) -> Plan:
    """The sampling that spends ``budget_tokens`` best, following the model's (or the given) profile.

    For a budget listed in the profile, its (frames, resolution) is used as is. Otherwise the nearest listed
    budget (on a log scale) gives the resolution, and frames scale with the budget so that the pool keeps the
    same ratio to the budget; frames grow (then resolution) until the pool holds at least the budget.
    ``image=True`` plans a single frame at the smallest grid resolution whose tokens cover the budget.
    """
    cfg = get_config(model) if isinstance(model, str) else model
    if budget_tokens < 1:
        raise ValueError(f"budget must be at least 1 token, got {budget_tokens}")
    if image:
        resolutions = cfg.grid.resolution_options()
        fitting = [r for r in resolutions if tokens_per_frame(cfg, r) >= budget_tokens]
        return make_plan(cfg, budget_tokens, cfg.tubelet_size, fitting[0] if fitting else resolutions[-1])
    entries = list(profile.entries) if profile is not None else list(cfg.profile)
    if not entries:
        entries = [_default_entry(cfg)]
    anchor = _nearest_entry(entries, budget_tokens)
    if anchor.budget == budget_tokens:
        return make_plan(cfg, budget_tokens, anchor.frames, anchor.resolution)
    resolution = anchor.resolution
    frames = _round_frames(cfg, anchor.frames * budget_tokens / anchor.budget)
    resolutions = [r for r in cfg.grid.resolution_options() if r >= resolution] or [resolution]
    for resolution in resolutions:
        per_frame = tokens_per_frame(cfg, resolution)
        frames = max(frames, _round_frames(cfg, budget_tokens / per_frame))
        if frames * per_frame >= budget_tokens:
            break
    return make_plan(cfg, budget_tokens, frames, resolution)


@dataclass(frozen=True)
class BudgetProfile:
    """Measured best (frames, resolution) per budget for one model, saved as JSON."""

    model: str
    entries: tuple[ProfileEntry, ...]

    def save(self, path: str | Path) -> None:
        path = Path(path)
        data = {"model": self.model, "entries": [asdict(e) for e in self.entries]}
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> "BudgetProfile":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            entries = tuple(ProfileEntry(**e) for e in data["entries"])
            if not entries:
                raise ValueError("no entries")
            return cls(model=str(data["model"]), entries=entries)
        except FileNotFoundError:
            raise FileNotFoundError(f"budget profile {path} does not exist") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"budget profile {path} is not a valid profile: {exc}") from None


Scorer = Callable[[int, int], float]


def tune_budget(
    budget: int,
    score: Scorer,
    model: str | FluxViTConfig = "fluxvit_small_patch14",
    start_frames: int | None = None,
    start_resolution: int = 224,
    min_gain: float = 0.0,
) -> tuple[ProfileEntry, list[ProfileEntry]]:
    """Appendix A.1 search for one budget: linear in the number of settings tried.

    Start small (``start_frames`` x ``start_resolution``), add frames while the score rises, then lower the
    resolution while adding frames until it stops rising. ``score(frames, resolution)`` is any measure where
    higher is better (e.g. validation accuracy with the selector keeping ``budget`` tokens).
    Returns the best setting and every setting tried, in order.
    """
    cfg = get_config(model) if isinstance(model, str) else model
    grid = cfg.grid
    frames_options = grid.frame_options()
    resolutions = sorted(r for r in grid.resolution_options() if r <= start_resolution) or [grid.min_resolution]
    frames = start_frames if start_frames is not None else grid.min_frames
    resolution = resolutions[-1] if start_resolution not in resolutions else start_resolution
    tried: list[ProfileEntry] = []

    def evaluate(f: int, r: int) -> ProfileEntry:
        entry = ProfileEntry(budget, f, r, float(score(f, r)))
        tried.append(entry)
        return entry

    best = evaluate(frames, resolution)
    # Phase 1: more frames at the starting resolution.
    for f in (f for f in frames_options if f > best.frames):
        candidate = evaluate(f, resolution)
        if candidate.score <= best.score + min_gain:
            break
        best = candidate
    # Phase 2: lower the resolution one step while adding frames, as long as it helps.
    lower = [r for r in reversed(resolutions) if r < best.resolution]
    for r in lower:
        more = [f for f in frames_options if f > best.frames]
        if not more:
            break
        candidate = evaluate(more[0], r)
        if candidate.score <= best.score + min_gain:
            break
        best = candidate
    return best, tried
