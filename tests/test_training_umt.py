"""Flux-UMT recipe: it learns, the Double Mask gives the student the configured counts, the teacher is
frozen and left out of checkpoints, and the export is a loadable FluxViT."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from encoder import create_model, load_model, save_checkpoint
from training.recipes.umt import UMTConfig, build_recipe

TINY_CLIP = {"embed_dim": 32, "vision_cfg": {"layers": 2, "width": 64, "head_width": 32, "patch_size": 16,
                                             "image_size": 64}}


pytestmark = pytest.mark.usefixtures("one_thread")


def umt_config(tmp_path: Path, teacher: dict | None = None, **umt) -> UMTConfig:
    return UMTConfig.model_validate({
        "output_dir": str(tmp_path / "run"), "model": "fluxvit_tiny_patch14", "drop_path": 0.0,
        "model_overrides": {"img_size": 56, "num_frames": 8},
        "data": {"train": str(tmp_path / "unused.csv"), "budgets": [64, 48, 32]},
        "umt": {"num_layers": 2, "teacher_budget": 64,
                "teacher": teacher or {"kind": "open_clip", "name": TINY_CLIP, "random_init": True}, **umt},
    })


def clips(batch: int = 4, frames: int = 4) -> torch.Tensor:
    return torch.randn(batch, 3, frames, 56, 56, generator=torch.Generator().manual_seed(5))


def test_umt_alignment_loss_falls_on_a_fixed_batch(tmp_path: Path) -> None:
    recipe = build_recipe(umt_config(tmp_path)).train()
    optimizer = torch.optim.AdamW([p for p in recipe.parameters() if p.requires_grad], lr=1e-3)
    video = clips(batch=2)
    losses = []
    for _ in range(30):
        loss, metrics = recipe({"video": video})
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert set(metrics) == {"align_64", "align_48", "align_32"}
    assert losses[0] == pytest.approx(6.0, abs=0.5), "three counts of 2 - 2cos near 2 for unrelated features"
    assert losses[-1] < 0.5 * losses[0]


def _tokens_seen(recipe, video: torch.Tensor) -> list[int]:
    seen: list[int] = []
    hook = recipe.student.blocks[0].register_forward_hook(lambda m, args, out: seen.append(args[0].shape[1] - 1))
    recipe({"video": video})
    hook.remove()
    return seen


def test_double_mask_gives_the_student_the_configured_counts(tmp_path: Path) -> None:
    assert _tokens_seen(build_recipe(umt_config(tmp_path)), clips(2)) == [64, 48, 32]
    masked = build_recipe(umt_config(tmp_path, mask_ratio=0.8, image_mask_ratio=0.5))
    assert _tokens_seen(masked, clips(2)) == [13, 10, 7]  # n - int(0.8 n) for 64, 48, 32
    # one frame: a 16-token pool caps every count at 16, then the image ratio hides half
    assert _tokens_seen(masked, clips(2, frames=1)) == [8, 8, 8]


def test_teacher_is_frozen_and_out_of_checkpoints(tmp_path: Path) -> None:
    recipe = build_recipe(umt_config(tmp_path)).train()
    assert not recipe.teacher.training
    loss, _ = recipe({"video": clips(2)})
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in recipe.teacher.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in recipe.decoders.parameters())
    assert recipe.student.blocks[-1].mlp.fc2.weight.grad.abs().sum() > 0
    assert recipe.student.patch_embed.proj.weight.grad.abs().sum() > 0
    state = recipe.trainable_state_dict()
    assert not any(k.startswith("teacher.") for k in state) and "decoders.0.head.weight" in state
    assert recipe.decoders[0].head.out_features == 32, "decoders map to the teacher's projected width"


def test_umt_with_a_fluxvit_teacher_file_and_export(tmp_path: Path) -> None:
    source = create_model("fluxvit_tiny_patch14", img_size=56, num_frames=8)
    save_checkpoint(source, tmp_path / "teacher.pt")
    teacher = {"kind": "fluxvit", "name": "fluxvit_tiny_patch14", "path": str(tmp_path / "teacher.pt")}
    cfg = umt_config(tmp_path, teacher=teacher)
    recipe = build_recipe(cfg)
    assert torch.equal(recipe.teacher.model.pos_embed, source.pos_embed)
    assert recipe.decoders[1].head.out_features == 96
    loss, _ = recipe({"video": clips(2)})
    assert torch.isfinite(loss)
    recipe.export(tmp_path / "student.pt")
    student, metadata = load_model(tmp_path / "student.pt")
    assert metadata["recipe"] == "flux-umt" and metadata["budgets"] == [64, 48, 32]
    assert all(torch.equal(a, b) for a, b in zip(student.state_dict().values(), recipe.student.state_dict().values()))


def test_umt_config_demands_teacher_weights_and_enough_depth(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="umt.teacher.path is required"):
        umt_config(tmp_path, teacher={"kind": "open_clip", "name": "ViT-B-16"})
    with pytest.raises(ValueError, match="num_layers=3 exceeds"):
        build_recipe(umt_config(tmp_path, num_layers=3))  # the tiny CLIP teacher has 2 blocks
