"""The landing page's player moves to another edge when its edge drains (SIGTERM) or dies (SIGKILL).

Real processes: a demo origin, two `launchkit edge` processes sharing a redis-server (the edge
registry that fills `recommended.edges`) and one admission secret, and Debian's Chromium playing
the page it loaded from the first edge. Playback is sampled four times a second; a stall is a run
of samples where the playhead did not move.
"""

from __future__ import annotations

import signal
import time
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, sync_playwright

from loadtests.browser import CHROMIUM, CHROMIUM_FLAGS, PLAYER_STATE
from loadtests.target import free_port, start_demo, start_edge, stop_all

pytestmark = pytest.mark.browser

LADDER = ("--ladder", "360p:640x360:500,180p:320x180:200", "--fps", "15")
SAMPLE = 0.25


class Playback:
    """The playhead over time, and where the page's requests went."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.hosts: list[tuple[float, str]] = []
        page.on("request", lambda request: self._record(request.url))

    def _record(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.path.startswith(("/hls/", "/api/status")):  # what the player moves (the wall follows the page)
            self.hosts.append((time.monotonic(), parts.netloc))

    def watch(self, seconds: float, until=None) -> tuple[float, float, dict]:
        """Samples for `seconds` (or until `until(state)`); returns (playhead advance, longest stall, last state)."""
        state = self.page.evaluate(PLAYER_STATE)
        first, last_move, longest = state["time"], time.monotonic(), 0.0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(SAMPLE)
            previous, state = state, self.page.evaluate(PLAYER_STATE)
            now = time.monotonic()
            if state["time"] > previous["time"]:
                last_move = now
            longest = max(longest, now - last_move)
            if until is not None and until(state):
                break
        return state["time"] - first, longest, state

    def edges(self) -> dict:
        return self.page.evaluate("() => window.launchkit.edges")

    def hosts_since(self, moment: float) -> set[str]:
        return {host for at, host in self.hosts if at >= moment}


def _edge(origin: str, port: int, redis_url: str, log_dir) -> object:
    return start_edge(origin, log_dir, port=port, redis=redis_url, advertise_url=f"http://127.0.0.1:{port}",
                      max_viewers=20, drain_seconds=8.0, upstream_timeout=2.0)


def test_viewers_continue_on_another_edge_when_theirs_drains_or_dies(redis_server, tmp_path, monkeypatch):
    monkeypatch.setenv("LAUNCHKIT_ADMISSION_SECRET", "failover-test-secret-0123456789abcdef")  # one event, one key
    port_a, port_b = free_port(), free_port()
    with start_demo(*LADDER, log_dir=tmp_path) as origin:
        a = _edge(origin.url, port_a, redis_server.url, tmp_path)
        b = _edge(origin.url, port_b, redis_server.url, tmp_path)
        restarted = None
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
                try:
                    page = browser.new_page()
                    playback = Playback(page)
                    page.goto(a.url + "/")
                    page.wait_for_function("() => document.getElementById('player').currentTime > 0", timeout=20_000)
                    page.wait_for_function("() => window.launchkit.edges.known.length === 2", timeout=10_000)
                    assert playback.edges()["base"] == a.url

                    # SIGTERM: A drains (not ready, still serving); the next status poll moves the player.
                    a.process.send_signal(signal.SIGTERM)
                    sent = time.monotonic()
                    _, stall, _ = playback.watch(12, until=lambda _: playback.edges()["base"] == b.url)
                    moved = playback.edges()
                    assert moved["base"] == b.url and moved["switches"][-1]["reason"] == "draining", moved
                    moved_at = time.monotonic()
                    advance, stall_after, state = playback.watch(5)
                    assert advance >= 4.0 and max(stall, stall_after) < 1.0, (advance, stall, stall_after)
                    assert playback.hosts_since(moved_at + 1) == {f"127.0.0.1:{port_b}"}
                    assert state["errors"] == [], state
                    drained_in = time.monotonic() - sent

                    # A is gone; a new A takes its place in the registry. Then B dies without a goodbye.
                    a.process.wait(15)
                    restarted = _edge(origin.url, port_a, redis_server.url, tmp_path)
                    page.wait_for_function(f"() => window.launchkit.edges.known.includes('{restarted.url}')",
                                           timeout=15_000)
                    b.process.kill()
                    b.process.wait()
                    killed = time.monotonic()
                    _, stall, _ = playback.watch(15, until=lambda _: playback.edges()["base"] == restarted.url)
                    moved = playback.edges()
                    assert moved["base"] == restarted.url, moved
                    moved_after = time.monotonic() - killed
                    advance, stall_after, state = playback.watch(6)
                    assert advance >= 5.0, (advance, state)
                    longest = max(stall, stall_after)
                    assert longest < 4.0, longest  # one stall, shorter than a segment and a retry
                    assert [e for e in state["errors"] if e["type"] != "networkError"] == [], state
                finally:
                    browser.close()
        finally:
            stop_all(restarted, a, b)
    print(f"\nfailover: drain move after {drained_in:.1f} s without a stall; "
          f"kill: moved after {moved_after:.1f} s, longest stall {longest:.2f} s "
          f"({moved['switches'][-1]['reason']})")


def test_an_origin_outage_shows_no_error_and_playback_resumes_by_itself(tmp_path):
    """The origin is killed for 10 s and restarted on the same port; the edge and the page stay."""
    port = free_port()
    origin = start_demo(*LADDER, "--port", str(port), log_dir=tmp_path)
    edge = restarted = None
    try:
        edge = start_edge(origin.url, tmp_path, origin_grace=2.0, upstream_timeout=1.0)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            try:
                page = browser.new_page()
                playback = Playback(page)
                page.goto(edge.url + "/")
                page.wait_for_function("() => document.getElementById('player').currentTime > 0", timeout=20_000)
                origin.process.kill()
                origin.process.wait()
                messages: set[str] = set()
                outage_end = time.monotonic() + 10
                while time.monotonic() < outage_end:
                    state = page.evaluate(PLAYER_STATE)
                    messages.add(state["message"].strip())
                    assert state["error"] is None, state  # the video element never shows a media error
                    time.sleep(SAMPLE)
                restarted = start_demo(*LADDER, "--port", str(port), log_dir=tmp_path)
                back = time.monotonic()
                advance, _, state = playback.watch(30, until=lambda s: s["time"] > 0 and s["engine"] and not s["paused"]
                                                   and s["message"] == "" and time.monotonic() - back > 3)
                resumed_after = time.monotonic() - back
                advance, _, state = playback.watch(4)
            finally:
                browser.close()
    finally:
        stop_all(edge, restarted, origin)
    print(f"\norigin outage: page said {sorted(messages)}; playback resumed {resumed_after:.1f} s after the restart")
    assert messages <= {"", "Reconnecting to the stream…"}, messages
    assert advance >= 3.0 and state["error"] is None, (advance, state)
