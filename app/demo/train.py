"""``fluxvid demo train``: the demo models from scratch with the project's own recipes, then shipped.

1. the world (train / val / test splits);
2. Flux-CLIP, stage 2 from scratch, with the world's hard-negative captions: the tiny FluxViT and a small
   open_clip text tower (``dual_encoder.pt``);
3. Flux-FT from the Flux-CLIP vision tower: the 12-action classifier (``classifier.pt``);
4. a byte-level BPE tokenizer and a small Qwen2 built for the demo's text, then the chat recipe training the
   projector, the whole LM and the Flux-CLIP ViT, which reads the tokens the frozen Flux-FT ViT keeps, on the
   world's conversations (``projector.safetensors`` + ``projector-vision.pt`` + ``projector-second-vision.pt``
   + ``projector-llm/``);
5. Token Optimization of each model on the validation split (:mod:`app.demo.tune`), ``fluxvid demo eval`` on
   the test split, and the files moved into the models folder with a manifest that records the command, seed,
   knobs, timings, choices and metrics.

Each stage writes its YAML config next to its run (``fluxvid train clip|ft|chat --config`` re-runs it alone)
and resumes from its newest checkpoint, so an interrupted ``demo train`` continues where it stopped.
"""

from __future__ import annotations

import json
import platform
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

from chat.projector import load_projector, save_projector
from encoder.checkpoint import save_checkpoint
from retrieval.dual_encoder import DualEncoder
from training.cli import build_chat, build_clip, build_ft, run_training
from training.config import TrainConfig, load_config
from training.recipes.chat import ChatConfig
from training.recipes.clip import ClipConfig
from training.recipes.ft import FTConfig

from .evaluate import EVAL_BUDGETS, evaluate_demo, scores_table
from .generate import SPLITS, generate_world
from .llm import build_llm, corpus
from .shipped import (CHAT_SCENE_VISION, CHAT_VISION, CLASSIFIER, DUAL_ENCODER, LLM, MANIFEST, MODELS_DIR, PROJECTOR,
                      read_manifest)
from .tune import tune_models
from .world import ACTIONS, WorldConfig

#: LayerScale's initial value: the release's 1e-5 suits long runs of deep models; a 4-block model trained for
#: minutes from scratch would stay nearly blockless (a bag of patch embeddings that cannot see motion).
DEMO_LAYER_SCALE = 0.1
#: Two frames per patch (tubelet 2): the patch embedding sees the change between neighbouring frames, so motion
#: is in the tokens from the first step instead of something attention has to discover across frames. From the
#: same Flux-CLIP tower, Flux-FT left chance about 300 steps sooner (loss 3.42 against 4.47 at step 300).
DEMO_TUBELET = 2
#: The demo's training grid: 8 or 16 frames at 84 px (pools of 144 or 288 tokens), 256 and 128 kept per batch.
DEMO_GRID = {"min_frames": 8, "max_frames": 16, "frame_step": 8, "min_resolution": 84, "max_resolution": 84,
             "token_threshold": [128, 512]}
#: Its starting Token Optimization table (128 and 256 tokens at 16 frames x 84 px; larger budgets, beyond
#: training, add resolution, then frames); after training, :mod:`app.demo.tune` re-picks 128 and 256 per model.
DEMO_PROFILE = [{"budget": 128, "frames": 16, "resolution": 84}, {"budget": 256, "frames": 16, "resolution": 84},
                {"budget": 512, "frames": 16, "resolution": 112}, {"budget": 1024, "frames": 32, "resolution": 112}]
TEXT_TOWER = {"context_length": 32, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 2}


