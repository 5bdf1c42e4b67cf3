"""Debian's Chromium, one per test module (Playwright drives it; never a downloaded browser)."""

from __future__ import annotations

import pytest
from playwright.sync_api import sync_playwright

from loadtests.browser import CHROMIUM, CHROMIUM_FLAGS


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()
