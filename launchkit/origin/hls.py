"""HTTP delivery of HLS / LL-HLS from memory: playlists (blocking reloads included), init
segments, media segments and parts.

Names are matched against the in-memory window only; no request ever reaches the filesystem.
Caching follows what a CDN needs: segment and part URIs never repeat (wall-clock sequence
numbers, content-hashed init), so they are immutable; a blocking reload is addressed by its query
and cacheable; the plain live playlist changes every part, so caches revalidate it.

Blocked requests (`_HLS_msn`/`_HLS_part`, or a preload-hinted part asked for early) wait on an
event that the packager's part listener sets: no polling, no thread, and never longer than three
target durations (§6.2.5.2), after which they get a 503 with `Retry-After`.
"""

from __future__ import annotations

import asyncio
import math
import re
from typing import Callable

from aiohttp import web
from multidict import MultiMapping

from launchkit import metrics
from launchkit.web.cors import ALLOW_ANY_ORIGIN
from launchkit.web.request_rate import RequestRate
from stream.packager import playlist
from stream.packager.hls import HlsPackager, Part, RenditionPackager
from stream.recorder import Recorder, vod_playlist

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
SEGMENT_TYPE = "video/mp4"
IMMUTABLE = "public, max-age=31536000, immutable"
CORS = ALLOW_ANY_ORIGIN  # embeds on news sites fetch media cross-origin
# The plain live playlist gains a part every part target (0.5 s), and HTTP freshness counts whole
# seconds: any max-age would let a cache serve it two parts stale. Low-latency clients fetch it
# only to tune in, then use blocking reloads (cacheable below); classic clients poll it once per
# target duration, which edges coalesce. So caches may keep it but must revalidate every use.
LIVE_PLAYLIST_CACHE = "public, no-cache"
# Errors that depend on the moment (too far ahead, timed out) must not be replayed by a cache.
NOT_STORED = {"Cache-Control": "no-store", **CORS}
# §6.2.5.2: a blocked request gives up after three target durations.
BLOCKING_TARGET_DURATIONS = 3
# `_HLS_msn` / `_HLS_part` are decimal-integers; wall-clock MSNs have 10 digits for centuries.
_DIRECTIVE = re.compile(r"[0-9]{1,10}")


class PartWatch:
    """Wakes the requests blocked on one rendition each time it publishes a part."""

    def __init__(self) -> None:
        self._published = asyncio.Event()

    def on_part(self, rendition: RenditionPackager, part: Part) -> None:
        # A fresh event per part: waiters re-check their condition, late ones wait for the next.
        published, self._published = self._published, asyncio.Event()
        published.set()

    async def until(self, ready: Callable[[], bool], timeout: float) -> bool:
        """Wait until `ready()` holds (True) or `timeout` seconds pass (False)."""
        try:
            async with asyncio.timeout(timeout):
                while not ready():
                    await self._published.wait()
        except TimeoutError:
            return False
        return True


class HlsHandlers:
    """Live HLS. `is_public(request)` decides who may watch: everyone while the event is live,
    only the operator (preview) before and after."""

    def __init__(self, packager: HlsPackager, is_public: Callable[[web.Request], bool]) -> None:
        self._packager = packager
        self._is_public = is_public
        self._media_rates: dict[str, RequestRate] = {}
        self._watches: dict[str, PartWatch] = {}
        for name, rendition in packager.renditions.items():
            rate = RequestRate(max(2, math.ceil(2 * rendition.segment_duration)))
            self._media_rates[name] = rate
            # A viewer fetches one segment per segment duration, or the parts that make it up
            # (counted as their share of a segment).
            metrics.HLS_VIEWERS.labels(name).set_function(
                lambda rate=rate, d=rendition.segment_duration: rate.per_second() * d
            )
            watch = self._watches[name] = PartWatch()
            rendition.part_listeners.append(watch.on_part)

    def viewers(self) -> int:
        return round(sum(
            rate.per_second() * self._packager.renditions[name].segment_duration
            for name, rate in self._media_rates.items()
        ))

    def _check_public(self, request: web.Request) -> None:
        if not self._is_public(request):
            raise web.HTTPNotFound(text="the event is not live", headers={"Cache-Control": "max-age=1", **CORS})

    async def multivariant(self, request: web.Request) -> web.Response:
        self._check_public(request)
        return _playlist(self._packager.multivariant, "public, max-age=5")

    async def media_playlist(self, request: web.Request) -> web.Response:
        rendition = self._rendition(request)
        if rendition.playlist is None:
            # Not a 404: players (hls.js) give up on a 404 playlist, while this one comes within
            # seconds (a publisher connecting, an origin restarting under its viewers).
            raise web.HTTPServiceUnavailable(
                text="the stream has not started yet, retry shortly", headers={"Retry-After": "1", **NOT_STORED},
            )
        directives = _delivery_directives(request.query)
        if directives is None:
            return _playlist(rendition.playlist, LIVE_PLAYLIST_CACHE)
        msn, part = directives
        _check_reachable(rendition, msn, part)
        ready = (lambda: rendition.has_segment(msn)) if part is None else (lambda: rendition.has_part(msn, part))
        await self._block(rendition, ready)
        # The query names what the body contains, so every later answer to it would do as well:
        # caches may keep it as long as everything it lists stays fetchable (parts: 3 target
        # durations after they leave the playlist), and edges coalesce identical blocked requests.
        max_age = BLOCKING_TARGET_DURATIONS * rendition.target_duration
        return _playlist(rendition.playlist, f"public, max-age={max_age}")

    async def media(self, request: web.Request) -> web.Response:
        rendition = self._rendition(request)
        name = request.match_info["name"]
        if name == rendition.init_uri:
            return _media(rendition.init)
        segment = rendition.segment(name)
        if segment is not None:
            self._media_rates[rendition.info.name].add()
            return _media(segment.data)
        part = rendition.part(name) or await self._hinted_part(rendition, name)
        self._media_rates[rendition.info.name].add(part.duration / rendition.segment_duration)
        return _media(part.data)

    async def _hinted_part(self, rendition: RenditionPackager, name: str) -> Part:
        """The part that EXT-X-PRELOAD-HINT names, asked for before it exists: answered once it is
        published. Clients learn part names from playlists, whose hint is the furthest name they
        can know, so anything else that is missing will not come soon: 404 (§6.2.6)."""
        if rendition.playlist is None or name != rendition.preload_hint():
            raise web.HTTPNotFound(text="no such segment or part (expired, or not hinted yet)", headers=CORS)
        await self._block(rendition, lambda: rendition.preload_hint() != name)
        part = rendition.part(name)
        if part is None:  # the segment ended before this index (an early keyframe)
            raise web.HTTPNotFound(text="this part was not produced", headers=CORS)
        return part

    async def _block(self, rendition: RenditionPackager, ready: Callable[[], bool]) -> None:
        timeout = BLOCKING_TARGET_DURATIONS * rendition.target_duration
        if not await self._watches[rendition.info.name].until(ready, timeout):
            raise web.HTTPServiceUnavailable(
                text=f"not available within {timeout} s; the stream may be stalled",
                headers={"Retry-After": "1", **NOT_STORED},
            )

    def _rendition(self, request: web.Request) -> RenditionPackager:
        self._check_public(request)
        rendition = self._packager.renditions.get(request.match_info["rendition"])
        if rendition is None:
            raise web.HTTPNotFound(text="no such rendition", headers=CORS)
        return rendition


