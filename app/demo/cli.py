"""``fluxvid demo``: serve the app on the embedded default; ``generate``, ``train`` and ``eval`` make and check
what it runs on (the procedural world and the shipped models)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from encoder.cli import fail, parse_budgets
from index.store import IndexStoreError

from .generate import SPLITS, generate_world
from .shipped import DEMO_HOME, MANIFEST, MODELS_DIR, MissingModelsError
from .train import DemoTraining
from .world import QUESTION_KINDS, WorldConfig

app = typer.Typer(help="The demo: the full app offline, on a procedural world and models our own recipes trained. "
                       "Without a subcommand: prepare (first start only) and serve it.",
                  invoke_without_command=True)
DEFAULT_WORLD = DEMO_HOME / "world"
DEFAULTS = DemoTraining()


@app.callback()
def demo(
    ctx: typer.Context,
    home: Path = typer.Option(DEMO_HOME, help="Folder of the demo's world, library manifest and index."),
    models: Path = typer.Option(MODELS_DIR, help="Demo models folder (default: the shipped one)."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(7860, min=0, max=65535),
) -> None:
    """Render the test split, index it with the real sample videos, and serve search, classify and chat."""
    if ctx.invoked_subcommand is not None:
        return
    from ..server import serve
    from .serve import prepare_demo

    try:
        settings, report = prepare_demo(home, models)
    except (MissingModelsError, IndexStoreError, FileNotFoundError, ValueError, OSError) as exc:
        fail(exc)
    typer.echo(f"demo index {settings.index}: {report.added} videos added, {report.unchanged} unchanged, "
               f"{len(report.skipped)} skipped, {report.segments} segments ({report.seconds:.1f} s)")
    serve(settings.model_copy(update={"host": host, "port": port}))


@app.command("generate")
def generate(
    out: Path = typer.Option(DEFAULT_WORLD, help="Folder of the world (splits already rendered are kept)."),
    seed: int = typer.Option(DEFAULTS.seed, help="Everything follows from it."),
    train: int = typer.Option(DEFAULTS.train_clips, min=1, help="Training clips."),
    val: int = typer.Option(DEFAULTS.val_clips, min=1, help="Validation clips."),
    test: int = typer.Option(DEFAULTS.test_clips, min=1, help="Held-out test clips."),
    split: list[str] = typer.Option(list(SPLITS), help="Splits to render (repeatable)."),
    workers: int = typer.Option(0, min=0, help="Rendering processes (0: one per core)."),
) -> None:
    """Render the world: clips (h264 mp4), manifests, classes.json, questions and conversations, world.json."""
    try:
        folder = generate_world(out, WorldConfig(train=train, val=val, test=test, seed=seed), workers or None,
                                splits=tuple(split))
    except ValueError as exc:
        fail(exc)
    typer.echo(f"demo world in {folder} ({', '.join(split)}): manifests {{split}}.jsonl, {{split}}_clips.jsonl, "
               "{split}_actions.jsonl, questions {split}_qa.jsonl, conversations {split}_chat.jsonl, world.json")


@app.command("train")
def train(
    work: Path = typer.Option(DEMO_HOME / "train", help="Runs, configs and the training world go here."),
    models: Path = typer.Option(MODELS_DIR, help="Where the trained models are shipped (replaced at the end)."),
    seed: int = typer.Option(DEFAULTS.seed, help="Seeds the world and every run."),
    train_clips: int = typer.Option(DEFAULTS.train_clips, min=1),
    clip_steps: int = typer.Option(DEFAULTS.clip_steps, min=1, help="Flux-CLIP optimizer steps."),
    ft_steps: int = typer.Option(DEFAULTS.ft_steps, min=1, help="Flux-FT optimizer steps."),
    chat_steps: int = typer.Option(DEFAULTS.chat_steps, min=1, help="Chat (projector, LM, ViT) optimizer steps."),
    batch_size: int = typer.Option(DEFAULTS.batch_size, min=2),
    workers: int = typer.Option(DEFAULTS.workers, min=0,
                                help="Loader processes per run (0: in the main process, the fastest on 2 cores)."),
    cache_frames: int = typer.Option(DEFAULTS.cache_frames, min=0,
                                     help="Frames per clip decoded once and kept in memory for Flux-CLIP and "
                                          "Flux-FT; the chat then keeps its clips too (0: decode every batch)."),
) -> None:
    """Train the demo models from scratch (Flux-CLIP, Flux-FT, chat), evaluate them on the test split and ship
    them with a manifest of the command, seed and metrics. Interrupted? Run it again: it resumes."""
    from .train import command_line, train_demo

    knobs = DemoTraining(seed=seed, train_clips=train_clips, clip_steps=clip_steps, ft_steps=ft_steps,
                         chat_steps=chat_steps, batch_size=batch_size, workers=workers,
                         cache_frames=cache_frames)
    try:
        manifest = train_demo(knobs, work, models, command_line())
    except (FileNotFoundError, ValueError, OSError) as exc:
        fail(exc)
    _print_scores(manifest["test_split"], False)
    typer.echo(f"shipped to {models} (manifest {models / MANIFEST})")


@app.command("eval")
def evaluate(
    models: Path = typer.Option(MODELS_DIR, help="Demo models folder."),
    world: Path = typer.Option(DEFAULT_WORLD, help="World folder (its test split is rendered when missing)."),
    budget: str = typer.Option("128,256", help="Comma-separated token budgets."),
    limit: int | None = typer.Option(None, min=2, help="Only the first N test clips (a fixed subset)."),
    workers: int = typer.Option(2, min=0),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Search R@1/R@5, action top-1 and chat accuracy on the held-out test split, per budget; exits 1 when a
    quality bar is missed."""
    from .evaluate import evaluate_demo, scores_table

    try:
        generate_world(world, DemoTraining.from_manifest(models).world(), splits=("test",))
        scores = evaluate_demo(models, world, parse_budgets(budget), limit, workers)
    except (MissingModelsError, FileNotFoundError, ValueError) as exc:
        fail(exc)
    _print_scores(scores_table(scores), as_json)
    missed = [text for s in scores for text in s.failures()]
    if missed:
        fail("quality bars missed: " + "; ".join(missed), code=1)


def _print_scores(rows: list[dict], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=1))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("budget", "sampling", "GMACs", "t2v R@1", "t2v R@5", "action top-1", "chat acc.", "clips",
                  "windows", "questions", title="demo models on the test split")
    for r in rows:
        table.add_row(str(r["budget"]), r["sampling"], f"{r['gmacs']:.3f}", f"{r['text_to_video_r1']:.3f}",
                      f"{r['text_to_video_r5']:.3f}", f"{r['action_top1']:.3f}", f"{r['chat_accuracy']:.3f}",
                      str(r["clips"]), str(r["action_windows"]), str(r["questions"]))
    kinds = [kind for kind in QUESTION_KINDS if any(kind in r["chat_by_kind"] for r in rows)]
    by_kind = Table("budget", *kinds, title="chat accuracy per kind of question")
    for r in rows:
        by_kind.add_row(str(r["budget"]), *(f"{r['chat_by_kind'][k]:.3f}" if k in r["chat_by_kind"] else "-"
                                            for k in kinds))
    Console().print(table, by_kind)
