"""The training engine with the Flux-FT recipe: learning, exact resume, checkpoints, DeepSpeed on CPU."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from encoder import get_config, load_model
from training.config import ConfigError, load_config
from training.data import BudgetTurn, ResumableBatchSampler, SampleKey
from training.engine import Trainer, checkpoint_files
from training.recipes.ft import FTConfig, FTRecipe, build_recipe


class SlidingSquares(Dataset):
    """A red (label 0) or blue (label 1) square sliding over noise, rendered at the key's sampling."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key: SampleKey) -> dict:
        gen = torch.Generator().manual_seed(key.seed)
        label = key.index % 2
        side, frames = key.resolution, key.frames
        video = torch.randn(3, frames, side, side, generator=gen) * 0.3
        box = side // 4
        top = int(torch.randint(0, side - box, (), generator=gen))
        for t in range(frames):
            step = (side - box) * t // max(frames - 1, 1)
            video[2 * label, t, top:top + box, step:step + box] = 2.0
        return {"video": video, "label": torch.tensor(label)}


def collate(items: list[dict]) -> dict:
    return {"video": torch.stack([i["video"] for i in items]), "label": torch.stack([i["label"] for i in items])}


def ft_config(tmp_path: Path, **overrides) -> FTConfig:
    data = {"train": str(tmp_path / "unused.csv"), "batch_size": 8, "num_workers": 0,
            "budgets": [256, 128, 64], "flexible": True}
    base = {
        "output_dir": str(tmp_path / "run"), "model": "fluxvit_tiny_patch14", "seed": 3, "epochs": 50,
        "log_every": 1, "save_every": 2, "tensorboard": False, "drop_path": 0.1,
        "model_overrides": {"img_size": 56, "num_frames": 8},
        "optim": {"lr": 1e-3, "warmup_steps": 2, "layer_decay": 0.9, "weight_decay": 0.05},
        "ft": {"mixup_alpha": 0.0, "cutmix_alpha": 0.0, "label_smoothing": 0.1},
        "data": data,
    }
    for key, value in overrides.items():
        if isinstance(value, dict):
            base[key] = {**base.get(key, {}), **value}
        else:
            base[key] = value
    return FTConfig.model_validate(base)


def run(cfg: FTConfig, size: int = 32, keep: int = 2) -> Trainer:
    recipe = build_recipe(cfg, ["red", "blue"])
    trainer = Trainer(cfg, recipe, SlidingSquares(size), collate, keep_checkpoints=keep)
    trainer.fit()
    return trainer


def metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def test_flux_ft_learns_and_exports_a_classifier(tmp_path: Path) -> None:
    cfg = ft_config(tmp_path, max_steps=60, data={"num_workers": 2})
    trainer = run(cfg)
    log = metrics(cfg.output_dir)
    assert [r["step"] for r in log] == list(range(1, 61))
    first, last = sum(r["loss"] for r in log[:5]) / 5, sum(r["loss"] for r in log[-5:]) / 5
    assert last < 0.6 * first, (first, last)
    assert {"ce_256", "ce_128", "ce_64", "distill_128", "distill_64", "lr", "samples_per_s"} <= set(log[-1])
    assert len(checkpoint_files(cfg.output_dir)) == 2
    trainer.recipe.export(str(tmp_path / "final.pt"))
    model, meta = load_model(tmp_path / "final.pt")
    assert meta["class_names"] == ["red", "blue"]
    test = SlidingSquares(8)
    keys = [SampleKey(i, 8, 56, 1000 + i) for i in range(8)]
    batch = collate([test[k] for k in keys])
    with torch.no_grad():
        predictions = model(batch["video"], keep_tokens=128).argmax(-1)
    assert (predictions == batch["label"]).float().mean() >= 0.75


