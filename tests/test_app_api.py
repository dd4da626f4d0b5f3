"""The HTTP API against a real running server: classify, search, library files, chat, every error case, auth,
a missing model, and 50 concurrent searches."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch

from app.settings import ServeSettings
from encoder import plan
from encoder.checkpoint import load_model
from encoder.video import load_clip
from index import VideoIndex
from retrieval.dual_encoder import DualEncoder
from retrieval.search import Searcher
from tests.app_support import CLASS_NAMES, build_world, start_server
from tests.clips import sample_video
from tests.test_chat_support import QUESTION, ToyChat, answer_for, toy_chat  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, toy_chat: ToyChat) -> dict:
    root = tmp_path_factory.mktemp("app")
    files = build_world(root)
    settings = ServeSettings(index=files["index"], classifier=files["classifier"], projector=toy_chat.projector,
                             min_budget=64, default_budget=128, max_upload_mb=1.0, max_duration_s=60)
    running = start_server(settings)
    yield {"files": files, "server": running, "client": httpx.Client(base_url=running.url, timeout=120),
           "chat": toy_chat}
    running.stop()


def test_health_lists_ready_features(world: dict) -> None:
    health = world["client"].get("/api/health").json()
    assert health["status"] == "ok" and health["features"] == {"search": None, "classify": None, "chat": None,
                                                               "library": None}


def test_classify_an_uploaded_real_video_and_a_library_video(world: dict) -> None:
    client = world["client"]
    with sample_video("carphone_pristine.mp4").open("rb") as f:
        response = client.post("/api/classify", files={"file": ("carphone.mp4", f, "video/mp4")},
                               data={"budget": "128", "top_k": "2"})
    assert response.status_code == 200, response.text
    result = response.json()
    model, _ = load_model(world["files"]["classifier"])
    expected_plan = plan(128, model.config)
    clip = load_clip(sample_video("carphone_pristine.mp4"), expected_plan)
    with torch.no_grad():
        probabilities = model(clip.video[None], keep_tokens=expected_plan.keep_tokens).softmax(-1)[0]
    top = probabilities.topk(2)
    assert [x["label"] for x in result["labels"]] == [CLASS_NAMES[i] for i in top.indices]
    assert [x["score"] for x in result["labels"]] == pytest.approx(top.values.tolist(), abs=1e-5)
    assert (result["plan"]["frames"], result["plan"]["resolution"]) == (expected_plan.frames, expected_plan.resolution)
    assert result["latency_ms"] > 0
    by_path = client.post("/api/classify", data={"path": str(world["files"]["red"].resolve()), "budget": "64"})
    assert by_path.status_code == 200 and len(by_path.json()["labels"]) == 3
    assert by_path.json()["plan"]["budget"] == 64


def test_search_returns_the_searchers_moments_and_serves_their_files(world: dict) -> None:
    client, files = world["client"], world["files"]
    response = client.get("/api/search", params={"q": "a red square", "k": 4})
    assert response.status_code == 200
    moments = response.json()["moments"]
    searcher = Searcher(VideoIndex.open(files["index"]), DualEncoder.load(files["model"]))
    assert [m["segment_id"] for m in moments] == [m.segment_id for m in searcher.search_text("a red square", 4)]
    thumb = client.get(moments[0]["thumbnail_url"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    video = client.get(moments[0]["video_url"].split("#")[0], headers={"Range": "bytes=0-99"})
    assert video.status_code == 206 and len(video.content) == 100
    filtered = client.get("/api/search", params={"q": "a square", "k": 10,
                                                 "path_prefix": str(files["carphone"].parent)})
    assert {m["path"] for m in filtered.json()["moments"]} == {str(files["carphone"].resolve())}
    like = client.get(f"/api/similar/{moments[0]['segment_id']}", params={"k": 3}).json()["moments"]
    assert [m["segment_id"] for m in like] == [m.segment_id for m in searcher.similar(moments[0]["segment_id"], 3)]
    assert all(m["path"] != moments[0]["path"] and m["thumbnail_url"] for m in like)
    assert {"index", "search"} <= set(client.get("/api/health").json()["loaded"])


def test_search_by_video_encodes_the_query_at_the_requested_budget(world: dict) -> None:
    client, files = world["client"], world["files"]
    searcher = Searcher(VideoIndex.open(files["index"]), DualEncoder.load(files["model"]))
    red = files["red"].resolve()
    with red.open("rb") as f:
        uploaded = client.post("/api/search/video", files={"file": ("query.mp4", f, "video/mp4")},
                               data={"budget": "128", "k": "4"})
    assert uploaded.status_code == 200, uploaded.text
    expected = searcher.search_video(red, 4, budget=128)
    assert [m["segment_id"] for m in uploaded.json()["moments"]] == [m.segment_id for m in expected]
    assert [m["score"] for m in uploaded.json()["moments"]] == pytest.approx([m.score for m in expected], abs=1e-5)
    by_path = client.post("/api/search/video", data={"path": str(red), "budget": "64", "k": "4"}).json()
    at_index_budget = searcher.search_video(red, 4, budget=64)
    assert [m["score"] for m in by_path["moments"]] == pytest.approx([m.score for m in at_index_budget], abs=1e-5)
    assert by_path["moments"][0]["path"] == str(red) and by_path["moments"][0]["score"] > 0.99, \
        "at the index's budget a library video finds its own whole-video vector"
    assert by_path["index_budget"] == 64 and by_path["budget"] == 64
    assert client.post("/api/search/video", data={"budget": "128"}).status_code == 400
    assert client.post("/api/search/video", data={"path": "/etc/passwd"}).status_code == 404
    assert client.post("/api/search/video", data={"path": str(red), "budget": "8"}).status_code == 400

    differs = client.get("/api/search", params={"q": "red", "budget": 256}).json()
    assert differs["index_budget"] == 64 and "64 tokens" in differs["note"]
    assert "note" not in client.get("/api/search", params={"q": "red", "budget": 64}).json()
    assert client.get("/api/search", params={"q": "red", "budget": 9999}).status_code == 400


def test_chat_round_trip_streams_and_keeps_the_session(world: dict) -> None:
    client, toy = world["client"], world["chat"]
    clip, colour = toy.held_out[0]
    with clip.open("rb") as f:
        uploaded = client.post("/api/upload", files={"file": (clip.name, f, "video/mp4")}).json()["id"]
    pieces = []
    with client.stream("POST", "/api/chat", json={"message": QUESTION, "video": uploaded, "budget": 128}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        session = r.headers["x-session-id"]
        pieces = list(r.iter_text())
    assert "".join(pieces).strip() == answer_for(colour)
    again = client.post("/api/chat", json={"message": QUESTION, "session_id": session, "stream": False,
                                           "budget": 128})
    assert again.status_code == 200 and again.json() == {"session_id": session, "answer": answer_for(colour)}
    services = world["server"].server.config.app.state.services
    assert len(services.history(session)) == 2
    unknown = client.post("/api/chat", json={"message": "hi", "session_id": "nope"})
    assert unknown.status_code == 404


def test_every_bad_request_gets_a_clear_error(world: dict, tmp_path: Path) -> None:
    client, files = world["client"], world["files"]
    big = tmp_path / "big.mp4"
    big.write_bytes(b"\0" * (2 * 2**20))
    too_big = client.post("/api/classify", files={"file": ("big.mp4", big.read_bytes(), "video/mp4")})
    assert too_big.status_code == 413 and "limit" in too_big.json()["error"]
    wrong_type = client.post("/api/classify", files={"file": ("notes.txt", b"hello", "text/plain")})
    assert wrong_type.status_code == 415 and "notes.txt" in wrong_type.json()["error"]
    corrupt = client.post("/api/classify", files={"file": ("broken.mp4", b"\0\0\0\x18ftypmp42" + b"x" * 500)})
    assert corrupt.status_code == 422 and "broken.mp4" in corrupt.json()["error"]
    for path in ("/etc/passwd", str(files["red"].parent / ".." / "library" / "red.mp4") + "x",
                 str(files["index"] / "index.sqlite")):
        assert client.get("/api/video", params={"path": path}).status_code == 404, path
    traversal = client.get("/api/video", params={"path": str(files["red"].parent / "real" / ".." / "red.mp4")})
    assert traversal.status_code == 200, "a path that resolves into the library is the library file"
    both = client.post("/api/classify", data={"path": str(files["red"])},
                       files={"file": ("c.mp4", files["red"].read_bytes(), "video/mp4")})
    assert both.status_code == 400
    assert client.get("/api/search", params={"q": "x", "k": 0}).status_code == 422
    assert client.get("/api/plan", params={"budget": 10}).status_code == 400
    assert client.get("/api/thumb/999999").status_code == 404


def test_missing_models_answer_503_and_tokens_guard_the_api(world: dict) -> None:
    bare = start_server(ServeSettings(token="s3cret", min_budget=64))
    try:
        anonymous = httpx.get(f"{bare.url}/api/search", params={"q": "x"})
        assert anonymous.status_code == 401
        assert httpx.get(f"{bare.url}/").status_code == 401, "the UI is guarded too"
        auth = {"Authorization": "Bearer s3cret"}
        health = httpx.get(f"{bare.url}/api/health").json()
        assert health["features"]["classify"].startswith("no classifier")
        missing = httpx.post(f"{bare.url}/api/classify", data={"path": "x.mp4"}, headers=auth)
        assert missing.status_code == 503 and "--classifier" in missing.json()["error"]
        assert httpx.get(f"{bare.url}/api/search", params={"q": "x"}, headers=auth).status_code == 503
        components = httpx.get(f"{bare.url}/config", headers=auth).json()["components"]
        props = [c.get("props", {}) for c in components]
        buttons = {p["elem_id"]: p["interactive"] for p in props if p.get("elem_id", "").endswith(("-button", "-send"))}
        assert buttons and not any(buttons.values()), f"buttons needing a missing model stay disabled: {buttons}"
        explained = " ".join(str(p.get("value")) for p in props)
        assert "start the server with --classifier FILE" in explained and "--projector FILE" in explained
        assert httpx.get(f"{bare.url}/?token=s3cret", follow_redirects=True).status_code == 200
    finally:
        bare.stop()


def test_fifty_concurrent_searches_all_succeed(world: dict) -> None:
    url = world["server"].url

    def one(i: int) -> int:
        return httpx.get(f"{url}/api/search", params={"q": f"a square number {i}", "k": 5}, timeout=120).status_code

    with ThreadPoolExecutor(max_workers=50) as pool:
        codes = list(pool.map(one, range(50)))
    assert codes == [200] * 50


def test_library_grows_from_a_folder_in_the_background_and_reindexes(world: dict, tmp_path: Path) -> None:
    from tests.index_support import coloured_clip

    client = world["client"]
    before = client.get("/api/library").json()
    folder = tmp_path / "new_footage"
    folder.mkdir()
    coloured_clip(folder / "added.mp4", "green", seconds=3.0, seed=42)
    job = client.post("/api/library/build", data={"folder": str(folder)}).json()
    deadline = time.monotonic() + 120
    while job["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
        job = client.get(f"/api/library/build/{job['id']}").json()
    assert job["state"] == "done" and job["videos_done"] == job["videos_total"] == 1, job
    after = client.get("/api/library").json()
    assert after["videos"] == before["videos"] + 1, "a folder is added without dropping the library"
    assert after["segments"] == before["segments"] + 3  # whole video + two 2 s windows of a 3 s clip
    found = client.get("/api/search", params={"q": "green", "k": 50, "path_prefix": str(folder)}).json()["moments"]
    assert {m["path"] for m in found} == {str((folder / "added.mp4").resolve())}

    (folder / "added.mp4").unlink()
    job = client.post("/api/library/build").json()
    while job["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
        job = client.get(f"/api/library/build/{job['id']}").json()
    assert job["state"] == "done" and "removed 1" in job["message"], job
    assert client.get("/api/library").json()["videos"] == before["videos"]
    assert client.get("/api/library/build/nope").status_code == 404
    assert client.post("/api/library/build", data={"folder": str(tmp_path / "absent")}).status_code == 404


def test_a_request_over_the_time_limit_answers_504(world: dict) -> None:
    files = world["files"]
    hasty = start_server(ServeSettings(index=files["index"], classifier=files["classifier"], min_budget=64,
                                       request_timeout_s=0.001))
    try:
        slow = httpx.post(f"{hasty.url}/api/classify", data={"path": str(files["green"].resolve()), "budget": "64"},
                          timeout=120)
        assert slow.status_code == 504 and "longer than" in slow.json()["error"]
        assert httpx.get(f"{hasty.url}/api/health").status_code == 200, "the server goes on"
    finally:
        hasty.stop()
