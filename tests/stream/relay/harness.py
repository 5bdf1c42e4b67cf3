"""Test helpers for edges: a scriptable stub origin, real edge processes, simulated HLS players, and
per-object request counts from the origin's access log. Everything talks to 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

from loadtests.target import LocalDemo, http_status, server_process

# --- a scriptable origin ----------------------------------------------------------------------


class StubOrigin:
    """Serves the origin's contract with scripted behaviour and records every request it gets."""

    def __init__(self, title: str = "Stub launch") -> None:
        self.title = title
        self.requests: list[tuple[str, dict[str, str]]] = []  # (path + query, headers)
        self.delay = 0.0  # seconds before answering anything under /hls or /replay
        self.fail: int | None = None  # answer this status to media requests
        self.blocking_delay = 0.0  # seconds a `_HLS_msn` request is held
        self.playlist_cache = "public, max-age=1"
        self.segments = {f"{n}.m4s": bytes([n % 251]) * (10_000 + n) for n in range(1, 4)}
        self.url = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes([
            web.get("/api/status", self._status),
            web.get("/hls/index.m3u8", self._multivariant),
            web.get("/hls/{rendition}/index.m3u8", self._playlist),
            web.get("/hls/{rendition}/{name}", self._media),
        ])
        return app

    def media_requests(self) -> list[str]:
        return [target for target, _ in self.requests if not target.startswith("/api/status")]

    async def _status(self, request: web.Request) -> web.Response:
        self.requests.append((request.path_qs, dict(request.headers)))
        return web.json_response({
            "event": {"title": self.title, "state": "live", "start_at": None, "starts_in": None, "live_at": 1.0,
                      "ended_at": None, "description": "Stub description"},
            "stream": {"live": True, "on_air": "primary", "hls": "/hls/index.m3u8", "segment_duration": 1.0,
                       "renditions": [{"name": "a", "width": 320, "height": 180, "bandwidth": 300000}]},
            "replay": {"available": False, "url": None}, "viewers": 1,
            "capacity": {"max_viewers": None, "headroom": None},
            "recommended": {"protocol": "hls", "url": "/hls/index.m3u8", "edge": None},
        }, headers={"Cache-Control": "no-cache"})

    async def _scripted(self, request: web.Request) -> web.Response | None:
        self.requests.append((request.path_qs, dict(request.headers)))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail is not None:
            return web.Response(status=self.fail, text="scripted failure", headers={"Retry-After": "3"})
        return None

    async def _multivariant(self, request: web.Request) -> web.Response:
        return await self._scripted(request) or web.Response(
            body=b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=300000\na/index.m3u8\n",
            content_type="application/vnd.apple.mpegurl",
            headers={"Cache-Control": "public, max-age=5", "Access-Control-Allow-Origin": "*"})

    async def _playlist(self, request: web.Request) -> web.Response:
        failed = await self._scripted(request)
        if failed is not None:
            return failed
        cache = self.playlist_cache
        if "_HLS_msn" in request.query:
            await asyncio.sleep(self.blocking_delay)
            cache = "public, max-age=3"
        body = "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:1\n" + "".join(
            f"#EXTINF:1.0,\n{name}\n" for name in self.segments)
        return web.Response(body=body.encode(), content_type="application/vnd.apple.mpegurl",
                            headers={"Cache-Control": cache, "Access-Control-Allow-Origin": "*"})

    async def _media(self, request: web.Request) -> web.Response:
        failed = await self._scripted(request)
        if failed is not None:
            return failed
        data = self.segments.get(request.match_info["name"])
        if data is None:
            return web.Response(status=404, text="no such segment", headers={"Access-Control-Allow-Origin": "*"})
        response = web.Response(body=data, content_type="video/mp4", headers={
            "Cache-Control": "public, max-age=31536000, immutable", "Access-Control-Allow-Origin": "*"})
        response.set_cookie("origin_cookie", "must-not-reach-viewers")
        return response


# --- real edge processes ----------------------------------------------------------------------

_EDGE_MAIN = """
import json, logging, sys
from launchkit.edge import EdgeSettings, run_edge
settings = EdgeSettings(**json.loads(sys.argv[1]))
logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr,
                    format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
sys.exit(run_edge(settings))
"""
_URL_LINE = re.compile(r"landing page\s+(http://\S+?)/\s")


def start_edge(origin: str, log_dir: Path, *, wait_ready: bool = True, ready_timeout: float = 20,
               namespace: str | None = None, **settings: object) -> LocalDemo:
    """A real edge process (`run_edge` as `launchkit edge` will call it) on a free port of `host`
    (loopback unless given; in `namespace`, an `ip netns add` name, when given: see
    loadtests/target.py `server_process`), stopped by PID. Waits for its announcement and, unless
    told otherwise, for /readyz 200."""
    # No WebRTC viewers unless a test asks: see tests/conftest.py (network rule).
    values = {"origin": origin, "host": "127.0.0.1", "port": 0, "drain_seconds": 0.5, "max_webrtc_viewers": 0,
              **settings}
    log_path = log_dir / f"edge-{time.monotonic_ns()}.log"
    with open(log_path, "wb") as log:
        process = server_process([sys.executable, "-c", _EDGE_MAIN, json.dumps(values)], log,
                                 host=str(values["host"]), namespace=namespace)
    deadline = time.monotonic() + ready_timeout
    url = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"edge exited with {process.returncode}:\n{log_path.read_text()}")
        if url is None and (match := _URL_LINE.search(log_path.read_text(errors="replace"))):
            url = match.group(1)
        if url and (not wait_ready or http_status(f"{url}/readyz", namespace) == 200):
            return LocalDemo(process, url, log_path)
        time.sleep(0.1)
    process.kill()
    process.wait()
    raise RuntimeError(f"edge not ready within {ready_timeout}s:\n{log_path.read_text()}")