@pytest.mark.gpu
def test_cuda_run_trains_in_bf16_and_exports_a_classifier_that_classifies_on_cpu(tmp_path: Path) -> None:
    """``precision: auto`` means bf16 autocast on a GPU; the exported file is read on a machine without one."""
    cfg = ft_config(tmp_path, max_steps=60, data={"num_workers": 2})
    trainer = run(cfg)
    assert trainer.ctx.device.type == "cuda" and trainer.precision == "bf16"
    log = metrics(cfg.output_dir)
    first, last = sum(r["loss"] for r in log[:5]) / 5, sum(r["loss"] for r in log[-5:]) / 5
    assert last < 0.6 * first, (first, last)
    trainer.recipe.export(str(tmp_path / "final.pt"))
    model, _ = load_model(tmp_path / "final.pt")
    assert next(model.parameters()).device.type == "cpu"
    test = SlidingSquares(8)
    batch = collate([test[SampleKey(i, 8, 56, 1000 + i)] for i in range(8)])
    with torch.no_grad():
        on_cpu = model(batch["video"], keep_tokens=128)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            on_gpu = model.cuda()(batch["video"].cuda(), keep_tokens=128).float().cpu()
    assert (on_cpu.argmax(-1) == batch["label"]).float().mean() >= 0.75
    assert torch.equal(on_cpu.argmax(-1), on_gpu.argmax(-1))


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path: Path) -> None:
    straight = ft_config(tmp_path / "a", max_steps=6, data={"num_workers": 2},
                         ft={"mixup_alpha": 0.8, "cutmix_alpha": 1.0})
    run(straight, keep=3)
    expected = metrics(straight.output_dir)
    resumed = ft_config(tmp_path / "b", max_steps=6, data={"num_workers": 2},
                        ft={"mixup_alpha": 0.8, "cutmix_alpha": 1.0})
    step4 = [p for p in checkpoint_files(straight.output_dir) if p.name == "step-0000004.pt"][0]
    (resumed.output_dir / "checkpoints").mkdir(parents=True)
    shutil.copy(step4, resumed.output_dir / "checkpoints" / step4.name)
    run(resumed, keep=3)
    got = metrics(resumed.output_dir)
    assert [r["step"] for r in got] == [5, 6]
    for a, b in zip(expected[4:], got):
        assert a["loss"] == b["loss"] and a["lr"] == b["lr"], (a, b)


def test_grad_clip_bounds_the_global_gradient_norm_the_optimizer_sees(tmp_path: Path) -> None:
    """After one AdamW step its first moment is (1 - beta1) x the gradient, so its norm over every parameter
    shows the norm the optimizer received: the clip value when clipping, far above it otherwise."""
    norms = {}
    for clip in (None, 1e-4):
        cfg = ft_config(tmp_path / str(clip), max_steps=1, optim={"grad_clip": clip, "betas": [0.9, 0.95]})
        trainer = run(cfg)
        moments = [state["exp_avg"] for state in trainer.optimizer.state.values()]
        norms[clip] = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(m) for m in moments])))
    assert norms[1e-4] == pytest.approx(0.1 * 1e-4, rel=1e-3)
    assert norms[None] > 100 * norms[1e-4]


def test_deterministic_runs_of_one_config_train_bit_identical_weights(tmp_path: Path) -> None:
    """Two threads at least, or the default kernels would agree too (with them these runs differ); the
    caller's kernel setting comes back after the run. On a GPU machine the runs train on CUDA in bf16."""
    threads = torch.get_num_threads()
    torch.set_num_threads(max(threads, 2))
    try:
        weights = []
        for name in ("a", "b"):
            cfg = ft_config(tmp_path / name, max_steps=8, deterministic=True, data={"num_workers": 2})
            torch.manual_seed(0)
            weights.append(run(cfg).recipe.model.state_dict())
    finally:
        torch.set_num_threads(threads)
    assert not torch.are_deterministic_algorithms_enabled()
    assert weights[0].keys() == weights[1].keys()
    differing = [key for key in weights[0] if not torch.equal(weights[0][key], weights[1][key])]
    assert not differing


class UndeterministicFT(FTRecipe):
    """Flux-FT that also runs a kernel with no deterministic version. Every CPU kernel this project uses has one,
    so on CPU it raises what torch raises from such a kernel while deterministic algorithms are on; on CUDA it
    runs a real one: bicubic upsampling, whose backward accumulates with atomics."""

    def forward(self, batch: dict) -> tuple:
        if batch["video"].device.type == "cuda":
            loss, metrics = super().forward(batch)
            upsampled = F.interpolate(self.model.pos_embed[None], scale_factor=2.0, mode="bicubic")
            return loss + 0.0 * upsampled.float().mean(), metrics
        if torch.are_deterministic_algorithms_enabled():
            raise RuntimeError("scatter_kernel_for_the_test does not have a deterministic implementation, but you "
                               "set 'torch.use_deterministic_algorithms(True)'.")
        return super().forward(batch)


