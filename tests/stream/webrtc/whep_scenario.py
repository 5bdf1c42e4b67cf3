"""WHEP viewing scenarios, run in a private network namespace by `run_in_private_network(...,
module=MODULE)` (see scenario.py): real `launchkit demo` / `launchkit edge` processes, real
WebRTC viewers (Debian's Chromium, or aiortc sessions that count frames without decoding them:
loadtests/whep.py), 127.0.0.1 the only address anyone can gather or reach.

    unshare --net sh -c 'ip link set lo up && exec .venv/bin/python -m tests.stream.webrtc.whep_scenario \\
        whep-fanout 30 30'   # as root
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from playwright.async_api import Page, async_playwright
from prometheus_client.parser import text_string_to_metric_families

from loadtests.browser import CHROMIUM, CHROMIUM_FLAGS, READ_TIMECODE
from loadtests.target import LocalDemo, start_demo
from loadtests.whep import WhepResult, install_counting_decoders, loopback_viewer, watch
from stream.source.testcard import TIMECODE_BITS, timecode_block
from stream.webrtc.ice import IceSettings
from stream.webrtc.whep import STALE_PENDING
from tests.conftest import METRICS_AUTH
from tests.stream.relay.harness import start_edge, stop_all
from tests.stream.webrtc.scenario import main

MODULE = "tests.stream.webrtc.whep_scenario"
LOOPBACK = IceSettings(addresses=("127.0.0.1",), servers=())
FPS = 15
# Small pictures: the machine runs the origin's encoders, the edge's senders and every viewer.
ORIGIN = ("--ladder", "360p:640x360:500", "--fps", str(FPS), "--webrtc", "320x180:300", "--max-webrtc-viewers", "100")
ENV = {"LAUNCHKIT_ICE_ADDRESSES": "127.0.0.1"}
# Loopback is the only interface here. A receive-only page (no camera permission) gathers only on
# the default route's interface, which this namespace lacks, and never on loopback: these flags
# (test-only) let Chromium gather 127.0.0.1, as a viewer on a real network gathers its own address.
VIEWER_FLAGS = [*CHROMIUM_FLAGS, "--allow-loopback-in-peer-connection", "--force-webrtc-ip-handling-policy=default",
                "--disable-features=WebRtcHideLocalIpsWithMdns"]


def _log_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="launchkit-whep-"))


async def _metrics(url: str) -> dict[tuple[str, tuple], float]:
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics", headers=METRICS_AUTH) as response:
        text = await response.text()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _demo(*extra: str) -> LocalDemo:
    os.environ.update(ENV)  # the demo and edges inherit it: they gather 127.0.0.1 only
    return start_demo(*ORIGIN, *extra, log_dir=_log_dir(), ready_timeout=40)


# ---- 30 viewers on one edge ---------------------------------------------------------------------

async def whep_fanout(viewers: str = "30", seconds: str = "30") -> dict[str, Any]:
    install_counting_decoders()
    count, duration = int(viewers), float(seconds)
    origin = _demo()
    edge = None
    try:
        edge = await asyncio.to_thread(start_edge, origin.url, _log_dir(), max_webrtc_viewers=count + 5)
        async with aiohttp.ClientSession() as session:
            await _until_feed(session, edge.url)
            before = await _metrics(origin.url)
            started = time.monotonic()
            during: dict[str, Any] = {}

            async def sample() -> None:
                await asyncio.sleep(duration / 2)
                edge_metrics, origin_metrics = await _metrics(edge.url), await _metrics(origin.url)
                async with session.get(edge.url + "/api/status") as response:
                    during["status_viewers"] = (await response.json())["viewers"]
                during.update(edge_viewers=edge_metrics[("launchkit_webrtc_viewers", ())],
                              origin_viewers=origin_metrics[("launchkit_webrtc_viewers", ())],
                              origin_feeds=origin_metrics[("launchkit_webrtc_feed_downstreams", ())])

            results, _ = await asyncio.gather(
                asyncio.gather(*(_watch_from(i, edge.url + "/whep", duration) for i in range(count))),
                sample())
            elapsed = time.monotonic() - started
            after = await _metrics(origin.url)
    finally:
        stop_all(edge, origin)
    encoded = (after[("launchkit_encoder_frames_total", (("rendition", "webrtc"),))]
               - before[("launchkit_encoder_frames_total", (("rendition", "webrtc"),))])
    return {"viewers": [r.as_dict() | {"expected": r.expected_frames(FPS)} for r in results],
            "elapsed": elapsed, "webrtc_frames_encoded": encoded, "during": during, "fps": FPS}


async def _watch_from(index: int, whep_url: str, seconds: float) -> WhepResult:
    async with loopback_viewer(index) as session:
        return await watch(session, whep_url, seconds, LOOPBACK)


async def _until_feed(session: aiohttp.ClientSession, edge_url: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with session.get(edge_url + "/api/status") as response:
            if (await response.json()).get("webrtc", {}).get("available"):
                return
        await asyncio.sleep(0.2)
    raise TimeoutError("the edge never received the WebRTC feed")


# ---- a viewer that stops reading -----------------------------------------------------------------

_FROZEN_VIEWER = """
import asyncio, aiohttp, sys
from loadtests.whep import WhepResult, install_counting_decoders, loopback_viewer, watch
from stream.webrtc.ice import IceSettings
from stream.webrtc.whep import STALE_PENDING
install_counting_decoders()
async def main():
    async with aiohttp.ClientSession() as session:
        await watch(session, sys.argv[1], float(sys.argv[2]), IceSettings(addresses=("127.0.0.1",)))
