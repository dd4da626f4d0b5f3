"""Frozen teachers: the open_clip tower run block by block matches open_clip's own forward, grids align with
the student's, selection and attention come out on the kept tokens, and nothing trains."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from encoder import IMAGENET_MEAN, IMAGENET_STD, create_model, save_checkpoint
from encoder.checkpoint import CheckpointError
from training.teachers import FluxViTTeacher, OpenCLIPTeacher, build_teacher, load_open_clip_tower, open_clip_tower

TINY_CLIP = {"embed_dim": 24, "vision_cfg": {"layers": 3, "width": 64, "head_width": 16, "patch_size": 16,
                                             "image_size": 64}}


def _clip_reference(teacher: OpenCLIPTeacher, video: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """open_clip's own forward on every frame (hooks collect the last two blocks), projected as UMT does, and
    the last block's CLS attention computed by hand from its weights."""
    visual = teacher.visual
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1, 1)
    clip_mean = torch.tensor((0.48145466, 0.4578275, 0.40821073)).view(1, 3, 1, 1, 1)
    clip_std = torch.tensor((0.26862954, 0.26130258, 0.27577711)).view(1, 3, 1, 1, 1)
    raw = video * std + mean
    frames = ((raw - clip_mean) / clip_std).transpose(1, 2).flatten(0, 1)
    captured: list[torch.Tensor] = []
    blocks = visual.transformer.resblocks
    hooks = [blocks[i].register_forward_hook(lambda m, a, out: captured.append(out)) for i in (-2, -1)]
    with torch.no_grad():
        visual(frames)
    for hook in hooks:
        hook.remove()
    before_last, layers = captured[0], captured
    features = [(visual.ln_post(h) @ visual.proj)[:, 1:] for h in layers]
    last = blocks[-1]
    y = last.ln_1(before_last)
    width, heads = y.shape[-1], last.attn.num_heads
    q, k, _ = F.linear(y, last.attn.in_proj_weight, last.attn.in_proj_bias).split(width, dim=-1)
    q = q.reshape(*q.shape[:2], heads, -1).transpose(1, 2)
    k = k.reshape(*k.shape[:2], heads, -1).transpose(1, 2)
    attention = ((q @ k.transpose(-1, -2)) / math.sqrt(width // heads)).softmax(-1).mean(1)[:, 0, 1:]
    return features, attention


def test_open_clip_teacher_matches_open_clips_forward_on_the_kept_tokens() -> None:
    visual, mean, std = open_clip_tower(TINY_CLIP)
    teacher = OpenCLIPTeacher(visual, student_patch=16, mean=mean, std=std)
    video = torch.randn(2, 3, 4, 64, 64)
    features, attention = _clip_reference(teacher, video)

    full = teacher(video, keep_tokens=64, num_layers=2)
    assert full.grid == (4, 4, 4) and full.positions.tolist() == [list(range(64))] * 2
    for ours, ref in zip(full.features, features):
        assert torch.allclose(ours, ref.reshape(2, 64, 24), atol=1e-5)
    assert torch.allclose(full.cls_attention, attention.reshape(2, 64), atol=1e-6)
    per_frame = full.cls_attention.reshape(2, 4, 16).sum(-1)
    assert bool((per_frame < 1).all() and (per_frame > 0).all()), "CLS attention per frame, CLS itself excluded"

    kept = teacher(video, keep_tokens=24, num_layers=2)
    assert kept.positions.shape == (2, 24) and bool((kept.positions.diff(dim=1) > 0).all())
    assert torch.equal(torch.bincount(kept.positions[0] // 16, minlength=4), torch.tensor([6, 6, 6, 6]))
    index = kept.positions[..., None]
    assert torch.allclose(kept.features[1], torch.gather(full.features[1], 1, index.expand(-1, -1, 24)), atol=1e-6)
    assert torch.allclose(kept.cls_attention, torch.gather(full.cls_attention, 1, kept.positions))


def test_open_clip_teacher_resizes_frames_onto_the_students_14px_grid() -> None:
    visual, mean, std = open_clip_tower(TINY_CLIP)
    video = torch.randn(1, 3, 2, 70, 42)  # student grid 5 x 3 -> teacher frames 80 x 48 px
    out = OpenCLIPTeacher(visual, 14, mean, std)(video, keep_tokens=20, num_layers=1)
    assert out.grid == (2, 5, 3)
    assert out.features[0].shape == (1, 20, 24) and int(out.positions.max()) < 30
    frames = F.interpolate(video.transpose(1, 2).flatten(0, 1), size=(80, 48), mode="bicubic", align_corners=False)
    resized = frames.reshape(1, 2, 3, 80, 48).transpose(1, 2)
    same = OpenCLIPTeacher(visual, 16, mean, std)(resized, keep_tokens=20, num_layers=1)
    assert torch.equal(out.positions, same.positions)
    assert torch.allclose(out.features[0], same.features[0], atol=1e-4)


def test_fluxvit_teacher_uses_its_own_selection_and_stays_frozen() -> None:
    model = create_model("fluxvit_tiny_patch14", img_size=56, num_frames=8)
    teacher = FluxViTTeacher(model, student_patch=14)
    video = torch.randn(2, 3, 4, 56, 56)
    out = teacher(video, keep_tokens=32, num_layers=3)
    assert torch.equal(out.positions, model.select(video, 32))
    assert len(out.features) == 3 and out.features[0].shape == (2, 32, 96)
    assert all(f.grad_fn is None for f in out.features)
    assert out.cls_attention.shape == (2, 32) and bool((out.cls_attention.sum(1) < 1).all())
    teacher.train()
    assert not teacher.training and not model.training
    assert not any(p.requires_grad for p in teacher.parameters())
    with pytest.raises(ValueError, match="depth 4"):
        teacher(video, keep_tokens=32, num_layers=5)


def test_fluxvit_teacher_with_another_patch_size_shares_the_students_grid(tmp_path: Path) -> None:
    source = create_model("fluxvit_tiny_patch14", patch_size=16, img_size=64, num_frames=8)
    save_checkpoint(source, tmp_path / "teacher.pt")
    teacher = build_teacher("fluxvit", "fluxvit_tiny_patch14", 14, path=tmp_path / "teacher.pt")
    assert torch.equal(teacher.model.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)
    out = teacher(torch.randn(1, 3, 4, 56, 56), keep_tokens=40, num_layers=2)
    assert out.grid == (4, 4, 4) and out.positions.shape == (1, 40) and int(out.positions.max()) < 64


def test_open_clip_tower_weights_load_from_a_whole_clip_checkpoint(tmp_path: Path) -> None:
    source, _, _ = open_clip_tower(TINY_CLIP)
    torch.save({"state_dict": {f"module.visual.{k}": v for k, v in source.state_dict().items()}
                | {"module.logit_scale": torch.tensor(4.6)}}, tmp_path / "clip.pt")
    teacher = build_teacher("open_clip", TINY_CLIP, 16, path=tmp_path / "clip.pt")
    assert all(torch.equal(a, b) for a, b in zip(teacher.visual.state_dict().values(), source.state_dict().values()))

    (tmp_path / "broken.pt").write_bytes((tmp_path / "clip.pt").read_bytes()[:200])
    with pytest.raises(CheckpointError, match="broken.pt"):
        load_open_clip_tower(open_clip_tower(TINY_CLIP)[0], tmp_path / "broken.pt")
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="other.pt.*missing"):
        load_open_clip_tower(open_clip_tower(TINY_CLIP)[0], tmp_path / "other.pt")


def test_build_teacher_rejects_bad_requests() -> None:
    with pytest.raises(ValueError, match="unknown teacher kind"):
        build_teacher("dino", "x", 14)
    with pytest.raises(ValueError, match="fluxvit teachers only"):
        build_teacher("open_clip", TINY_CLIP, 14, overrides={"depth": 2})
    with pytest.raises(ValueError, match="unknown open_clip model config"):
        build_teacher("open_clip", "no-such-clip", 14)
