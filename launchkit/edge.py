"""`launchkit edge --origin URL`: a stateless pull-through edge, scaled horizontally.

An edge serves the same public contract to viewers as the origin, so viewers, CDNs and other
edges cannot tell them apart (edge → edge → origin tiers work):

| path | at the edge |
| --- | --- |
| `/`, `/embed`, `/static/…` | rendered and served locally (landing package), from the origin's status |
| `/api/status` | the origin's JSON (polled once per second per process, for everyone) with this edge's `viewers`, `capacity` and an `edge` section |
| `/hls/…`, `/replay/…` | relayed: cached per the origin's Cache-Control, one upstream request per object however many viewers (stream/relay) |
| `/whep` | WebRTC viewers, fanned out here from one feed of the WebRTC rendition per worker (stream/webrtc) |
| `/api/webrtc/feed` | that feed again, for edges below this one |
| `/metrics`, `/healthz`, `/readyz` | this edge (all its workers for /metrics) |
| `/ops`, `/api/ops/…`, `/whip` | not served: 404 (operators and publishers talk to the origin) |

Origin load is O(edges × workers): each worker process coalesces on its own (and holds one
WebRTC feed).

Readiness (`/readyz`) is 503 while draining, before the origin has answered once, and when the
origin has been unreachable for longer than `origin_grace` with no playlist left to serve.

`run_edge(settings)` runs the process(es): with `workers == 1` this process serves; with more, the
parent binds nothing that listens, spawns N workers that each listen on the same port with
SO_REUSEPORT (the kernel spreads connections), restarts a worker that dies, and forwards signals.
Metrics use prometheus_client's multiprocess mode in a temporary directory removed at exit.
SIGTERM (or a first Ctrl-C) drains: readiness false at once, serving goes on for `drain_seconds`
(responses ask clients to reconnect, so load balancers move them), then the process exits.
A second Ctrl-C exits at once. The demo's 2 s shutdown rule does not apply to a draining edge.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from typing import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from landing.agenda import Agenda
from landing.app import LandingPage
from launchkit import metrics
from launchkit.admission import Admission, admission_secrets
from launchkit.admission.settings import from_options as admission_settings
from launchkit.admission.tickets import SECRET_ENV, wall_identity_secret
from launchkit.auth import ENV as TOKEN_ENV
from launchkit.auth import FailedCredentials, Tokens
from launchkit.config import ConfigError, captions_url, language_tag
from launchkit.qoe import QoeBeacons
from launchkit.wall.service import Wall, WallSettings
from launchkit.web import limits, middleware
from launchkit.web.clients import Network, TrustedProxies, parse_networks
from launchkit.web.credentials import edge_credential, require_bearer
from stream.bus import PacketBus
from stream.packager.http import RequestRate
from stream.relay.cache import ObjectCache
from stream.relay.http import CORS, RelayRoutes, loop_detected
from stream.relay.relay import Relay
from stream.relay.upstream import Upstream, UpstreamError, default_edge_id, parse_origin_url, via_chain
from stream.webrtc.feed import FeedClient
from stream.webrtc.ice import IceSettings
from stream.webrtc.turn import TurnCredentials
from stream.webrtc.viewing import WebRtcViewing

log = logging.getLogger("launchkit.edge")

MB = 1024 * 1024
STATUS_INTERVAL = 1.0  # the origin's /api/status is fetched once per second per process, for everyone
MAX_STATUS_BYTES = 256 * 1024
SHUTDOWN_GRACE = 0.5  # seconds in-flight requests get once the drain is over (or on a second Ctrl-C)
WORKER_START_TIMEOUT = 30.0
MAX_RESTARTS_PER_MINUTE = 5
RETRY_AFTER = 2  # seconds, on 503 (about one segment)


@dataclass(frozen=True)
class EdgeSettings:
    """Every `launchkit edge` option (field names are the CLI option attributes) plus `edge_id`."""

    origin: str
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    cache_mb: int = 256
    max_object_mb: int = 32
    upstream_timeout: float = 5.0
    origin_grace: float = 10.0
    drain_seconds: float = 20.0
    negative_ttl: float = 0.5
    max_viewers: int | None = None
    max_webrtc_viewers: int = 100
    turn_urls: tuple[str, ...] = ()
    turn_credential_ttl: int = 600
    max_egress_mbps: float = 0.0
    max_loop_lag_ms: int = 100
    ticket_ttl: float = 60.0
    retry_after: int = 5
    retry_jitter: int = 5
    redis: str = ""
    advertise_url: str = ""
    log_level: str = "info"
    access_log: bool = False
    trusted_proxies: tuple[Network, ...] = ()
    frame_ancestors: str = "*"
    wall_posts_per_minute: float = 6.0
    wall_burst: int = 3
    edge_id: str = ""  # how upstreams see this edge (User-Agent, Via); run_edge sets HOST:PORT

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "origin", parse_origin_url(self.origin))
        except ValueError as error:
            raise ConfigError(f"--origin: {error}") from None
        checks = (
            ("--port", 0 <= self.port <= 65535, "0–65535"),
            ("--workers", 1 <= self.workers <= 64, "1–64"),
            ("--cache-mb", 1 <= self.cache_mb <= 1_048_576, "1–1048576"),
            ("--max-object-mb", 1 <= self.max_object_mb <= 1024, "1–1024"),  # the cache clamps it to --cache-mb
            ("--upstream-timeout", 0.1 <= self.upstream_timeout <= 120, "0.1–120"),
            ("--origin-grace", 0 <= self.origin_grace <= 3600, "0–3600"),
            ("--drain-seconds", 0 <= self.drain_seconds <= 3600, "0–3600"),
            ("--negative-ttl", 0 <= self.negative_ttl <= 10, "0–10"),
            ("--max-viewers", self.max_viewers is None or 1 <= self.max_viewers <= 10_000_000, "1–10000000"),
        )
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(f"{name}: expected {expected}, got {getattr(self, name[2:].replace('-', '_'))}")


# Admission hooks (launchkit/admission): `capacity()` gives /api/status its `capacity` object
# (e.g. `Admission.status`), `edges()` the edges taking viewers, best first, for `recommended.edge(s)`
# (e.g. `Admission.edges`).
CapacityHook = Callable[[], dict]
EdgesHook = Callable[[], "list[str]"]


def _fallback_status() -> dict:
    """What the page and /api/status say before the origin has ever answered: starting, not live."""
    return {
        "event": {"title": "Live stream", "state": "live", "start_at": None, "starts_in": None, "live_at": None,
                  "ended_at": None},
        "stream": {"live": False, "on_air": None, "hls": "/hls/index.m3u8", "segment_duration": None, "renditions": []},
        "replay": {"available": False, "url": None},
        "viewers": 0,
        "capacity": {"max_viewers": None, "headroom": None},
        "recommended": {"protocol": None, "url": None, "edge": None, "edges": []},
    }


class OriginStatus:
    """The origin's /api/status, polled once per STATUS_INTERVAL in the background (it doubles as
    the reachability probe while no viewer asks for anything)."""

    def __init__(self, upstream: Upstream, relay: Relay) -> None:
        self._upstream, self._relay = upstream, relay
        self.data: dict | None = None
        self.fetched_at: float | None = None
        self.first_attempt = asyncio.Event()

    async def run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(STATUS_INTERVAL)

    async def refresh(self) -> None:
        try:
            fetched = await self._upstream.fetch("/api/status", "status", min(2.0, self._upstream.timeout))
            if fetched.status == 200 and len(fetched.body) <= MAX_STATUS_BYTES:
                data = json.loads(fetched.body)
                if not isinstance(data, dict) or not isinstance(data.get("event"), dict) \
                        or not isinstance(data.get("stream"), dict) or not isinstance(data.get("replay"), dict):
                    raise ValueError("unexpected /api/status shape")
                self.data, self.fetched_at = data, time.monotonic()
                duration = data["stream"].get("segment_duration")
                if isinstance(duration, (int, float)) and 1 <= duration <= 30 and self._relay.target_duration == 2.0:
                    self._relay.target_duration = float(duration)
        except UpstreamError as error:
            log.debug("status poll failed: %s", error)
        except ValueError as error:
            log.warning("the origin's /api/status is not usable: %s", error)
        finally:
            self.first_attempt.set()

    async def wait_first(self, timeout: float = 1.0) -> None:
        if not self.first_attempt.is_set():
            try:
                await asyncio.wait_for(self.first_attempt.wait(), timeout)
            except TimeoutError:
                pass


def _valid(parse: Callable[[str], str], value: object, default: str) -> str:
    """`value` from the origin's status if the option's own parser accepts it, else `default`."""
    try:
        return parse(value) if isinstance(value, str) else default
    except ConfigError:
        return default


class _PageText:
    """LandingPage reads the event's title, description, agenda and share image from its config; at
    an edge they come from the origin's status (`event.*`), and frame-ancestors from this edge."""

    def __init__(self, status: OriginStatus, frame_ancestors: str) -> None:
        self._status = status
        self.frame_ancestors = frame_ancestors
        self._agenda: tuple[object, Agenda] = (None, Agenda())  # (status it was parsed from, agenda)

    @property
    def agenda(self) -> Agenda:
        data = self._status.data
        if self._agenda[0] is not data:  # parsed once per status poll, not per page
            try:
                agenda = Agenda.from_dict((data or {}).get("event", {}).get("agenda") or {})
            except ValueError as error:
                log.warning("the origin's agenda is not usable: %s", error)
                agenda = Agenda()
            self._agenda = (data, agenda)
        return self._agenda[1]

    def _captions(self) -> dict:
        captions = (self._status.data or {}).get("event", {}).get("captions")
        return captions if isinstance(captions, dict) else {}

    @property
    def captions(self) -> str:
        return _valid(captions_url, self._captions().get("url"), "")

    @property
    def captions_lang(self) -> str:
        return _valid(language_tag, self._captions().get("lang"), "en")

    @property
    def og_image(self) -> str:
        image = (self._status.data or {}).get("event", {}).get("image")
        return image if isinstance(image, str) and image.startswith(("https://", "http://")) else ""

    @property
    def title(self) -> str:
        event = (self._status.data or _fallback_status())["event"]
        return str(event.get("title") or "Live stream")

    @property
    def description(self) -> str:
        event = (self._status.data or {}).get("event", {})
        return str(event.get("description") or "")


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
        data = dict(self.origin_status.data or _fallback_status())  # top-level keys replaced, never mutated
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

    def readiness(self) -> tuple[bool, str]:
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
        headers = {"Cache-Control": "no-cache", **CORS}
        if self.origin_status.data is None:
            headers["Retry-After"] = str(RETRY_AFTER)
            return web.json_response(self.status(), status=503, headers=headers)
        return web.json_response(self.status(), headers=headers)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True}, headers={"Cache-Control": "no-store"})

    async def readyz(self, request: web.Request) -> web.Response:
        ready, reason = self.readiness()
        return web.json_response(
            {"ready": ready, "reason": reason, "draining": self.draining, "origin_up": bool(self.upstream.health.up)},
            status=200 if ready else 503, headers={"Cache-Control": "no-store"},
        )

    async def metrics(self, request: web.Request) -> web.Response:
        await require_bearer(request, self.failures, "metrics", self.tokens.is_metrics, "launchkit-metrics",
                             "the metrics token (LAUNCHKIT_METRICS_TOKEN)")
        self.relay.update_gauges()
        return web.Response(body=exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST,
                                                        "Cache-Control": "no-store"})

    # --- lifecycle -----------------------------------------------------------------------
    async def start(self, app: web.Application) -> None:
        await self.upstream.start()
        metrics.EDGE_DRAINING.set(0)
        metrics.EDGE_ORIGIN_UP.set(0)
        self._tasks = [asyncio.create_task(coro) for coro in
                       (self.origin_status.run(), self._maintain(), _watch_loop_lag())]
        if self.feed is not None and self.webrtc is not None:
            self.webrtc.start()
            self.feed.start()

    async def stop(self, app: web.Application) -> None:
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


