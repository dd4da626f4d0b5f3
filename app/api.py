"""The HTTP API under ``/api`` (OpenAPI at ``/docs``): classify, search, chat (streamed), library files, health.

Model calls run in worker threads with the request timeout; each model serves one call at a time, so
concurrent requests queue. Uploads are streamed to disk and cut off at the size limit.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

from fastapi import APIRouter, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.types import ASGIApp

from retrieval.search import SearchFilters

from .services import BadInput, Services, Unavailable, plan_dict

TOKEN_COOKIE = "fluxvid_token"


class ChatRequest(BaseModel):
    message: str
    session_id: str | None = None
    video: str | None = None  # a library path or an upload id from POST /api/upload
    budget: int | None = None
    stream: bool = True


class TokenAuth(BaseHTTPMiddleware):
    """Bearer-token auth for everything but the health check: ``Authorization: Bearer T``, or for browsers
    ``?token=T`` once (then a cookie)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        super().__init__(app)
        self.token = token

    async def dispatch(self, request: Request, call_next: Callable) -> Any:
        if request.url.path == "/api/health":
            return await call_next(request)
        header = request.headers.get("authorization", "")
        given = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else None
        given = given or request.query_params.get("token") or request.cookies.get(TOKEN_COOKIE)
        if not given or not secrets.compare_digest(given, self.token):
            return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        response = await call_next(request)
        if request.query_params.get("token"):
            response.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="strict")
        return response