def test_a_kernel_without_a_deterministic_version_stops_a_deterministic_run_naming_it(tmp_path: Path) -> None:
    cfg = ft_config(tmp_path, max_steps=2, deterministic=True)
    trainer = Trainer(cfg, UndeterministicFT(cfg, ["red", "blue"]), SlidingSquares(16), collate)
    kernel = "upsample_bicubic2d_backward_out_cuda" if torch.cuda.is_available() else "scatter_kernel_for_the_test"
    with pytest.raises(ConfigError, match=f"deterministic: true, but {kernel} has no deterministic kernel"):
        trainer.fit()
    assert not torch.are_deterministic_algorithms_enabled()
    off = ft_config(tmp_path / "off", max_steps=2)
    Trainer(off, UndeterministicFT(off, ["red", "blue"]), SlidingSquares(16), collate).fit()
    assert len(metrics(off.output_dir)) == 2


def test_sampler_positions_and_flexible_draws_are_deterministic() -> None:
    cfg = get_config("fluxvit_tiny_patch14")
    sampler = ResumableBatchSampler(20, 3, cfg, seed=5, flexible=True, frames=8, resolution=112)
    sampler.set_position(epoch=1)
    full = list(sampler)
    sampler.set_position(epoch=1, start_batch=4)
    assert list(sampler) == full[4:]
    low, high = cfg.grid.token_threshold
    for batch in full:
        assert len({(k.frames, k.resolution) for k in batch}) == 1, "one sampling per batch"
        assert low <= batch[0].frames * (batch[0].resolution // 14) ** 2 <= high
    ranks = [ResumableBatchSampler(20, 3, cfg, 5, True, 8, 112, rank=r, world_size=2) for r in (0, 1)]
    seen = [k.index for s in ranks for b in s for k in b]
    assert len(seen) == len(set(seen)) == 18, "ranks split the data without overlap"


def test_sampler_turns_give_batches_their_budgets_in_turn_across_epochs_and_ranks() -> None:
    cfg = get_config("fluxvit_tiny_patch14")
    turns = [BudgetTurn(128, 4, 84), BudgetTurn(128, 4, 84), BudgetTurn(48, 2, 84)]
    sampler = ResumableBatchSampler(20, 3, cfg, seed=5, flexible=True, frames=8, resolution=112, turns=turns)
    seen = []
    for epoch in (0, 1):  # 6 batches an epoch: the rotation runs on across the epoch boundary
        sampler.set_position(epoch)
        for batch in sampler:
            assert len({(k.budget, k.frames, k.resolution) for k in batch}) == 1, "one budget per batch"
            seen.append((batch[0].budget, batch[0].frames, batch[0].resolution))
    assert seen == [tuple(turns[n % 3]) for n in range(12)], "the turns replace the flexible draw"
    sampler.set_position(epoch=1, start_batch=2)  # a resumed run: batch 8 of the run
    assert next(iter(sampler))[0].budget == 48
    ranks = [ResumableBatchSampler(20, 3, cfg, 5, False, 4, 84, rank=r, world_size=2, turns=turns) for r in (0, 1)]
    budgets = [[b[0].budget for b in rank] for rank in ranks]
    assert budgets[0] == budgets[1] == [128, 128, 48], "every rank reads a batch at the same budget"


def test_bad_config_files_are_reported_with_the_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("output_dir: out\nepochs: zero\ndata: {train: a.csv, budgets: [512, 1024]}\nbogus: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, FTConfig)
    message = str(info.value)
    assert str(path) in message and "epochs" in message and "bogus" in message
    assert "budgets must be distinct and decreasing" in message
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml", FTConfig)


@pytest.mark.slow
def test_deepspeed_zero_initialises_steps_and_resumes_on_cpu(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("deepspeed", reason="deepspeed comes with the [test] and [deepspeed] extras")
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "torch_extensions"))
    cfg = ft_config(tmp_path, max_steps=3, distributed={"backend": "deepspeed", "zero_stage": 2})
    trainer = run(cfg)
    before = {n: p.detach().clone() for n, p in trainer.recipe.named_parameters()}
    assert trainer.state.step == 3 and trainer.engine is not None
    assert (cfg.output_dir / "checkpoints" / "deepspeed" / "latest").exists()
    log = metrics(cfg.output_dir)
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in log)
    longer = ft_config(tmp_path, max_steps=5, distributed={"backend": "deepspeed", "zero_stage": 2})
    resumed = run(longer)
    assert [r["step"] for r in metrics(cfg.output_dir)] == [1, 2, 3, 4, 5]
    changed = any(not torch.equal(before[n], p) for n, p in resumed.recipe.named_parameters())
    assert changed, "the resumed run must keep training"