def exposition() -> bytes:
    """This process's metrics, or every worker's when running in multiprocess mode."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return generate_latest(REGISTRY)
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    return generate_latest(registry)


async def _watch_loop_lag(interval: float = 0.05) -> None:
    """`launchkit_event_loop_lag_seconds`: the largest lateness of a 50 ms timer over each second."""
    loop = asyncio.get_running_loop()
    peak, window_started = 0.0, loop.time()
    while True:
        started = loop.time()
        await asyncio.sleep(interval)
        now = loop.time()
        peak = max(peak, now - started - interval)
        if now - window_started >= 1.0:
            metrics.EVENT_LOOP_LAG.set(peak)
            peak, window_started = 0.0, now


EDGE = web.AppKey("edge", Edge)


def create_edge_app(settings: EdgeSettings, *, capacity: CapacityHook | None = None,
                    edges: EdgesHook | None = None, tokens: Tokens | None = None) -> web.Application:
    """The edge's app. Admission mounts itself on it before it starts:

        app = create_edge_app(settings, capacity=admission.status, edges=admission.edges)
        admission.setup(app)
        app.add_routes(admission.routes())
    """
    edge = Edge(settings, capacity, edges, tokens)
    landing = LandingPage(_PageText(edge.origin_status, settings.frame_ancestors), edge, wall=bool(settings.redis))

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
    app.on_startup.append(edge.start)
    app.on_cleanup.append(edge.stop)
    app.add_routes([
        web.get("/", page),
        web.get("/embed", embed),
        web.static("/static", landing.static_dir, append_version=False),
        web.get("/api/status", edge.api_status),
        *QoeBeacons().routes(),
        *edge.routes.routes(),
        web.get("/metrics", edge.metrics),
        web.get("/healthz", edge.healthz),
        web.get("/readyz", edge.readyz),
        *(edge.webrtc.routes() if edge.webrtc else []),
    ])
    return app


# --- processes ------------------------------------------------------------------------------

def run_edge(settings: EdgeSettings) -> int:
    """Serve until drained; returns the exit status. Raises launchkit.server.ListenError when the
    address cannot be bound (nothing started)."""
    # Imported here: launchkit.server pulls in the origin's media stack, which workers never need.
    from launchkit.server import listen

    generated = _settle_secrets(os.environ)
    if settings.workers == 1:
        sock = listen(settings.host, settings.port)
        port = sock.getsockname()[1]
        settings = replace(settings, port=port, edge_id=settings.edge_id or default_edge_id(port))
        return asyncio.run(_serve(settings, sock, supervised=False,
                                  on_listening=lambda: _announce(settings, generated)))
    return _Supervisor(settings, generated).run()


def _settle_secrets(environ: os._Environ[str]) -> dict[str, str]:
    """Secrets this edge makes up when unset, put in the environment so every worker shares them
    (an environment is readable by the same user only; a command line by everyone). Returns those
    worth printing."""
    if not environ.get(SECRET_ENV) and not environ.get(TOKEN_ENV["ops"]):
        # One key per run at least signs tickets alike across workers. Several edges need
        # LAUNCHKIT_ADMISSION_SECRET (or the ops token) set to honour each other's.
        environ[SECRET_ENV] = secrets.token_urlsafe(32)
    tokens = Tokens.from_env(environ)
    for name in ("edge", "metrics"):
        if name in tokens.generated:
            environ[TOKEN_ENV[name]] = getattr(tokens, name)
    if "edge" in tokens.generated:
        log.warning("neither %s nor %s is set: the origin will refuse this edge's WebRTC feed (WHEP viewers get "
                    "LL-HLS); set one of them to the origin's", TOKEN_ENV["edge"], TOKEN_ENV["ops"])
    return {"metrics token": tokens.metrics} if "metrics" in tokens.generated else {}


async def _serve(settings: EdgeSettings, sock: socket.socket, *, supervised: bool,
                 on_listening: Callable[[], None] | None = None) -> int:
    # Every process (single or worker) builds its app here, admission included: with --workers N
    # each worker admits its share of --max-viewers (and of --max-webrtc-viewers).
    limits.raise_open_file_limit()
    if settings.workers > 1 and settings.max_webrtc_viewers > 0:
        settings = replace(settings, max_webrtc_viewers=max(1, settings.max_webrtc_viewers // settings.workers))
    admission = Admission(
        admission_settings(settings, share=1 / settings.workers),
        admission_secrets(os.environ, os.environ.get("LAUNCHKIT_OPS_TOKEN", "")), edge_id=settings.edge_id,
    )
    app = create_edge_app(settings, capacity=admission.status, edges=admission.edges)
    admission.setup(app)
    app.add_routes(admission.routes())
    edge = app[EDGE]
    wall = _edge_wall(settings, edge) if settings.redis else None  # the origin owns the posts; Redis carries them
    if wall is not None:
        wall.setup(app)
        app.add_routes(wall.routes())
    draining, stopping = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_sigterm() -> None:
        if not draining.is_set():
            draining.set()
        elif supervised:
            stopping.set()  # the supervisor's second signal: a second Ctrl-C
        else:
            log.info("already draining (Ctrl-C stops at once)")

    def on_sigint() -> None:
        if draining.is_set():
            stopping.set()
        draining.set()

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    if not supervised:  # workers ignore SIGINT: a terminal's Ctrl-C reaches the supervisor, who decides
        loop.add_signal_handler(signal.SIGINT, on_sigint)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=SHUTDOWN_GRACE,
                           keepalive_timeout=limits.IDLE_TIMEOUT,
                           access_log=logging.getLogger("launchkit.access") if settings.access_log else None)
    await runner.setup()
    watchdog = asyncio.create_task(_watch_parent(os.getppid(), stopping, draining)) if supervised else None
    try:
        await web.SockSite(runner, sock, backlog=1024).start()
        if on_listening is not None:
            on_listening()
        await draining.wait()
        edge.begin_drain()
        admission.begin_drain()
        if wall is not None:
            await wall.hub.close()  # wall clients reconnect (Last-Event-ID), and land on another edge
        if not stopping.is_set() and settings.drain_seconds > 0:
            log.info("draining: not ready any more, serving for %g s%s", settings.drain_seconds,
                     "" if supervised else " (Ctrl-C stops at once)")
            try:
                await asyncio.wait_for(stopping.wait(), settings.drain_seconds)
            except TimeoutError:
                pass
        log.info("shutting down")
    finally:
        if watchdog is not None:
            watchdog.cancel()
        await runner.cleanup()
    log.info("stopped")
    return 0


def _edge_wall(settings: EdgeSettings, edge: Edge) -> Wall:
    page = _PageText(edge.origin_status, settings.frame_ancestors)
    return Wall(WallSettings(role="edge", redis_url=settings.redis,
                             identity_secret=wall_identity_secret(os.environ, os.environ.get("LAUNCHKIT_OPS_TOKEN", "")),
                             posts_per_minute=settings.wall_posts_per_minute, burst=settings.wall_burst),
                page_context=lambda: {"title": page.title, "description": page.description})


async def _watch_parent(parent: int, stopping: asyncio.Event, draining: asyncio.Event) -> None:
    """A worker whose supervisor died (SIGKILL) stops instead of serving on, orphaned."""
    while os.getppid() == parent:
        await asyncio.sleep(1.0)
    log.warning("supervisor %d is gone: stopping", parent)
    stopping.set()
    draining.set()


def _advertised(host: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _announce(settings: EdgeSettings, generated: dict[str, str]) -> None:
    base = f"http://{_authority(_advertised(settings.host), settings.port)}"
    workers = (f"{settings.workers} processes on one port (SO_REUSEPORT)" if settings.workers > 1
               else "1 process")
    log.info("\n".join([
        f"Launchkit edge is up (SIGTERM or Ctrl-C drains for {settings.drain_seconds:g} s; Ctrl-C twice stops):",
        f"  landing page      {base}/",
        f"  HLS playlist      {base}/hls/index.m3u8",
        f"  status (JSON)     {base}/api/status",
        f"  metrics           {base}/metrics",
        f"  origin            {settings.origin}",
        f"  edge id           {settings.edge_id}",
        f"  workers           {workers}, cache {settings.cache_mb} MB each",
        *(f"  {name} (generated for this run; set {TOKEN_ENV['metrics']} to fix it): {value}"
          for name, value in generated.items()),
    ]))


def _reuseport_listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=1024, reuse_port=True)


# Workers are plain interpreters running this entry point: nothing depends on how the parent was
# started (multiprocessing's spawn would re-import the caller's __main__ module).
_WORKER_ENTRY = "import sys; from launchkit.edge import _worker_main; _worker_main(*sys.argv[1:])"


def _settings_json(settings: EdgeSettings) -> bytes:
    return json.dumps(asdict(settings), default=str).encode()


def _settings_from_json(text: str | bytes) -> EdgeSettings:
    values = json.loads(text)
    values["trusted_proxies"] = parse_networks(",".join(values.get("trusted_proxies") or ()))
    return EdgeSettings(**values)


def _worker_main(index: str, ready_fd: str) -> None:
    """Entry point of a worker process: read the settings (stdin: settings may hold secrets such as a
    Redis password, and a command line is visible to every user), listen with SO_REUSEPORT, tell the
    supervisor, serve."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C reaches the supervisor, who decides
    settings = _settings_from_json(sys.stdin.buffer.read())
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)-7s %(name)s [worker {index}]: %(message)s")
    channel = os.fdopen(int(ready_fd), "w")

    def tell(message: str) -> None:
        try:
            channel.write(message + "\n")
            channel.close()
        except OSError:
            pass  # the supervisor does not wait for a restarted worker's message

    try:
        sock = _reuseport_listen(settings.host, settings.port)
    except OSError as error:
        tell(f"error cannot listen on {_authority(settings.host, settings.port)}: {error.strerror or error}")
        sys.exit(1)
    sys.exit(asyncio.run(_serve(settings, sock, supervised=True, on_listening=lambda: tell(f"ready {os.getpid()}"))))