class UploadLimit(BaseHTTPMiddleware):
    """Refuse a body over the limit from its Content-Length before reading it (413)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        super().__init__(app)
        self.max_bytes = max_bytes

    async def dispatch(self, request: Request, call_next: Callable) -> Any:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > self.max_bytes:
            return JSONResponse({"error": f"upload of {int(length) / 2**20:.1f} MB is over the "
                                          f"{self.max_bytes / 2**20:.0f} MB limit"}, status_code=413)
        return await call_next(request)


def build_router(services: Services) -> APIRouter:
    router = APIRouter(prefix="/api")
    settings = services.settings
    uploads = Path(settings.uploads or tempfile.mkdtemp(prefix="fluxvid-uploads-"))
    uploads.mkdir(parents=True, exist_ok=True)

    async def run(work: Callable[[], Any]) -> Any:
        try:
            return await asyncio.wait_for(asyncio.to_thread(work), settings.request_timeout_s)
        except asyncio.TimeoutError:
            raise HTTPException(504, f"the request took longer than {settings.request_timeout_s:.0f} s") from None
        except Unavailable as exc:
            raise HTTPException(503, str(exc)) from None
        except BadInput as exc:
            raise HTTPException(exc.status, str(exc)) from None

    async def save_upload(file: UploadFile) -> Path:
        name = Path(file.filename or "upload").name
        suffix = Path(name).suffix.lower()
        if suffix not in settings.allowed_extensions:
            raise HTTPException(415, f"{name}: file type {suffix or '(none)'} is not allowed "
                                     f"({', '.join(settings.allowed_extensions)})")
        target = uploads / f"{secrets.token_hex(8)}{suffix}"
        limit, written = int(settings.max_upload_mb * 2**20), 0
        with target.open("wb") as out:
            while chunk := await file.read(1 << 20):
                written += len(chunk)
                if written > limit:
                    out.close()
                    target.unlink(missing_ok=True)
                    raise HTTPException(413, f"{name} is over the {settings.max_upload_mb:.0f} MB upload limit")
                out.write(chunk)
        try:
            await run(lambda: services.check_video(target, name))
        except HTTPException:
            target.unlink(missing_ok=True)
            raise
        return target

    def resolve_video(reference: str) -> Path:
        """An upload id (file name in the upload folder) or a library path."""
        candidate = uploads / Path(reference).name
        if Path(reference).name == reference and candidate.is_file():
            return candidate
        return services.library_file(reference)

    @router.get("/health")
    def health() -> dict[str, Any]:
        """Liveness, and which features this server can serve (None = ready, else why not)."""
        return {"status": "ok", "features": services.availability(), "loaded": services.loaded(),
                "device": str(services.device)}

    @router.get("/plan")
    def budget_plan(budget: int = Query(..., description="Token budget.")) -> dict[str, Any]:
        """How a budget is spent: frames x resolution, kept tokens, GMACs, cost relative to the full model."""
        try:
            return plan_dict(services.plan(budget))
        except BadInput as exc:
            raise HTTPException(exc.status, str(exc)) from None

    @router.post("/upload")
    async def upload(file: UploadFile = File(...)) -> dict[str, str]:
        """Store a video for later requests (chat); returns its id."""
        return {"id": (await save_upload(file)).name}

    @router.post("/classify")
    async def classify(file: UploadFile | None = File(None), path: str | None = Form(None),
                       budget: int = Form(settings.default_budget), top_k: int = Form(5, ge=1, le=100)
                       ) -> dict[str, Any]:
        """Top-k action labels of an uploaded video or a library video, with the plan used and the latency."""
        if (file is None) == (path is None):
            raise HTTPException(400, "send exactly one of a multipart `file` or a library `path`")
        services_ok = services.availability()["classify"]
        if services_ok:
            raise HTTPException(503, services_ok)
        video = await save_upload(file) if file is not None else await run(lambda: services.library_file(path))
        try:
            if file is None:
                await run(lambda: services.check_video(video))
            return await run(lambda: services.classify(video, budget, top_k))
        finally:
            if file is not None:
                video.unlink(missing_ok=True)

    @router.get("/search")
    async def search(q: str = Query(..., min_length=1), k: int = Query(10, ge=1, le=200),
                     budget: int | None = Query(None, description="The caller's budget: text search ranks the "
                                                "index's vectors, encoded at `index_budget`; a different budget "
                                                "is checked and answered with a `note`."),
                     offset: int = Query(0, ge=0), tag: list[str] = Query([]), path_prefix: str | None = None,
                     min_duration: float | None = None, max_duration: float | None = None,
                     after: float | None = None, before: float | None = None, merge: bool = True
                     ) -> dict[str, Any]:
        """Moments matching a text query, best first, with filters applied inside the search."""
        filters = SearchFilters(tuple(tag), path_prefix, min_duration, max_duration, after, before)
        if budget is not None:
            await run(lambda: services.plan(budget))
        moments = await run(lambda: services.search(q, k, filters, offset, merge))
        index_budget = services.index_budget()
        answer = {"query": q, "index_budget": index_budget, "moments": _with_urls(moments)}
        if budget is not None and budget != index_budget:
            answer["note"] = (f"the library was encoded at {index_budget} tokens; a text query does not depend on "
                              f"the budget, so budget {budget} changes nothing here (POST /api/search/video "
                              f"encodes a query video at it)")
        return answer

    @router.post("/search/video")
    async def search_video(file: UploadFile | None = File(None), path: str | None = Form(None),
                           budget: int = Form(settings.default_budget), k: int = Form(10, ge=1, le=200),
                           offset: int = Form(0, ge=0), tag: list[str] = Form([]), path_prefix: str | None = Form(None),
                           min_duration: float | None = Form(None), max_duration: float | None = Form(None)
                           ) -> dict[str, Any]:
        """Moments like a query video (multipart `file` or a library `path`), encoded at `budget`; a library
        video finds itself first."""
        if (file is None) == (path is None):
            raise HTTPException(400, "send exactly one of a multipart `file` or a library `path`")
        reason = services.availability()["search"]
        if reason:
            raise HTTPException(503, reason)
        filters = SearchFilters(tuple(tag), path_prefix, min_duration, max_duration)
        video = await save_upload(file) if file is not None else await run(lambda: services.library_file(path))
        try:
            moments = await run(lambda: services.search_video(video, k, budget, filters, offset))
        finally:
            if file is not None:
                video.unlink(missing_ok=True)
        return {"budget": budget, "index_budget": services.index_budget(), "moments": _with_urls(moments)}

    @router.get("/similar/{segment_id}")
    async def similar(segment_id: int, k: int = Query(10, ge=1, le=200), offset: int = Query(0, ge=0)
                      ) -> dict[str, Any]:
        """More like an indexed segment (its own video left out)."""
        return {"moments": _with_urls(await run(lambda: services.similar(segment_id, k, None, offset)))}

    @router.post("/chat")
    async def chat(request: ChatRequest) -> Any:
        """One chat turn; streamed as plain text chunks (``stream: true``) or answered as JSON."""
        reason = services.availability()["chat"]
        if reason:
            raise HTTPException(503, reason)
        video = await run(lambda: resolve_video(request.video)) if request.video else None
        budget = request.budget or settings.default_budget
        session_id, stream = await run(lambda: services.chat(request.session_id, request.message, video, budget))
        if not request.stream:
            answer = await run(lambda: "".join(stream))
            return {"session_id": session_id, "answer": answer}
        return StreamingResponse(_iterate_in_thread(stream), media_type="text/plain; charset=utf-8",
                                 headers={"X-Session-Id": session_id})

    @router.get("/video")
    async def video(path: str) -> FileResponse:
        """A library video (HTTP Range supported, so players can seek to a moment)."""
        return FileResponse(await run(lambda: services.library_file(path)))

    @router.get("/thumb/{segment_id}")
    async def thumbnail(segment_id: int) -> FileResponse:
        def find() -> Path:
            try:
                record = services.index().segment(segment_id)
            except KeyError:
                raise BadInput(f"no segment {segment_id}", 404) from None
            if record.thumbnail is None or not record.thumbnail.is_file():
                raise BadInput(f"segment {segment_id} has no thumbnail", 404)
            return record.thumbnail
        return FileResponse(await run(find), media_type="image/jpeg")

    @router.get("/library")
    async def library() -> dict[str, Any]:
        """Index statistics: videos, segments, skipped files with reasons, model, budget."""
        return await run(services.stats)

    @router.post("/library/build")
    async def library_build(folder: str | None = Form(None)) -> dict[str, Any]:
        """Add a folder to the library (or reindex it when no folder is given) in the background."""
        job = await run(lambda: services.start_build(folder))
        return job.__dict__

    @router.get("/library/build/{job_id}")
    def library_job(job_id: str) -> dict[str, Any]:
        if job_id not in services.jobs:
            raise HTTPException(404, f"no build job {job_id}")
        return services.jobs[job_id].__dict__

    router.add_event_handler("shutdown", lambda: shutil.rmtree(uploads, ignore_errors=True)
                             if settings.uploads is None else None)
    return router


def _with_urls(moments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add where a client fetches each moment: the video (seeking to its start) and the thumbnail."""
    for moment in moments:
        moment["video_url"] = f"/api/video?path={quote(moment['path'], safe='')}#t={moment['start']:.2f}"
        moment["thumbnail_url"] = f"/api/thumb/{moment['segment_id']}"
    return moments


async def _iterate_in_thread(stream: Any):
    """Pull a blocking generator from a worker thread, one piece at a time, without blocking the event loop."""
    done = object()
    while True:
        piece = await asyncio.to_thread(next, stream, done)
        if piece is done:
            return
        yield piece
