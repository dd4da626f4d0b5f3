"""A conversation about one video: history, context-length guard, generation settings, save / restore.

Sessions share a :class:`~chat.model.ChatModel` but nothing else. A saved session is a small JSON file (the
video's path and window, the history and the settings); restoring it re-encodes the video.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Generator, Iterator

import torch

from encoder.video import VideoDecodeError

from .errors import ChatError, PromptTooLongError, SessionFileError
from .generation import GenerationSettings
from .model import ChatModel
from .prompt import DEFAULT_SYSTEM_PROMPT, VideoContext, build_messages

SESSION_FORMAT = "fluxvid-chat-session"
SESSION_VERSION = 1


@dataclass(frozen=True)
class Turn:
    question: str
    answer: str


@dataclass(frozen=True)
class VideoSource:
    """Where the session's video comes from: a file, or an indexed segment of it (seconds)."""

    path: str
    start: float | None = None
    end: float | None = None


class Session:
    """Ask questions about a video and get streamed answers; older turns are trimmed to fit the context."""

    def __init__(
        self, model: ChatModel, settings: GenerationSettings | None = None,
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT, max_context: int | None = None,
    ) -> None:
        self.model = model
        self.settings = replace(settings) if settings is not None else GenerationSettings()
        self.system_prompt = system_prompt
        self.max_context = min(max_context or model.context_length, model.context_length)
        self.history: list[Turn] = []
        self.video: VideoSource | None = None
        self.context: VideoContext | None = None
        self._embeddings: torch.Tensor | None = None

    def load_video(self, path: str | Path, start: float | None = None, end: float | None = None) -> VideoContext:
        """Encode a video (or the segment ``[start, end]`` seconds of it); a new video starts a new conversation."""
        self._embeddings, self.context = self.model.load_video(path, start, end)
        self.video = VideoSource(str(Path(path).resolve()), start, end)  # a restart may run from elsewhere
        self.history = []
        return self.context

    def reset(self) -> None:
        """Forget the conversation, keep the video and the settings."""
        self.history = []

    def prompt_ids(self, question: str) -> list[int]:
        """The prompt for ``question`` after the context guard: the oldest turns are dropped from the history
        until prompt plus ``max_new_tokens`` fit; the video always stays."""
        if self.context is None:
            raise ChatError("no video loaded: call load_video first")
        while True:
            messages = build_messages(self.system_prompt, self.context,
                                      [(t.question, t.answer) for t in self.history], question)
            ids = self.model.encode_prompt(messages)
            if len(ids) + self.settings.max_new_tokens <= self.max_context:
                return ids
            if not self.history:
                raise PromptTooLongError(
                    f"the prompt needs {len(ids)} tokens ({self.model.num_video_tokens} of them for the video) "
                    f"plus {self.settings.max_new_tokens} for the answer, more than the context of "
                    f"{self.max_context}; ask a shorter question, lower max new tokens, or use a smaller budget"
                )
            self.history.pop(0)

    def ask(self, question: str) -> Iterator[str]:
        """Stream the answer; the turn joins the history when the stream ends (or is stopped early).

        The prompt is built (and the history trimmed) now, so a too-long prompt raises here, not mid-stream.
        """
        ids = self.prompt_ids(question)
        assert self._embeddings is not None
        return self._answer(question, self.model.stream(ids, self._embeddings, self.settings))

    def _answer(self, question: str, stream: Generator[str, None, None]) -> Iterator[str]:
        pieces: list[str] = []
        said = False  # an answer that ended, or that the reader stopped (or Ctrl-C): all join the history
        try:
            for piece in stream:
                pieces.append(piece)
                yield piece
            said = True
        except (GeneratorExit, KeyboardInterrupt):
            said = True
            raise
        finally:
            stream.close()
            if said:
                self.history.append(Turn(question, "".join(pieces).strip()))

    def chat(self, question: str) -> str:
        """The whole answer at once."""
        return "".join(self.ask(question))

    # -- persistence ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": SESSION_FORMAT, "version": SESSION_VERSION,
            "video": None if self.video is None else vars(self.video),
            "system_prompt": self.system_prompt, "max_context": self.max_context,
            "settings": self.settings.to_dict(),
            "history": [{"question": t.question, "answer": t.answer} for t in self.history],
            "model": {"llm": self.model.llm_name, "vision": self.model.vision_name,
                      "budget": self.model.vision.plan.budget, "tokens_per_frame": self.model.info.tokens_per_frame},
        }

    def save(self, path: str | Path) -> Path:
        """Write the session as JSON atomically (temp file, fsync, rename): a crash leaves the old file whole."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(self.to_dict(), handle, indent=2, ensure_ascii=False)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    @classmethod
    def restore(cls, path: str | Path, model: ChatModel) -> "Session":
        """A saved session on ``model``: history and settings as saved, the video encoded again."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SessionFileError(f"session file {path} does not exist") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SessionFileError(f"session file {path} is not readable JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != SESSION_FORMAT:
            raise SessionFileError(f"{path} is not a FluxVid chat session file")
        if data.get("version") != SESSION_VERSION:
            raise SessionFileError(f"session file {path} has version {data.get('version')}; this FluxVid reads "
                                   f"version {SESSION_VERSION}")
        try:
            settings = GenerationSettings.from_dict(data["settings"])
            history = [Turn(str(t["question"]), str(t["answer"])) for t in data["history"]]
            video = VideoSource(**data["video"]) if data["video"] is not None else None
            session = cls(model, settings, data["system_prompt"], data["max_context"])
        except (KeyError, TypeError, ValueError) as exc:
            raise SessionFileError(f"session file {path} is incomplete or invalid: {exc}") from None
        if video is not None:
            try:
                session.load_video(video.path, video.start, video.end)
            except VideoDecodeError as exc:
                raise SessionFileError(f"session file {path}: its video cannot be loaded again: {exc}") from None
        session.history = history
        return session
