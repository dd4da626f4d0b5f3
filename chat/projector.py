"""The projector between FluxViT and the LLM, saved on its own with the names of the models it fits.

The paper (4.4) uses a single-layer MLP; a two-layer GELU MLP is the common stronger option. Both start with a
LayerNorm because FluxViT's last-block tokens are the un-normalised residual stream, whose scale varies with
the checkpoint and the token count.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from .errors import ProjectorError
from .features import VisionFeatures

ProjectorKind = Literal["linear", "mlp2"]
PROJECTOR_KINDS: tuple[str, ...] = ("linear", "mlp2")
PROJECTOR_FILE = "projector.safetensors"  # the file name a projector gets in a folder
_METADATA_KEY = "fluxvid_projector"


def _mlp(kind: str, in_dim: int, out_dim: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))


class Projector(nn.Module):
    """ViT features -> LLM input embeddings: tokens ``[B, N, vision_dim]`` -> ``[B, N, llm_dim]``, and with
    ``summary_dim`` the ViTs' attention-pooled features ``[B, summary_dim]`` -> one more embedding after them
    (through a net of its own: they live in another space than the tokens)."""

    def __init__(self, kind: ProjectorKind, vision_dim: int, llm_dim: int, summary_dim: int = 0) -> None:
        super().__init__()
        if kind not in PROJECTOR_KINDS:
            raise ProjectorError(f"unknown projector kind {kind!r}; choose one of {list(PROJECTOR_KINDS)}")
        self.kind, self.vision_dim, self.llm_dim, self.summary_dim = kind, vision_dim, llm_dim, summary_dim
        self.norm = nn.LayerNorm(vision_dim)
        self.net = _mlp(kind, vision_dim, llm_dim)
        if summary_dim:
            self.summary_norm = nn.LayerNorm(summary_dim)
            self.summary = _mlp(kind, summary_dim, llm_dim)

    def forward(self, features: VisionFeatures) -> torch.Tensor:
        tokens = self.net(self.norm(features.tokens.to(self.norm.weight.dtype)))
        if not self.summary_dim:
            return tokens
        if features.summary is None:
            raise ProjectorError("this projector reads a summary of the clip, but the vision tower gave none")
        summary = self.summary(self.summary_norm(features.summary.to(self.norm.weight.dtype)))
        return torch.cat([tokens, summary[:, None]], dim=1)


@dataclass(frozen=True)
class ProjectorInfo:
    """What a projector was trained with: enough to rebuild the whole chat model from the file alone."""

    kind: str
    vision_dim: int
    llm_dim: int
    vision: str  # FluxViT checkpoint path, or a registered model name (seeded random weights, for tests)
    vision_model: str  # registered architecture name (released checkpoints carry no config)
    llm: str  # local directory or hub id
    budget: int
    tokens_per_frame: int | None
    lora: str | None = None  # LoRA adapter folder, relative to the projector file
    second_vision: str | None = None  # a FluxViT whose features follow the first's (chat.vision), like ``vision``
    summary_dim: int = 0  # the pooled features' size when the video ends with a summary embedding (0: none)

    def check_fits(self, vision_dim: int, llm_dim: int, vision: str, llm: str, summary_dim: int = 0) -> None:
        """Raise :class:`ProjectorError` when the ViT or LLM in use has other feature sizes."""
        problems = []
        if vision_dim != self.vision_dim:
            problems.append(f"it takes {self.vision_dim}-d vision features but the ViT {vision} gives {vision_dim}-d")
        if summary_dim != self.summary_dim:
            problems.append(f"it takes a {self.summary_dim}-d summary but the ViT {vision} gives {summary_dim}-d")
        if llm_dim != self.llm_dim:
            problems.append(f"it outputs {self.llm_dim}-d embeddings but the LLM {llm} takes {llm_dim}-d")
        if problems:
            raise ProjectorError(
                f"projector does not fit: {'; '.join(problems)} (it was trained for ViT {self.vision} and "
                f"LLM {self.llm})"
            )


def save_projector(projector: Projector, info: ProjectorInfo, path: str | Path) -> Path:
    """Write the weights and ``info`` as one small safetensors file, atomically (temp file, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in projector.state_dict().items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        save_file(state, tmp, metadata={_METADATA_KEY: json.dumps(asdict(info))})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_projector_info(path: str | Path) -> ProjectorInfo:
    """Only the metadata (no weights): which ViT, LLM, budget and pooling the projector was trained with."""
    path = Path(path)
    if not path.is_file():
        raise ProjectorError(f"projector {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get(_METADATA_KEY)
    except (SafetensorError, OSError) as exc:
        raise ProjectorError(f"projector {path} is not a safetensors file: {exc}") from None
    if raw is None:
        raise ProjectorError(f"projector {path} has no FluxVid metadata (was it written by save_projector?)")
    try:
        data = json.loads(raw)
        known = {f.name for f in fields(ProjectorInfo)}
        return ProjectorInfo(**{k: v for k, v in data.items() if k in known})
    except (json.JSONDecodeError, TypeError) as exc:
        raise ProjectorError(f"projector {path} has unreadable metadata: {exc}") from None


def load_projector(path: str | Path) -> tuple[Projector, ProjectorInfo]:
    """The projector (eval mode, fp32) and its :class:`ProjectorInfo`."""
    info = read_projector_info(path)
    projector = Projector(info.kind, info.vision_dim, info.llm_dim, info.summary_dim)  # type: ignore[arg-type]
    state = load_file(str(path))
    try:
        projector.load_state_dict(state)
    except RuntimeError as exc:
        raise ProjectorError(f"projector {path}: weights do not match its metadata ({info.kind}, "
                             f"{info.vision_dim} -> {info.llm_dim}): {str(exc).splitlines()[0]}") from None
    return projector.eval(), info
