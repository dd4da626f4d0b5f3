"""Step time of each stage of ``fluxvid demo train``: where the demo's training minutes go.

Builds each stage's recipe from the demo's own config (``app.demo.train``), then times whole optimizer steps
(forward, backward, AdamW) on one batch of 32: Flux-CLIP and Flux-FT at each frame count of the demo's grid, at
84 px (their flexible batches draw them all), and the chat on 32 real conversations of a small rendered world,
with the shipped LM. Pixels are random for the ViT stages: the step's cost does not depend on them. Reports the
median and the fastest of ``--steps`` timed steps after two warm-up steps, and the stage's steps per minute at
the median.

    python bench/train_step.py                      # about two minutes on 2 cores
    python bench/train_step.py --precision bf16     # bf16 autocast on the CPU (``precision: bf16``)
    python bench/train_step.py --device cuda        # bf16 autocast, as the engine's ``precision: auto`` on a GPU
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.demo.generate import generate_world  # noqa: E402
from app.demo.shipped import CHAT_SCENE_VISION, CHAT_VISION, LLM, MODELS_DIR  # noqa: E402
from app.demo.train import DemoTraining, chat_config, clip_config, ft_config  # noqa: E402
from app.demo.world import ACTIONS, WorldConfig  # noqa: E402
from bench.report import save_table  # noqa: E402
from encoder.video import read_annotations  # noqa: E402
from training.data import SampleKey  # noqa: E402
from training.engine import to_device  # noqa: E402
from training.recipes.chat import ChatConfig, build_datasets  # noqa: E402
from training.recipes.chat import build_recipe as build_chat  # noqa: E402
from training.recipes.clip import ClipConfig, ClipRecipe  # noqa: E402
from training.recipes.ft import FTConfig, FTRecipe  # noqa: E402

BATCH = 32
WARMUP = 2  # untimed steps first: allocator and kernel selection


def time_steps(recipe: torch.nn.Module, batch: dict[str, Any], steps: int, device: torch.device, bf16: bool
               ) -> list[float]:
    """Seconds per optimizer step, after ``WARMUP`` untimed steps, sorted, under bf16 autocast when ``bf16`` (as
    the engine's ``precision: bf16``). On CUDA each timing ends with a synchronize, so it counts the kernels and
    not just their launch."""
    recipe.train().to(device)
    batch = to_device(batch, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    optimizer = torch.optim.AdamW([p for p in recipe.parameters() if p.requires_grad], lr=1e-5)
    times = []
    for i in range(steps + WARMUP):
        began = time.perf_counter()
        with autocast:
            loss, _ = recipe(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= WARMUP:
            times.append(time.perf_counter() - began)
    return sorted(times)


def row(stage: str, times: list[float]) -> dict[str, Any]:
    median = times[len(times) // 2]
    return {"stage": stage, "median s": round(median, 3), "fastest s": round(times[0], 3),
            "steps / min": round(60 / median, 1)}


def vit_rows(world: Path, steps: int, device: torch.device, bf16: bool) -> list[dict[str, Any]]:
    """Flux-CLIP and Flux-FT from their demo configs (from scratch: a step costs the same from any start). Flux-CLIP
    gets the rendered clips' captions and their hard negatives, as in training, so the text tower sees real
    lengths and counts."""
    knobs = DemoTraining()
    ft = ft_config(knobs, world, world / "ft", world / "unused.pt")
    ft["init_checkpoint"] = None
    annotated = read_annotations(world / "train.jsonl", world)[:BATCH]
    texts = {"text": [a.caption for a in annotated], "negatives": [text for a in annotated for text in a.negatives]}
    stages = [("Flux-CLIP", ClipRecipe(ClipConfig(**clip_config(knobs, world, world / "clip"))), texts),
              ("Flux-FT", FTRecipe(FTConfig(**ft), list(ACTIONS)), {"label": torch.arange(BATCH) % len(ACTIONS)})]
    rows = []
    for name, recipe, targets in stages:
        for frames in recipe.cfg.vit_config().grid.frame_options():
            video = torch.rand(BATCH, 3, frames, 84, 84, generator=torch.Generator().manual_seed(0))
            times = time_steps(recipe, {"video": video, **targets}, steps, device, bf16)
            rows.append(row(f"{name}, {frames} frames", times))
    return rows


def chat_rows(world: Path, steps: int, device: torch.device, bf16: bool) -> list[dict[str, Any]]:
    """The demo chat stage's config on the shipped LM and chat ViTs, one row per budget its batches take in turn
    (each read at its own sampling, as in training; each sample's seed picks its packed or dialogue layout).
    The stage trains in bf16: its rows under ``--precision bf16`` are the ones its run sees."""
    config = chat_config(DemoTraining(), world, world / "chat", MODELS_DIR / CHAT_VISION,
                         MODELS_DIR / CHAT_SCENE_VISION, MODELS_DIR / LLM)
    config["chat"]["cache_clips"] = False
    cfg = ChatConfig.model_validate(config)
    data, recipe = build_datasets(cfg), build_chat(cfg)
    rows = []
    for turn in dict.fromkeys(recipe.budget_turns()):
        batch = data.collate([data.train[SampleKey(i, turn.frames, turn.resolution, i, turn.budget)]
                              for i in range(BATCH)])
        rows.append(row(f"chat, {turn.budget} tokens, {turn.frames} frames",
                        time_steps(recipe, batch, steps, device, bf16)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per row")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="auto: bf16 on CUDA, fp32 on CPU (the engine's rule)")
    parser.add_argument("--name", default="train_step", help="results file: bench/results/NAME.{md,json}")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    device = torch.device(args.device)
    bf16 = args.precision == "bf16" or (args.precision == "auto" and device.type == "cuda")
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        world = generate_world(Path(tmp) / "world", WorldConfig(train=BATCH, val=2, test=2, seed=0),
                               splits=("train",))
        rows = [*vit_rows(world, args.steps, device, bf16), *chat_rows(world, args.steps, device, bf16)]
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    if device.type == "cuda":
        machine += f", {torch.cuda.get_device_name()}"
    machine += ", bf16 autocast" if bf16 else ", fp32"
    save_table(args.name, machine, ["stage", "median s", "fastest s", "steps / min"], rows,
               note=f"batch {BATCH}, the demo's stage configs, {args.steps} timed steps after {WARMUP} warm-up steps")


if __name__ == "__main__":
    main()