def stop_all(*running: LocalDemo | None) -> None:
    """Stop every process we started (by PID), whatever happens to the others."""
    for item in running:
        if item is None or item.process.poll() is not None:
            continue
        try:
            item.stop()
        except Exception:
            item.process.kill()
            item.process.wait()


# --- the origin's view: requests per object per edge, from its access log -------------------

_ACCESS = re.compile(r'"GET (\S+) HTTP/1\.1" (\d{3}) \S+ "[^"]*" "launchkit-edge/\S+ \(([^;]+); pid (\d+)\)"')


def origin_requests(log_text: str) -> Counter[tuple[str, str]]:
    """(edge process "id/pid", path+query) -> requests the origin received, from `--access-log` lines.
    The edge names itself and its worker in its User-Agent."""
    counts: Counter[tuple[str, str]] = Counter()
    for match in _ACCESS.finditer(log_text):
        target, _, edge_id, pid = match.groups()
        counts[(f"{edge_id}/{pid}", target)] += 1
    return counts


# --- simulated HLS players --------------------------------------------------------------------


@dataclass
class PlayerReport:
    edge: str
    rendition: str = ""
    statuses: Counter[int] = field(default_factory=Counter)
    segments: list[int] = field(default_factory=list)  # media sequence numbers fetched, in order
    missed: list[int] = field(default_factory=list)  # listed after joining but never fetched
    stalled: float = 0.0  # seconds the playhead waited for media after playback started
    errors: list[str] = field(default_factory=list)


async def play(session: aiohttp.ClientSession, base: str, variant_index: int, until: float) -> PlayerReport:
    """A classic HLS player at real pace: multivariant once, media playlist every half segment,
    each new segment once (starting two segments behind the live edge, as players do), with a
    buffer model to measure stalls. Every request is bounded (the session's timeout)."""
    report = PlayerReport(edge=base)

    async def get(url: str) -> bytes | None:
        try:
            async with session.get(url) as response:
                body = await response.read()
                report.statuses[response.status] += 1
                return body if response.status == 200 else None
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            report.errors.append(f"{url}: {type(error).__name__}")
            return None

    multivariant = await get(f"{base}/hls/index.m3u8")
    if multivariant is None:
        return report
    variants = [line for line in multivariant.decode().splitlines() if line and not line.startswith("#")]
    variant = variants[variant_index % len(variants)]
    report.rendition = variant.split("/")[0]
    playlist_url = f"{base}/hls/{variant}"
    media_base = playlist_url.rsplit("/", 1)[0]
    init_fetched = False
    next_sequence: int | None = None
    play_started: float | None = None
    buffered = 0.0  # seconds of media downloaded since playback started
    target = 2.0
    while time.monotonic() < until:
        body = await get(playlist_url)
        if body is not None:
            text = body.decode()
            target = float(re.search(r"#EXT-X-TARGETDURATION:(\d+)", text).group(1))
            first = int(re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", text).group(1))
            durations = [float(d) for d in re.findall(r"#EXTINF:([\d.]+),", text)]
            if not init_fetched:
                init = re.search(r'#EXT-X-MAP:URI="([^"]+)"', text)
                init_fetched = init is None or await get(f"{media_base}/{init.group(1)}") is not None
            if next_sequence is None:
                next_sequence = first + max(0, len(durations) - 2)
            last = first + len(durations) - 1
            if next_sequence < first:
                report.missed += list(range(next_sequence, first))
                next_sequence = first
            while next_sequence <= last and time.monotonic() < until:
                data = await get(f"{media_base}/{next_sequence}.m4s")
                if data is None:
                    report.missed.append(next_sequence)
                else:
                    report.segments.append(next_sequence)
                    now = time.monotonic()
                    if play_started is None:
                        play_started = now
                    position = now - play_started - report.stalled
                    if position > buffered:  # the playhead caught up with the buffer: a stall
                        report.stalled += position - buffered
                    buffered += durations[next_sequence - first]
                next_sequence += 1
        await asyncio.sleep(min(target / 2, max(0.0, until - time.monotonic())))
    return report


async def swarm(edges: list[str], viewers: int, seconds: float, arrival_spread: float = 1.0) -> list[PlayerReport]:
    """`viewers` players spread over `edges`, arriving within `arrival_spread` seconds (a flash
    crowd), each playing for about `seconds`."""
    timeout = aiohttp.ClientTimeout(total=10, connect=3)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        until = time.monotonic() + seconds + arrival_spread

        async def viewer(index: int) -> PlayerReport:
            await asyncio.sleep(arrival_spread * index / viewers)
            return await play(session, edges[index % len(edges)], index // len(edges), until)

        return list(await asyncio.gather(*(viewer(i) for i in range(viewers))))
