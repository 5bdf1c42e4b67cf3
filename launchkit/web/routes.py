"""Route patterns of the media URLs, shared by the origin (which serves them) and the edge (which
relays exactly those names). The wider of the two patterns is bounded too: names longer than this
are 404 by routing alone."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

RENDITION = r"{rendition:[a-z0-9_-]{1,32}}"
MEDIA_NAME = r"{name:[a-z0-9][a-z0-9.-]{0,63}}"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def hls_routes(prefix: str, multivariant: Handler, media_playlist: Handler, media: Handler) -> list[web.RouteDef]:
    """One HLS tree under `prefix`: the multivariant playlist, each rendition's playlist and its media."""
    return [
        web.get(f"{prefix}/index.m3u8", multivariant),
        web.get(f"{prefix}/{RENDITION}/index.m3u8", media_playlist),
        web.get(f"{prefix}/{RENDITION}/{MEDIA_NAME}", media),
    ]
