"""The shared training loop: one process on CPU, DDP under torchrun, or DeepSpeed ZeRO, from one config.

Checkpoints hold the trainable state, optimizer, scheduler, grad scaler, every rank's RNG state and the data
position; they are written to a temporary file and renamed, so a run killed at any moment resumes from the
last complete checkpoint and continues exactly as if it had never stopped.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import socket
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from encoder.checkpoint import atomic_torch_save
from encoder.model import FluxViT

from .config import ConfigError, TrainConfig
from .data import ResumableBatchSampler
from .optim import warmup_cosine
from .recipe import Recipe

log = logging.getLogger(__name__)
CHECKPOINTS = "checkpoints"


@contextmanager
def deterministic_kernels(enabled: bool, device: torch.device) -> Iterator[None]:
    """torch's deterministic kernels while a run trains, then the caller's setting back. With the default ones,
    one backward pass run twice gives gradients of the positional embedding that differ by about 1e-9 on a CPU
    with two threads, and training amplifies that into different models. Strict: a kernel with no deterministic
    version stops the run with a ConfigError naming it (only warning would let runs differ while claiming not
    to; with a warning, cuDNN's attention backward also keeps its non-deterministic algorithm)."""
    if not enabled:
        yield
        return
    previous = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # what cuBLAS needs to be deterministic
    torch.use_deterministic_algorithms(True)
    try:
        yield
    except RuntimeError as err:
        if "does not have a deterministic implementation" not in str(err):
            raise
        kernel = str(err).split(" does not have")[0]
        raise ConfigError(f"deterministic: true, but {kernel} has no deterministic kernel on {device.type}; "
                          "set deterministic: false to train with it (reruns then differ slightly)") from err
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


@dataclass
class TrainState:
    step: int = 0  # optimizer steps taken
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of the current epoch already consumed
    samples: int = 0


@dataclass(frozen=True)
class DistContext:
    backend: str
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def setup(cls, backend: str) -> "DistContext":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if backend == "none" and world > 1:
            raise ConfigError(f"launched with WORLD_SIZE={world} but distributed.backend is 'none'; "
                              "set it to 'ddp' or 'deepspeed'")
        device = torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if backend != "none" and not dist.is_initialized():
            os.environ.setdefault("RANK", "0")
            os.environ.setdefault("WORLD_SIZE", "1")
            os.environ.setdefault("LOCAL_RANK", "0")
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            os.environ.setdefault("MASTER_PORT", str(_free_port()))
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        rank = dist.get_rank() if dist.is_initialized() else 0
        return cls(backend, rank, dist.get_world_size() if dist.is_initialized() else 1, local, device)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def to_device(batch: Any, device: torch.device) -> Any:
    """Every tensor of a (nested dict / list) batch on ``device``; anything else (captions, names) as it is."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list):
        return [to_device(v, device) for v in batch]
    return batch


def checkpoint_files(output_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temporary files are never listed)."""
    return sorted((output_dir / CHECKPOINTS).glob("step-*.pt"))


class Trainer:
    """Runs a :class:`Recipe` over a dataset of :class:`~training.data.SampleKey`-indexed items."""

    def __init__(
        self, cfg: TrainConfig, recipe: Recipe, dataset: Dataset, collate: Callable[[list], dict],
        keep_checkpoints: int = 2,
    ) -> None:
        self.cfg = cfg
        self.ctx = DistContext.setup(cfg.distributed.backend)
        self.recipe = recipe.to(self.ctx.device)
        self.dataset, self.collate = dataset, collate
        self.keep_checkpoints = keep_checkpoints
        self.state = TrainState()
        self.out = Path(cfg.output_dir)
        self.precision = cfg.precision if cfg.precision != "auto" else (
            "bf16" if self.ctx.device.type == "cuda" else "fp32")
        if self.precision == "fp16" and self.ctx.device.type != "cuda":
            raise ConfigError("precision fp16 needs a CUDA device; use fp32 or bf16 on CPU")
        if cfg.grad_checkpointing:
            for module in self.recipe.modules():
                if isinstance(module, FluxViT):
                    module.set_grad_checkpointing(True)
        self.sampler = ResumableBatchSampler(
            len(dataset), cfg.data.batch_size, cfg.vit_config(), cfg.seed, cfg.data.flexible, cfg.data.frames,
            cfg.data.resolution, self.ctx.rank, self.ctx.world_size, turns=self.recipe.budget_turns(),
        )
        steps_per_epoch = len(self.sampler) // cfg.grad_accum
        if steps_per_epoch < 1:
            raise ConfigError(f"the training set gives {len(self.sampler)} batches per epoch, fewer than "
                              f"grad_accum={cfg.grad_accum}; lower batch_size or grad_accum")
        self.total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
        self._build_optimizer()

    # -- set-up -------------------------------------------------------------------------------------------
    def _build_optimizer(self) -> None:
        optim = self.cfg.optim
        groups = self.recipe.param_groups(optim.weight_decay, optim.layer_decay, optim.lr)
        for group in groups:
            group["lr"] = optim.lr * group.get("lr_scale", 1.0)
        if not any(g["params"] for g in groups):
            raise ConfigError("the recipe has no trainable parameters")
        self.optimizer = torch.optim.AdamW(groups, lr=optim.lr, betas=optim.betas)
        schedule = partial(warmup_cosine, warmup=optim.warmup_steps, total=self.total_steps,
                           min_ratio=optim.min_lr / optim.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")
        self.engine: Any = None
        if self.cfg.distributed.backend == "deepspeed":
            import deepspeed

            ds_config = {
                "train_micro_batch_size_per_gpu": self.cfg.data.batch_size,
                "gradient_accumulation_steps": self.cfg.grad_accum,
                "zero_optimization": {"stage": self.cfg.distributed.zero_stage},
                "bf16": {"enabled": self.precision == "bf16"},
                "fp16": {"enabled": self.precision == "fp16"},
                "gradient_clipping": self.cfg.optim.grad_clip or 0.0,
                "steps_per_print": 10**9,
            }
            self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
                model=self.recipe, optimizer=self.optimizer, lr_scheduler=self.scheduler, config=ds_config)
            self.model: torch.nn.Module = self.engine
        elif self.ctx.world_size > 1:
            ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.recipe, device_ids=ids, find_unused_parameters=True)
        else:
            self.model = self.recipe

    # -- checkpoints --------------------------------------------------------------------------------------
    def _gather_rng(self) -> list[dict[str, Any]]:
        state = _rng_state()
        if self.ctx.world_size == 1:
            return [state]
        states: list[Any] = [None] * self.ctx.world_size
        dist.all_gather_object(states, state)
        return states

    def save(self) -> None:
        rng = self._gather_rng()
        meta = {"state": asdict(self.state), "rng": rng, "config": self.cfg.model_dump(mode="json")}
        if self.engine is not None:
            tag = f"step-{self.state.step:07d}"
            folder = self.out / CHECKPOINTS / "deepspeed"
            # frozen parts (teachers, LLMs) are rebuilt from their own files, as in the plain checkpoints
            self.engine.save_checkpoint(str(folder), tag=tag, client_state=meta, exclude_frozen_parameters=True)
            if self.ctx.is_main:
                for old in sorted(folder.glob("step-*"))[: -self.keep_checkpoints]:
                    shutil.rmtree(old)
            return
        if not self.ctx.is_main:
            return
        payload = {
            "recipe": self.recipe.trainable_state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), **meta,
        }
        atomic_torch_save(payload, self.out / CHECKPOINTS / f"step-{self.state.step:07d}.pt")
        for old in checkpoint_files(self.out)[: -self.keep_checkpoints]:
            old.unlink()

    def resume(self) -> bool:
        """Continue from the newest complete checkpoint of ``output_dir``; False if there is none."""
        if self.engine is not None:
            folder = self.out / CHECKPOINTS / "deepspeed"
            if not (folder / "latest").exists():
                return False
            _, meta = self.engine.load_checkpoint(str(folder), load_module_strict=False)
        else:
            files = checkpoint_files(self.out)
            if not files:
                return False
            meta = torch.load(files[-1], map_location="cpu", weights_only=False)
            missing, unexpected = self.recipe.load_state_dict(meta["recipe"], strict=False)
            trainable = set(self.recipe.trainable_state_dict())
            if unexpected or trainable & set(missing):
                raise ConfigError(f"checkpoint {files[-1]} does not fit this recipe: missing "
                                  f"{sorted(trainable & set(missing))[:5]}, unexpected {unexpected[:5]}")
            self.optimizer.load_state_dict(meta["optimizer"])
            self.scheduler.load_state_dict(meta["scheduler"])
            self.scaler.load_state_dict(meta["scaler"])
        self.state = TrainState(**meta["state"])
        _set_rng_state(meta["rng"][min(self.ctx.rank, len(meta["rng"]) - 1)])
        log.info("resumed at step %d (epoch %d, batch %d)", self.state.step, self.state.epoch,
                 self.state.batch_in_epoch)
        return True

    # -- the loop -----------------------------------------------------------------------------------------
    def _autocast(self) -> Any:
        if self.precision == "fp32":
            return nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.ctx.device.type, dtype=dtype)

    def _record_skipped(self, skipped: list[Any]) -> None:
        """Bad videos met in training: logged, and listed with their reasons in ``skipped-rank<r>.jsonl``."""
        with (self.out / f"skipped-rank{self.ctx.rank}.jsonl").open("a") as f:
            for item in skipped:
                log.warning("skipped %s: %s", item.path, item.reason)
                f.write(json.dumps({"step": self.state.step, "path": item.path, "reason": item.reason}) + "\n")

    def _micro_step(self, batch: dict[str, Any], sync: bool) -> tuple[float, dict[str, float]] | None:
        """Forward and backward of one micro-batch; None when every video of it failed to decode on some rank.

        Ranks skip together: a rank that ran a DDP backward alone would wait forever for the others.
        """
        skipped = batch.pop("skipped", [])
        if skipped:
            self._record_skipped(skipped)
        if not self._every_rank_has_data(bool(batch)):
            if sync and isinstance(self.model, DistributedDataParallel):
                self._average_gradients()  # the earlier micro-steps ran under no_sync
            return None
        batch = to_device(batch, self.ctx.device)
        no_sync = self.model.no_sync if isinstance(self.model, DistributedDataParallel) and not sync else nullcontext
        with no_sync():
            with self._autocast():
                loss, metrics = self.model(batch)
            if self.engine is not None:
                self.engine.backward(loss)
                self.engine.step()
            else:
                self.scaler.scale(loss / self.cfg.grad_accum).backward()
        return float(loss.detach()), metrics

    def _every_rank_has_data(self, has_data: bool) -> bool:
        if self.ctx.world_size == 1:
            return has_data
        flag = torch.tensor([int(has_data)], device=self.ctx.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())

    def _average_gradients(self) -> None:
        grads = [p.grad for p in self.recipe.parameters() if p.grad is not None]
        if grads:
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            flat /= self.ctx.world_size
            for grad, mean in zip(grads, flat.split([g.numel() for g in grads])):
                grad.copy_(mean.view_as(grad))

    def _optimizer_step(self) -> None:
        if self.engine is not None:
            return  # DeepSpeed stepped inside engine.step() at the accumulation boundary
        if self.cfg.optim.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.recipe.parameters(), self.cfg.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _mean_over_ranks(self, values: dict[str, float]) -> dict[str, float]:
        if self.ctx.world_size == 1:
            return values
        keys = sorted(values)
        tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self.ctx.device)
        dist.all_reduce(tensor)
        return {k: float(v) / self.ctx.world_size for k, v in zip(keys, tensor.tolist())}

    def fit(self) -> TrainState:
        """Train to ``max_steps`` / ``epochs``, resuming first if the output folder has a checkpoint."""
        with deterministic_kernels(self.cfg.deterministic, self.ctx.device):
            return self._fit()

    def _fit(self) -> TrainState:
        self.out.mkdir(parents=True, exist_ok=True)
        self.resume()
        writer = None
        if self.ctx.is_main and self.cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.out / "tensorboard"))
        metrics_file = (self.out / "metrics.jsonl").open("a") if self.ctx.is_main else None
        bar = tqdm(total=self.total_steps, initial=self.state.step, disable=not self.ctx.is_main,
                   desc=type(self.recipe).__name__, unit="step", dynamic_ncols=True)
        self.recipe.train()
        window: list[float] = []
        window_metrics: dict[str, list[float]] = {}
        window_start, window_samples, micro = time.perf_counter(), 0, 0
        try:
            while self.state.step < self.total_steps and self.state.epoch < self.cfg.epochs:
                self.sampler.set_position(self.state.epoch, self.state.batch_in_epoch)
                loader = DataLoader(self.dataset, batch_sampler=self.sampler, collate_fn=self.collate,
                                    num_workers=self.cfg.data.num_workers,
                                    pin_memory=self.ctx.device.type == "cuda",
                                    # its own generator: creating the iterator must not draw from the global
                                    # RNG, or a resumed run's model randomness would drift from the original
                                    generator=torch.Generator().manual_seed(self.cfg.seed + self.state.epoch))
                for batch in loader:
                    micro += 1
                    result = self._micro_step(batch, sync=micro == self.cfg.grad_accum)
                    self.state.batch_in_epoch += 1
                    size = self.cfg.data.batch_size * self.ctx.world_size
                    self.state.samples += size
                    window_samples += size
                    if result is not None:
                        window.append(result[0])
                        for key, value in result[1].items():
                            window_metrics.setdefault(key, []).append(float(value))
                    if micro < self.cfg.grad_accum:
                        continue
                    micro = 0
                    self._optimizer_step()
                    self.state.step += 1
                    bar.update(1)
                    if self.state.step % self.cfg.log_every == 0 or self.state.step == self.total_steps:
                        elapsed = time.perf_counter() - window_start
                        values = {"loss": sum(window) / max(len(window), 1),
                                  **{k: sum(v) / len(v) for k, v in window_metrics.items()}}
                        values = self._mean_over_ranks(values)
                        record = {"step": self.state.step, "epoch": self.state.epoch,
                                  "lr": self.optimizer.param_groups[0]["lr"], **values,
                                  "samples_per_s": window_samples / max(elapsed, 1e-9)}
                        if metrics_file is not None:
                            metrics_file.write(json.dumps(record) + "\n")
                            metrics_file.flush()
                        if writer is not None:
                            for key, value in record.items():
                                if key not in ("step", "epoch"):
                                    writer.add_scalar(f"train/{key}", value, self.state.step)
                        bar.set_postfix(loss=f"{values['loss']:.4f}", lr=f"{record['lr']:.2e}",
                                        samples_s=f"{record['samples_per_s']:.1f}")
                        window, window_metrics = [], {}
                        window_start, window_samples = time.perf_counter(), 0
                    if self.state.step % self.cfg.save_every == 0 or self.state.step == self.total_steps:
                        self.save()
                    if self.state.step >= self.total_steps:
                        break
                else:
                    self.state.epoch += 1
                    self.state.batch_in_epoch = 0
        finally:
            bar.close()
            if metrics_file is not None:
                metrics_file.close()
            if writer is not None:
                writer.close()
        return self.state
