"""Headless Chromium (Debian's, driven by Playwright) plays the landing page for real."""

from __future__ import annotations

import time

import pytest

from loadtests.browser import PLAYER_STATE
from loadtests.target import start_demo
from tests.support.artifacts import artifact

pytestmark = pytest.mark.browser


def test_landing_page_plays_the_live_stream(demo, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    console_errors: list[str] = []
    page.on("console", lambda message: message.type == "error" and console_errors.append(message.text))
    page.goto(demo.url + "/")
    opened = time.monotonic()
    page.wait_for_function("() => document.getElementById('player').currentTime > 0", timeout=10_000)
    start = page.evaluate(PLAYER_STATE)
    deadline = opened + 10.0
    state = start
    while time.monotonic() < deadline and state["time"] - start["time"] < 5.0:
        time.sleep(0.25)
        state = page.evaluate(PLAYER_STATE)
    page.screenshot(path=artifact("landing.png"))
    assert state["time"] - start["time"] >= 5.0, state
    assert state["errors"] == [] and state["error"] is None, state
    assert state["engine"] == "hls.js" and state["width"] == 1280 and state["frames"] > 100
    assert state["message"] == ""
    assert console_errors == []
    # Glass-to-glass (PROGRAM-DATE-TIME of the frame on screen vs. the wall clock): LL-HLS aims
    # at PART-HOLD-BACK (1.5 s) and starts within a second of it.
    assert 0 < state["latency"] <= 3.0, state
    assert page.locator("#live-badge").inner_text().lower() == "live"
    page.close()


def test_embed_plays_without_the_page_chrome(demo, browser):
    page = browser.new_page(viewport={"width": 640, "height": 360})
    page.goto(demo.url + "/embed")
    page.wait_for_function("() => document.getElementById('player').currentTime > 1", timeout=10_000)
    assert page.locator("h1").count() == 0
    assert page.evaluate("() => window.launchkit.errors") == []
    page.close()


def test_page_opened_before_the_start_begins_playing_by_itself(browser, tmp_path):
    # A viewer who arrives early: the page says so, then starts without a reload.
    demo = start_demo("--ladder", "360p:640x360:600", "--fps", "15", "--segment-duration", "4",
                      log_dir=tmp_path, wait_for_media=False)
    try:
        page = browser.new_page()
        page.goto(demo.url + "/")
        assert "has not started yet" in page.locator("#player-message").inner_text()
        assert page.locator("#live-badge").inner_text().lower() == "starting"
        page.wait_for_function("() => document.getElementById('player').currentTime > 1", timeout=20_000)
        state = page.evaluate(PLAYER_STATE)
        assert state["errors"] == [] and state["message"] == ""
        page.close()
    finally:
        demo.stop()