asyncio.run(main())
"""


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


async def whep_frozen_viewer(seconds: str = "25") -> dict[str, Any]:
    """Five viewers play; a sixth process is frozen (SIGSTOP) mid-stream and never reads again."""
    install_counting_decoders()
    duration = float(seconds)
    origin = _demo()
    frozen = None
    try:
        frozen = subprocess.Popen([sys.executable, "-c", _FROZEN_VIEWER, origin.url + "/whep", str(duration + 10)],
                                  stderr=subprocess.DEVNULL)
        await asyncio.sleep(3)  # it connected and plays
        frozen.send_signal(signal.SIGSTOP)
        rss_before = _rss(origin.process.pid)
        rss: list[int] = []

        async def sample_rss() -> None:
            for _ in range(int(duration)):
                await asyncio.sleep(1)
                rss.append(_rss(origin.process.pid))

        results, _ = await asyncio.gather(
            asyncio.gather(*(_watch_from(i, origin.url + "/whep", duration) for i in range(5))),
            sample_rss())
        metrics = await _metrics(origin.url)
    finally:
        if frozen is not None:
            frozen.send_signal(signal.SIGKILL)
            frozen.wait()
        stop_all(origin)
    return {"viewers": [r.as_dict() | {"expected": r.expected_frames(FPS)} for r in results],
            "rss_before": rss_before, "rss": rss,
            "frames_dropped": metrics.get(("launchkit_webrtc_frames_dropped_total", ()), 0.0)}


# ---- Chromium plays the landing page over WHEP ---------------------------------------------------

async def _page_state(page: Page) -> dict[str, Any]:
    return await page.evaluate("""async () => {
      const s = window.launchkit, video = document.getElementById('player');
      let codec = null;
      if (s.pc) {
        const stats = await s.pc.getStats();
        stats.forEach((r) => { if (r.type === 'inbound-rtp' && r.kind === 'video' && r.codecId)
          codec = stats.get(r.codecId).mimeType; });
      }
      const message = document.getElementById('player-message');
      return {engine: s.engine, time: video.currentTime, frames: video.getVideoPlaybackQuality().totalVideoFrames,
              codec, errors: s.errors, warnings: s.warnings.map((w) => w.details),
              message: message.hidden ? '' : message.textContent.trim(),
              offer: s.pc && s.pc.localDescription ? s.pc.localDescription.sdp : null};
    }""")


def _offered_video_codecs(sdp: str) -> list[str]:
    """Codec names of the offer's video section, in the offer's order of preference."""
    lines = sdp.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("m=video"))
    order = lines[start].split()[3:]
    names = {}
    for line in lines[start:]:
        if line.startswith("a=rtpmap:"):
            payload, codec = line[len("a=rtpmap:"):].split(" ", 1)
            names[payload] = codec.split("/")[0]
    return [names[p] for p in order if p in names]


async def _until(page: Page, expression: str, timeout: float) -> None:
    await page.wait_for_function(expression, timeout=timeout * 1000)


async def whep_browser() -> dict[str, Any]:
    origin = _demo()
    block_share = timecode_block(360) / 360  # the program is the first rendition: 640x360
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=VIEWER_FLAGS)
            try:
                page = await browser.new_page()
                console: list[str] = []
                page.on("console", lambda m: m.type == "error" and console.append(m.text))
                await page.goto(origin.url + "/")
                await _until(page, "() => window.launchkit.engine === 'webrtc' && "
                                   "document.getElementById('player').currentTime > 1", 20)
                first = await _page_state(page)
                await asyncio.sleep(3)
                latencies = []
                for _ in range(30):
                    value = await page.evaluate(READ_TIMECODE, [TIMECODE_BITS, block_share])
                    if value is not None:
                        latencies.append(value)
                    await asyncio.sleep(0.1)
                last = await _page_state(page)
            finally:
                await browser.close()
    finally:
        stop_all(origin)
    return {"first": first, "last": last, "offered": _offered_video_codecs(first["offer"]),
            "latencies": latencies, "median_latency": statistics.median(latencies) if latencies else None,
            "console_errors": console}


# ---- capacity full: fall back to LL-HLS, then WebRTC again ----------------------------------------

async def whep_fallback() -> dict[str, Any]:
    origin = _demo("--max-webrtc-viewers", "1")
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=VIEWER_FLAGS)
            try:
                playing = "() => document.getElementById('player').currentTime > 2"
                first = await browser.new_page()
                await first.goto(origin.url + "/")
                await _until(first, "() => window.launchkit.engine === 'webrtc'", 20)
                await _until(first, playing, 20)
                second = await browser.new_page()
                await second.goto(origin.url + "/")
                await _until(second, "() => window.launchkit.engine === 'hls.js'", 20)
                await _until(second, playing, 20)
                # A page that asks anyway (its status was stale, or ?protocol=webrtc) gets 503: LL-HLS.
                forced = await browser.new_page()
                await forced.goto(origin.url + "/?protocol=webrtc")
                await _until(forced, "() => window.launchkit.engine === 'hls.js'", 20)
                await _until(forced, playing, 20)
                messages = set()
                for _ in range(10):
                    messages.update([(await _page_state(second))["message"], (await _page_state(forced))["message"]])
                    await asyncio.sleep(0.2)
                states = {"first": await _page_state(first), "second": await _page_state(second),
                          "forced": await _page_state(forced)}
                await first.close()  # leaves: its WebRTC place frees at once (DELETE on pagehide)
                await asyncio.sleep(1)
                third = await browser.new_page()
                await third.goto(origin.url + "/")
                await _until(third, "() => window.launchkit.engine === 'webrtc'", 20)
                await _until(third, playing, 20)
                states["third"] = await _page_state(third)
                states["second_later"] = await _page_state(second)
            finally:
                await browser.close()
    finally:
        stop_all(origin)
    for state in states.values():
        state.pop("offer", None)
    return {"states": states, "second_messages": sorted(messages)}


# ---- offers that never connect (squatting) -------------------------------------------------------

def _squatter_offer(blackhole_port: int) -> str:
    """A well-formed H.264 offer whose only candidate is a UDP socket that swallows every check:
    the session stays "connecting" until it is given up, as a squatter's would."""
    return "".join(line + "\r\n" for line in (
        "v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "t=0 0", "a=group:BUNDLE 0",
        "m=video 9 UDP/TLS/RTP/SAVPF 102", "c=IN IP4 127.0.0.1", "a=mid:0", "a=recvonly", "a=rtcp-mux",
        "a=rtpmap:102 H264/90000", "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
        "a=ice-ufrag:squat", "a=ice-pwd:squattersquattersquatter1",
        "a=fingerprint:sha-256 " + ":".join(["AB"] * 32), "a=setup:actpass",
        f"a=candidate:1 1 udp 2130706431 127.0.0.1 {blackhole_port} typ host", "a=end-of-candidates"))


