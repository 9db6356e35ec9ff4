"""The board's chat page with an image upload: a vision-language model trained here answers about the image,
through the JSON API and in headless Chromium."""

from __future__ import annotations

import base64
import json

import pytest

from tests.board.test_api import running_board
from tests.board.test_browser import ARTIFACTS, CHROMIUM
from tests.helpers import SHADE_QUESTION, SHADES

try:
    import httpx2 as httpx
except ImportError:
    import httpx


@pytest.fixture
def board(tmp_path, shade_reader):
    with running_board(tmp_path, list(shade_reader)) as server:
        yield server


def answer(url: str, body: dict) -> tuple[int, str]:
    pieces = []
    with httpx.stream("POST", f"{url}/api/chat", json=body, timeout=60) as reply:
        if reply.status_code != 200:
            return reply.status_code, reply.read().decode()
        for line in reply.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                pieces.append(json.loads(line[6:]).get("text", ""))
    return 200, "".join(pieces)


def test_an_uploaded_image_is_answered_about(board, shade_reader):
    model, data = shade_reader
    for image, expected in SHADES.items():
        url = "data:image/png;base64," + base64.b64encode((data / image).read_bytes()).decode()
        body = {"model": str(model), "messages": [{"role": "user", "content": SHADE_QUESTION, "images": [url]}],
                "temperature": 0, "max_new_tokens": 3}  # fmt: skip
        status, text = answer(board.url, body)
        assert status == 200 and text.startswith(expected), (image, text)
    body["messages"][0]["images"] = [(data / "dark.png").as_uri()]  # the board takes uploads, not paths
    status, text = answer(board.url, body)
    assert status == 422 and "data: URLs" in text
    status, text = answer(board.url, {**body, "top_p": 2})
    assert status == 422 and "top_p" in text


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (make setup installs it)")
def test_the_chat_page_uploads_an_image(board, shade_reader):
    from playwright.sync_api import sync_playwright

    model, data = shade_reader
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1000, "height": 800})
        page.goto(f"{board.url}/chat?lang=en")
        page.fill("#chat-model", str(model))
        page.evaluate(
            "() => { document.querySelector('#chat-active').value = ''; }"
        )  # the base model answers
        page.fill("#chat-temperature", "0")  # greedy: the page's default samples as the model's config says
        page.fill("#chat-max-new-tokens", "3")
        page.set_input_files("#chat-image", str(data / "light.png"))
        page.fill("#chat-input", SHADE_QUESTION)
        page.click("#send")
        page.wait_for_selector(".turn-assistant.finished", timeout=60_000)
        assert page.locator(".turn-user img.turn-image").count() == 1
        assert page.locator(".turn-assistant").inner_text().strip().startswith(SHADES["light.png"])
        page.screenshot(path=str(ARTIFACTS / "board-chat-image.png"), full_page=True)
        browser.close()
