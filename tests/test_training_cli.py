"""The training and evaluation commands end to end, on clips written during the test with PyAV."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.clips import write_frames, write_garbage

COLOURS = {"red": (230, 40, 40), "blue": (40, 40, 230)}
ROOT = Path(__file__).resolve().parents[1]


def coloured_square(path: Path, colour: tuple[int, int, int], seed: int, frames: int = 8, side: int = 64) -> Path:
    rng = np.random.default_rng(seed)
    video = rng.integers(0, 80, size=(frames, side, side, 3), dtype=np.uint8)
    top = int(rng.integers(0, side - 24))
    for t in range(frames):
        left = t * (side - 24) // (frames - 1)
        video[t, top:top + 24, left:left + 24] = colour
    return write_frames(path, video)


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("colours")
    for split, count, offset in (("train", 16, 0), ("val", 6, 100)):
        rows = []
        for i in range(count):
            name = "red" if i % 2 == 0 else "blue"
            clip = coloured_square(folder / f"{split}_{i}.mp4", COLOURS[name], seed=offset + i)
            rows.append({"path": clip.name, "label": i % 2, "caption": f"a {name} square slides right"})
        with (folder / f"{split}.jsonl").open("w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    return folder


def fluxvid(*args: str, timeout: int = 600, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    command = (launcher or [sys.executable, "-m", "app.cli"]) + list(args)
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def write_config(path: Path, library: Path, output: Path, **extra) -> Path:
    config = {
        "output_dir": str(output), "model": "fluxvit_tiny_patch14", "seed": 1, "epochs": 100, "max_steps": 24,
        "log_every": 4, "save_every": 12, "tensorboard": True,
        "model_overrides": {"img_size": 56, "num_frames": 8},
        "optim": {"lr": 1e-3, "warmup_steps": 2},
        "data": {"train": str(library / "train.jsonl"), "batch_size": 4, "num_workers": 1, "randaug": False,
                 "flip": False, "budgets": [256, 128, 64]},
        "ft": {"class_names": ["red", "blue"], "mixup_alpha": 0.0, "cutmix_alpha": 0.0},
    }
    for key, value in extra.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) and key in config else value
    path.write_text(yaml.safe_dump(config))
    return path


def test_ft_trains_evaluates_and_tunes_budgets_from_the_command_line(library: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path / "ft.yaml", library, tmp_path / "ft")
    done = fluxvid("train", "ft", "--config", str(config))
    assert done.returncode == 0, done.stderr[-3000:]
    final = tmp_path / "ft" / "final.pt"
    assert final.exists() and any((tmp_path / "ft" / "tensorboard").iterdir())
    steps = [json.loads(line)["step"] for line in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [4, 8, 12, 16, 20, 24]

    evaluated = fluxvid("eval", "classify", "--checkpoint", str(final), "--data", str(library / "val.jsonl"),
                        "--budget", "64,256", "--clips", "2", "--crops", "3", "--json")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    rows = json.loads(evaluated.stdout)
    assert [r["budget"] for r in rows] == [64, 256] and all(r["videos"] == 6 for r in rows)
    assert rows[0]["views"].endswith("x3x2") and rows[0]["GMACs"] < rows[1]["GMACs"]
    assert max(r["top1"] for r in rows) >= 80.0, rows

    profile = tmp_path / "profile.json"
    tuned = fluxvid("encoder", "tune-budget", "--checkpoint", str(final), "--data", str(library / "val.jsonl"),
                    "--budget", "64", "--out", str(profile), "--start-resolution", "84", "--workers", "0")
    assert tuned.returncode == 0, tuned.stderr[-3000:]
    entry = json.loads(profile.read_text())["entries"][0]
    assert entry["budget"] == 64 and entry["resolution"] <= 84 and 0.0 <= entry["score"] <= 1.0


def test_torchrun_runs_two_ddp_processes_from_the_same_command(library: Path, tmp_path: Path) -> None:
    """Batch size 1 and a corrupt video: one rank meets an empty micro-batch, and both ranks skip it together."""
    train = tmp_path / "train.jsonl"
    rows = [{**r, "path": str(library / r["path"])}
            for r in map(json.loads, (library / "train.jsonl").read_text().splitlines()[:3])]
    broken = tmp_path / "broken.mp4"
    write_garbage(broken, 2000, prefix=b"\x00\x00\x00\x18ftypmp42")
    train.write_text("".join(json.dumps(r) + "\n" for r in rows + [{"path": str(broken), "label": 1}]))
    config = write_config(tmp_path / "ddp.yaml", library, tmp_path / "ddp", max_steps=4, save_every=4,
                          distributed={"backend": "ddp"}, data={"train": str(train), "batch_size": 1})
    with socket.socket() as probe:  # a free port: torchrun passes --master_port to the workers as given
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                "--master_port", str(port), "-m", "app.cli"]
    done = fluxvid("train", "ft", "--config", str(config), launcher=launcher, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    checkpoint = torch.load(tmp_path / "ddp" / "checkpoints" / "step-0000004.pt", weights_only=False)
    assert checkpoint["state"]["samples"] == 4 * 1 * 2, "both ranks consumed batches"
    assert len(checkpoint["rng"]) == 2, "every rank's RNG state is kept for an exact resume"
    skipped = [json.loads(line) for f in (tmp_path / "ddp").glob("skipped-rank*.jsonl")
               for line in f.read_text().splitlines()]
    assert skipped and {s["path"] for s in skipped} == {str(broken)}
    metrics = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == 4 and all(math.isfinite(m["loss"]) for m in metrics)


def test_clip_trains_a_dual_encoder_that_retrieves_by_colour(library: Path, tmp_path: Path) -> None:
    text = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
    config = write_config(tmp_path / "clip.yaml", library, tmp_path / "clip", max_steps=80, log_every=10,
                          save_every=80, optim={"lr": 5e-4, "warmup_steps": 5, "weight_decay": 0.02},
                          clip={"stage": 2, "text": text, "embed_dim": 32})
    raw = yaml.safe_load(config.read_text())
    raw.pop("ft")
    config.write_text(yaml.safe_dump(raw))
    done = fluxvid("train", "clip", "--config", str(config))
    assert done.returncode == 0, done.stderr[-3000:]
    val = library / "val_pairs.jsonl"
    val.write_text("".join(json.dumps({"path": f"val_{i}.mp4", "caption": f"a {name} square slides right"}) + "\n"
                           for i, name in ((0, "red"), (1, "blue"))))
    evaluated = fluxvid("eval", "retrieval", "--model", str(tmp_path / "clip" / "dual_encoder.pt"),
                        "--data", str(val), "--budget", "128", "--json")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    rows = json.loads(evaluated.stdout)
    assert [r["scoring"] for r in rows] == ["plain", "dual softmax"]
    assert rows[0]["t2v/R@1"] == 100.0 and rows[0]["v2t/R@1"] == 100.0, rows


@pytest.mark.parametrize("cache_frames", [0, 4], ids=["decoded-per-batch", "frame-cache"])
def test_corrupt_training_videos_are_skipped_and_reported(library: Path, tmp_path: Path, cache_frames: int) -> None:
    broken = tmp_path / "broken.mp4"
    write_garbage(broken, 2000, prefix=b"\x00\x00\x00\x18ftypmp42")
    train = tmp_path / "train.jsonl"
    rows = [json.loads(line) for line in (library / "train.jsonl").read_text().splitlines()][:7]
    rows = [{**r, "path": str(library / r["path"])} for r in rows] + [{"path": str(broken), "label": 0}]
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = write_config(tmp_path / "ft.yaml", library, tmp_path / "run", max_steps=4, save_every=4,
                          data={"train": str(train), "cache_frames": cache_frames})
    done = fluxvid("train", "ft", "--config", str(config))
    assert done.returncode == 0, done.stderr[-3000:]
    skipped = [json.loads(line) for line in (tmp_path / "run" / "skipped-rank0.jsonl").read_text().splitlines()]
    assert skipped and all(s["path"] == str(broken) and s["reason"] for s in skipped)


def test_bad_config_exits_non_zero_naming_the_file_and_field(tmp_path: Path) -> None:
    config = tmp_path / "broken.yaml"
    config.write_text("output_dir: out\nmodel: fluxvit_tiny_patch14\nmax_steps: -3\ndata: {train: x.csv}\n")
    done = fluxvid("train", "ft", "--config", str(config))
    assert done.returncode == 2
    assert "broken.yaml" in done.stderr and "max_steps" in done.stderr
    missing = fluxvid("train", "umt", "--config", str(tmp_path / "absent.yaml"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
