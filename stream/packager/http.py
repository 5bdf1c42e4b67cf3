"""HTTP delivery of HLS from memory: playlists, init segments and media segments.

Names are matched against the in-memory window only; no request ever reaches the filesystem.
Caching follows what a CDN needs: segment URIs never repeat (wall-clock sequence numbers,
content-hashed init), so they are immutable; playlists live for half a segment.
"""

from __future__ import annotations

import math
import time
from typing import Callable

from aiohttp import web

from launchkit import metrics
from stream.packager import playlist
from stream.packager.hls import HlsPackager, RenditionPackager
from stream.recorder import Recorder, vod_playlist

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
SEGMENT_TYPE = "video/mp4"
IMMUTABLE = "public, max-age=31536000, immutable"
CORS = {"Access-Control-Allow-Origin": "*"}  # embeds on news sites fetch media cross-origin



class RequestRate:
    """Events per second over a sliding window, in one-second buckets (memory bounded by the window)."""

    def __init__(self, window_seconds: int) -> None:
        self._window = window_seconds
        self._buckets = [0] * window_seconds
        self._stamps = [0] * window_seconds

    def add(self, now: float | None = None) -> None:
        second = int(now if now is not None else time.monotonic())
        slot = second % self._window
        if self._stamps[slot] != second:
            self._stamps[slot], self._buckets[slot] = second, 0
        self._buckets[slot] += 1

    def per_second(self, now: float | None = None) -> float:
        second = int(now if now is not None else time.monotonic())
        # The current second is still filling: count the previous `window` full seconds.
        recent = sum(b for b, s in zip(self._buckets, self._stamps) if second - self._window <= s < second)
        return recent / self._window


class HlsHandlers:
    """Live HLS. `is_public(request)` decides who may watch: everyone while the event is live,
    only the operator (preview) before and after."""

    def __init__(self, packager: HlsPackager, is_public: Callable[[web.Request], bool]) -> None:
        self._packager = packager
        self._is_public = is_public
        self._segment_rates: dict[str, RequestRate] = {}
        for name, rendition in packager.renditions.items():
            rate = RequestRate(max(2, math.ceil(2 * rendition.segment_duration)))
            self._segment_rates[name] = rate
            # A viewer fetches one segment per segment duration.
            metrics.HLS_VIEWERS.labels(name).set_function(
                lambda rate=rate, d=rendition.segment_duration: rate.per_second() * d
            )

    def viewers(self) -> int:
        return round(sum(
            rate.per_second() * self._packager.renditions[name].segment_duration
            for name, rate in self._segment_rates.items()
        ))

    def _check_public(self, request: web.Request) -> None:
        if not self._is_public(request):
            raise web.HTTPNotFound(text="the event is not live", headers={"Cache-Control": "max-age=1", **CORS})

    async def multivariant(self, request: web.Request) -> web.Response:
        self._check_public(request)
        return _playlist(self._packager.multivariant, max_age=5)

    async def media_playlist(self, request: web.Request) -> web.Response:
        rendition = self._rendition(request)
        if rendition.playlist is None:
            raise web.HTTPNotFound(text="stream not started yet", headers={"Cache-Control": "max-age=1", **CORS})
        return _playlist(rendition.playlist, max_age=max(1, math.floor(rendition.segment_duration / 2)))

    async def media(self, request: web.Request) -> web.Response:
        rendition = self._rendition(request)
        name = request.match_info["name"]
        if name == rendition.init_uri:
            return _media(rendition.init)
        segment = rendition.segment(name)
        if segment is None:
            raise web.HTTPNotFound(text="no such segment (expired or never produced)", headers=CORS)
        self._segment_rates[rendition.info.name].add()
        return _media(segment.data)

    def _rendition(self, request: web.Request) -> RenditionPackager:
        self._check_public(request)
        rendition = self._packager.renditions.get(request.match_info["rendition"])
        if rendition is None:
            raise web.HTTPNotFound(text="no such rendition", headers=CORS)
        return rendition


class ReplayHandlers:
    """The recorded event as HLS VOD, from disk, once the event has ended."""

    def __init__(self, recorder: Recorder, packager: HlsPackager, available: Callable[[], bool]) -> None:
        self._recorder, self._packager, self._available = recorder, packager, available

    def _check(self) -> None:
        if not self._available():
            raise web.HTTPNotFound(text="the replay is available once the event has ended", headers=CORS)

    async def multivariant(self, request: web.Request) -> web.Response:
        self._check()
        recorded = set(self._recorder.renditions())
        renditions = [r for r in self._packager.renditions.values() if r.info.name in recorded]
        return _playlist(playlist.multivariant_playlist(renditions).encode(), max_age=60)

    async def media_playlist(self, request: web.Request) -> web.Response:
        self._check()
        segments = self._recorder.segments(request.match_info["rendition"])
        if not segments:
            raise web.HTTPNotFound(text="no such rendition in the recording", headers=CORS)
        duration = next(iter(self._packager.renditions.values())).segment_duration
        return _playlist(vod_playlist(segments, duration).encode(), max_age=60)

    async def media(self, request: web.Request) -> web.StreamResponse:
        self._check()
        path = self._recorder.path(request.match_info["rendition"], request.match_info["name"])
        if path is None:
            raise web.HTTPNotFound(text="no such recorded segment", headers=CORS)
        return web.FileResponse(path, headers={"Content-Type": SEGMENT_TYPE, "Cache-Control": IMMUTABLE, **CORS})


def _playlist(body: bytes, max_age: int) -> web.Response:
    return web.Response(
        body=body, content_type=PLAYLIST_TYPE,
        headers={"Cache-Control": f"public, max-age={max_age}", **CORS},
    )


def _media(body: bytes) -> web.Response:
    return web.Response(body=body, content_type=SEGMENT_TYPE, headers={"Cache-Control": IMMUTABLE, **CORS})
