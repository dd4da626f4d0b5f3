"""Loader workers against training speed: each stage of ``fluxvid demo train`` run for real with 0, 1 and 2
DataLoader worker processes.

Renders ``--clips`` training clips of the demo world, then trains each stage from the demo's own config
(``app.demo.train``: Flux-CLIP from scratch, Flux-FT and the chat from the shipped ViTs and LM) for ``--steps``
optimizer steps with its frames cached in memory, as the demo does. Reports the seconds per step of the training
loop after its first ``--warmup`` steps (worker start-up, allocator), as the engine's own log measures it, the
cache build, and the loss at the last step: deterministic kernels and per-sample seeds make it the same whatever
the workers, so the rows differ in speed only. The clips are enough for the steps to stay in one epoch (a real run
starts its workers once per epoch of about 200 steps).

    python bench/train_workers.py               # about five minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.demo.generate import generate_world  # noqa: E402
from app.demo.shipped import CHAT_SCENE_VISION, CHAT_VISION, LLM, MODELS_DIR  # noqa: E402
from app.demo.train import DemoTraining, chat_config, clip_config, ft_config  # noqa: E402
from app.demo.world import WorldConfig  # noqa: E402
from bench.report import save_table  # noqa: E402
from training.cli import build_chat, build_clip, build_ft  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.engine import Trainer  # noqa: E402
from training.recipes.chat import ChatConfig  # noqa: E402
from training.recipes.clip import ClipConfig  # noqa: E402
from training.recipes.ft import FTConfig  # noqa: E402


def stage_configs(knobs: DemoTraining, world: Path, runs: Path) -> dict[str, tuple[dict, type[TrainConfig], Callable]]:
    """The demo's three stage configs; Flux-FT starts from the shipped Flux-CLIP ViT, as its run does."""
    scene = MODELS_DIR / CHAT_SCENE_VISION
    return {
        "Flux-CLIP": (clip_config(knobs, world, runs / "clip"), ClipConfig, build_clip),
        "Flux-FT": (ft_config(knobs, world, runs / "ft", scene), FTConfig, build_ft),
        "chat": (chat_config(knobs, world, runs / "chat", MODELS_DIR / CHAT_VISION, scene, MODELS_DIR / LLM),
                 ChatConfig, build_chat),
    }


def train_once(config: dict[str, Any], cls: type[TrainConfig], build: Callable, steps: int, warmup: int
               ) -> dict[str, float]:
    """Build (caching the frames), then train ``warmup + steps`` steps; seconds a step after the warm-up, from the
    engine's log every ``warmup`` steps, and the last logged loss."""
    config = {**config, "max_steps": warmup + steps, "log_every": warmup, "save_every": warmup + steps}
    cfg = cls.model_validate(config)
    torch.manual_seed(cfg.seed)
    began = time.perf_counter()
    recipe, dataset, collate = build(cfg)
    built = time.perf_counter()
    Trainer(cfg, recipe, dataset, collate).fit()
    logged = [json.loads(line) for line in (Path(cfg.output_dir) / "metrics.jsonl").read_text().splitlines()]
    seconds = sum(warmup * cfg.data.batch_size / record["samples_per_s"] for record in logged[1:])
    return {"build s": round(built - began, 1), "s / step": round(seconds / (len(logged) - 1) / warmup, 3),
            "loss": round(logged[-1]["loss"], 6)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=1200)
    parser.add_argument("--steps", type=int, default=30, help="timed steps, after the warm-up")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--workers", default="0,1,2", help="comma-separated worker counts to compare")
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    if args.steps % args.warmup:
        parser.error("--steps must be a multiple of --warmup (the engine logs every --warmup steps)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        world = generate_world(Path(tmp) / "world", WorldConfig(train=args.clips, val=2, test=2, seed=0),
                               splits=("train",))
        for workers in counts:
            configs = stage_configs(DemoTraining(workers=workers), world, Path(tmp) / f"runs{workers}")
            for stage, (config, cls, build) in configs.items():
                timed = train_once(config, cls, build, args.steps, args.warmup)
                rows.append({"stage": stage, "workers": workers, **timed})
    rows.sort(key=lambda r: (r["stage"], r["workers"]))
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    save_table("train_workers", machine, ["stage", "workers", "s / step", "build s", "loss"], rows,
               note=f"the demo's stage configs on {args.clips} training clips, {args.steps} steps timed after "
                    f"{args.warmup}, batch 32, frames cached; loss at the last step")


if __name__ == "__main__":
    main()
