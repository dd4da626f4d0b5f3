"""One server: the HTTP API under /api and the Gradio UI at /, sharing models loaded once."""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gradio as gr  # noqa: E402
import uvicorn  # noqa: E402
from fastapi import FastAPI, HTTPException, Request  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402

from .api import TokenAuth, UploadLimit, build_router  # noqa: E402
from .services import Services  # noqa: E402
from .settings import ServeSettings  # noqa: E402
from .ui import build_ui  # noqa: E402


def create_app(settings: ServeSettings) -> FastAPI:
    services = Services(settings)
    app = FastAPI(title=f"{settings.title} API", version="0.1.0",
                  description="Classify, search and chat about videos at a chosen compute budget (tokens).")
    app.state.services = services

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    app.include_router(build_router(services))
    app.add_middleware(UploadLimit, max_bytes=int(settings.max_upload_mb * 2**20) + 2**16)
    if settings.token:
        app.add_middleware(TokenAuth, token=settings.token)
    blocks = build_ui(services).queue(default_concurrency_limit=1)
    allowed = [str(settings.index)] if settings.index else []
    return gr.mount_gradio_app(app, blocks, path="/", allowed_paths=allowed)


def serve(settings: ServeSettings) -> None:
    """Run until interrupted, printing the URL to open."""
    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning")
    server = uvicorn.Server(config)
    shown = f"http://{settings.host}:{settings.port}/" + (f"?token={settings.token}" if settings.token else "")
    print(f"FluxVid is serving on {shown}  (API docs: http://{settings.host}:{settings.port}/docs)", flush=True)
    server.run()
