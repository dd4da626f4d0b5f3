"""Loading the released InternVideo2 distilled CLIP checkpoints (S14 / B14 / L14) as a :class:`DualEncoder`.

Their layout (InternVideo2 ``multi_modality``, ``InternVideo2_CLIP_small``):

- ``vision_encoder.*``: the FluxViT architecture without GLPE and DPN (same block names), one attention-pooling
  ``clip_projector`` (no ``fc_norm`` weights, no classifier); training-only decoders may be present.
- ``vision_align.0`` LayerNorm, ``vision_align.1`` Linear to the shared width (512).
- ``text_encoder.*``: Apple's MobileCLIP-B text transformer (renamed to open_clip's names here); the release
  may also keep it in a separate file (Apple's ``mobileclip_b.pt``), passed as ``text_path``.
- ``temp``: the contrastive temperature (1/100).

The single ``clip_projector`` is copied into all three of FluxViT's pooling heads, so any token count gives
the released model's output.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from encoder.checkpoint import CheckpointError, read_checkpoint
from encoder.config import get_config, list_models

from .dual_encoder import DualEncoder, DualEncoderConfig, load_state_strict
from .text_tower import DEFAULT_TEXT_TOWER, resolve_text_config, text_tower_state

RELEASE_TEMPERATURE = 0.01
_VISION = "vision_encoder."
# Training-time parts of the release that a dual encoder does not use.
_SKIPPED_VISION = ("clip_decoder.", "final_clip_decoder.", "mae_decoder.", "clip_pos_embed", "clip_img_pos_embed",
                   "img_pos_embed")
# FluxViT parts the release has no weights for and the dual encoder never runs.
_UNUSED_VISION = ("vision.fc_norm.", "vision.final_clip_decoder_for_projs.")


def _stored_grid(rows: int, patch: int, preferred_frames: int = 8) -> tuple[int, int]:
    """(frames, image size) whose T x G x G grid has ``rows`` positions, frames nearest the release's 8."""
    options = [(t, math.isqrt(rows // t)) for t in range(1, rows + 1)
               if rows % t == 0 and math.isqrt(rows // t) ** 2 == rows // t]
    if not options:
        raise ValueError(f"{rows} positional rows do not form a T x G x G grid")
    frames, side = min(options, key=lambda o: (abs(o[0] - preferred_frames), o[0]))
    return frames, side * patch


def _vision_name(state: dict[str, torch.Tensor]) -> str:
    width = state[_VISION + "cls_token"].shape[-1]
    depth = len({k.split(".")[2] for k in state if k.startswith(_VISION + "blocks.")})
    matches = [n for n in list_models() if (get_config(n).embed_dim, get_config(n).depth) == (width, depth)]
    if len(matches) != 1:
        raise ValueError(f"no single registered model has width {width} and depth {depth}; pass vision=")
    return matches[0]


def _vision_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        if not key.startswith(_VISION):
            continue
        name = key.removeprefix(_VISION)
        if name.startswith(_SKIPPED_VISION):
            continue
        if name.startswith("clip_projector."):
            for head in range(3):
                out[f"vision.clip_projector.{head}.{name.removeprefix('clip_projector.')}"] = value
        else:
            out[f"vision.{name}"] = value
    return out


def load_internvideo2_clip(
    path: str | Path, text_path: str | Path | None = None, vision: str | None = None,
    text: str | dict[str, Any] = DEFAULT_TEXT_TOWER,
) -> DualEncoder:
    """A :class:`DualEncoder` (eval mode) holding a released InternVideo2 CLIP checkpoint.

    ``vision``: the registered architecture (default: inferred from width and depth, e.g.
    ``fluxvit_small_patch14`` for S14); GLPE and DPN are turned off and the positional grid's frames and size
    are read from the file. ``text``: the open_clip config of the text tower (MobileCLIP-B).
    """
    text_cfg, quick_gelu = resolve_text_config(text)
    state, _ = read_checkpoint(path)
    if _VISION + "cls_token" not in state or "vision_align.1.weight" not in state:
        raise CheckpointError(path, "is not an InternVideo2 CLIP checkpoint (no vision_encoder.* / vision_align.*)")
    try:
        base = get_config(vision or _vision_name(state))
        frames, size = _stored_grid(state[_VISION + "pos_embed"].shape[1] - 1, base.patch_size)
        vision_config = base.replace(
            use_gpe=False, use_lpe=False, use_dpn=False, num_classes=0, num_frames=frames, img_size=size,
            clip_embed_dim=state[_VISION + "clip_projector.cross_attn.proj.weight"].shape[0],
        )
    except (KeyError, ValueError) as exc:
        raise CheckpointError(path, f"cannot be read as InternVideo2 CLIP vision: {exc}") from None
    text_file = text_path if text_path is not None else path
    try:
        text_state = {f"text.{k}": v for k, v in
                      text_tower_state(read_checkpoint(text_path)[0] if text_path is not None else state).items()}
    except CheckpointError:
        raise
    except ValueError as exc:
        raise CheckpointError(text_file, f"cannot be read as a MobileCLIP / open_clip text tower: {exc}") from None
    temperature = float(state["temp"]) if "temp" in state else RELEASE_TEMPERATURE
    config = DualEncoderConfig(vision_config, text_cfg, text if isinstance(text, str) else None, quick_gelu,
                               state["vision_align.1.weight"].shape[0], temperature)
    model = DualEncoder(config)
    align = {k: v for k, v in state.items() if k.startswith("vision_align.")}
    full = {**_vision_state(state), **align, **text_state, "temp": torch.tensor(temperature)}
    load_state_strict(model, full, path, optional=_UNUSED_VISION)
    return model.eval()