def _delivery_directives(query: MultiMapping[str]) -> tuple[int, int | None] | None:
    """(`_HLS_msn`, `_HLS_part`) of a blocking reload, None for a plain request; 400 when malformed.
    `_HLS_skip` is ignored: delta updates are not advertised (no CAN-SKIP-UNTIL)."""
    msn, part = _directive(query, "_HLS_msn"), _directive(query, "_HLS_part")
    if msn is None and part is not None:
        raise _bad_request("_HLS_part needs _HLS_msn")
    return None if msn is None else (msn, part)


def _directive(query: MultiMapping[str], name: str) -> int | None:
    values = query.getall(name, [])
    if not values:
        return None
    if len(values) > 1:
        raise _bad_request(f"{name} given more than once")
    if not _DIRECTIVE.fullmatch(values[0]):
        raise _bad_request(f"{name} must be a decimal integer of at most 10 digits")
    return int(values[0])


def _check_reachable(rendition: RenditionPackager, msn: int, part: int | None) -> None:
    """§6.2.5.2: refuse at once what cannot come soon, rather than holding it to a 503."""
    last = rendition.last_sequence
    if last is not None and msn > last + 2:
        raise _bad_request(f"_HLS_msn {msn} is more than two segments ahead of the last one ({last})")
    if part is not None and rendition.parts_ahead(msn, part) > _advance_part_limit(rendition):
        raise _bad_request(f"_HLS_msn {msn} _HLS_part {part} is beyond the Advance Part Limit")


def _advance_part_limit(rendition: RenditionPackager) -> float:
    """§6.2.5.2: three divided by the part target below one second, else three (in parts)."""
    return 3 / rendition.part_duration if rendition.part_duration < 1 else 3


def _bad_request(reason: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=reason, headers=NOT_STORED)


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
        return _playlist(playlist.multivariant_playlist(renditions).encode(), "public, max-age=60")

    async def media_playlist(self, request: web.Request) -> web.Response:
        self._check()
        segments = self._recorder.segments(request.match_info["rendition"])
        if not segments:
            raise web.HTTPNotFound(text="no such rendition in the recording", headers=CORS)
        duration = next(iter(self._packager.renditions.values())).segment_duration
        return _playlist(vod_playlist(segments, duration).encode(), "public, max-age=60")

    async def media(self, request: web.Request) -> web.StreamResponse:
        self._check()
        path = self._recorder.path(request.match_info["rendition"], request.match_info["name"])
        if path is None:
            raise web.HTTPNotFound(text="no such recorded segment", headers=CORS)
        return web.FileResponse(path, headers={"Content-Type": SEGMENT_TYPE, "Cache-Control": IMMUTABLE, **CORS})


def _playlist(body: bytes, cache_control: str) -> web.Response:
    return web.Response(body=body, content_type=PLAYLIST_TYPE, headers={"Cache-Control": cache_control, **CORS})


def _media(body: bytes | memoryview) -> web.Response:
    return web.Response(body=body, content_type=SEGMENT_TYPE, headers={"Cache-Control": IMMUTABLE, **CORS})
