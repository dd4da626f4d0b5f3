"""A real FluxVid server for the app tests (no tests here): uvicorn on a free loopback port in a thread, over a
small index, a tiny classifier with class names and the toy chat model."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from app.server import create_app
from app.settings import ServeSettings
from encoder import create_model, save_checkpoint
from index import build_index
from tests.index_support import make_library, tiny_dual_encoder

CLASS_NAMES = ["moving", "still", "flashing"]


@dataclass
class RunningServer:
    url: str
    settings: ServeSettings
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def start_server(settings: ServeSettings) -> RunningServer:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    return RunningServer(f"http://127.0.0.1:{port}", settings, server, thread)


def build_world(root: Path, extra: dict[str, Path] | None = None) -> dict[str, Path]:
    """A library index (with copies of the ``extra`` clips, by name) and a tiny classifier under ``root``."""
    clips = make_library(root / "library")
    for name, source in (extra or {}).items():
        clips[name] = Path(shutil.copy(source, root / "library" / name))
    model = tiny_dual_encoder(root / "dual.pt")
    build_index(root / "library", root / "idx", model, 64, window=2.0, num_workers=0, show_progress=False)
    classifier = create_model("fluxvit_tiny_patch14", num_classes=len(CLASS_NAMES), img_size=56, num_frames=8)
    save_checkpoint(classifier, root / "classifier.pt", class_names=CLASS_NAMES)
    return {**clips, "index": root / "idx", "classifier": root / "classifier.pt", "model": model}
