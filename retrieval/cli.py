"""``fluxvid retrieval import-internvideo2``: turn a released InternVideo2 CLIP checkpoint into a dual-encoder
file, so the index, search and evaluation use it like one trained here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from encoder.checkpoint import CheckpointError
from encoder.cli import fail

from .internvideo2 import load_internvideo2_clip
from .text_tower import DEFAULT_TEXT_TOWER

app = typer.Typer(help="Video-text dual encoders: import released weights.", no_args_is_help=True)


def _text_config(text: str) -> str | dict[str, Any]:
    """An open_clip config name, or an inline text config given as a JSON object."""
    if not text.lstrip().startswith("{"):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"--text is neither a config name nor valid JSON: {exc}") from None


@app.command("import-internvideo2")
def import_internvideo2(
    checkpoint: Path = typer.Argument(..., help="Released InternVideo2 CLIP file (S14/B14/L14, .pth)."),
    out: Path = typer.Option(..., help="Where to write the dual-encoder file (e.g. models/iv2_clip_b14.pt)."),
    text_checkpoint: Path | None = typer.Option(
        None, help="Apple's mobileclip_b.pt when the text tower is not inside CHECKPOINT."),
    vision: str | None = typer.Option(None, help="Registered FluxViT name (default: read from the file)."),
    text: str = typer.Option(DEFAULT_TEXT_TOWER, help="open_clip text config name, or a JSON text_cfg."),
) -> None:
    """Convert, check that every weight found its place, and save atomically."""
    try:
        model = load_internvideo2_clip(checkpoint, text_checkpoint, vision, _text_config(text))
    except (CheckpointError, FileNotFoundError, ValueError) as exc:
        fail(exc)
    model.save(out, source=str(checkpoint), recipe="internvideo2-clip")
    typer.echo(f"wrote {out} ({model.config.vision.name}, {model.dim}-d, model id {model.model_id})")
