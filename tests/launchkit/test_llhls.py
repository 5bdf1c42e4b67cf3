"""Low-Latency HLS end to end: a running demo's blocking reloads and parts, as players see them over
HTTP, and hls.js in low-latency mode in headless Chromium."""

from __future__ import annotations

import asyncio
import re
import statistics
import time
from datetime import datetime

import pytest
from aiohttp.test_utils import TestClient, TestServer
from playwright.sync_api import sync_playwright

from launchkit.auth import Tokens
from launchkit.config import Config
from launchkit.origin.app import MEDIA, create_app
from loadtests.browser import CHROMIUM, CHROMIUM_FLAGS, PLAYER_STATE
from loadtests.target import start_demo
from stream.ladder import Rendition
from tests.support.client import fetch

PART = 0.5  # the default part duration at 30 fps with 2 s segments


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory: pytest.TempPathFactory):
    """One rendition to spare the CPU: latency, not the ladder, is under test here."""
    demo = start_demo("--ladder", "360p:640x360:600", "--segment-duration", "2",
                      log_dir=tmp_path_factory.mktemp("llhls"))
    yield demo
    if demo.process.poll() is None:
        demo.stop()


def _playlist(demo, query: str = "") -> tuple[int, dict[str, str], str]:
    status, headers, body = fetch(f"{demo.url}/hls/360p/index.m3u8" + (f"?{query}" if query else ""), timeout=15)
    return status, headers, body.decode()


def _parts(playlist: str) -> list[tuple[int, int, float]]:
    """(MSN, Part Index, wall clock at which the part's media ends) of every listed part."""
    parts, pdt = [], 0.0
    for line in playlist.splitlines():
        if line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            pdt = datetime.fromisoformat(line.split(":", 1)[1].replace("Z", "+00:00")).timestamp()
        elif match := re.match(r'#EXT-X-PART:DURATION=([\d.]+),URI="(\d+)\.(\d+)\.m4s"', line):
            pdt += float(match[1])
            parts.append((int(match[2]), int(match[3]), pdt))
    return parts


def test_blocking_reload_for_the_next_part_returns_within_a_part_of_its_production(small_demo):
    _, _, playlist = _playlist(small_demo)
    assert "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.50000" in playlist
    assert "#EXT-X-PART-INF:PART-TARGET=0.50000" in playlist
    lags, waits = [], []
    for _ in range(8):
        msn, index, _ = _parts(playlist)[-1]
        asked = time.time()
        status, headers, playlist = _playlist(small_demo, f"_HLS_msn={msn}&_HLS_part={index + 1}")
        answered = time.time()
        assert status == 200 and headers["Cache-Control"] == "public, max-age=6"
        new_msn, new_index, media_end = _parts(playlist)[-1]
        assert (new_msn, new_index) in ((msn, index + 1), (msn + 1, 0))
        # A part cannot be produced before the frame that ends it is captured (its PDT end):
        # the answer comes within one part duration of that.
        lags.append(answered - media_end)
        waits.append(answered - asked)
    print(f"\nblocking reload answered {statistics.median(lags) * 1000:.0f} ms (max {max(lags) * 1000:.0f} ms) "
          f"after the part's media ended; waits {min(waits):.3f}-{max(waits):.3f} s")
    assert 0 < max(lags) <= PART, lags
    assert max(waits) <= 2 * PART, waits  # the next part, never the one after


def test_the_preload_hinted_part_is_served_as_soon_as_it_exists(small_demo):
    _, _, playlist = _playlist(small_demo)
    hint = re.search(r'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="([^"]+)"', playlist)[1]
    started = time.monotonic()
    status, headers, body = fetch(f"{small_demo.url}/hls/360p/{hint}", timeout=15)
    assert status == 200 and body[4:8] == b"moof" and "immutable" in headers["Cache-Control"]
    assert time.monotonic() - started <= PART + 0.1
    _, _, playlist = _playlist(small_demo)
    assert f'URI="{hint}"' in playlist