@dataclass(frozen=True)
class DemoTraining:
    """The knobs of ``fluxvid demo train`` (recorded in the manifest)."""

    seed: int = 0
    train_clips: int = 6000
    val_clips: int = 240  # Token Optimization picks by it: 60 clips told 4 and 8 frames apart by one clip
    test_clips: int = 120
    clip_steps: int = 1200
    ft_steps: int = 2000
    chat_steps: int = 800  # chat 0.826 / 0.834 at 128 / 256 tokens; 1000 steps: 0.838 / 0.858, 3.4 minutes more
    batch_size: int = 32
    #: Loader processes per run (decoding, evaluation). 0 on 2 cores: with the frames cached a batch takes about
    #: 30 ms to assemble, and workers take the cores from the step. The same models; the ViT stages' steps are
    #: 13-21% faster than with 1 or 2, the chat's about even (``bench/train_workers.py``).
    workers: int = 0
    cache_frames: int = 16

    def __post_init__(self) -> None:
        largest = DEMO_GRID["max_frames"]
        if 0 < self.cache_frames < largest:  # a batch of `largest` frames would repeat cached ones, and a patch
            raise ValueError(f"cache_frames must be 0 or at least {largest} (the most frames a training batch "
                             f"takes), got {self.cache_frames}")  # of two equal frames shows no motion

    def world(self) -> WorldConfig:
        return WorldConfig(train=self.train_clips, val=self.val_clips, test=self.test_clips, seed=self.seed)

    @classmethod
    def from_manifest(cls, models: Path = MODELS_DIR) -> "DemoTraining":
        """The knobs the models in ``models`` were trained with (so their world can be rendered again)."""
        return cls(**read_manifest(models)["knobs"])


def _data(knobs: DemoTraining, world: Path, train: str, budgets: list[int]) -> dict[str, Any]:
    """Frames decoded once per clip (``knobs.cache_frames``): decoding a clip costs more than a step of this ViT."""
    return {"train": str(world / train), "root": str(world), "batch_size": knobs.batch_size,
            "num_workers": knobs.workers, "budgets": budgets, "flexible": True, "crop_scales": [1.0], "flip": False,
            "randaug": False, "cache_frames": knobs.cache_frames}


def _common(run: Path, seed: int, steps: int) -> dict[str, Any]:
    """Deterministic kernels: a rerun on the same machine gives the same models (the default ones drift apart)."""
    return {"output_dir": str(run), "model": "fluxvit_tiny_patch14",
            "model_overrides": {"grid": DEMO_GRID, "profile": DEMO_PROFILE, "init_values": DEMO_LAYER_SCALE,
                                "tubelet_size": DEMO_TUBELET},
            "seed": seed, "deterministic": True, "epochs": 100, "max_steps": steps, "log_every": 50,
            "save_every": 250, "tensorboard": False}


def clip_config(knobs: DemoTraining, world: Path, run: Path) -> dict[str, Any]:
    """Flux-CLIP stage 2 from scratch; no flips (left and right are different captions). The world's rows carry
    hard negatives (:func:`app.demo.world.negative_captions`), which the recipe adds to the video->text side:
    without them R@1 was 0.633 / 0.642 and the chat's shape answers 0.58, with them 0.708 / 0.683 and 0.65 / 0.69."""
    return {**_common(run, knobs.seed, knobs.clip_steps),
            "optim": {"lr": 1.0e-3, "min_lr": 1.0e-5, "weight_decay": 0.02, "warmup_steps": 50},
            "data": _data(knobs, world, "train.jsonl", [256, 128]),
            "clip": {"stage": 2, "text": TEXT_TOWER, "embed_dim": 128}}


def ft_config(knobs: DemoTraining, world: Path, run: Path, vision: Path) -> dict[str, Any]:
    """Flux-FT from the Flux-CLIP vision tower on every single-action clip and action window, at both served
    budgets (a classifier trained at 128 tokens alone scored 0.68 at 256 against 0.80 at 128). Without layer
    decay the early blocks, which must learn the motion that contrastive training left out, move as fast as the
    rest (0.78 against 0.68-0.70 top-1 after 1500 steps with layer decay 0.9). AdamW's betas (0.9, 0.95) and
    clipping at 1.0 reach in 2000 steps the top-1 that the default betas reach in 4000 (0.971 / 0.942 at 128 /
    256 tokens; 1500 steps: 0.885 / 0.863)."""
    return {**_common(run, knobs.seed, knobs.ft_steps), "init_checkpoint": str(vision), "drop_path": 0.0,
            "optim": {"lr": 2.0e-3, "min_lr": 1.0e-5, "weight_decay": 0.05, "warmup_steps": 50,
                      "betas": [0.9, 0.95], "grad_clip": 1.0},
            "data": _data(knobs, world, "train_actions.jsonl", [256, 128]),
            "ft": {"class_names": list(ACTIONS), "label_smoothing": 0.1, "mixup_alpha": 0.0, "cutmix_alpha": 0.0}}


