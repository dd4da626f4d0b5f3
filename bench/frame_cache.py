"""Training input throughput with and without the caches, on demo-world clips: the frame cache of Flux-UMT / FT /
CLIP (``data.cache_frames``) and the chat's clip cache (``chat.cache_clips``).

Renders ``--clips`` training clips of the demo world, then feeds the demo's Flux-FT batches (flexible 4 or 8
frames at 84 px, batch 32, ``--workers`` decode workers) through the training DataLoader: once decoding every
sample, once from frames decoded once (``--cache-frames`` per clip); then the demo chat's batches (its
conversations, 8 frames at 84 px, tokenised with the shipped LM's tokenizer), decoded every time and cached.
Reports samples/s of the input pipeline alone, each cache's build time and its memory.

    python bench/frame_cache.py                 # 240 clips, about two minutes on 2 cores
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.demo.generate import generate_world  # noqa: E402
from app.demo.shipped import CHAT_SCENE_VISION, CHAT_VISION, CLASSIFIER, LLM, MODELS_DIR  # noqa: E402
from app.demo.train import DemoTraining, chat_config  # noqa: E402
from app.demo.world import WorldConfig  # noqa: E402
from bench.report import save_table  # noqa: E402
from encoder import load_model, make_plan  # noqa: E402
from encoder.video import TrainAugment, VideoDataset, read_annotations, skip_bad_collate  # noqa: E402
from training.data import ResumableBatchSampler, TrainingClips  # noqa: E402
from training.frame_cache import CachedClips  # noqa: E402
from training.recipes.chat import ChatConfig, ChatData, build_datasets  # noqa: E402


def rate(loader: DataLoader, batches: int) -> float:
    """Samples/s over ``batches`` batches (the first batch, worker start-up, not counted)."""
    seen, start = 0, None
    for i, batch in enumerate(loader):
        if i == 0:
            start = time.perf_counter()
            continue
        seen += batch["video"].shape[0]
        if i == batches:
            break
    return seen / (time.perf_counter() - start)


def samples_per_second(clips: TrainingClips, vit, batches: int, workers: int) -> float:
    """The Flux-FT input pipeline: batches of 32, flexible 4 or 8 frames at 84 px."""
    sampler = ResumableBatchSampler(len(clips), 32, vit, seed=0, flexible=True, frames=8, resolution=84)
    return rate(DataLoader(clips, batch_sampler=sampler, collate_fn=skip_bad_collate, num_workers=workers), batches)


def chat_samples_per_second(data: ChatData, batches: int, workers: int) -> float:
    """The chat's input pipeline: shuffled batches of 32 conversations."""
    return rate(DataLoader(data.train, batch_size=32, shuffle=True, collate_fn=data.collate, num_workers=workers,
                           generator=torch.Generator().manual_seed(0)), batches)


def chat_rows(world: Path, batches: int, workers: int) -> list[dict]:
    """The demo chat stage's own config (``app.demo.train.chat_config``) with and without ``chat.cache_clips``."""
    config = chat_config(DemoTraining(workers=workers), world, world / "run", MODELS_DIR / CHAT_VISION,
                         MODELS_DIR / CHAT_SCENE_VISION, MODELS_DIR / LLM)
    rows = []
    for cached in (False, True):
        config["chat"]["cache_clips"] = cached
        began = time.perf_counter()
        data = build_datasets(ChatConfig.model_validate(config))
        build = time.perf_counter() - began
        speed = chat_samples_per_second(data, batches, workers)
        rows.append({"input": "chat: " + ("clip cache" if cached else "decode every sample"),
                     "samples/s": round(speed, 1), "build s": round(build, 1) if cached else "-",
                     "memory MB": round(data.train.nbytes / 2**20, 1) if cached else "-"})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=240)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cache-frames", type=int, default=16)
    args = parser.parse_args()
    vit = load_model(MODELS_DIR / CLASSIFIER)[0].config  # the demo's grid: 4 or 8 frames at 84 px
    augment = TrainAugment(scales=(1.0,), flip=False)
    with tempfile.TemporaryDirectory() as tmp:
        world = generate_world(Path(tmp) / "world", WorldConfig(train=args.clips, val=2, test=2, seed=0),
                               splits=("train",))
        items = read_annotations(world / "train_actions.jsonl", world)
        default = VideoDataset(items, make_plan(vit, 8 * 36, 8, 84), augment=augment)  # keys bring their plans
        decoded = samples_per_second(TrainingClips(default, vit), vit, args.batches, args.workers)
        began = time.perf_counter()
        cache = CachedClips(items, augment, args.cache_frames, vit.grid.max_resolution, args.workers)
        build = time.perf_counter() - began
        cached = samples_per_second(TrainingClips(cache, vit), vit, args.batches, args.workers)
        chat = chat_rows(world, args.batches, args.workers)
        conversations = len((world / "train_chat.jsonl").read_text().splitlines())
    rows = [{"input": "Flux-FT: decode every sample", "samples/s": round(decoded, 1), "build s": "-",
             "memory MB": "-"},
            {"input": f"Flux-FT: frame cache ({args.cache_frames} frames)", "samples/s": round(cached, 1),
             "build s": round(build, 1), "memory MB": round(cache.nbytes / 2**20, 1)}, *chat]
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    save_table("frame_cache", machine, ["input", "samples/s", "build s", "memory MB"], rows,
               note=f"{len(items)} demo action windows and {conversations} chat conversations, batch 32, "
                    f"{args.workers} workers, input pipeline only")


if __name__ == "__main__":
    main()
