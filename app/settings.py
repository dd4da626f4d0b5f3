"""What a server fronts and how it guards itself: models, library, limits, auth."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi")


class ServeSettings(BaseModel):
    """Everything optional is optional: a tab or endpoint whose model is missing explains itself instead."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    index: Path | None = Field(None, description="index folder from `fluxvid index build` (search, library)")
    model: Path | None = Field(None, description="dual-encoder file; default: the one the index was built with")
    classifier: Path | None = Field(None, description="Flux-FT checkpoint with class names (classify)")
    projector: Path | None = Field(None, description="chat projector file from `fluxvid train chat` (chat)")
    llm: str | None = Field(None, description="LLM folder overriding the projector's")
    host: str = "127.0.0.1"
    port: int = Field(7860, ge=0, le=65535)
    token: str | None = Field(None, description="bearer token required by the API and the UI")
    max_upload_mb: float = Field(200.0, gt=0)
    max_duration_s: float = Field(900.0, gt=0)
    allowed_extensions: tuple[str, ...] = DEFAULT_EXTENSIONS
    request_timeout_s: float = Field(120.0, gt=0)
    default_budget: int = Field(1024, ge=64)
    min_budget: int = Field(256, ge=16)
    max_budget: int = Field(4096, ge=64)
    chat_temperature: float = Field(0.0, ge=0, description="0 = greedy (answers are reproducible)")
    chat_max_new_tokens: int = Field(256, ge=1)
    uploads: Path | None = Field(None, description="where uploads are kept while used (default: a temp folder)")
    title: str = "FluxVid"