def chat_config(knobs: DemoTraining, world: Path, run: Path, vision: Path, scene_vision: Path, llm: Path
                ) -> dict[str, Any]:
    """Projector, LM and the Flux-CLIP ViT together on every training conversation (all of a clip's questions,
    shuffled): an LM from scratch learns the questions end to end. Half the conversations train each question as
    if asked first (``independent_turns: 0.5``, packed behind the shared video): in a dialogue "What does the red
    triangle do?" tells "What shape is the red object?" its answer, and the LM learnt to copy instead of to look
    (shape 0.65 / 0.69 at 128 / 256 tokens asked first, all dialogues; 0.72 / 0.71 with half packed; chat 0.804 /
    0.838 against 0.838 / 0.858). All packed lost the dialogues: the same questions asked one after another in a
    session scored 0.605, against 0.906 all dialogues and 0.916 half. Two pairs of eyes: the Flux-FT ViT knows what
    happens but counts poorly; the Flux-CLIP ViT (``second_vision``, reading the tokens the first keeps) counts
    well but tells actions apart poorly (the first alone: 0.782 / 0.778 at 128 / 256 tokens, the second alone
    0.615 / 0.559). The summary embedding (``summary_token``: both ViTs' attention-pooled features, the
    classifier's own input among them) answers "what does X do" (0.90-0.92 against 0.78 without it). Only the
    second ViT is fine-tuned, at 0.3 of the lr (``train_vision: second``): it counts and grounds better for it
    (count 0.92 / 0.95, chat 0.810 / 0.804) than frozen (0.788 / 0.782), and the first, frozen, needs no
    backward (20 minutes against 29 with both fine-tuned, which scored 0.802 / 0.816 without the summary).
    Batches keep 128, 128, then 256 tokens of the same frames, so the one projector serves both budgets and
    the harder one gets two turns in three; 16 pooled tokens per two-frame step. With the frame cache on, each
    clip is decoded once (``chat.cache_clips``, about 2 GB for 6000 clips of 16 frames). bf16 autocast: the LM's
    matrix products dominate a step, and on this CPU they run faster in bf16 (16.3 minutes against 18.9), where
    the ViT stages run slower."""
    config = _common(run, knobs.seed, knobs.chat_steps)
    del config["model_overrides"]  # the ViT comes with its config in the checkpoint
    return {**config, "precision": "bf16",
            "optim": {"lr": 2.0e-3, "min_lr": 1.0e-5, "weight_decay": 0.0, "warmup_steps": 50, "betas": [0.9, 0.95],
                      "grad_clip": 1.0},
            "data": {"train": str(world / "train_chat.jsonl"), "root": str(world), "batch_size": knobs.batch_size,
                     "num_workers": knobs.workers},
            "chat": {"llm": str(llm), "vision": str(vision), "second_vision": str(scene_vision), "budget": 256,
                     "train_budgets": [128, 128, 256], "projector": "mlp2", "tokens_per_frame": 16,
                     "summary_token": True, "train_llm": True, "train_vision": "second", "vision_lr_scale": 0.3,
                     "max_length": 512, "independent_turns": 0.5, "cache_clips": knobs.cache_frames > 0}}


def _stage(name: str, config: dict[str, Any], cls: type[TrainConfig], build: Callable, export: str,
           timings: dict[str, float]) -> Path:
    """Write the stage's YAML config, train (resuming), export; skipped when the export already exists."""
    run = Path(config["output_dir"])
    run.mkdir(parents=True, exist_ok=True)
    path = run.parent / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    target, minutes = run / export, run / "minutes.json"  # how long the training took, kept for re-runs
    if not target.exists():
        started = time.monotonic()
        target = run_training(load_config(path, cls), build, export)
        minutes.write_text(json.dumps(round((time.monotonic() - started) / 60, 2)))
    if minutes.is_file():
        timings[name] = json.loads(minutes.read_text())
    return target


