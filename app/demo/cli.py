"""``fluxvid demo generate``: write the procedural demo world (clips, manifests, questions, ground truth)."""

from __future__ import annotations

from pathlib import Path

import typer

from .generate import generate_world
from .world import WorldConfig

app = typer.Typer(help="The demo world: procedural clips with ground truth for search, classification and chat.",
                  no_args_is_help=True)
DEFAULT_WORLD = Path("runs/demo/world")


@app.command("generate")
def generate(
    out: Path = typer.Option(DEFAULT_WORLD, help="Folder of the world (kept when already complete)."),
    seed: int = typer.Option(0, help="Everything follows from it."),
    train: int = typer.Option(600, min=1, help="Training clips."),
    val: int = typer.Option(60, min=1, help="Validation clips."),
    test: int = typer.Option(120, min=1, help="Held-out test clips."),
    workers: int = typer.Option(0, min=0, help="Rendering processes (0: one per core)."),
) -> None:
    """Render the world: train/val/test clips (h264 mp4), manifests, classes.json, questions, world.json."""
    folder = generate_world(out, WorldConfig(train=train, val=val, test=test, seed=seed), workers or None)
    typer.echo(f"demo world in {folder}: {train} train, {val} val, {test} test clips; manifests "
               f"{{train,val,test}}.jsonl, questions *_qa.jsonl, ground truth world.json")
