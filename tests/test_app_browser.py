"""The UI in a real headless Chromium (Debian's, driven by Playwright): the budget slider updates the plan, a
search (by text and by video) shows moments, a classification shows labels, a chat turn streams an answer and a
reload restores it. Screenshots are saved under the test's output folder."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from app.settings import ServeSettings
from tests.app_support import build_world, start_server
from tests.test_chat_support import QUESTION, ToyChat, answer_for, toy_chat  # noqa: F401 (fixture)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="needs Debian's chromium (apt-get install chromium)")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]


@pytest.fixture(scope="module")
def page_url(tmp_path_factory: pytest.TempPathFactory, toy_chat: ToyChat):
    files = build_world(tmp_path_factory.mktemp("ui"), {"chat_clip.mp4": toy_chat.held_out[1][0]})
    settings = ServeSettings(index=files["index"], classifier=files["classifier"], projector=toy_chat.projector,
                             min_budget=64, max_budget=512, default_budget=128)
    running = start_server(settings)
    yield running.url, files, toy_chat
    running.stop()


def test_slider_search_classify_and_chat_in_a_browser(page_url, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, files, toy = page_url
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1400})
        page.goto(url, wait_until="domcontentloaded")
        plan = page.locator("#plan")
        expect(plan).to_contain_text("128 tokens", timeout=60_000)
        before = plan.inner_text()
        number = page.locator("#budget input[type=number]")
        number.fill("256")
        number.press("Enter")
        expect(plan).to_contain_text("256 tokens")
        assert plan.inner_text() != before
        page.screenshot(path=str(shots / "1-budget.png"))

        page.locator("#query textarea").fill("a red square")
        page.locator("#search-button").click()
        expect(page.locator("#moments img").first).to_be_visible(timeout=60_000)
        assert page.locator("#moments img").count() >= 3
        page.locator("#moments img").first.click()
        expect(page.locator("#fluxvid-player")).to_be_attached(timeout=30_000)
        page.screenshot(path=str(shots / "2-search.png"))

        page.get_by_text("Find moments like a video").click()
        page.locator("#query-video input[type=file]").set_input_files(str(files["green"]))
        page.locator("#search-video-button").click()
        expect(page.locator("#search-status")).to_contain_text("like the query video (encoded at 256 tokens)",
                                                               timeout=60_000)
        expect(page.locator("#moments img").first).to_be_visible()

        page.get_by_role("tab", name="Classify").click()
        page.locator("#classify-upload input[type=file]").set_input_files(str(files["blue"]))
        page.locator("#classify-button").click()
        expect(page.locator("#classify-info")).to_contain_text("ms", timeout=60_000)
        expect(page.locator("#labels")).to_contain_text("%")
        page.screenshot(path=str(shots / "3-classify.png"))

        page.get_by_role("tab", name="Chat").click()
        number.fill("128")
        number.press("Enter")
        page.locator("#chat-pick input").click()
        page.get_by_role("option", name=re.compile("chat_clip")).click()
        page.locator("#chat-message textarea").fill(QUESTION)
        page.locator("#chat-send").click()
        expect(page.locator("#chatbot")).to_contain_text(answer_for(toy.held_out[1][1]), timeout=60_000)
        page.screenshot(path=str(shots / "4-chat.png"))

        # the browser stores the session id once the answer's event has finished: reload only after that
        page.wait_for_function("key => localStorage.getItem(key) !== null", arg="fluxvid-chat-session")
        page.reload(wait_until="domcontentloaded")  # the session id kept in local storage restores the chat
        page.get_by_role("tab", name="Chat").click()
        expect(page.locator("#chatbot")).to_contain_text(answer_for(toy.held_out[1][1]), timeout=60_000)
        browser.close()
    assert len(list(shots.glob("*.png"))) == 4