def ship_projector(projector: Path, staging: Path) -> None:
    """The projector with both ViTs it names copied beside it under the shipped names: the fine-tuned second is
    exported beside the projector, the frozen first is named by its path (an absolute path stays as it is
    when joined), so the projector is rewritten to point at the copies."""
    weights, info = load_projector(projector)
    shutil.copy2(projector.parent / info.vision, staging / CHAT_VISION)
    shutil.copy2(projector.parent / str(info.second_vision), staging / CHAT_SCENE_VISION)
    save_projector(weights, replace(info, vision=CHAT_VISION, second_vision=CHAT_SCENE_VISION), staging / PROJECTOR)


def render_world(knobs: DemoTraining, work: Path, timings: dict[str, float], progress: bool = True) -> Path:
    """The world in ``work/world``; its minutes are kept, as a stage's, for a re-run that finds it complete."""
    marker, minutes = work / "world" / "world.json", work / "world_minutes.json"
    before = marker.stat().st_mtime_ns if marker.exists() else None
    started = time.monotonic()
    world = generate_world(work / "world", knobs.world(), splits=SPLITS, progress=progress)
    if marker.stat().st_mtime_ns != before:  # rendered now, not found complete
        minutes.write_text(json.dumps(round((time.monotonic() - started) / 60, 2)))
    if minutes.is_file():
        timings["world"] = json.loads(minutes.read_text())
    return world


def train_demo(knobs: DemoTraining, work: Path, models: Path, command: str, progress: bool = True
               ) -> dict[str, Any]:
    """Every stage in ``work``; the shipped files and manifest in ``models``. Returns the manifest."""
    timings: dict[str, float] = {}
    world = render_world(knobs, work, timings, progress)
    dual_path = _stage("clip", clip_config(knobs, world, work / "clip"), ClipConfig, build_clip, DUAL_ENCODER,
                       timings)
    vision = work / "clip_vision.pt"  # Flux-FT starts from it
    if not vision.exists():
        dual = DualEncoder.load(dual_path)
        save_checkpoint(dual.vision, vision, recipe="flux-clip", source=DUAL_ENCODER)
    classifier = _stage("ft", ft_config(knobs, world, work / "ft", vision), FTConfig, build_ft, "final.pt", timings)
    llm = work / "llm_init"
    if not (llm / "config.json").exists():
        durations = [json.loads(line)["duration"] for line in (world / "train_clips.jsonl").read_text().splitlines()]
        build_llm(llm, corpus([world / "train_chat.jsonl"], durations), knobs.seed)
    projector = _stage("chat", chat_config(knobs, world, work / "chat", classifier, vision, llm), ChatConfig,
                       build_chat, PROJECTOR, timings)  # eyes from the action-tuned ViT and the caption-tuned one
    staging = models.with_name(models.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    DualEncoder.load(dual_path).save(staging / DUAL_ENCODER, dtype=torch.float16,  # half the size
                                     **DualEncoder.saved_metadata(dual_path))
    shutil.copy2(classifier, staging / CLASSIFIER)
    ship_projector(projector, staging)
    shutil.copytree(projector.parent / LLM, staging / LLM)
    began = time.monotonic()
    profiles = tune_models(staging, world, EVAL_BUDGETS, knobs.workers)
    scores = evaluate_demo(staging, world, EVAL_BUDGETS, workers=knobs.workers, progress=progress)
    timings["tune and eval"] = round((time.monotonic() - began) / 60, 2)
    manifest = {
        "command": command, "seed": knobs.seed, "knobs": asdict(knobs),
        "configs": {name: f"{name}.yaml" for name in ("clip", "ft", "chat")},
        "minutes": timings, "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, "
                                       f"torch {torch.__version__}, python {platform.python_version()}",
        "token_optimization": profiles, "test_split": scores_table(scores),
        "bars_missed": [text for score in scores for text in score.failures()],
    }
    for name in ("clip", "ft", "chat"):
        shutil.copy2(work / f"{name}.yaml", staging / f"{name}.yaml")
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    if models.exists():
        shutil.rmtree(models)
    staging.rename(models)
    return manifest


def command_line() -> str:
    return "fluxvid " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("fluxvid") else "fluxvid demo train"