@pytest.mark.parametrize("query", ["_HLS_msn=x", "_HLS_msn=-3", "_HLS_msn=1e3", "_HLS_msn=" + "9" * 11,
                                   "_HLS_part=0", "_HLS_msn=1&_HLS_part=0.5"])
def test_malformed_directives_are_400(small_demo, query):
    status, headers, body = _playlist(small_demo, query)
    assert status == 400 and "_HLS_" in body, (query, body)


def test_far_future_requests_are_400_at_once(small_demo):
    _, _, playlist = _playlist(small_demo)
    last = int(re.findall(r"^(\d+)\.m4s$", playlist, re.M)[-1])
    started = time.monotonic()
    assert _playlist(small_demo, f"_HLS_msn={last + 3}")[0] == 400
    assert _playlist(small_demo, f"_HLS_msn={last + 2}&_HLS_part=3")[0] == 400  # beyond 6 parts ahead
    assert fetch(f"{small_demo.url}/hls/360p/{last + 2}.1.m4s")[0] == 404  # not hinted: no wait
    assert time.monotonic() - started < 1.0


async def test_a_stalled_stream_answers_503_within_three_target_durations():
    # In process, so the test can stall the encoders the way a dead machine would.
    config = Config.for_role("demo", dict(
        port=0, ladder=(Rendition("180p", 320, 180, 300_000),), fps=15, audio_bitrate=64,
        segment_duration=1.0, playlist_window=3,
    ))
    async with TestClient(TestServer(create_app(config, Tokens.from_values(None, None)))) as client:
        deadline = time.monotonic() + 15
        while (await client.get("/readyz")).status != 200:
            assert time.monotonic() < deadline, "no media"
            await asyncio.sleep(0.2)
        media = client.server.app[MEDIA]
        await asyncio.to_thread(media.pipeline.stop, 1.0)
        rendition = media.pipeline.hls.renditions["180p"]
        last = rendition.last_part
        started = time.monotonic()
        response, hinted = await asyncio.gather(
            client.get(f"/hls/180p/index.m3u8?_HLS_msn={last.sequence + 1}&_HLS_part=0"),
            client.get(f"/hls/180p/{rendition.preload_hint()}"),
        )
        elapsed = time.monotonic() - started
    for answer in (response, hinted):
        assert answer.status == 503 and answer.headers["Retry-After"] == "1"
    assert 2.9 <= elapsed < 4.0, elapsed  # three target durations of 1 s: bounded, never a hang


@pytest.mark.browser
def test_hlsjs_in_low_latency_mode_plays_within_three_seconds_of_live(small_demo):
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            blocking, parts = [], []
            page.on("request", lambda request: (
                blocking.append(request.url) if "_HLS_msn=" in request.url
                else parts.append(request.url) if re.search(r"/\d+\.\d+\.m4s(\?|$)", request.url) else None
            ))
            console_errors: list[str] = []
            page.on("console", lambda message: message.type == "error" and console_errors.append(message.text))
            page.goto(small_demo.url + "/")
            page.wait_for_function("() => document.getElementById('player').currentTime > 0", timeout=15_000)
            time.sleep(4)  # settle at the target latency
            latencies = []
            for _ in range(16):
                state = page.evaluate(PLAYER_STATE)
                latencies.append(state["latency"])
                time.sleep(0.25)
            assert page.evaluate("() => window.launchkit.hls.lowLatencyMode") is True
            details = page.evaluate("() => { const d = window.launchkit.hls.latestLevelDetails;"
                                    " return {partTarget: d.partTarget, partHoldBack: d.partHoldBack,"
                                    " canBlockReload: d.canBlockReload}; }")
        finally:
            browser.close()
    print(f"\nhls.js LL latency: median {statistics.median(latencies):.2f} s, max {max(latencies):.2f} s; "
          f"{len(blocking)} blocking reloads, {len(parts)} part requests")
    assert details == {"partTarget": 0.5, "partHoldBack": 1.5, "canBlockReload": True}
    assert state["errors"] == [] and state["error"] is None and console_errors == [], state
    assert blocking and parts  # it follows the live edge part by part
    assert 0 < max(latencies) <= 3.0, latencies