class _Supervisor:
    """The parent of N workers: holds the port, restarts crashed workers, forwards signals, cleans up."""

    def __init__(self, settings: EdgeSettings, generated: dict[str, str]) -> None:
        self.settings = settings
        self._generated = generated
        self._signals: list[int] = []
        self._workers: dict[int, subprocess.Popen] = {}  # index -> process
        self._restarts: list[float] = []
        self._metrics_dir = ""

    def run(self) -> int:
        from launchkit.server import ListenError, listen

        probe = listen(self.settings.host, self.settings.port)  # fails fast, nothing started
        port = probe.getsockname()[1]
        # Hold the port for the group (bound with SO_REUSEPORT, never listening: gets no connections).
        family = socket.AF_INET6 if ":" in self.settings.host else socket.AF_INET
        holder = socket.socket(family, socket.SOCK_STREAM)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        probe.close()
        try:
            holder.bind((self.settings.host, port))
        except OSError as error:
            holder.close()
            raise ListenError(f"cannot listen on {_authority(self.settings.host, port)}: {error.strerror}") from None
        self.settings = replace(self.settings, port=port, edge_id=self.settings.edge_id or default_edge_id(port))
        self._metrics_dir = tempfile.mkdtemp(prefix=f"launchkit-edge-{os.getpid()}-metrics-")
        previous = {sig: signal.signal(sig, lambda signum, frame: self._signals.append(signum))
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            failure = self._start_all()
            if failure:
                log.error("%s", failure)
                raise ListenError(failure)
            _announce(self.settings, self._generated)
            return self._supervise()
        finally:
            self._stop_all(SHUTDOWN_GRACE + 2)
            shutil.rmtree(self._metrics_dir, ignore_errors=True)
            holder.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _spawn(self, index: int) -> int:
        """Start worker `index`; returns the read end of its readiness pipe."""
        read_fd, write_fd = os.pipe()
        # prometheus_client picks multiprocess mode from this variable when the worker imports it.
        environment = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": self._metrics_dir}
        try:
            process = self._workers[index] = subprocess.Popen(
                [sys.executable, "-c", _WORKER_ENTRY, str(index), str(write_fd)],
                pass_fds=(write_fd,), env=environment, stdin=subprocess.PIPE,
            )
        finally:
            os.close(write_fd)
        assert process.stdin is not None
        with process.stdin:
            process.stdin.write(_settings_json(self.settings))
        return read_fd

    def _start_all(self) -> str | None:
        pending = {self._spawn(index): index for index in range(self.settings.workers)}
        deadline = time.monotonic() + WORKER_START_TIMEOUT
        try:
            while pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return f"workers {sorted(pending.values())} did not start within {WORKER_START_TIMEOUT:g} s"
                if self._signals:
                    return "interrupted while starting"
                readable, _, _ = select.select(list(pending), [], [], min(remaining, 0.5))
                for fd in readable:
                    index = pending.pop(fd)
                    message = os.read(fd, 4096).decode(errors="replace").strip()
                    os.close(fd)
                    if not message.startswith("ready"):
                        return message.removeprefix("error ") or (
                            f"worker {index} exited while starting (exit code {self._workers[index].poll()})")
            return None
        finally:
            for fd in pending:
                os.close(fd)

    def _supervise(self) -> int:
        from prometheus_client import multiprocess

        draining_since: float | None = None
        status = 0
        while self._workers:
            time.sleep(0.1)
            while self._signals:
                signum = self._signals.pop(0)
                if draining_since is None:
                    draining_since = time.monotonic()
                    log.info("draining %d workers for %g s (%s)", len(self._workers), self.settings.drain_seconds,
                             "Ctrl-C again stops at once" if signum == signal.SIGINT else "SIGTERM")
                    self._signal_all(signal.SIGTERM)
                elif signum == signal.SIGINT:
                    log.info("stopping at once")
                    self._signal_all(signal.SIGTERM)  # a worker's second SIGTERM stops it at once
            for index, process in list(self._workers.items()):
                if process.poll() is None:
                    continue
                del self._workers[index]
                multiprocess.mark_process_dead(process.pid, path=self._metrics_dir)
                if draining_since is not None:
                    status = status or (1 if process.returncode not in (0, -signal.SIGTERM) else 0)
                    continue
                log.error("worker %d (pid %s) exited with %s: restarting it", index, process.pid, process.returncode)
                now = time.monotonic()
                self._restarts = [t for t in self._restarts if now - t < 60] + [now]
                if len(self._restarts) > MAX_RESTARTS_PER_MINUTE:
                    log.error("workers keep dying (%d restarts in a minute): giving up", len(self._restarts))
                    return 1
                os.close(self._spawn(index))  # not awaited: the other workers serve meanwhile
            if draining_since is not None and time.monotonic() - draining_since > self.settings.drain_seconds + 5:
                log.error("workers did not stop after the drain: killing them")
                for process in self._workers.values():
                    process.kill()
                status = 1
        return status

    def _signal_all(self, signum: int) -> None:
        for process in self._workers.values():
            if process.poll() is None:
                process.send_signal(signum)

    def _stop_all(self, timeout: float) -> None:
        """Leftovers only (start failure, giving up): SIGTERM twice (= stop at once), then SIGKILL."""
        if not self._workers:
            return
        self._signal_all(signal.SIGTERM)
        time.sleep(0.05)
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self._workers.values():
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._workers.clear()
