"""The ``fluxvid demo`` commands fail clearly on bad input, and ``demo eval`` scores the shipped models as the
manifest says (JSON output, exit 0 when the bars are met)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from app.demo.evaluate import EVAL_BUDGETS
from app.demo.shipped import MODELS_DIR, QUALITY_BARS, read_manifest
from app.demo.train import DemoTraining, chat_config, clip_config, ft_config, render_world
from tests.test_training_cli import fluxvid
from training.config import load_config
from training.recipes.chat import ChatConfig
from training.recipes.clip import ClipConfig
from training.recipes.ft import FTConfig


def test_help_lists_every_demo_command() -> None:
    result = fluxvid("demo", "--help")
    assert result.returncode == 0
    for command in ("generate", "train", "eval"):
        assert command in result.stdout


def test_missing_models_are_named_with_the_command_that_makes_them(tmp_path: Path) -> None:
    result = fluxvid("demo", "--models", str(tmp_path / "none"), "--home", str(tmp_path / "home"))
    assert result.returncode == 2
    assert "none" in result.stderr and "fluxvid demo train" in result.stderr
    assert not (tmp_path / "home").exists(), "nothing is rendered for models that do not exist"
    result = fluxvid("demo", "eval", "--models", str(tmp_path), "--world", str(tmp_path / "w"))
    assert result.returncode == 2 and "demo_models.json" in result.stderr


def test_an_unknown_split_is_refused(tmp_path: Path) -> None:
    result = fluxvid("demo", "generate", "--out", str(tmp_path / "w"), "--split", "dev")
    assert result.returncode == 2 and "unknown split(s) ['dev']" in result.stderr


def test_eval_prints_json_scores_and_its_exit_code_follows_the_bars(tmp_path: Path) -> None:
    result = fluxvid("demo", "eval", "--world", str(tmp_path / "world"), "--limit", "12", "--budget", "256",
                     "--json")
    rows = json.loads(result.stdout)
    assert [row["budget"] for row in rows] == [256] and rows[0]["clips"] == 12
    searched = {row["budget"]: row for row in read_manifest(MODELS_DIR)["token_optimization"]["search"]}[256]
    assert rows[0]["sampling"] == f"{searched['frames']}x{searched['resolution']}", "the sampling tuned on val"
    assert result.returncode == (0 if all(rows[0][m] >= bar for m, bar in QUALITY_BARS.items()) else 1)
    assert len(list((tmp_path / "world" / "test").glob("*.mp4"))) == read_manifest(MODELS_DIR)["knobs"]["test_clips"]


def test_demo_train_stage_configs_are_valid_recipe_configs(tmp_path: Path) -> None:
    """What ``fluxvid demo train`` writes for each stage loads as that recipe's config, with the knobs in it."""
    knobs = DemoTraining(cache_frames=24, batch_size=8)
    world = tmp_path / "world"
    stages = {"clip": (clip_config(knobs, world, tmp_path / "clip"), ClipConfig),
              "ft": (ft_config(knobs, world, tmp_path / "ft", tmp_path / "clip_vision.pt"), FTConfig),
              "chat": (chat_config(knobs, world, tmp_path / "chat", tmp_path / "ft.pt", tmp_path / "clip_vision.pt",
                                   tmp_path / "llm"), ChatConfig)}
    loaded = {}
    for name, (config, cls) in stages.items():
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(config))
        loaded[name] = load_config(tmp_path / f"{name}.yaml", cls)
    assert loaded["clip"].data.cache_frames == loaded["ft"].data.cache_frames == 24
    assert loaded["ft"].data.batch_size == loaded["chat"].data.batch_size == 8
    assert loaded["ft"].max_steps == knobs.ft_steps and loaded["chat"].chat.vision == str(tmp_path / "ft.pt")
    assert loaded["chat"].chat.second_vision == str(loaded["ft"].init_checkpoint), "the chat reads the Flux-CLIP ViT"
    for name in ("clip", "ft"):  # two frames per patch, and every training frame count fills whole patches
        vit = loaded[name].vit_config()
        assert vit.tubelet_size == 2 and all(f % 2 == 0 for f in vit.grid.frame_options())
    assert set(loaded["ft"].data.budgets) == set(loaded["clip"].data.budgets) == set(EVAL_BUDGETS)
    assert loaded["chat"].chat.budget in loaded["chat"].chat.train_budgets
    assert set(loaded["chat"].chat.train_budgets) == set(EVAL_BUDGETS), "the one projector serves every budget"
    assert loaded["chat"].chat.cache_clips and loaded["chat"].data.cache_frames == 0
    uncached = chat_config(DemoTraining(cache_frames=0), world, tmp_path / "chat", tmp_path / "ft.pt",
                           tmp_path / "clip_vision.pt", tmp_path / "llm")
    assert not uncached["chat"]["cache_clips"], "--cache-frames 0 decodes every batch in every stage"


def test_demo_train_refuses_a_frame_cache_smaller_than_a_batch_takes(tmp_path: Path) -> None:
    """16-frame batches drawn from 8 cached frames would pair each frame with itself in a two-frame patch."""
    result = fluxvid("demo", "train", "--work", str(tmp_path / "work"), "--models", str(tmp_path / "models"),
                     "--cache-frames", "8")
    assert result.returncode != 0 and "cache_frames must be 0 or at least 16" in result.stderr + result.stdout
    assert not (tmp_path / "work").exists() and not (tmp_path / "models").exists(), "refused before any work"


def test_a_rerun_keeps_the_minutes_the_world_took_to_render(tmp_path: Path) -> None:
    knobs = DemoTraining(train_clips=3, val_clips=2, test_clips=2)
    first: dict[str, float] = {}
    world = render_world(knobs, tmp_path, first, progress=False)
    assert (world / "world.json").is_file() and set(first) == {"world"} and first["world"] >= 0
    (tmp_path / "world_minutes.json").write_text("2.5")  # as if rendering had taken longer
    again: dict[str, float] = {}
    render_world(knobs, tmp_path, again, progress=False)
    assert again == {"world": 2.5}, "found complete: not rendered again, its recorded minutes kept"
    (world / "world.json").unlink()  # incomplete: rendered again, timed again
    render_world(knobs, tmp_path, again, progress=False)
    assert again["world"] != 2.5
