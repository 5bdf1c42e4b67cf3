"""Time to first picture, as a viewer opening the landing page sees it: one fresh browser profile per
load (no cache, no cookies: a first visit), from navigation to the first frame on screen.

The page records it itself (`window.launchkit.firstFrameAt`: `performance.now()` of the first
`requestVideoFrameCallback` on the element on screen, so milliseconds since navigation started).
Each load also records which engine shows the picture 1 s and 5 s after navigation (LL-HLS, or
WebRTC once the page has switched to it), how the page's WebRTC attempt ended, and the ICE
candidate pair WebRTC uses (host, or relay through TURN).

Used by the startup tests (tests/landing/test_startup.py) and benchmark (loadtests/bench/startup.py),
inside the viewer's network namespace.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from playwright.async_api import Browser

LOAD_TIMEOUT = 15.0  # seconds a load may take to show a picture before it counts as failed

_STATE = """async () => {
  const s = window.launchkit, video = document.getElementById('player');
  let pair = null;
  if (s.pc) {
    const stats = await s.pc.getStats();
    stats.forEach((r) => {
      if (r.type === 'candidate-pair' && r.state === 'succeeded' && r.nominated) {
        const local = stats.get(r.localCandidateId);
        pair = local ? {local: local.candidateType, protocol: local.relayProtocol || local.protocol} : null;
      }
    });
  }
  return {now: performance.now(), engine: s.engine, first: s.firstFrameAt, webrtc: s.webrtc.map((w) => w.outcome),
          errors: s.errors.length, time: video ? video.currentTime : 0, pair};
}"""


@dataclass
class Load:
    first_frame: float | None = None  # seconds from navigation to the first frame on screen
    engine_at_1s: str | None = None
    engine_at_5s: str | None = None
    webrtc: list[str] = field(default_factory=list)  # outcomes of the page's WebRTC attempts
    pair: dict | None = None  # the WebRTC candidate pair in use at 5 s: {"local": host|relay|…, "protocol"}
    errors: int = 0


async def load_once(browser: Browser, url: str, watch_seconds: float = 5.0) -> Load:
    """Open `url` in a fresh profile and watch it for `watch_seconds` (or until it fails to start)."""
    context = await browser.new_context()
    try:
        page = await context.new_page()
        await page.goto(url, wait_until="commit")
        load = Load()
        started = time.monotonic()
        while True:
            state = await page.evaluate(_STATE)
            seconds = state["now"] / 1000
            if load.first_frame is None and state["first"] is not None:
                load.first_frame = round(state["first"] / 1000, 3)
            if load.engine_at_1s is None and seconds >= 1.0:
                load.engine_at_1s = state["engine"] if load.first_frame is not None else None
            if seconds >= watch_seconds:
                load.engine_at_5s = state["engine"] if load.first_frame is not None else None
                load.webrtc, load.pair, load.errors = state["webrtc"], state["pair"], state["errors"]
                return load
            if time.monotonic() - started > LOAD_TIMEOUT:
                load.webrtc, load.errors = state["webrtc"], state["errors"]
                return load
            await asyncio.sleep(0.05)
    finally:
        await context.close()


def percentile(values: list[float], share: float) -> float | None:
    """Nearest-rank percentile (p95 of 20 loads is the 19th): no interpolation over a handful of loads."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1))]


def summary(loads: list[Load]) -> dict[str, Any]:
    firsts = [load.first_frame for load in loads if load.first_frame is not None]
    count = len(loads)

    def share(engine: str, attribute: str) -> float:
        return round(sum(getattr(load, attribute) == engine for load in loads) / count, 3) if count else 0.0

    return {
        "loads": count,
        "pictures": len(firsts),
        "first_frame_p50": statistics.median(firsts) if firsts else None,
        "first_frame_p95": percentile(firsts, 0.95),
        "first_frame_max": max(firsts) if firsts else None,
        "webrtc_at_1s": share("webrtc", "engine_at_1s"),
        "webrtc_at_5s": share("webrtc", "engine_at_5s"),
        "hls_at_5s": share("hls.js", "engine_at_5s"),
        "relayed": sum(bool(load.pair and load.pair.get("local") == "relay") for load in loads),
        "outcomes": {outcome: sum(outcome in load.webrtc for load in loads)
                     for outcome in sorted({o for load in loads for o in load.webrtc})},
        "errors": sum(load.errors for load in loads),
        "each": [asdict(load) for load in loads],
    }
