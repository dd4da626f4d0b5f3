"""``fluxvid serve``: the app (UI + HTTP API) over an index and the models given."""

from __future__ import annotations

from pathlib import Path

import typer
from pydantic import ValidationError

from encoder.cli import fail

from .settings import ServeSettings


def serve_command(
    index: Path | None = typer.Option(None, help="Index folder (search and library tabs)."),
    model: Path | None = typer.Option(None, help="Dual-encoder file (default: the index's own)."),
    classifier: Path | None = typer.Option(None, help="Flux-FT checkpoint with class names (classify tab)."),
    projector: Path | None = typer.Option(None, help="Chat projector file (chat tab)."),
    llm: str | None = typer.Option(None, help="LLM folder (default: the projector's)."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(7860, min=0, max=65535),
    token: str | None = typer.Option(None, envvar="FLUXVID_TOKEN", help="Require this bearer token (API and UI)."),
    budget: int = typer.Option(1024, help="Default compute budget (tokens)."),
    max_upload_mb: float = typer.Option(200.0, help="Largest upload accepted."),
    max_duration: float = typer.Option(900.0, help="Longest video accepted (seconds)."),
    timeout: float = typer.Option(120.0, help="Request timeout (seconds)."),
) -> None:
    """Serve search, classification and chat in a browser UI with a compute-budget slider, and as an HTTP API."""
    from .server import serve

    for path in (index, model, classifier, projector):
        if path is not None and not path.exists():
            fail(f"{path} does not exist")
    try:
        settings = ServeSettings(index=index, model=model, classifier=classifier, projector=projector, llm=llm,
                                 host=host, port=port, token=token, default_budget=budget,
                                 max_upload_mb=max_upload_mb, max_duration_s=max_duration, request_timeout_s=timeout)
    except ValidationError as exc:
        fail(exc)
    serve(settings)