async def _squat(url: str, offer: str, source: str) -> int:
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with aiohttp.ClientSession(connector=connector) as session, \
            session.post(url, data=offer, headers={"Content-Type": "application/sdp"}) as response:
        return response.status


async def whep_squatters(offers: str = "100", addresses: str = "25") -> dict[str, Any]:
    """`offers` offers that never connect from `addresses` loopback addresses, then a real viewer."""
    install_counting_decoders()
    blackhole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blackhole.bind(("127.0.0.1", 0))
    origin = _demo("--max-webrtc-viewers", "20")
    try:
        offer = _squatter_offer(blackhole.getsockname()[1])
        sources = [f"127.0.0.{2 + i % int(addresses)}" for i in range(int(offers))]
        statuses = await asyncio.gather(*(_squat(origin.url + "/whep", offer, source) for source in sources))
        flooded = time.monotonic()
        async with aiohttp.ClientSession() as session:
            async with session.get(origin.url + "/api/status") as response:
                after_flood = (await response.json())["webrtc"]
            await asyncio.sleep(STALE_PENDING + 0.5)
            viewer_after = time.monotonic() - flooded
            viewer = await watch(session, origin.url + "/whep", 6.0, LOOPBACK)
        refused = await _metrics(origin.url)
    finally:
        stop_all(origin)
        blackhole.close()
    return {"statuses": sorted(statuses), "after_flood": after_flood, "viewer_after": viewer_after,
            "viewer": viewer.as_dict() | {
        "expected": viewer.expected_frames(FPS)}, "pending_refusals": refused.get(
            ("launchkit_whep_refused_total", (("reason", "pending"),)), 0.0), "log": origin.log()}


SCENARIOS = {"whep-fanout": whep_fanout, "whep-frozen-viewer": whep_frozen_viewer, "whep-browser": whep_browser,
             "whep-fallback": whep_fallback, "whep-squatters": whep_squatters}

if __name__ == "__main__":
    main(SCENARIOS)
