"""``fluxvid encoder ...``: inspect models, plan budgets, tune a budget profile."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from .budget import BudgetProfile, plan
from .config import get_config, list_models
from .cost import estimate_gmacs

app = typer.Typer(help="FluxViT encoder: models, budgets and Token Optimization.", no_args_is_help=True)
console = Console()


def _parse_budgets(text: str) -> list[int]:
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
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2)
    plans = [plan(b, cfg, loaded) for b in _parse_budgets(budgets)]
    if as_json:
        print(json.dumps([p.to_dict() for p in plans], indent=2))
        return
    table = Table("budget", "frames", "resolution", "pool", "kept", "head", "GMACs", "vs full")
    for p in plans:
        table.add_row(str(p.budget), str(p.frames), str(p.resolution), str(p.pool_tokens), str(p.tokens),
                      str(p.head), f"{p.est_gmacs:.2f}", f"{100 * p.relative_cost:.0f}%")
    console.print(table)
