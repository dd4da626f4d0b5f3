"""Errors of the chat package: each names the file or model involved and says what to change."""

from __future__ import annotations


class ChatError(Exception):
    """Base class: anything the chat CLI reports as ``error: <message>`` instead of a traceback."""


class LLMNotFoundError(ChatError):
    """The LLM (local directory or hub id) cannot be loaded."""


class ProjectorError(ChatError):
    """A projector file that cannot be read, or whose dimensions do not fit the ViT or the LLM."""


class PromptTooLongError(ChatError):
    """The prompt (video tokens + text + room for the answer) does not fit the LLM's context."""


class SessionFileError(ChatError):
    """A saved session that cannot be read or restored."""


class ChatDataError(ChatError):
    """A line of the instruction-tuning JSONL that cannot be used."""
