"""``fluxvid encoder ...``: inspect models, plan budgets, tune a budget profile."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.table import Table

from .budget import BudgetProfile, plan
from .config import get_config, list_models
from .cost import estimate_gmacs

app = typer.Typer(help="FluxViT encoder: models, budgets and Token Optimization.", no_args_is_help=True)
console = Console()
errors = Console(stderr=True)


def fail(message: object, code: int = 2) -> NoReturn:
    """Print ``error: message`` on stderr, unwrapped so file names stay whole, and exit with ``code``."""
    errors.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def parse_budgets(text: str) -> list[int]:
    try:
        budgets = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"budgets must be comma-separated integers, got {text!r}") from None
    if not budgets or min(budgets) < 1:
        raise typer.BadParameter("give at least one positive budget")
    return budgets


@app.command("models")
def models_command() -> None:
    """List the registered model configs with their size and the cost of each head regime."""
    table = Table("model", "dim", "depth", "heads", "params (M)", "GMACs per head regime")
    from .model import create_model

    for name in list_models():
        cfg = get_config(name)
        params = sum(p.numel() for p in create_model(name).parameters()) / 1e6
        costs = ", ".join(f"{t}: {estimate_gmacs(cfg, t):.1f}" for t in cfg.head_token_counts)
        table.add_row(name, str(cfg.embed_dim), str(cfg.depth), str(cfg.num_heads), f"{params:.1f}", costs)
    console.print(table)


@app.command("plan")
def plan_command(
    budgets: str = typer.Option("512,1024,2048,3072", "--budget", "-b", help="Comma-separated token budgets."),
    model: str = typer.Option("fluxvit_small_patch14", help="Registered model name."),
    profile: Path | None = typer.Option(None, help="A budget profile JSON from `tune-budget`."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Show how each budget is spent: frames x resolution, kept tokens, head and estimated GMACs."""
    try:
        cfg = get_config(model)
        loaded = BudgetProfile.load(profile) if profile else None
    except (KeyError, FileNotFoundError, ValueError) as exc:
        fail(exc)
    plans = [plan(b, cfg, loaded) for b in parse_budgets(budgets)]
    if as_json:
        print(json.dumps([p.to_dict() for p in plans], indent=2))
        return
    table = Table("budget", "frames", "resolution", "pool", "kept", "head", "GMACs", "vs full")
    for p in plans:
        table.add_row(str(p.budget), str(p.frames), str(p.resolution), str(p.pool_tokens), str(p.tokens),
                      str(p.head), f"{p.est_gmacs:.2f}", f"{100 * p.relative_cost:.0f}%")
    console.print(table)


@app.command("tune-budget")
def tune_budget_command(
    checkpoint: Path = typer.Option(..., help="A classifier checkpoint (FluxVid file, or a released .pth with --model)."),
    data: Path = typer.Option(..., help="Validation annotations (CSV/JSONL with path and label)."),
    out: Path = typer.Option(..., help="Where to write the budget profile JSON."),
    budgets: str = typer.Option("512,1024,2048", "--budget", "-b", help="Comma-separated token budgets."),
    model: str | None = typer.Option(None, help="Registered model name, for released checkpoints."),
    limit: int = typer.Option(200, min=1, help="Use at most this many videos of the validation set."),
    start_resolution: int = typer.Option(224, help="Resolution the search starts from."),
    workers: int = typer.Option(2, min=0, help="Decoding worker processes."),
) -> None:
    """Appendix A.1 search: per budget, add frames while accuracy rises, then trade resolution for frames.

    Each setting is scored by top-1 accuracy on the validation videos with the selector keeping the budget;
    the best settings are saved as a profile that `fluxvid encoder plan --profile` and the app use.
    """
    from .budget import make_plan, tune_budget
    from .checkpoint import CheckpointError, load_model
    from .config import ProfileEntry
    from .evaluate import evaluate_classifier
    from .video import AnnotationError, read_annotations

    try:
        classifier, _ = load_model(checkpoint, name=model)
        items = read_annotations(data)[:limit]
    except (CheckpointError, AnnotationError, FileNotFoundError, ValueError) as exc:
        fail(exc)
    if classifier.num_classes == 0:
        fail(f"checkpoint {checkpoint} has no classification head")
    cfg = classifier.config
    best_entries: list[ProfileEntry] = []
    for budget in parse_budgets(budgets):
        def score(frames: int, resolution: int, budget: int = budget) -> float:
            result = evaluate_classifier(classifier, items, make_plan(cfg, budget, frames, resolution),
                                         num_workers=workers)
            console.print(f"  budget {budget}: {frames} x {resolution}px -> top-1 {result.top1:.4f}"
                          + (f" ({len(result.skipped)} videos skipped)" if result.skipped else ""))
            return result.top1

        best, tried = tune_budget(budget, score, cfg, start_resolution=start_resolution)
        console.print(f"budget {budget}: best {best.frames} x {best.resolution}px, top-1 {best.score:.4f} "
                      f"after {len(tried)} settings")
        best_entries.append(best)
    BudgetProfile(cfg.name, tuple(best_entries)).save(out)
    console.print(f"profile written to {out}")
