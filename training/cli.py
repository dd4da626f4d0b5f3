"""``fluxvid train umt|ft|clip|chat --config FILE.yaml``: one command per recipe, the same on one CPU, under
``torchrun`` (DDP) or with DeepSpeed, as the config's ``distributed`` section says."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import torch
import typer
import yaml
from rich.console import Console

from encoder.budget import make_plan
from encoder.cli import fail, parse_budgets
from encoder.video import AnnotationError, RandAug, TrainAugment, VideoDataset, read_annotations, skip_bad_collate

from .config import ConfigError, TrainConfig, load_config
from .data import TrainingClips, captioned_collate
from .engine import Trainer
from .frame_cache import CachedClips
from .recipe import Recipe

app = typer.Typer(help="Train FluxViT with the paper's recipes (Flux-UMT, Flux-FT, Flux-CLIP) or the chat projector.",
                  no_args_is_help=True)
console = Console(stderr=True)

CONFIG_HELP = "YAML config (examples in training/configs/; unset fields take the paper's defaults)."
SET_HELP = "Override a field, e.g. --set optim.lr=1e-4 --set data.batch_size=4 (values are YAML)."


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``a.b=value`` strings as a nested dict, each value read as YAML."""
    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--set takes key=value, got {pair!r}")
        node = result
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return result


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) \
            else value
    return merged


def _load(path: Path, cls: type[TrainConfig], sets: list[str]) -> TrainConfig:
    try:
        raw = yaml.safe_load(path.read_text()) if path.is_file() else None
    except yaml.YAMLError:
        raw = None
    overrides = parse_overrides(sets)
    if isinstance(raw, dict) and overrides:
        overrides = {k: _merge(raw[k], v) if isinstance(v, dict) and isinstance(raw.get(k), dict) else v
                     for k, v in overrides.items()}
    return load_config(path, cls, overrides)


