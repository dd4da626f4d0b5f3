"""Flux-CLIP recipe: it learns, stage 1 trains only the vision projection, budgets and temperature follow
the paper, images are 1-frame videos, and the export is a loadable dual encoder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from encoder.video import Annotation, VideoDataset
from retrieval.dual_encoder import DualEncoder
from tests.clips import write_clip, write_image
from training.data import SampleKey, TrainingClips, captioned_collate
from training.engine import Trainer
from training.recipes.clip import CLIP_BUDGETS, ClipConfig, build_recipe

TINY_TEXT = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
CAPTIONS = ["a red square moves left", "a blue circle grows", "green noise", "a dog runs on grass"]


pytestmark = pytest.mark.usefixtures("one_thread")


def clip_config(tmp_path: Path, data: dict | None = None, **clip) -> ClipConfig:
    return ClipConfig.model_validate({
        "output_dir": str(tmp_path / "run"), "model": "fluxvit_tiny_patch14",
        "model_overrides": {"img_size": 56, "num_frames": 8},
        "data": data or {"train": str(tmp_path / "unused.csv"), "budgets": [64, 32, 16]},
        "clip": {"text": TINY_TEXT, "embed_dim": 32, **clip},
    })


def clips(batch: int = 4, frames: int = 4) -> torch.Tensor:
    return torch.randn(batch, 3, frames, 56, 56, generator=torch.Generator().manual_seed(9))


def train(recipe, batch: dict, steps: int) -> list[float]:
    optimizer = torch.optim.AdamW([p for p in recipe.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(steps):
        loss, _ = recipe(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_stage2_contrastive_loss_falls_on_a_fixed_batch(tmp_path: Path) -> None:
    recipe = build_recipe(clip_config(tmp_path, stage=2)).train()
    _, metrics = recipe({"video": clips(), "text": CAPTIONS})
    assert set(metrics) == {"temperature", "vtc_64", "vtc_32", "vtc_16", "distill_32", "distill_16"}
    assert metrics["temperature"] == pytest.approx(0.07)
    losses = train(recipe, {"video": clips(), "text": CAPTIONS}, 30)
    assert losses[-1] < 0.3 * losses[0]


def test_stage1_trains_only_the_vision_projection(tmp_path: Path) -> None:
    recipe = build_recipe(clip_config(tmp_path, stage=1)).train()
    loss, _ = recipe({"video": clips(2), "text": CAPTIONS[:2]})
    loss.backward()
    dual = recipe.dual
    trained = {n for n, p in recipe.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert trained and all(n.startswith(("dual.vision_align.", "dual.vision.clip_projector.", "dual.temp"))
                           for n in trained)
    assert "dual.temp" in trained and "dual.vision_align.1.weight" in trained
    # counts 64 / 32 / 16 each train their own pooling head, the one inference picks for them
    assert dual.vision.config.head_token_counts == (16, 32, 64)
    assert all(f"dual.vision.clip_projector.{h}.cross_attn.q.weight" in trained for h in range(3))
    assert not any(p.requires_grad for p in dual.text.parameters())
    assert not any(p.requires_grad for p in dual.vision.blocks.parameters())
    state = recipe.trainable_state_dict()
    assert not any(k.startswith(("dual.text.", "dual.vision.blocks.", "dual.vision.pos_embed")) for k in state)
    assert "dual.vision.clip_projector.2.cross_attn.q.weight" in state and "dual.temp" in state
    before = {n: p.detach().clone() for n, p in dual.text.named_parameters()}
    train(recipe, {"video": clips(2), "text": CAPTIONS[:2]}, 2)
    assert all(torch.equal(before[n], p) for n, p in dual.text.named_parameters())


def test_budgets_default_to_flux_clip_counts_and_sources_do_not_clash(tmp_path: Path) -> None:
    cfg = clip_config(tmp_path, data={"train": str(tmp_path / "unused.csv")})
    assert cfg.data.budgets == CLIP_BUDGETS == (2048, 1024, 512)
    assert cfg.optim.lr == 4e-4 and cfg.optim.weight_decay == 0.02 and cfg.optim.betas == (0.9, 0.98)
    with pytest.raises(ValidationError, match="init_dual_encoder already holds both towers"):
        clip_config(tmp_path, init_dual_encoder=str(tmp_path / "d.pt"), text_checkpoint=str(tmp_path / "t.pt"))


def test_images_are_one_frame_videos_and_temperature_is_clamped(tmp_path: Path) -> None:
    recipe = build_recipe(clip_config(tmp_path, stage=2)).train()
    with torch.no_grad():
        recipe.dual.temp.fill_(3.0)
    seen: list[int] = []
    hook = recipe.dual.vision.blocks[0].register_forward_hook(lambda m, a, out: seen.append(a[0].shape[1] - 1))
    loss, metrics = recipe({"video": clips(3, frames=1), "text": CAPTIONS[:3]})
    hook.remove()
    assert torch.isfinite(loss) and seen == [16, 16, 16]  # every count capped at the 4 x 4 image pool
    assert metrics["temperature"] == pytest.approx(0.5) and recipe.dual.temp.item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="3 videos but 2 captions"):
        recipe({"video": clips(3, frames=1), "text": CAPTIONS[:2]})


def test_export_then_stage2_starts_from_the_stage1_file(tmp_path: Path) -> None:
    stage1 = build_recipe(clip_config(tmp_path, stage=1))
    stage1.export(tmp_path / "stage1.pt")
    loaded = DualEncoder.load(tmp_path / "stage1.pt")
    assert loaded.model_id == stage1.dual.model_id
    stage2 = build_recipe(clip_config(tmp_path, stage=2, init_dual_encoder=str(tmp_path / "stage1.pt")))
    assert stage2.dual.model_id == stage1.dual.model_id
    assert stage2.frozen_prefixes == () and all(p.requires_grad for p in stage2.parameters())


def test_clips_and_images_share_a_batch_and_its_negatives(tmp_path: Path) -> None:
    cfg = clip_config(tmp_path, stage=2)
    items = [Annotation(str(write_clip(tmp_path / "a.mp4", num_frames=12, size=(64, 64))), caption=CAPTIONS[0]),
             Annotation(str(write_image(tmp_path / "b.png", size=(64, 64))), caption=CAPTIONS[1]),
             Annotation(str(tmp_path / "missing.mp4"), caption=CAPTIONS[2]),
             Annotation(str(write_clip(tmp_path / "c.mp4", num_frames=20, size=(80, 64))), caption=CAPTIONS[3])]
    recipe = build_recipe(cfg).train()
    data = TrainingClips(VideoDataset(items, None), recipe.dual.vision.config)
    batch = captioned_collate([data[SampleKey(i, 4, 56, seed=i)] for i in range(4)])
    assert batch["video"].shape == (2, 3, 4, 56, 56) and batch["image"].shape == (1, 3, 1, 56, 56)
    assert batch["text"] == [CAPTIONS[0], CAPTIONS[3], CAPTIONS[1]]  # clips first, then images
    assert [s.path for s in batch["skipped"]] == [str(tmp_path / "missing.mp4")]
    batch.pop("skipped")
    seen: list[tuple[int, int]] = []
    hook = recipe.dual.vision.blocks[0].register_forward_hook(lambda m, a, out: seen.append(a[0].shape[:2]))
    loss, metrics = recipe(batch)
    hook.remove()
    loss.backward()
    assert torch.isfinite(loss) and set(metrics) >= {"vtc_64", "vtc_32", "vtc_16", "distill_32"}
    # per count: the two clips keep the count (+ CLS), the image keeps its whole 4 x 4 pool
    assert seen == [(2, 65), (1, 17), (2, 33), (1, 17), (2, 17), (1, 17)]


def test_hard_negatives_are_batched_and_learned_apart_from_their_captions(tmp_path: Path) -> None:
    items = [Annotation(str(write_clip(tmp_path / "a.mp4", num_frames=12, size=(64, 64))), caption=CAPTIONS[0],
                        negatives=("a red square moves right", "a red circle moves left")),
             Annotation(str(write_image(tmp_path / "b.png", size=(64, 64))), caption=CAPTIONS[1],
                        negatives=("a blue circle shrinks",)),
             Annotation(str(write_clip(tmp_path / "c.mp4", num_frames=20, size=(80, 64))), caption=CAPTIONS[3])]
    torch.manual_seed(0)
    recipe = build_recipe(clip_config(tmp_path, stage=2)).train()
    data = TrainingClips(VideoDataset(items, None), recipe.dual.vision.config)
    batch = captioned_collate([data[SampleKey(i, 4, 56, seed=i)] for i in range(3)])
    assert batch["negatives"] == ["a red square moves right", "a red circle moves left", "a blue circle shrinks"]
    batch.pop("skipped")
    plain = {k: v for k, v in batch.items() if k != "negatives"}
    assert recipe(batch)[0].item() > recipe(plain)[0].item()  # more texts for every video to score below its own

    def margin(trained_on: dict) -> float:
        """How far clip a's caption scores above its hard negatives after training from the same start."""
        torch.manual_seed(0)
        model = build_recipe(clip_config(tmp_path, stage=2)).train()
        train(model, trained_on, 40)
        model.eval()
        with torch.no_grad():
            video = F.normalize(model.dual.project_video(model._pooled(batch["video"][:1], 64)), dim=-1)
            text = F.normalize(model.dual.encode_text([CAPTIONS[0], *items[0].negatives]), dim=-1)
        scores = (video @ text.T)[0]
        return float(scores[0] - scores[1:].max())

    with_negatives = margin(batch)
    assert with_negatives > 0.1 and with_negatives > margin(plain) + 0.1  # one word apart, told apart


