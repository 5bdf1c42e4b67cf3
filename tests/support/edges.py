"""Test helpers for edges: a scriptable stub origin, and per-object request counts from a real
origin's access log. Everything talks to 127.0.0.1 only. Edge processes start with
loadtests/target.py `start_edge`; simulated viewers are loadtests/player.py's."""

from __future__ import annotations

import asyncio
import re
from collections import Counter

from aiohttp import web

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
