"""The work behind the UI and the API: models loaded once (lazily, under a lock), one model call at a time per
model (requests queue instead of failing), and the library rules (which files may be read)."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from encoder import FluxViTConfig, Plan, get_config, plan
from encoder.checkpoint import CheckpointError, load_model
from encoder.video import VideoDecodeError, load_clip, probe

from .settings import ServeSettings


class Unavailable(Exception):
    """A feature whose model the server was not given (or could not load): the message says which and why."""


class BadInput(Exception):
    """A request the server refuses; ``status`` is the HTTP code that says why."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class BuildJob:
    """A library build started from the UI or the API, and how far it got."""

    id: str
    folder: str
    state: str = "running"  # running | done | failed
    videos_done: int = 0
    videos_total: int = 0
    segments: int = 0
    skipped: int = 0
    eta_seconds: float | None = None
    message: str = ""
    started: float = field(default_factory=time.time)


class Services:
    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self._locks = {name: threading.Lock() for name in ("index", "search", "classify", "chat", "build")}
        self._loaded: dict[str, Any] = {}
        self._errors: dict[str, str] = {}
        self.sessions: dict[str, Any] = {}
        self._sessions_lock = threading.Lock()
        self.jobs: dict[str, BuildJob] = {}

    # -- availability -----------------------------------------------------------------------------------------
    def availability(self) -> dict[str, str | None]:
        """Per feature: None when usable, else a one-line reason (shown in the UI, returned by the API)."""
        s = self.settings
        reasons = {
            "search": None if s.index else "no index: start the server with --index DIR",
            "classify": None if s.classifier else "no classifier: start the server with --classifier FILE",
            "chat": None if s.projector else "no chat model: start the server with --projector FILE (and --llm)",
        }
        reasons["library"] = reasons["search"]
        for name, error in self._errors.items():
            for feature in ("search", "library") if name == "index" else (name,):
                reasons[feature] = error
        return reasons

    def loaded(self) -> list[str]:
        """The models (and the index) loaded so far: they load on first use."""
        return sorted(self._loaded)

    def require(self, feature: str) -> None:
        reason = self.availability()[feature]
        if reason:
            raise Unavailable(reason)

    def _get(self, name: str, loader: Callable[[], Any]) -> Any:
        if name in self._loaded:
            return self._loaded[name]
        with self._locks[name]:
            if name not in self._loaded:
                try:
                    self._loaded[name] = loader()
                except (CheckpointError, OSError, ValueError, RuntimeError) as exc:
                    self._errors[name] = f"{name} model failed to load: {exc}"
                    raise Unavailable(self._errors[name]) from None
        return self._loaded[name]

    # -- budgets ----------------------------------------------------------------------------------------------
    def vision_config(self) -> FluxViTConfig:
        """The ViT whose plans the budget slider shows: the classifier's, else the search model's, else tiny."""
        if self.settings.classifier and "classify" in self._loaded:
            return self._loaded["classify"][0].config
        if self.settings.index and "search" in self._loaded:
            return self._loaded["search"].model.vision.config
        return get_config("fluxvit_tiny_patch14")

    def plan(self, budget: int, config: FluxViTConfig | None = None) -> Plan:
        s = self.settings
        if not s.min_budget <= budget <= s.max_budget:
            raise BadInput(f"budget must be between {s.min_budget} and {s.max_budget} tokens, got {budget}")
        return plan(budget, config or self.vision_config())

    # -- files ------------------------------------------------------------------------------------------------
    def check_video(self, path: Path, name: str | None = None) -> float:
        """Refuse a file of a type or length the server does not take; returns its duration."""
        shown = name or path.name
        if path.suffix.lower() not in self.settings.allowed_extensions:
            raise BadInput(f"{shown}: file type {path.suffix or '(none)'} is not allowed "
                           f"({', '.join(self.settings.allowed_extensions)})", 415)
        try:
            duration = probe(path).duration
        except VideoDecodeError as exc:
            raise BadInput(f"{shown}: {exc.reason}", 422) from None
        if duration > self.settings.max_duration_s:
            raise BadInput(f"{shown}: {duration:.0f} s is longer than the {self.settings.max_duration_s:.0f} s limit",
                           413)
        return duration

    def library_file(self, path: str) -> Path:
        """A file of the indexed library, or an error: nothing else on the machine is ever served."""
        self.require("library")
        index = self.index()
        if not path or not index.contains_path(path):
            raise BadInput(f"{path!r} is not a video of the indexed library", 404)
        return Path(path).resolve()

    # -- search -----------------------------------------------------------------------------------------------
    def index(self):
        self.require("library")
        from index import IndexStoreError, VideoIndex

        def open_index():
            try:
                return VideoIndex.open(self.settings.index)
            except IndexStoreError as exc:
                raise ValueError(str(exc)) from None
        return self._get("index", open_index)

    def searcher(self):
        self.require("search")
        from retrieval.dual_encoder import DualEncoder
        from retrieval.search import Searcher

        def load():
            index = self.index()
            model = DualEncoder.load(self.settings.model or index.info.model_path).to(self.device)
            return Searcher(index, model)
        return self._get("search", load)

    def search(self, query: str, k: int, filters: Any, offset: int = 0, merge: bool = True) -> list[dict]:
        searcher = self.searcher()
        if not query.strip():
            raise BadInput("the query is empty")
        with self._locks["search"]:
            return [m.to_dict() for m in searcher.search_text(query, k, filters, merge, offset)]

    def similar(self, segment_id: int, k: int, filters: Any, offset: int = 0) -> list[dict]:
        searcher = self.searcher()
        try:
            with self._locks["search"]:
                return [m.to_dict() for m in searcher.similar(segment_id, k, filters, True, offset)]
        except KeyError:
            raise BadInput(f"no segment {segment_id} in the index", 404) from None

    def search_video(self, path: Path, k: int, budget: int, filters: Any, offset: int = 0) -> list[dict]:
        """Moments like a query video, which is encoded at ``budget`` (the index's vectors keep their own)."""
        searcher = self.searcher()
        self.plan(budget, searcher.model.vision.config)
        try:
            with self._locks["search"]:
                return [m.to_dict() for m in searcher.search_video(path, k, filters, True, offset, budget)]
        except VideoDecodeError as exc:
            raise BadInput(f"{path.name}: {exc.reason}", 422) from None

    def index_budget(self) -> int | None:
        """The budget the index's vectors were encoded at (None without an index)."""
        return None if self.availability()["library"] else self.index().info.budget

    def library_videos(self) -> list[str]:
        """Paths of the library's indexed videos, sorted (for the pickers)."""
        if self.availability()["library"]:
            return []
        index = self.index()
        wholes = index.allowed_ids("s.whole = 1 AND v.status = 'ok'", [])
        return sorted({record.path for record in index.segments(wholes.tolist()).values()})

    # -- classify ---------------------------------------------------------------------------------------------
    def classifier(self) -> tuple[Any, list[str]]:
        self.require("classify")

        def load():
            model, metadata = load_model(self.settings.classifier)
            if model.config.num_classes == 0:
                raise ValueError(f"{self.settings.classifier} has no classification head")
            names = list(metadata.get("class_names") or [str(i) for i in range(model.config.num_classes)])
            return model.to(self.device).eval(), names
        return self._get("classify", load)

    def classify(self, path: Path, budget: int, top_k: int = 5) -> dict[str, Any]:
        model, names = self.classifier()
        video_plan = self.plan(budget, model.config)
        started = time.perf_counter()
        try:
            clip = load_clip(path, video_plan)
        except VideoDecodeError as exc:
            raise BadInput(f"{path.name}: {exc.reason}", 422) from None
        with self._locks["classify"], torch.inference_mode():
            logits = model(clip.video[None].to(self.device), keep_tokens=video_plan.keep_tokens)
        probabilities = logits.float().softmax(-1)[0].cpu()
        top = probabilities.topk(min(top_k, len(names)))
        return {"labels": [{"label": names[i], "score": round(float(p), 6)} for p, i in zip(top.values, top.indices)],
                "plan": plan_dict(video_plan), "latency_ms": round(1000 * (time.perf_counter() - started), 1)}

    # -- chat -------------------------------------------------------------------------------------------------
    def chat_model(self, budget: int):
        self.require("chat")
        from chat import ChatModel

        base = self._get("chat", lambda: ChatModel.load(self.settings.projector, llm=self.settings.llm,
                                                        device=self.device))
        if budget == base.vision.plan.budget:
            return base
        self.plan(budget, base.vision.vit.config)
        tower = base.vision.at(budget)
        return ChatModel(tower, base.projector, base.llm, base.tokenizer, base.info, base.vision_name, base.llm_name)

    def chat(self, session_id: str | None, message: str, video: Path | None, budget: int) -> tuple[str, Iterator[str]]:
        """(session id, answer stream); a new video (or budget) starts the session's conversation afresh."""
        from chat import ChatError, GenerationSettings, Session

        if not message.strip():
            raise BadInput("the message is empty")
        with self._sessions_lock:
            session = self.sessions.get(session_id) if session_id else None
        if session_id and session is None and video is None:
            raise BadInput(f"no chat session {session_id}: start one with a video", 404)
        session_id = session_id or uuid.uuid4().hex
        target = video.resolve() if video is not None else Path(session.video.path)
        model = self.chat_model(budget)
        if session is None or session.video is None or session.video.path != str(target) \
                or session.model.vision.plan.budget != budget:
            video = target
            session = Session(model, GenerationSettings(temperature=self.settings.chat_temperature,
                                                        max_new_tokens=self.settings.chat_max_new_tokens))
            try:
                with self._locks["chat"]:
                    session.load_video(video)
            except VideoDecodeError as exc:
                raise BadInput(f"{video.name}: {exc.reason}", 422) from None
            with self._sessions_lock:
                self.sessions[session_id] = session
        try:
            stream = session.ask(message)
        except ChatError as exc:
            raise BadInput(str(exc), 413) from None

        def locked() -> Iterator[str]:
            with self._locks["chat"]:
                yield from stream
        return session_id, locked()

    def reset_chat(self, session_id: str) -> None:
        with self._sessions_lock:
            self.sessions.pop(session_id, None)

    def history(self, session_id: str) -> list[tuple[str, str]]:
        with self._sessions_lock:
            session = self.sessions.get(session_id)
        return [] if session is None else [(t.question, t.answer) for t in session.history]

    # -- library ----------------------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        return self.index().stats().to_dict()

    def start_build(self, folder: str | None) -> BuildJob:
        """In the background: add the videos of ``folder`` to the library, or (``None``) reindex the library
        (re-encode changed files, drop deleted ones). Progress lands in the returned job."""
        index = self.index()
        if folder is None:
            source, prune = index.store.write_manifest(index.dir / "library-manifest.jsonl"), True
        else:
            source, prune = Path(folder).expanduser(), False
            if not source.is_dir():
                raise BadInput(f"{folder} is not a folder", 404)
        if not self._locks["build"].acquire(blocking=False):
            raise BadInput("a build is already running", 409)
        job = BuildJob(uuid.uuid4().hex[:12], str(folder or "reindex"))
        self.jobs[job.id] = job

        def run() -> None:
            from index import build_index

            def progress(p) -> None:
                job.videos_done, job.videos_total, job.segments = p.videos_done, p.videos_total, p.segments_done
                job.skipped, job.eta_seconds = p.skipped, p.eta_seconds
            try:
                report = build_index(source, self.settings.index, index.info.model_path, index.info.budget,
                                     window=index.info.window, stride=index.info.stride,
                                     index_type=index.info.index_type, progress=progress, show_progress=False,
                                     num_workers=1, prune=prune)
                job.state, job.message = "done", (f"added {report.added}, updated {report.updated}, removed "
                                                  f"{report.removed}, skipped {len(report.skipped)}")
            except Exception as exc:  # noqa: BLE001 - reported to the user, the server goes on
                job.state, job.message = "failed", str(exc)
            finally:
                self._locks["build"].release()
        threading.Thread(target=run, name=f"build-{job.id}", daemon=True).start()
        return job


def plan_dict(p: Plan) -> dict[str, Any]:
    return {"budget": p.budget, "frames": p.frames, "resolution": p.resolution, "kept_tokens": p.tokens,
            "pool_tokens": p.pool_tokens, "head": p.head, "gmacs": round(p.est_gmacs, 2),
            "relative_cost": round(p.relative_cost, 3), "text": p.describe()}
