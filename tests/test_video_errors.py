"""Every bad input raises VideoDecodeError naming the file and the reason, on every backend; hangs time out."""

from __future__ import annotations

import os
import pickle
import threading
import time
from pathlib import Path

import pytest

from encoder.video import VideoDecodeError, load_clip, probe, read_frames
from encoder import plan
from tests.clips import write_audio_only, write_clip, write_garbage, write_image

pytestmark = pytest.mark.timeout(120)

BACKENDS = ("auto", "decord", "pyav")


def _truncated(folder: Path, faststart: bool) -> Path:
    whole = write_clip(folder / f"whole_{faststart}.mp4", 100, (160, 120), 25, faststart=faststart)
    data = whole.read_bytes()
    cut = folder / f"truncated{'_faststart' if faststart else ''}.mp4"
    cut.write_bytes(data[: len(data) // 2])
    return cut


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    """name -> (file, a word the reason must contain)."""
    folder = tmp_path_factory.mktemp("bad")
    (folder / "zero.mp4").write_bytes(b"")
    write_garbage(folder / "random.mp4", 20000)
    (folder / "a_directory.mp4").mkdir()
    jpg = write_image(folder / "whole.jpg", size=(320, 240))
    (folder / "cut.jpg").write_bytes(jpg.read_bytes()[:300])
    write_garbage(folder / "random.png", 3000)
    return {
        "missing": (folder / "missing.mp4", "does not exist"),
        "zero_bytes": (folder / "zero.mp4", "empty file"),
        "directory": (folder / "a_directory.mp4", "directory"),
        "random_bytes": (folder / "random.mp4", "invalid data"),
        "truncated": (_truncated(folder, faststart=False), "invalid data"),
        "truncated_faststart": (_truncated(folder, faststart=True), "truncated"),
        "audio_only_aac": (write_audio_only(folder / "speech.m4a", codec="aac"), "no video stream"),
        "audio_only_mp2": (write_audio_only(folder / "speech.mp2", codec="mp2"), "no video stream"),
        "zero_frames_mp4": (write_clip(folder / "no_frames.mp4", 0), "no video"),
        "zero_frames_mkv": (write_clip(folder / "no_frames.mkv", 0, fmt="h264_mkv"), "end of file"),
        "truncated_image": (folder / "cut.jpg", "image"),
        "random_image": (folder / "random.png", "image"),
    }


CASES = ["missing", "zero_bytes", "directory", "random_bytes", "truncated", "truncated_faststart", "audio_only_aac",
         "audio_only_mp2", "zero_frames_mp4", "zero_frames_mkv", "truncated_image", "random_image"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES)
def test_bad_input_raises_one_typed_error(bad, case: str, backend: str) -> None:
    path, word = bad[case]
    with pytest.raises(VideoDecodeError) as caught:
        read_frames(path, [0, 1] if "image" not in case else [0], backend=backend)
    error = caught.value
    assert error.path == str(path)
    assert str(path) in str(error)
    if backend != "decord" or case in ("missing", "zero_bytes", "directory", "truncated_image", "random_image"):
        assert word in error.reason.lower()  # decord's own words differ; auto reports PyAV's clearer reason


@pytest.mark.parametrize("case", CASES)
def test_probe_and_load_clip_raise_it_too(bad, case: str) -> None:
    path, _ = bad[case]
    with pytest.raises(VideoDecodeError):
        probe(path)
    with pytest.raises(VideoDecodeError):
        load_clip(path, plan(64, "fluxvit_tiny_patch14"))


def test_truncated_faststart_file_is_not_silently_shortened(bad) -> None:
    """Its index lists 100 frames; half the data is gone: the reason says so instead of returning 43 frames."""
    path, _ = bad["truncated_faststart"]
    with pytest.raises(VideoDecodeError, match=r"lists 100 frames, the file holds \d+"):
        probe(path, backend="pyav")


def test_the_error_pickles_for_worker_processes() -> None:
    error = pickle.loads(pickle.dumps(VideoDecodeError("/data/x.mp4", "no video stream")))
    assert (error.path, error.reason) == ("/data/x.mp4", "no video stream")
    assert str(error) == "cannot decode /data/x.mp4: no video stream"


def test_window_past_the_end_is_a_decode_error(tmp_path) -> None:
    path = write_clip(tmp_path / "short.mp4", 25, (64, 48), 25)  # 1 s
    with pytest.raises(VideoDecodeError, match="after the last frame") as caught:
        load_clip(path, plan(64, "fluxvit_tiny_patch14"), start=5.0, end=8.0)
    assert "also" not in caught.value.reason  # the caller's window, not a decoder failure: no fallback tried


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_hanging_decoder_is_bounded_by_the_timeout(tmp_path, backend: str) -> None:
    """A FIFO named like a video blocks any decoder in open(): the read gives up at the deadline."""
    fifo = tmp_path / "stalled.mp4"
    os.mkfifo(fifo)
    before = {t.ident for t in threading.enumerate()}
    start = time.monotonic()
    with pytest.raises(VideoDecodeError, match="timed out after 0.5 s"):
        read_frames(fifo, [0], backend=backend, timeout=0.5)
    assert time.monotonic() - start < 2.0
    # Release the abandoned decoder thread(s): a writer that opens and closes gives the readers EOF.
    deadline = time.monotonic() + 10
    while {t.ident for t in threading.enumerate() if t.name.startswith("decode:")} - before:
        assert time.monotonic() < deadline, "the abandoned decoder thread never finished"
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
        time.sleep(0.05)
