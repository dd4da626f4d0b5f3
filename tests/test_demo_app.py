"""``fluxvid demo`` for real: the command renders the test split, indexes it with the sample videos and serves
the app; a headless Chromium searches it in words and finds the clip the words describe; a second start reuses
the world and the index; the API classifies and answers about a held-out clip with the shipped models."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from app.demo.evaluate import normalise_answer
from app.demo.serve import prepare_demo, sample_videos
from app.demo.shipped import read_manifest
from app.demo.world import ACTIONS, COUNT_WORDS, ClipSpec, caption, questions

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
FLUXVID = str(Path(sys.executable).with_name("fluxvid"))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    """``fluxvid demo`` started as a user starts it (own process, offline), until the URL it prints answers."""
    home = tmp_path_factory.mktemp("demo-home")
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    log = (home / "demo.log").open("w+")
    process = subprocess.Popen([FLUXVID, "demo", "--home", str(home), "--port", str(port)], stdout=log,
                               stderr=subprocess.STDOUT, env=env, text=True)
    deadline = time.monotonic() + 600
    url = None
    while url is None:
        log.seek(0)
        found = re.search(r"serving on (http://\S+/)", log.read())
        if found:
            url = found.group(1)
        elif process.poll() is not None or time.monotonic() > deadline:
            log.seek(0)
            process.kill()
            raise RuntimeError(f"fluxvid demo did not start:\n{log.read()[-3000:]}")
        time.sleep(0.5)
    while True:  # the URL is printed just before uvicorn binds
        try:
            urllib.request.urlopen(url + "api/health", timeout=5)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    yield url, home
    process.terminate()
    process.wait(timeout=30)
    log.close()


def _world_clips(home: Path) -> list[ClipSpec]:
    data = json.loads((home / "world" / "world.json").read_text())
    return [ClipSpec.from_dict(c) for c in data["clips"]["test"]]


def _post_json(url: str, path: str, payload: dict) -> dict:
    request = urllib.request.Request(url + path, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.loads(response.read())


def _get(url: str, path: str) -> dict:
    with urllib.request.urlopen(url + path, timeout=300) as response:
        return json.loads(response.read())


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt-get install chromium)")
def test_a_browser_searches_the_demo_in_words(demo, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, home = demo
    target = next(c for c in _world_clips(home) if len(c.actions) == 1)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1400})
        page.goto(url, wait_until="domcontentloaded")
        expect(page.locator("#plan")).to_contain_text("256 tokens", timeout=120_000)
        page.locator("#query textarea").fill(caption(target))
        page.locator("#search-button").click()
        moments = page.locator("#moments")
        expect(moments.locator("img").first).to_be_visible(timeout=120_000)
        expect(moments).to_contain_text(target.name, timeout=30_000)
        page.screenshot(path=str(tmp_path / "demo-search.png"))
        browser.close()


def test_the_demo_library_holds_the_test_split_and_the_sample_videos(demo) -> None:
    url, home = demo
    with urllib.request.urlopen(url + "api/library", timeout=60) as response:
        library = json.loads(response.read())
    samples = sample_videos()
    assert len(samples) >= 5
    assert library["videos"] == len(_world_clips(home)) + len(samples) and library["skipped"] == []
    assert library["budget"] == 256 and library["window"] == 4.0
    found = _get(url, "api/search?" + urllib.parse.urlencode({"q": "a rabbit in a meadow", "tag": "sample"}))
    assert found["moments"] and {Path(m["path"]).name for m in found["moments"]} <= {p.name for p in samples}


def test_the_api_classifies_and_answers_with_the_shipped_models(demo) -> None:
    url, home = demo
    clip = next(c for c in _world_clips(home) if len(c.actions) == 1)
    path = str(home / "world" / "test" / f"{clip.name}.mp4")
    form = urllib.parse.urlencode({"path": path, "budget": 256}).encode()
    with urllib.request.urlopen(urllib.request.Request(url + "api/classify", data=form), timeout=300) as response:
        labels = json.loads(response.read())["labels"]
    assert {label["label"] for label in labels} <= set(ACTIONS) and len(labels) == 5
    assert [label["score"] for label in labels] == sorted((label["score"] for label in labels), reverse=True)
    question, _ = questions(clip)[1]  # how many objects are there?
    reply = _post_json(url, "api/chat", {"message": question, "video": path, "budget": 256, "stream": False})
    assert normalise_answer(reply["answer"]) in COUNT_WORDS.values(), reply


def test_a_second_start_reuses_the_world_and_the_index(demo) -> None:
    _, home = demo
    marker = home / "world" / "world.json"
    stamp = marker.stat().st_mtime_ns
    settings, report = prepare_demo(home, progress=False)
    assert report.added == report.updated == report.removed == 0
    assert report.unchanged == len(_world_clips(home)) + len(sample_videos())
    assert marker.stat().st_mtime_ns == stamp
    assert settings.index == home / "index" and read_manifest()["knobs"]["test_clips"] == len(_world_clips(home))
