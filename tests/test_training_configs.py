"""The example configs in training/configs/ validate and carry the paper's hyper-parameters (Tables 14-16)."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.config import ConfigError, load_config
from training.recipes.chat import ChatConfig
from training.recipes.clip import ClipConfig
from training.recipes.ft import FTConfig
from training.recipes.umt import UMTConfig

CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"


def test_umt_example_follows_table_14() -> None:
    cfg = load_config(CONFIGS / "umt.yaml", UMTConfig)
    assert cfg.data.budgets == (2048, 1536, 1024) and cfg.umt.teacher_budget == 2048
    assert (cfg.optim.lr, cfg.optim.betas, cfg.optim.weight_decay, cfg.drop_path) == (1e-3, (0.9, 0.98), 0.05, 0.05)
    assert cfg.umt.num_layers == 6 and cfg.umt.teacher.path is not None


def test_ft_example_follows_table_15() -> None:
    cfg = load_config(CONFIGS / "ft.yaml", FTConfig)
    assert cfg.data.budgets == (3072, 2048, 1024) and cfg.data.randaug
    assert (cfg.optim.lr, cfg.optim.betas, cfg.optim.layer_decay, cfg.drop_path) == (2e-4, (0.9, 0.999), 0.75, 0.1)


def test_clip_example_follows_table_16() -> None:
    cfg = load_config(CONFIGS / "clip.yaml", ClipConfig)
    assert cfg.data.budgets == (2048, 1024, 512) and cfg.clip.stage == 1 and cfg.clip.text == "MobileCLIP-B"


def test_chat_example_keeps_the_encoders_frozen() -> None:
    cfg = load_config(CONFIGS / "chat.yaml", ChatConfig)
    assert cfg.chat.projector == "linear" and not cfg.chat.lora and cfg.chat.budget == 1024


def test_an_example_with_a_typo_names_the_file_and_field(tmp_path: Path) -> None:
    broken = tmp_path / "ft.yaml"
    broken.write_text((CONFIGS / "ft.yaml").read_text().replace("layer_decay", "layer_decy"))
    with pytest.raises(ConfigError) as error:
        load_config(broken, FTConfig)
    assert str(broken) in str(error.value) and "layer_decy" in str(error.value)


def test_model_overrides_may_change_part_of_the_sampling_grid(tmp_path: Path) -> None:
    path = tmp_path / "clip.yaml"
    path.write_text("output_dir: out\nmodel: fluxvit_tiny_patch14\n"
                    "model_overrides: {grid: {min_frames: 4, max_frames: 8, frame_step: 4, min_resolution: 84, "
                    "max_resolution: 84}, profile: [{budget: 128, frames: 4, resolution: 84}]}\n"
                    "data: {train: t.jsonl}\n")
    vit = load_config(path, ClipConfig).vit_config()
    assert vit.grid.frame_options() == [4, 8] and vit.grid.resolution_options() == [84]
    assert vit.grid.token_threshold == (256, 1024), "fields left out keep the registered model's values"
    assert [(p.budget, p.frames, p.resolution) for p in vit.profile] == [(128, 4, 84)]
    path.write_text("output_dir: out\nmodel: fluxvit_tiny_patch14\nmodel_overrides: {grid: {frames: 3}}\n"
                    "data: {train: t.jsonl}\n")
    with pytest.raises(ConfigError, match="frames"):
        load_config(path, ClipConfig)

