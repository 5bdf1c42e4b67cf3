"""WHEP viewing scenarios, run in the viewer's network namespace of the real topology
(tests/support/netns.py: `topology.run_scenario(MODULE, name, server URLs…)`) against real
`launchkit demo` / `launchkit edge` processes the test started in the server's namespace. The
viewers are real: Debian's Chromium with no WebRTC-changing flag (what a viewer runs), or aiortc
sessions that count frames without decoding them (loadtests/whep.py), gathering on the viewer's
address; each simulated viewer speaks HTTP from an address of its own (servers count clients per
address), as viewers on machines of their own do.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

import aiohttp
from playwright.async_api import Browser, Page, Playwright, async_playwright
from prometheus_client.parser import text_string_to_metric_families

from launchkit.webrtc.ice import IceSettings
from launchkit.webrtc.whep import STALE_PENDING
from loadtests.browser import CHROMIUM_FLAGS, READ_TIMECODE
from loadtests.whep import WhepResult, install_counting_decoders, watch
from stream.source.testcard import TIMECODE_BITS, timecode_block
from tests.stream.webrtc.scenario import main
from tests.support.client import until_webrtc_available
from tests.support.environment import METRICS_AUTH
from tests.support.netns import Topology

MODULE = "tests.stream.webrtc.whep_scenario"
FPS = 15
# Small pictures: the machine runs the origin's encoders, the edge's senders and every viewer.
ORIGIN = ("--ladder", "360p:640x360:500", "--fps", str(FPS), "--webrtc", "320x180:300", "--max-webrtc-viewers", "100")


def _ice() -> IceSettings:
    """aiortc viewers gather on the viewer's address (the namespace's first), no STUN server."""
    return IceSettings(addresses=(Topology.from_env().viewer_ip,), servers=())


def _from_address(address: str) -> aiohttp.ClientSession:
    """An HTTP session whose requests leave from `address` (one of the viewer namespace's)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0)))


def _viewer_address(index: int) -> str:
    """Simulated viewer `index`'s own address: the namespace's second, third, … (the first is the
    test's own, for status and metrics)."""
    return Topology.from_env().viewer_ips[1 + index]


async def _metrics(url: str) -> dict[tuple[str, tuple], float]:
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics", headers=METRICS_AUTH) as response:
        text = await response.text()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


# ---- 30 viewers on one edge ---------------------------------------------------------------------

async def whep_fanout(origin_url: str, edge_url: str, viewers: str = "30", seconds: str = "30") -> dict[str, Any]:
    """`viewers` aiortc viewers, each from its own address, watch one edge for `seconds`."""
    install_counting_decoders()
    count, duration = int(viewers), float(seconds)
    async with aiohttp.ClientSession() as session:
        await until_webrtc_available(session, edge_url, 15.0)
        before = await _metrics(origin_url)
        started = time.monotonic()
        during: dict[str, Any] = {}

        async def sample() -> None:
            await asyncio.sleep(duration / 2)
            edge_metrics, origin_metrics = await _metrics(edge_url), await _metrics(origin_url)
            async with session.get(edge_url + "/api/status") as response:
                during["status_viewers"] = (await response.json())["viewers"]
            during.update(edge_viewers=edge_metrics[("launchkit_webrtc_viewers", ())],
                          origin_viewers=origin_metrics[("launchkit_webrtc_viewers", ())],
                          origin_feeds=origin_metrics[("launchkit_webrtc_feed_downstreams", ())])

        results, _ = await asyncio.gather(
            asyncio.gather(*(_watch_from(i, edge_url + "/whep", duration) for i in range(count))),
            sample())
        elapsed = time.monotonic() - started
        after = await _metrics(origin_url)
    encoded = (after[("launchkit_encoder_frames_total", (("rendition", "webrtc"),))]
               - before[("launchkit_encoder_frames_total", (("rendition", "webrtc"),))])
    return {"viewers": [r.as_dict() | {"expected": r.expected_frames(FPS)} for r in results],
            "elapsed": elapsed, "webrtc_frames_encoded": encoded, "during": during, "fps": FPS}


async def _watch_from(index: int, whep_url: str, seconds: float) -> WhepResult:
    async with _from_address(_viewer_address(index)) as session:
        return await watch(session, whep_url, seconds, _ice())


# ---- a viewer that stops reading -----------------------------------------------------------------

_FROZEN_VIEWER = """
import asyncio, aiohttp, sys
from loadtests.whep import install_counting_decoders, watch
from launchkit.webrtc.ice import IceSettings
install_counting_decoders()
async def main():
    async with aiohttp.ClientSession() as session:
        await watch(session, sys.argv[1], float(sys.argv[2]), IceSettings(addresses=(sys.argv[3],), servers=()))
asyncio.run(main())
"""


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


async def whep_frozen_viewer(origin_url: str, origin_pid: str, seconds: str = "25") -> dict[str, Any]:
    """Five viewers play; a sixth process is frozen (SIGSTOP) mid-stream and never reads again. The
    origin's memory is read from /proc (the namespaces share the process table)."""
    install_counting_decoders()
    duration, pid = float(seconds), int(origin_pid)
    frozen = subprocess.Popen([sys.executable, "-c", _FROZEN_VIEWER, origin_url + "/whep", str(duration + 10),
                               Topology.from_env().viewer_ip], stderr=subprocess.DEVNULL)
    try:
        await asyncio.sleep(3)  # it connected and plays
        frozen.send_signal(signal.SIGSTOP)
        rss_before = _rss(pid)
        rss: list[int] = []

        async def sample_rss() -> None:
            for _ in range(int(duration)):
                await asyncio.sleep(1)
                rss.append(_rss(pid))

        results, _ = await asyncio.gather(
            asyncio.gather(*(_watch_from(i, origin_url + "/whep", duration) for i in range(5))),
            sample_rss())
        metrics = await _metrics(origin_url)
    finally:
        frozen.send_signal(signal.SIGKILL)
        frozen.wait()
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
      const won = s.webrtc.find((w) => w.outcome === 'won');
      return {engine: s.engine, time: video.currentTime, frames: video.getVideoPlaybackQuality().totalVideoFrames,
              codec, errors: s.errors, warnings: s.warnings.map((w) => w.details),
              message: message.hidden ? '' : message.textContent.trim(),
              first_picture: s.firstFrameAt === null ? null : s.firstFrameAt / 1000,
              webrtc_won: won ? (won.at - performance.timeOrigin) / 1000 : null,
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


def _offered_candidates(sdp: str) -> list[str]:
    """The connection addresses of the offer's candidates (`….local` names when Chromium hides its own)."""
    return sorted({line.split()[4] for line in sdp.splitlines() if line.startswith("a=candidate:")})


async def _until(page: Page, expression: str, timeout: float) -> None:
    await page.wait_for_function(expression, timeout=timeout * 1000)


async def _viewer_browser(playwright: Playwright) -> Browser:
    """Chromium as a viewer runs it, in the viewer's namespace: no WebRTC-changing flag."""
    return await playwright.chromium.launch(executable_path=Topology.from_env().chromium, args=CHROMIUM_FLAGS)


async def _open(browser: Browser, url: str, console: list[str]) -> Page:
    page = await browser.new_page()
    page.on("console", lambda m: m.type == "error" and console.append(m.text))
    await page.goto(url)
    return page


ON_WEBRTC = "() => window.launchkit.engine === 'webrtc' && document.getElementById('player').currentTime > 1"


async def whep_browser(origin_url: str, edge_url: str) -> dict[str, Any]:
    """The landing page of the demo, then of an edge: WebRTC wins, with H.264; on the demo's, the
    glass-to-glass latency from the test card's timecode strip."""
    block_share = timecode_block(360) / 360  # the program is the first rendition: 640x360
    console: list[str] = []
    async with async_playwright() as playwright:
        browser = await _viewer_browser(playwright)
        try:
            page = await _open(browser, origin_url + "/", console)
            await _until(page, ON_WEBRTC, 20)
            first = await _page_state(page)
            await asyncio.sleep(3)
            latencies = []
            for _ in range(30):
                value = await page.evaluate(READ_TIMECODE, [TIMECODE_BITS, block_share])
                if value is not None:
                    latencies.append(value)
                await asyncio.sleep(0.1)
            last = await _page_state(page)
            await page.close()
            edge_page = await _open(browser, edge_url + "/", console)
            await _until(edge_page, ON_WEBRTC, 20)
            edge = await _page_state(edge_page)
        finally:
            await browser.close()
    return {"first": first, "last": last, "edge": edge, "offered": _offered_video_codecs(first["offer"]),
            "candidates": _offered_candidates(first["offer"]), "latencies": latencies,
            "median_latency": statistics.median(latencies) if latencies else None, "console_errors": console}


# ---- capacity full: fall back to LL-HLS, then WebRTC again ----------------------------------------

async def whep_fallback(origin_url: str) -> dict[str, Any]:
    """A demo with one WebRTC place: the first page takes it, the next ones play LL-HLS."""
    playing = "() => document.getElementById('player').currentTime > 2"
    async with async_playwright() as playwright:
        browser = await _viewer_browser(playwright)
        try:
            first = await browser.new_page()
            await first.goto(origin_url + "/")
            await _until(first, "() => window.launchkit.engine === 'webrtc'", 20)
            await _until(first, playing, 20)
            second = await browser.new_page()
            await second.goto(origin_url + "/")
            await _until(second, "() => window.launchkit.engine === 'hls.js'", 20)
            await _until(second, playing, 20)
            # A page that asks anyway (its status was stale, or ?protocol=webrtc) gets 503: LL-HLS.
            forced = await browser.new_page()
            await forced.goto(origin_url + "/?protocol=webrtc")
            await _until(forced, "() => window.launchkit.engine === 'hls.js'", 20)
            await _until(forced, playing, 20)
            messages = set()
            for _ in range(10):
                messages.update([(await _page_state(second))["message"], (await _page_state(forced))["message"]])
                await asyncio.sleep(0.2)
            states = {"first": await _page_state(first), "second": await _page_state(second),
                      "forced": await _page_state(forced)}
            # `second` was never refused: it would take the place freed next at its next status poll
            # (HLS viewers move up to WebRTC when headroom appears), racing the newcomer below.
            await second.close()
            await first.close()  # leaves: its WebRTC place frees at once (DELETE on pagehide)
            await asyncio.sleep(1)
            third = await browser.new_page()
            await third.goto(origin_url + "/")
            await _until(third, "() => window.launchkit.engine === 'webrtc'", 20)
            await _until(third, playing, 20)
            states["third"] = await _page_state(third)
            states["forced_later"] = await _page_state(forced)
        finally:
            await browser.close()
    for state in states.values():
        state.pop("offer", None)
    return {"states": states, "second_messages": sorted(messages)}


# ---- offers that never connect (squatting) -------------------------------------------------------

def _squatter_offer(address: str, blackhole_port: int) -> str:
    """A well-formed H.264 offer whose only candidate is a UDP socket that swallows every check:
    the session stays "connecting" until it is given up, as a squatter's would."""
    return "".join(line + "\r\n" for line in (
        "v=0", f"o=- 1 1 IN IP4 {address}", "s=-", "t=0 0", "a=group:BUNDLE 0",
        "m=video 9 UDP/TLS/RTP/SAVPF 102", f"c=IN IP4 {address}", "a=mid:0", "a=recvonly", "a=rtcp-mux",
        "a=rtpmap:102 H264/90000", "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
        "a=ice-ufrag:squat", "a=ice-pwd:squattersquattersquatter1",
        "a=fingerprint:sha-256 " + ":".join(["AB"] * 32), "a=setup:actpass",
        f"a=candidate:1 1 udp 2130706431 {address} {blackhole_port} typ host", "a=end-of-candidates"))


async def _squat(url: str, offer: str, source: str) -> int:
    async with _from_address(source) as session, \
            session.post(url, data=offer, headers={"Content-Type": "application/sdp"}) as response:
        return response.status


async def whep_squatters(origin_url: str, offers: str = "100", addresses: str = "25") -> dict[str, Any]:
    """`offers` offers that never connect from `addresses` addresses, then a real viewer from another."""
    install_counting_decoders()
    viewer_ip = Topology.from_env().viewer_ip
    blackhole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blackhole.bind((viewer_ip, 0))
    try:
        offer = _squatter_offer(viewer_ip, blackhole.getsockname()[1])
        sources = [_viewer_address(i % int(addresses)) for i in range(int(offers))]
        statuses = await asyncio.gather(*(_squat(origin_url + "/whep", offer, source) for source in sources))
        flooded = time.monotonic()
        async with aiohttp.ClientSession() as session:
            async with session.get(origin_url + "/api/status") as response:
                after_flood = (await response.json())["webrtc"]
            await asyncio.sleep(STALE_PENDING + 0.5)
            viewer_after = time.monotonic() - flooded
            viewer = await watch(session, origin_url + "/whep", 6.0, _ice())
        refused = await _metrics(origin_url)
    finally:
        blackhole.close()
    return {"statuses": sorted(statuses), "after_flood": after_flood, "viewer_after": viewer_after,
            "viewer": viewer.as_dict() | {"expected": viewer.expected_frames(FPS)},
            "pending_refusals": refused.get(("launchkit_whep_refused_total", (("reason", "pending"),)), 0.0)}


SCENARIOS = {"whep-fanout": whep_fanout, "whep-frozen-viewer": whep_frozen_viewer, "whep-browser": whep_browser,
             "whep-fallback": whep_fallback, "whep-squatters": whep_squatters}

if __name__ == "__main__":
    main(SCENARIOS)
