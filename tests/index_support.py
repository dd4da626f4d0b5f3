"""Builders shared by the index tests (no tests here): a tiny dual encoder file and a small library of clips."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from encoder import plan
from encoder.video import load_clip
from retrieval.dual_encoder import DualEncoder, build_dual_encoder
from training.losses import info_nce
from tests.clips import sample_video, write_frames

TINY_TEXT = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
COLOURS = {"red": (230, 40, 40), "blue": (40, 40, 230), "green": (40, 220, 40), "yellow": (230, 230, 40)}


def tiny_dual_encoder(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    build_dual_encoder("fluxvit_tiny_patch14", text=TINY_TEXT, embed_dim=32, img_size=56, num_frames=8).save(path)
    return path


def load_model(path: Path) -> DualEncoder:
    return DualEncoder.load(path)


def coloured_clip(path: Path, colour: str, seconds: float = 5.0, fps: int = 8, seed: int = 0,
                  moving: bool = False) -> Path:
    """A noisy background with a square of ``colour`` (sliding right when ``moving``)."""
    rng = np.random.default_rng(seed)
    frames = int(seconds * fps)
    video = rng.integers(0, 60, size=(frames, 64, 96, 3), dtype=np.uint8)
    for t in range(frames):
        left = 8 + (t * 48 // max(frames - 1, 1) if moving else 0)
        video[t, 20:44, left:left + 24] = COLOURS[colour]
    return write_frames(path, video, fps=fps)


def make_library(folder: Path) -> dict[str, Path]:
    """Four coloured clips, a real sample video (in a sub-folder) and a corrupt file."""
    folder.mkdir(parents=True, exist_ok=True)
    clips = {name: coloured_clip(folder / f"{name}.mp4", name, seconds=3.0 + i, seed=i, moving=i % 2 == 1)
             for i, name in enumerate(COLOURS)}
    (folder / "real").mkdir(exist_ok=True)
    clips["carphone"] = Path(shutil.copy(sample_video("carphone_pristine.mp4"), folder / "real" / "carphone.mp4"))
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    return clips


def write_manifest(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def solid_clip(path: Path, colour: str, seconds: float, seed: int, fps: int = 8) -> Path:
    """Frames of one ``colour`` with per-pixel noise (+-25), so that no two clips are alike."""
    noise = np.random.default_rng(seed).integers(-25, 26, size=(int(seconds * fps), 48, 64, 3))
    return write_frames(path, (np.array(COLOURS[colour]) + noise).clip(0, 255).astype(np.uint8), fps=fps)


def train_dual_encoder(path: Path, pairs: dict[Path, str], budget: int, max_steps: int = 300) -> Path:
    """A tiny dual encoder trained with the CLIP loss on whole clips and their captions until it tells them
    apart (loss under 0.05 at a fixed temperature; 10-50 steps on solid colours), saved to ``path``."""
    model = DualEncoder.load(tiny_dual_encoder(path.with_suffix(".init.pt")))
    video_plan = plan(budget, model.vision.config)
    videos = torch.stack([load_clip(p, video_plan).video for p in pairs])
    tokens = model.tokenize(list(pairs.values()))
    model.temp.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    model.train()
    for _ in range(max_steps):
        loss = info_nce(model.encode_video(videos, keep_tokens=video_plan.keep_tokens, head=video_plan.head),
                        model.encode_tokens(tokens), model.temp)
        if loss.item() < 0.05:
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval().save(path)
    return path
