"""Video chat: FluxViT tokens at a budget -> projector -> a Qwen2-family LLM, with streamed answers."""

from .errors import ChatDataError, ChatError, LLMNotFoundError, ProjectorError, PromptTooLongError, SessionFileError
from .generation import GenerationSettings
from .model import ChatModel
from .projector import Projector, ProjectorInfo, load_projector, read_projector_info, save_projector
from .prompt import VideoContext
from .session import Session, Turn, VideoSource

__all__ = [
    "ChatDataError", "ChatError", "ChatModel", "GenerationSettings", "LLMNotFoundError", "Projector",
    "ProjectorError", "ProjectorInfo", "PromptTooLongError", "Session", "SessionFileError", "Turn", "VideoContext",
    "VideoSource", "load_projector", "read_projector_info", "save_projector",
]
