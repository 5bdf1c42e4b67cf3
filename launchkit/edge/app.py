"""The edge's aiohttp application: what one edge process runs (`Edge`: relay, origin status,
viewers, readiness, WebRTC fan-out) and the routes it answers."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import AsyncIterator, Callable

from aiohttp import web

from landing.app import LandingPage
from launchkit import metrics
from launchkit.admission.tickets import wall_identity_secret
from launchkit.auth import FailedCredentials, Tokens
from launchkit.edge.origin_status import OriginStatus, fallback_status
from launchkit.edge.page import PageText
from launchkit.edge.relay.cache import ObjectCache
from launchkit.edge.relay.http import RelayRoutes, loop_detected
from launchkit.edge.relay.relay import Relay
from launchkit.edge.relay.upstream import Upstream, default_edge_id, via_chain
from launchkit.edge.settings import EdgeSettings
from launchkit.qoe import QoeBeacons
from launchkit.wall.service import Wall, WallSettings
from launchkit.web import middleware
from launchkit.web.clients import TrustedProxies
from launchkit.web.cors import ALLOW_ANY_ORIGIN
from launchkit.web.credentials import edge_credential
from launchkit.web.probes import Probes
from launchkit.web.request_rate import RequestRate
from launchkit.webrtc.ice import IceSettings
from launchkit.webrtc.turn import TurnCredentials
from launchkit.webrtc.viewing import WebRtcViewing
from stream.bus import PacketBus
from stream.webrtc.feed import FeedClient

log = logging.getLogger("launchkit.edge")

MB = 1024 * 1024
RETRY_AFTER = 2  # seconds, on 503 (about one segment)


# Admission hooks (launchkit/admission): `capacity()` gives /api/status its `capacity` object
# (e.g. `Admission.status`), `edges()` the edges taking viewers, best first, for `recommended.edge(s)`
# (e.g. `Admission.edges`).
CapacityHook = Callable[[], dict]
EdgesHook = Callable[[], "list[str]"]


class Edge:
    """Everything one edge process runs, built once per app."""

    def __init__(self, settings: EdgeSettings, capacity: CapacityHook | None = None,
                 edges: EdgesHook | None = None, tokens: Tokens | None = None) -> None:
        self.settings = settings
        self.tokens = tokens or Tokens.from_env(os.environ)
        self.failures = FailedCredentials()
        self.edge_id = settings.edge_id or default_edge_id()
        max_object = settings.max_object_mb * MB
        self.upstream = Upstream(settings.origin, edge_id=self.edge_id, timeout=settings.upstream_timeout,
                                 connect_timeout=2.0, max_object_bytes=max_object)
        self.cache = ObjectCache(settings.cache_mb * MB, max_object,
                                 on_evict=lambda reason, n: metrics.EDGE_CACHE_EVICTIONS.labels(reason).inc(n))
        self.relay = Relay(self.upstream, self.cache, negative_ttl=settings.negative_ttl, retry_after=RETRY_AFTER)
        self.origin_status = OriginStatus(self.upstream, self.relay)
        self.routes = RelayRoutes(self.relay, self._served)
        self.capacity: CapacityHook = capacity or self._fixed_capacity
        self.edges = edges
        self.feed: FeedClient | None = None
        self.webrtc: WebRtcViewing | None = None
        if settings.max_webrtc_viewers > 0:
            bus = PacketBus()
            self.feed = FeedClient(settings.origin, bus, self.tokens.edge, user_agent=f"launchkit-edge ({self.edge_id})")
            self.webrtc = WebRtcViewing(bus, self.feed.request_keyframe, IceSettings.from_env(),
                                        max_viewers=settings.max_webrtc_viewers, live=self._origin_live,
                                        authorize_feed=edge_credential(self.tokens, self.failures),
                                        turn=TurnCredentials.from_env(settings.turn_urls, settings.turn_credential_ttl))
        self.draining = False
        self._segment_requests = RequestRate(8)
        self._tasks: list[asyncio.Task] = []

    # --- status, viewers, readiness -------------------------------------------------------
    def _served(self, path: str, kind: str) -> None:
        if not path.startswith("/hls/") or "/init-" in path:
            return
        if kind == "segment":
            self._segment_requests.add()
        elif kind == "part" and self.relay.part_target:  # an LL-HLS viewer: parts, as their share of a segment
            self._segment_requests.add(self.relay.part_target / self.relay.target_duration)

    def _origin_live(self) -> bool:
        """WebRTC flows only while the feed is up and the origin says the event is live (the feed
        carries nothing before that either: the origin holds it back)."""
        stream = (self.origin_status.data or {}).get("stream")
        return self.feed is not None and self.feed.connected and isinstance(stream, dict) and stream.get("live") is True

    def viewers(self) -> int:
        """Viewers this edge serves: live segment requests (parts as their share) per segment
        duration, × workers (the kernel spreads connections evenly). The origin's own figure
        counts edges, not viewers."""
        rate = self._segment_requests.per_second()
        return round(rate * self.relay.target_duration * self.settings.workers)

    def _fixed_capacity(self) -> dict:
        limit = self.settings.max_viewers
        return {"max_viewers": limit, "headroom": None if limit is None else max(0, limit - self.viewers())}

    def status(self) -> dict:
        data = dict(self.origin_status.data or fallback_status())  # top-level keys replaced, never mutated
        health = self.upstream.health
        data["viewers"] = self.viewers() + (self.webrtc.whep.sessions if self.webrtc else 0)
        data["capacity"] = self.capacity()
        data["webrtc"] = self.webrtc.status() if self.webrtc else {"available": False, "url": None}
        if self.edges is not None and isinstance(data.get("recommended"), dict):
            edges = self.edges()
            data["recommended"] = {**data["recommended"], "edge": edges[0] if edges else None, "edges": edges}
        data["edge"] = {
            "id": self.edge_id,
            "worker": os.getpid(),
            "workers": self.settings.workers,
            "origin_up": bool(health.up),
            "status_age": (round(time.monotonic() - self.origin_status.fetched_at, 1)
                           if self.origin_status.fetched_at is not None else None),
            "draining": self.draining,
        }
        return data

    def readiness(self) -> dict:
        """/readyz: whether to send this edge viewers, and why."""
        ready, reason = self._ready()
        return {"ready": ready, "reason": reason, "draining": self.draining, "origin_up": bool(self.upstream.health.up)}

    def _ready(self) -> tuple[bool, str]:
        if self.draining:
            return False, "draining"
        health = self.upstream.health
        if health.up:
            return True, "origin reachable"
        if health.last_ok is None:
            return False, "origin not reached yet"
        if health.unreachable_for() <= self.settings.origin_grace:
            return True, "origin unreachable, within the grace period"
        if self.relay.has_servable_playlist():
            return True, "origin unreachable, serving from cache"
        return False, "origin unreachable and nothing to serve"

    def begin_drain(self) -> None:
        if not self.draining:
            self.draining = True
            metrics.EDGE_DRAINING.set(1)

    # --- handlers ------------------------------------------------------------------------
    async def api_status(self, request: web.Request) -> web.Response:
        await self.origin_status.wait_first()
        headers = {"Cache-Control": "no-cache", **ALLOW_ANY_ORIGIN}
        if self.origin_status.data is None:
            headers["Retry-After"] = str(RETRY_AFTER)
            return web.json_response(self.status(), status=503, headers=headers)
        return web.json_response(self.status(), headers=headers)

    # --- lifecycle -----------------------------------------------------------------------
    async def lifespan(self, app: web.Application) -> AsyncIterator[None]:
        try:  # a start that fails half-way stops what it started
            await self._start()
            yield
        finally:
            await self._stop()

    async def _start(self) -> None:
        await self.upstream.start()
        metrics.EDGE_DRAINING.set(0)
        metrics.EDGE_ORIGIN_UP.set(0)
        self._tasks = [asyncio.create_task(self.origin_status.run()), asyncio.create_task(self._maintain())]
        if self.feed is not None and self.webrtc is not None:
            self.webrtc.start()
            self.feed.start()

    async def _stop(self) -> None:
        if self.feed is not None and self.webrtc is not None:
            await self.webrtc.stop()
            await self.feed.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.upstream.close()

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.relay.maintain()


EDGE = web.AppKey("edge", Edge)


def create_edge_app(settings: EdgeSettings, *, capacity: CapacityHook | None = None,
                    edges: EdgesHook | None = None, tokens: Tokens | None = None) -> web.Application:
    """The edge's app. Admission mounts itself on it before it starts:

        app = create_edge_app(settings, capacity=admission.status, edges=admission.edges)
        admission.setup(app)
        app.add_routes(admission.routes())
    """
    edge = Edge(settings, capacity, edges, tokens)
    landing = LandingPage(PageText(edge.origin_status, settings.frame_ancestors), edge, wall=bool(settings.redis))

    @web.middleware
    async def loop_guard(request: web.Request, handler: middleware.Handler) -> web.StreamResponse:
        if "Via" in request.headers and via_chain(request.headers["Via"], edge.upstream.via) is None:
            return loop_detected()
        return await handler(request)

    async def page(request: web.Request) -> web.Response:
        await edge.origin_status.wait_first()
        return await landing.index(request)

    async def embed(request: web.Request) -> web.Response:
        await edge.origin_status.wait_first()
        return await landing.embed(request)

    async def close_while_draining(request: web.Request, response: web.StreamResponse) -> None:
        if edge.draining:  # clients reconnect, and the load balancer sends them elsewhere
            response.force_close()
            response.headers["Connection"] = "close"  # headers are computed before this hook runs

    trusted = TrustedProxies(settings.trusted_proxies)
    app = web.Application(middlewares=[trusted.middleware, middleware.observe, loop_guard], client_max_size=1024)
    app[EDGE] = edge
    landing.setup(app)
    app.on_response_prepare.append(middleware.count_response_bytes)
    app.on_response_prepare.append(close_while_draining)
    app.cleanup_ctx.append(edge.lifespan)
    app.add_routes([
        web.get("/", page),
        web.get("/embed", embed),
        landing.assets.route(),
        web.get("/api/status", edge.api_status),
        *QoeBeacons().routes(),
        *edge.routes.routes(),
        *Probes(edge.tokens, edge.failures, edge.readiness, edge.relay.update_gauges).routes(),
        *(edge.webrtc.routes() if edge.webrtc else []),
    ])
    return app


def edge_wall(settings: EdgeSettings, edge: Edge) -> Wall:
    page = PageText(edge.origin_status, settings.frame_ancestors)
    return Wall(WallSettings(role="edge", redis_url=settings.redis,
                             identity_secret=wall_identity_secret(os.environ, os.environ.get("LAUNCHKIT_OPS_TOKEN", "")),
                             posts_per_minute=settings.wall_posts_per_minute, burst=settings.wall_burst),
                page_context=lambda: {"title": page.title, "description": page.description})
