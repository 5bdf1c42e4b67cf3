"""The edge's media routes: /hls/... and /replay/... relayed from upstream, same URLs as the origin.

Bad input never reaches the upstream: routes accept exactly the origin's name patterns (and no
`..`), the upstream URL is rebuilt from the matched parts (never from the raw path), and the only
query parameters kept are the LL-HLS delivery directives of playlists (`_HLS_msn`, `_HLS_part`,
`_HLS_skip`) with checked values, in canonical order; any other query (cache busters) is dropped,
so it cannot multiply upstream requests. Viewers get the origin's status, body, content type and
cache headers (a CDN in front caches segments long and playlists short), plus `Age` and
`X-Cache: HIT|MISS|COALESCED|STALE`. A single byte range of a cached 200 is answered locally (206).
"""

from __future__ import annotations

import logging
import re
import time
from typing import Callable

from aiohttp import web

from launchkit import metrics
from launchkit.edge.relay.relay import Relay, TooLarge, Unavailable, classify
from launchkit.edge.relay.upstream import KEPT_RESPONSE_HEADERS, UpstreamError, via_chain
from launchkit.web.cors import ALLOW_ANY_ORIGIN
from launchkit.web.routes import hls_routes

log = logging.getLogger(__name__)

PREFIXES = ("/hls", "/replay")
DIRECTIVES = (("_HLS_msn", re.compile(r"^\d{1,12}$")), ("_HLS_part", re.compile(r"^\d{1,6}$")),
              ("_HLS_skip", re.compile(r"^(YES|v2)$")))
_RANGE = re.compile(r"^bytes=(\d{0,15})-(\d{0,15})$")


def directives_query(request: web.Request) -> str:
    """The canonical query of a playlist request: known LL-HLS directives only; 400 on a bad value."""
    parts = []
    for name, pattern in DIRECTIVES:
        values = request.query.getall(name, [])
        if len(values) > 1 or (values and not pattern.match(values[0])):
            raise web.HTTPBadRequest(text=f"bad {name}", headers=ALLOW_ANY_ORIGIN)
        if values:
            parts.append(f"{name}={values[0]}")
    return "&".join(parts)


class RelayRoutes:
    """aiohttp routes for the relayed paths. `on_served(path, kind)` is told of every 200 served
    (the edge's viewer estimate)."""

    def __init__(self, relay: Relay, on_served: Callable[[str, str], None] | None = None) -> None:
        self.relay = relay
        self._on_served = on_served or (lambda path, kind: None)

    def routes(self) -> list[web.RouteDef]:
        return [route for prefix in PREFIXES for route in hls_routes(prefix, self.handle, self.handle, self.handle)]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        prefix = "/" + request.path.split("/", 2)[1]
        if prefix not in PREFIXES:
            raise web.HTTPNotFound()
        rendition, name = request.match_info.get("rendition"), request.match_info.get("name", "index.m3u8")
        if ".." in name:
            raise web.HTTPNotFound(text="no such object", headers=ALLOW_ANY_ORIGIN)
        path = "/".join(p for p in (prefix, rendition, name) if p)
        kind = classify(path)
        query = directives_query(request) if kind == "playlist" else ""
        target = f"{path}?{query}" if query else path
        via = via_chain(request.headers.get("Via"), self.relay.upstream.via)
        if via is None:
            return loop_detected()
        try:
            entry, result = await self.relay.get(target, kind, via)
        except Unavailable as error:
            metrics.EDGE_REQUESTS.labels(kind, "error").inc()
            return unavailable(error.retry_after)
        except TooLarge:
            metrics.EDGE_REQUESTS.labels(kind, "miss").inc()
            return await self._stream_through(request, target, kind, via)
        metrics.EDGE_REQUESTS.labels(kind, result).inc()
        if entry.status == 200:
            self._on_served(path, kind)
        headers = dict(entry.headers)
        headers["Age"] = str(int(entry.age(time.monotonic())))
        headers["X-Cache"] = result.upper()
        if entry.status == 200 and "Range" in request.headers:
            return ranged(request.headers["Range"], entry.body, headers)
        return web.Response(status=entry.status, body=entry.body, headers=headers)

    async def _stream_through(self, request: web.Request, target: str, kind: str, via: str) -> web.StreamResponse:
        response: web.StreamResponse | None = None
        try:
            async with self.relay.upstream.stream(target, kind, via) as upstream:
                response = web.StreamResponse(status=upstream.status, headers={
                    name: upstream.headers[name] for name in KEPT_RESPONSE_HEADERS if name in upstream.headers
                })
                response.headers["X-Cache"] = "BYPASS"
                if upstream.content_length is not None:
                    response.content_length = upstream.content_length
                await response.prepare(request)
                async for chunk in upstream.content.iter_chunked(65536):
                    await response.write(chunk)
                await response.write_eof()
                return response
        except UpstreamError as error:
            log.debug("pass-through of %s failed: %s", target, error)
            if response is not None and response.prepared:  # mid-body: cut it, the player retries
                response.force_close()
                if request.transport is not None:
                    request.transport.close()
                return response
            return unavailable(self.relay.retry_after)


def loop_detected() -> web.Response:
    """508: this edge is already in the request's Via chain (an --origin pointing back at an edge)."""
    return web.Response(status=508, text="request loop between edges (check --origin)",
                        headers={"Cache-Control": "no-store", **ALLOW_ANY_ORIGIN})


def unavailable(retry_after: int) -> web.Response:
    return web.Response(
        status=503, text="the stream is briefly unavailable from this server, retry shortly",
        headers={"Retry-After": str(retry_after), "Cache-Control": "no-store", **ALLOW_ANY_ORIGIN},
    )


def ranged(header: str, body: bytes, headers: dict[str, str]) -> web.Response:
    """One byte range of a complete body (206/416); anything else (multiple ranges) gets the whole 200."""
    match = _RANGE.match(header.strip())
    size = len(body)
    if not match or not (match.group(1) or match.group(2)):
        return web.Response(status=200, body=body, headers=headers)
    first, last = match.groups()
    if first:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    else:
        start, end = max(0, size - int(last)), size - 1
    if start >= size or start > end:
        return web.Response(status=416, headers={**headers, "Content-Range": f"bytes */{size}"})
    return web.Response(status=206, body=body[start:end + 1],
                        headers={**headers, "Content-Range": f"bytes {start}-{end}/{size}"})