class CaptionedNoise(torch.utils.data.Dataset):
    """Random clips with the test captions, drawn at the key's sampling."""

    def __len__(self) -> int:
        return 16

    def __getitem__(self, key: SampleKey) -> dict:
        gen = torch.Generator().manual_seed(key.seed)
        video = torch.randn(3, key.frames, key.resolution, key.resolution, generator=gen)
        return {"video": video, "caption": CAPTIONS[key.index % len(CAPTIONS)], "path": f"noise{key.index}.mp4"}


@pytest.mark.gpu
def test_deterministic_cuda_runs_train_bit_identical_dual_encoders(tmp_path: Path) -> None:
    """On CUDA in bf16, the text tower's kernels too must have deterministic versions, or the run stops."""
    weights = []
    for name in ("a", "b"):
        base = clip_config(tmp_path / name, stage=2).model_dump(mode="json")
        base.update(max_steps=4, epochs=10, log_every=1, deterministic=True, tensorboard=False)
        base["data"].update(batch_size=4, num_workers=0)
        cfg = ClipConfig.model_validate(base)
        torch.manual_seed(0)
        recipe = build_recipe(cfg)
        trainer = Trainer(cfg, recipe, CaptionedNoise(), captioned_collate)
        trainer.fit()
        assert trainer.ctx.device.type == "cuda"
        weights.append({k: v.detach().cpu().clone() for k, v in recipe.state_dict().items()})
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
