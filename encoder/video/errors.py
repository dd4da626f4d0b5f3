"""The one error type every video-input failure becomes, so callers catch a single class and report why."""

from __future__ import annotations

from pathlib import Path


class VideoDecodeError(Exception):
    """A file that cannot provide the requested frames: missing, unreadable, empty, corrupt, truncated,
    audio-only, undecodable, or a decoder that ran past its deadline.

    ``path`` names the file and ``reason`` says what went wrong in words meant for a log or a user.
    The exception pickles (DataLoader workers send it to the main process).
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(str(path), reason)
        self.path = str(path)
        self.reason = reason

    def __str__(self) -> str:
        return f"cannot decode {self.path}: {self.reason}"
