"""Loading released FluxViT ``.pth`` files and saving / loading FluxVid's own checkpoints.

Released files hold a bare state dict, possibly wrapped under ``module`` or ``model``. FluxVid's own files
add a ``fluxvid`` entry (config, class names, provenance) so that a model can be rebuilt from the file alone.
"""

from __future__ import annotations

import argparse
import math
import os
import pickle
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from .config import FluxViTConfig, get_config
from .model import FluxViT, create_model
from .posembed import resize_grid

_WRAPPERS = ("module", "model", "state_dict")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message names the file and why."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"checkpoint {path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass
class LoadReport:
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The state dict (unwrapped, ``module.`` prefixes removed) and FluxVid metadata (empty for released files)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "file does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path)), {}
        with torch.serialization.safe_globals([argparse.Namespace]):
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(path, f"cannot be read (truncated or not a PyTorch/safetensors file): {first_line}")
    if not isinstance(raw, dict):
        raise CheckpointError(path, f"holds a {type(raw).__name__}, not a state dict")
    metadata = raw.get("fluxvid", {}) if isinstance(raw.get("fluxvid"), dict) else {}
    state = raw
    for key in _WRAPPERS:
        if isinstance(state.get(key), dict):
            state = state[key]
            break
    tensors = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(path, f"contains no tensors (top-level keys: {sorted(raw)[:10]})")
    return tensors, metadata


def _stored_grid(rows: int, preferred_frames: int) -> tuple[int, int]:
    """(T0, G0) with T0 * G0^2 == rows, preferring the frame count nearest to the model's."""
    options = [(t, math.isqrt(rows // t)) for t in range(1, rows + 1)
               if rows % t == 0 and math.isqrt(rows // t) ** 2 == rows // t]
    if not options:
        raise ValueError(f"{rows} positional rows do not form a T x G x G grid")
    return min(options, key=lambda o: (abs(o[0] - preferred_frames), o[0]))


def _fit_pos_embed(stored: torch.Tensor, config: FluxViTConfig) -> torch.Tensor:
    t0, g0 = config.num_frames // config.tubelet_size, config.grid_size
    st, sg = _stored_grid(stored.shape[1] - 1, t0)
    grid = stored[0, 1:].reshape(st, sg, sg, stored.shape[-1])
    resized = resize_grid(grid, t0, g0, g0).reshape(-1, stored.shape[-1])
    return torch.cat([stored[0, :1], resized], dim=0)[None]


def load_checkpoint(model: FluxViT, path: str | Path, strict: bool = True) -> LoadReport:
    """Load a released or FluxVid checkpoint into ``model``.

    ``pos_embed`` is resized when the stored grid differs from the model's. With ``strict`` any missing or
    unexpected key, or a shape clash, raises :class:`CheckpointError` listing them; otherwise they are
    skipped and reported.
    """
    state, metadata = read_checkpoint(path)
    return _load_state(model, state, metadata, path, strict)


def _load_state(
    model: FluxViT, state: dict[str, torch.Tensor], metadata: dict[str, Any], path: str | Path, strict: bool
) -> LoadReport:
    report = LoadReport(metadata=metadata)
    own = model.state_dict()
    if "pos_embed" in state and state["pos_embed"].shape != own["pos_embed"].shape:
        try:
            state["pos_embed"] = _fit_pos_embed(state["pos_embed"], model.config)
        except ValueError as exc:
            raise CheckpointError(path, f"pos_embed {tuple(state['pos_embed'].shape)}: {exc}") from None
        report.resized.append("pos_embed")
    report.missing = sorted(k for k in own if k not in state)
    report.unexpected = sorted(k for k in state if k not in own)
    clashes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
               for k in own if k in state and state[k].shape != own[k].shape]
    if strict and (report.missing or report.unexpected or clashes):
        raise CheckpointError(path, _mismatch_message(report, clashes, model.config))
    loadable = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(loadable, strict=False)
    return report


def _mismatch_message(report: LoadReport, clashes: list[str], config: FluxViTConfig) -> str:
    def listing(title: str, items: list[str]) -> str:
        more = f" ... and {len(items) - 8} more" if len(items) > 8 else ""
        return f"{title} ({len(items)}): {', '.join(items[:8])}{more}"

    parts = [f"does not fit {config.name}"]
    if report.missing:
        parts.append(listing("missing keys", report.missing))
    if report.unexpected:
        parts.append(listing("unexpected keys", report.unexpected))
    if clashes:
        parts.append(listing("shape clashes", clashes))
    if any(k.startswith("head.") for k in report.unexpected + [c.split(":")[0] for c in clashes]):
        parts.append("hint: create the model with num_classes equal to the checkpoint's head size")
    return "; ".join(parts)


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """``write(temporary_path)`` beside ``path``, then rename over it: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_torch_save(payload: Any, path: str | Path) -> None:
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def save_checkpoint(model: FluxViT, path: str | Path, **metadata: Any) -> None:
    """Write the model with its config (and any metadata, e.g. ``class_names``) atomically."""
    atomic_torch_save({"model": model.state_dict(), "fluxvid": {"config": model.config.to_dict(), **metadata}}, path)


def load_model(path: str | Path, name: str | None = None, **overrides: Any) -> tuple[FluxViT, dict[str, Any]]:
    """Build and load a model from a checkpoint: FluxVid files carry their config; released files need the
    registered ``name`` (the class count is read from the head). Returns the model (eval mode) and metadata."""
    state, metadata = read_checkpoint(path)
    if "config" in metadata:
        config = FluxViTConfig.from_dict(metadata["config"])
    elif name is not None:
        config = get_config(name)
    else:
        raise CheckpointError(path, "has no FluxVid config; pass the model name (e.g. fluxvit_small_patch14)")
    head = state.get("head.0.weight")
    config = config.replace(**{"num_classes": head.shape[0] if head is not None else 0, **overrides})
    model = create_model(config, num_classes=config.num_classes)
    _load_state(model, state, metadata, path, strict=True)
    return model.eval(), metadata
