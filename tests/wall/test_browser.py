"""Headless Chromium (Debian's) shows the /wall venue screen: an approved post appears within 1 s,
and a post carrying markup is shown as text, never run."""

from __future__ import annotations

import time

import aiohttp
import pytest
from playwright.async_api import async_playwright

from loadtests.browser import CHROMIUM, CHROMIUM_FLAGS
from tests.support.wall import act, post, serve, settings

pytestmark = pytest.mark.browser
INJECTED = '<img src=x onerror="window.__xss = 1"><script>window.__xss = 2</script>'


async def test_wall_screen_shows_approved_posts_as_text(tmp_path):
    async with aiohttp.ClientSession() as session, serve(settings(tmp_path / "w.sqlite3")) as (url, _), \
            async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = await browser.new_page(viewport={"width": 1440, "height": 900})
            console_errors: list[str] = []
            page.on("console", lambda message: message.type == "error" and console_errors.append(message.text))
            page.on("pageerror", lambda error: console_errors.append(str(error)))
            await page.goto(url + "/wall")
            await page.wait_for_function("() => window.launchkitWall && window.launchkitWall.connected", timeout=5000)

            _, hello = await post(session, url, {"text": "Hello from the venue", "name": "Ana", "kind": "question"})
            _, hostile = await post(session, url, {"text": INJECTED, "name": '<b onmouseover="x()">Eve</b>'})
            started = time.monotonic()
            await act(session, url, hello["id"], "approve")
            await page.wait_for_selector(f'[data-post-id="{hello["id"]}"]', timeout=1000)
            assert time.monotonic() - started < 1.0
            await act(session, url, hostile["id"], "pin")
            await page.wait_for_selector(f'[data-post-id="{hostile["id"]}"]', timeout=1000)

            texts = await page.locator(".wall-text").all_inner_texts()
            assert texts == [INJECTED, "Hello from the venue"]  # pinned first, shown as typed
            assert await page.evaluate("() => window.__xss") is None
            assert await page.locator(".wall-post img, .wall-post script, .wall-post b").count() == 0
            assert await page.locator(".wall-post-question .wall-kind-label").inner_text() == "Question"
            await page.screenshot(path=tmp_path / "wall.png")
            assert console_errors == []
        finally:
            await browser.close()
