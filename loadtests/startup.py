"""Time to first picture, as a viewer opening the landing page sees it: one fresh browser profile per
load (no cache, no cookies: a first visit), from navigation to the first frame on screen.

The page records it itself (`window.launchkit.firstFrameAt`: `performance.now()` of the first
`requestVideoFrameCallback` on the element on screen, so milliseconds since navigation started).
Each load also records which engine shows the picture 1, 3 and 5 s after navigation (LL-HLS, or
WebRTC once the page has switched to it), how the page's WebRTC attempt ended, and the ICE
candidate pair WebRTC uses (host, or relay through TURN).

With `--reference URL`, each load is followed by a load of URL (e.g. the same page with
`?protocol=hls`), watched until its first picture: a reference measured on the same machine, in
the same minutes, that the page's figures can be compared with (`reference` in the summary).

Run in the viewer's network namespace (tests/support/netns.py) by the startup tests
(tests/landing/test_startup.py) and benchmark (loadtests/bench/startup.py):

    python -m loadtests.startup http://SERVER/ --loads 20 --watch 3 [--reference 'http://SERVER/?protocol=hls']
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from playwright.async_api import Browser, async_playwright

from loadtests.browser import CHROMIUM, CHROMIUM_FLAGS

LOAD_TIMEOUT = 15.0  # seconds a load may take to show a picture before it counts as failed

_STATE = """async () => {
  const s = window.launchkit, video = document.getElementById('player');
  if (!s) return {now: performance.now(), engine: null, first: null, webrtc: [], errors: 0, pair: null};
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


CHECKPOINTS = (1.0, 3.0, 5.0)  # seconds after navigation at which the engine on screen is recorded


@dataclass
class Load:
    first_frame: float | None = None  # seconds from navigation to the first frame on screen
    engines: dict[str, str | None] = field(default_factory=dict)  # "3s" -> engine on screen then (None: no picture)
    webrtc: list[str] = field(default_factory=list)  # outcomes of the page's WebRTC attempts
    pair: dict | None = None  # the WebRTC candidate pair in use at the end: {"local": host|relay|…, "protocol"}
    errors: int = 0


async def load_once(browser: Browser, url: str, watch_seconds: float = CHECKPOINTS[-1],
                    until_picture: bool = False) -> Load:
    """Open `url` in a fresh profile and watch it for `watch_seconds` (or until it fails to start,
    or with `until_picture` until its first picture), noting the engine on screen at each checkpoint
    within that time."""
    context = await browser.new_context()
    try:
        page = await context.new_page()
        await page.goto(url, wait_until="commit")
        load = Load()
        pending = [checkpoint for checkpoint in CHECKPOINTS if checkpoint < watch_seconds] + [watch_seconds]
        started = time.monotonic()
        while True:
            state = await page.evaluate(_STATE)
            seconds = state["now"] / 1000
            if load.first_frame is None and state["first"] is not None:
                load.first_frame = round(state["first"] / 1000, 3)
            while pending and seconds >= pending[0]:
                load.engines[f"{pending.pop(0):g}s"] = state["engine"] if load.first_frame is not None else None
            if not pending or time.monotonic() - started > LOAD_TIMEOUT or (until_picture and load.first_frame):
                load.webrtc, load.pair, load.errors = state["webrtc"], state["pair"], state["errors"]
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
    checkpoints = sorted({name for load in loads for name in load.engines}, key=lambda name: float(name[:-1]))

    def share(engine: str, checkpoint: str) -> float:
        return round(sum(load.engines.get(checkpoint) == engine for load in loads) / count, 3) if count else 0.0

    return {
        "loads": count,
        "pictures": len(firsts),
        "first_frame_p50": round(statistics.median(firsts), 3) if firsts else None,
        "first_frame_p95": percentile(firsts, 0.95),
        "first_frame_max": max(firsts) if firsts else None,
        "webrtc_at": {checkpoint: share("webrtc", checkpoint) for checkpoint in checkpoints},
        "hls_at": {checkpoint: share("hls.js", checkpoint) for checkpoint in checkpoints},
        "relayed": sum(bool(load.pair and load.pair.get("local") == "relay") for load in loads),
        "relay_protocols": sorted({load.pair["protocol"] for load in loads
                                   if load.pair and load.pair.get("local") == "relay"}),
        "outcomes": {outcome: sum(outcome in load.webrtc for load in loads)
                     for outcome in sorted({o for load in loads for o in load.webrtc})},
        "errors": sum(load.errors for load in loads),
        "each": [asdict(load) for load in loads],
    }


async def measure(url: str, loads: int, watch_seconds: float, reference: str | None = None) -> dict[str, Any]:
    """`loads` first visits of `url`, one after another, in one Chromium as a viewer runs it; with
    `reference`, each followed by a first visit of that URL (alternating, so both see the same
    machine)."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            measured, references = [], []
            for _ in range(loads):
                measured.append(await load_once(browser, url, watch_seconds))
                if reference:
                    references.append(await load_once(browser, reference, watch_seconds, until_picture=True))
            result = summary(measured)
            if reference:
                result["reference"] = {"url": reference} | {
                    key: value for key, value in summary(references).items()
                    if key in ("loads", "pictures", "first_frame_p50", "first_frame_p95", "first_frame_max", "errors")}
            return result
        finally:
            await browser.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Time to first picture over fresh page loads; "
                                     "prints the summary as JSON (last line).")
    parser.add_argument("url", help="the landing page, e.g. http://10.64.0.1:8080/")
    parser.add_argument("--loads", type=int, default=20)
    parser.add_argument("--watch", type=float, default=CHECKPOINTS[-1], help="seconds each load is watched")
    parser.add_argument("--reference", help="a page to load after each load, until its first picture (e.g. "
                        "the same page with ?protocol=hls)")
    args = parser.parse_args(argv)
    if not 1 <= args.loads <= 200 or not 0.5 <= args.watch <= 30:
        parser.error("--loads: 1 to 200, --watch: 0.5 to 30 s")
    print(json.dumps(asyncio.run(measure(args.url, args.loads, args.watch, args.reference))))


if __name__ == "__main__":
    main()
