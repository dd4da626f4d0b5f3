"""Where the demo's shipped models live and what each file is for (the app and the tests read them here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chat.projector import PROJECTOR_FILE

MODELS_DIR = Path(__file__).parent / "models"
DEMO_HOME = Path("runs/demo")  # the served world, library and index; training works under train/
DUAL_ENCODER = "dual_encoder.pt"  # Flux-CLIP: search
CLASSIFIER = "classifier.pt"  # Flux-FT: the 12 actions
PROJECTOR = PROJECTOR_FILE  # chat projector; its ViT and LLM lie beside it, named relative to it
CHAT_VISION = "projector-vision.pt"  # the chat's first eyes: the Flux-FT ViT (frozen in chat training)
CHAT_SCENE_VISION = "projector-second-vision.pt"  # its second: the Flux-CLIP ViT, fine-tuned by chat training
LLM = "projector-llm"  # the chat LM and its tokenizer
MANIFEST = "demo_models.json"  # command, seed, recipe, steps, timings and test-split metrics

#: The quality the shipped models must reach on the held-out test split, at every evaluated budget.
QUALITY_BARS = {"text_to_video_r1": 0.6, "text_to_video_r5": 0.9, "action_top1": 0.9, "chat_accuracy": 0.8}


class MissingModelsError(FileNotFoundError):
    """The demo models folder lacks a file: ``fluxvid demo train`` writes them."""


def check_models(folder: Path = MODELS_DIR) -> Path:
    missing = [name for name in (DUAL_ENCODER, CLASSIFIER, PROJECTOR, CHAT_VISION, CHAT_SCENE_VISION, LLM)
               if not (folder / name).exists()]
    if missing:
        raise MissingModelsError(f"demo models folder {folder} lacks {', '.join(missing)}; run `fluxvid demo train` "
                                 "to produce them")
    return folder


def read_manifest(folder: Path = MODELS_DIR) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.is_file():
        raise MissingModelsError(f"{path} does not exist; run `fluxvid demo train`")
    return json.loads(path.read_text())