def video_clips(cfg: TrainConfig, require: str | None = None) -> tuple[TrainingClips, list]:
    """The training videos of ``data.train`` with the config's augmentation, addressed by SampleKey."""
    items = read_annotations(cfg.data.train, cfg.data.root)
    if require == "label" and any(a.label is None for a in items):
        missing = next(a for a in items if a.label is None)
        raise ConfigError(f"{cfg.data.train}: every row needs a label for this recipe ({missing.path} has none)")
    if require == "caption" and any(not a.caption for a in items):
        missing = next(a for a in items if not a.caption)
        raise ConfigError(f"{cfg.data.train}: every row needs a caption for this recipe ({missing.path} has none)")
    augment = TrainAugment(scales=cfg.data.crop_scales, flip=cfg.data.flip,
                           randaug=RandAug() if cfg.data.randaug else None)
    vit = cfg.vit_config()
    default = make_plan(vit, cfg.data.frames * (cfg.data.resolution // vit.patch_size) ** 2, cfg.data.frames,
                        cfg.data.resolution)
    if cfg.data.cache_frames:
        resolution = vit.grid.max_resolution if cfg.data.flexible else cfg.data.resolution
        videos = CachedClips(items, augment, cfg.data.cache_frames, resolution, cfg.data.num_workers)
        return TrainingClips(videos, vit), items
    return TrainingClips(VideoDataset(items, default, augment=augment), vit), items


Built = tuple[Recipe, Any, Callable]


def build_ft(cfg: Any) -> Built:
    """Flux-FT's recipe, labelled clips and collate; class names from the config or the labels."""
    from .recipes.ft import build_recipe

    clips, items = video_clips(cfg, require="label")
    names = list(cfg.ft.class_names) or [str(i) for i in range(max(a.label for a in items) + 1)]
    if max(a.label for a in items) >= len(names):
        raise ConfigError(f"{cfg.data.train} has label {max(a.label for a in items)} but ft.class_names "
                          f"lists {len(names)} classes")
    return build_recipe(cfg, names), clips, skip_bad_collate


def build_umt(cfg: Any) -> Built:
    from .recipes.umt import build_recipe

    clips, _ = video_clips(cfg)
    return build_recipe(cfg), clips, skip_bad_collate


def build_clip(cfg: Any) -> Built:
    from .recipes.clip import build_recipe

    clips, _ = video_clips(cfg, require="caption")
    return build_recipe(cfg), clips, captioned_collate


def build_chat(cfg: Any) -> Built:
    from .recipes.chat import build_datasets, build_recipe

    data = build_datasets(cfg)
    return build_recipe(cfg), data.train, data.collate


def run_training(cfg: TrainConfig, build: Callable[[TrainConfig], Built], export_name: str) -> Path:
    """Train (resuming from the run's newest checkpoint) and export; the path of the exported artifact."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.manual_seed(cfg.seed)  # the config's seed fixes the initial weights too (reruns: ``deterministic``)
    recipe, dataset, collate = build(cfg)
    trainer = Trainer(cfg, recipe, dataset, collate)
    state = trainer.fit()
    target = Path(cfg.output_dir) / export_name
    if trainer.ctx.is_main:
        recipe.export(str(target))
        console.print(f"trained {state.step} steps ({state.samples} samples); exported {target}")
    return target


def _command(cfg: TrainConfig, build: Callable, export_name: str) -> None:
    try:
        run_training(cfg, build, export_name)
    except (ConfigError, AnnotationError, FileNotFoundError, ValueError) as exc:
        fail(exc)


def _config_or_exit(path: Path, cls: type[TrainConfig], sets: list[str]) -> TrainConfig:
    try:
        return _load(path, cls, sets)
    except ConfigError as exc:
        fail(exc)


@app.command("ft")
def train_ft(config: Path = typer.Option(..., help=CONFIG_HELP),
             set_: list[str] = typer.Option([], "--set", help=SET_HELP)) -> None:
    """Flux-FT: supervised classification, three token counts per batch with self-distillation."""
    from .recipes.ft import FTConfig

    _command(_config_or_exit(config, FTConfig, set_), build_ft, "final.pt")


@app.command("umt")
def train_umt(config: Path = typer.Option(..., help=CONFIG_HELP),
              set_: list[str] = typer.Option([], "--set", help=SET_HELP)) -> None:
    """Flux-UMT: distil a frozen teacher into FluxViT with the Double Mask Module."""
    from .recipes.umt import UMTConfig

    _command(_config_or_exit(config, UMTConfig, set_), build_umt, "final.pt")


@app.command("clip")
def train_clip(config: Path = typer.Option(..., help=CONFIG_HELP),
               set_: list[str] = typer.Option([], "--set", help=SET_HELP)) -> None:
    """Flux-CLIP: video-text contrastive training of the dual encoder used for search."""
    from .recipes.clip import ClipConfig

    _command(_config_or_exit(config, ClipConfig, set_), build_clip, "dual_encoder.pt")


@app.command("chat")
def train_chat(config: Path = typer.Option(..., help=CONFIG_HELP),
               set_: list[str] = typer.Option([], "--set", help=SET_HELP)) -> None:
    """The chat projector (ViT and LLM frozen; optional LoRA), on JSONL instruction data."""
    from chat.projector import PROJECTOR_FILE

    from .recipes.chat import ChatConfig

    _command(_config_or_exit(config, ChatConfig, set_), build_chat, PROJECTOR_FILE)


eval_app = typer.Typer(help="Evaluate per token budget: accuracy or retrieval against tokens and GMACs.",
                       no_args_is_help=True)
BUDGET_HELP = "Comma-separated token budgets; each is planned by Token Optimization (see `fluxvid encoder plan`)."


def _print_rows(rows: list[dict[str, Any]], as_json: bool, title: str) -> None:
    import json

    from rich.table import Table

    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(*rows[0].keys(), title=title)
    for row in rows:
        table.add_row(*(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row.values()))
    Console().print(table)


@eval_app.command("classify")
def eval_classify(
    checkpoint: Path = typer.Option(..., help="Classifier checkpoint (FluxVid file, or released .pth with --model)."),
    data: Path = typer.Option(..., help="Annotations with path and label (CSV/JSONL)."),
    budget: str = typer.Option("512,1024,2048,3072", help=BUDGET_HELP),
    model: str | None = typer.Option(None, help="Registered model name, for released checkpoints."),
    profile: Path | None = typer.Option(None, help="Budget profile JSON from `fluxvid encoder tune-budget`."),
    clips: int = typer.Option(1, min=1, help="Temporal clips per video (model zoo: 4)."),
    crops: int = typer.Option(1, min=1, max=3, help="Spatial crops per clip (1 or 3; model zoo: 3)."),
    batch_size: int = typer.Option(4, min=1),
    workers: int = typer.Option(2, min=0),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Top-1 / top-5 per budget with `frames x crops x clips` views and softmax averaging."""
    import torch

    from encoder.budget import BudgetProfile, plan
    from encoder.checkpoint import CheckpointError, load_model
    from encoder.evaluate import evaluate_classifier

    try:
        classifier, _ = load_model(checkpoint, name=model)
        items = read_annotations(data)
        loaded = BudgetProfile.load(profile) if profile else None
    except (CheckpointError, AnnotationError, FileNotFoundError, ValueError) as exc:
        fail(exc)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = []
    for b in parse_budgets(budget):
        p = plan(b, classifier.config, loaded)
        result = evaluate_classifier(classifier, items, p, clips, crops, batch_size, workers, device=device)
        rows.append({"budget": b, "sampling": f"{p.frames}x{p.resolution}", "tokens": p.tokens,
                     "GMACs": round(p.est_gmacs, 2), "views": f"{p.frames}x{crops}x{clips}",
                     "top1": round(100 * result.top1, 2), "top5": round(100 * result.top5, 2),
                     "videos": result.videos, "skipped": len(result.skipped)})
    _print_rows(rows, as_json, f"classification on {data}")


@eval_app.command("retrieval")
def eval_retrieval(
    data: Path = typer.Option(..., help="Annotations with path and caption (several captions per video allowed)."),
    model: Path | None = typer.Option(
        None, help="Dual encoder file from `fluxvid train clip` (default with --index: the index's own)."),
    index: list[Path] = typer.Option(
        [], help="Score an index's stored whole-video vectors instead of re-encoding (repeatable: one per budget)."),
    budget: str = typer.Option("512,1024,2048", help=BUDGET_HELP + " Ignored with --index (the index's budget)."),
    batch_size: int = typer.Option(8, min=1),
    workers: int = typer.Option(2, min=0),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Text->video and video->text R@1/5/10, median and mean rank per budget, with and without dual softmax."""
    import torch

    from encoder.budget import plan
    from index import IndexStoreError, VideoIndex
    from retrieval.dual_encoder import DualEncoder
    from retrieval.evaluate import evaluate_index_retrieval, evaluate_retrieval

    if model is None and not index:
        fail("give --model, or --index to score built indexes")
    try:
        items = read_annotations(data)
        rows = []
        for folder in index:
            opened = VideoIndex.open(folder)
            dual = DualEncoder.load(model or opened.info.model_path)
            if dual.model_id != opened.info.model_id:
                raise IndexStoreError(folder, f"was built with {opened.info.model_id}, not {model}")
            p = plan(opened.info.budget, dual.vision.config)
            result = evaluate_index_retrieval(opened, dual, items)
            rows += _retrieval_rows(result, p, f"{folder}")
        if not index:
            dual = DualEncoder.load(model)
            device = "cuda" if torch.cuda.is_available() else "cpu"
            for b in parse_budgets(budget):
                p = plan(b, dual.vision.config)
                rows += _retrieval_rows(evaluate_retrieval(dual, items, p, batch_size, workers, device=device), p)
    except (AnnotationError, IndexStoreError, FileNotFoundError, ValueError) as exc:
        fail(exc)
    _print_rows(rows, as_json, f"retrieval on {data}")


def _retrieval_rows(result: Any, p: Any, source: str | None = None) -> list[dict[str, Any]]:
    return [{**({"index": source} if source else {}), "budget": p.budget, "sampling": f"{p.frames}x{p.resolution}",
             "GMACs": round(p.est_gmacs, 2), "scoring": name, **metrics.as_dict(), "videos": result.videos,
             "skipped": len(result.skipped)}
            for name, metrics in (("plain", result.plain), ("dual softmax", result.dual_softmax))]
