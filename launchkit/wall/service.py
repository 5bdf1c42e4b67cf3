"""The social wall: one object to mount on an origin (or demo) or an edge.

    wall = Wall(WallSettings(database=data_dir / "wall.sqlite3", redis_url=...), is_operator=ops.is_operator)
    wall.setup(app)                # start/stop with the app
    app.add_routes(wall.routes())  # the wall's URL contract (below)

| route | who | what |
| --- | --- | --- |
| `POST /api/wall/posts` | viewers | a comment or press question → 202 `{"id"}`; 413/400/429 otherwise |
| `GET /api/wall/events` | viewers | SSE of visible posts, `Last-Event-ID` resume (sse.py) |
| `GET /wall` | venue screen | full-screen wall |
| `POST /api/wall/webhook` | tools | HMAC-signed intake (origin, when a secret is set) |
| `GET /api/ops/wall/queue` | operators | pending posts and the Q&A list |
| `POST /api/ops/wall/{id}/{action}` | operators | approve, reject, pin, answer, ban |
| `GET /ops/wall` | operators | moderation console and Q&A view |
| `GET /ops/wall/static/…` | operators | the moderation page's script (static/ beside this module; its template in templates/) |

Roles. The origin owns the wall: SQLite store, moderation, connectors, webhook; its SSE hub is fed
straight from the store. With Redis, the origin also copies its event log to a Redis stream and
reads posts that edges took in (fanout.py). An edge (`role="edge"`) stores nothing: its hub follows
the Redis stream, and viewers' posts go to Redis for the origin to store and moderate.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable

import aiohttp
import aiohttp_jinja2
from aiohttp import web

from landing.app import PageAssets
from launchkit import metrics
from launchkit.serve.lifecycle import lifespan
from launchkit.wall.connectors.mastodon import MastodonConnector, TagTimeline
from launchkit.wall.connectors.rss import FeedConnector
from launchkit.wall.connectors.webhook import WebhookIntake
from launchkit.wall.fanout import REDIS_ERRORS, Keys, RedisIntake, RedisPublisher, RedisSubscriber, client
from launchkit.wall.http import counted
from launchkit.wall.moderation import ACTIONS, ActionError, Policy, account_set, target_state
from launchkit.wall.posts import (
    POST_ID,
    SOURCES,
    Candidate,
    Kind,
    Post,
    State,
    ValidationError,
    dumps,
    new_post_id,
    parse_submission,
)
from launchkit.wall.sse import Hub, StreamSettings
from launchkit.wall.store import Event, Store
from launchkit.web.body import JSON, parse_json, read_body, require_content_type
from launchkit.web.ratelimit import Limit, RateLimiter
from launchkit.web.refusal import NO_STORE, Refusal

log = logging.getLogger(__name__)

ROLES = ("origin", "edge")
MAX_BODY = 16 * 1024  # a post is at most ~1,000 characters of JSON-escaped text: 16 KB is plenty
STOP_TIMEOUT = 3.0
GAUGE_INTERVAL = 5.0
# Our pages load nothing from elsewhere and run no inline script.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
                               "frame-ancestors 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin-when-cross-origin",
}

IsOperator = Callable[[web.Request], bool]
RequireOperator = Callable[[web.Request], Awaitable[None]]  # raises Refusal (401 after a delay, 429)
PageContext = Callable[[], dict]


@dataclass(frozen=True)
class WallSettings:
    """Everything the wall needs, from plain values (each maps to a `--wall-*` option)."""

    role: str = "origin"
    database: Path | None = None               # None: in memory (the demo writes nothing to disk)
    moderation: str = "manual"                 # manual | auto
    allow: tuple[str, ...] = ()                # trusted author keys, e.g. "mastodon:press@example.org"
    block_accounts: tuple[str, ...] = ()
    block_words: tuple[str, ...] = ()
    mastodon: tuple[str, ...] = ()             # "https://instance#tag"
    feeds: tuple[str, ...] = ()                # RSS/Atom URLs
    mastodon_interval: float = 15.0
    feed_interval: float = 60.0
    webhook_secret: str = ""                   # empty: no webhook intake
    redis_url: str | None = None
    redis_prefix: str = "launchkit"
    redis_max_len: int = 100_000               # events kept in the Redis stream (resume window at edges)
    posts_per_minute: float = 6.0              # per client
    burst: int = 3
    identity_secret: str = ""                  # keys viewers' addresses for bans; share it across replicas
    stream: StreamSettings = field(default_factory=StreamSettings)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"wall role must be one of {', '.join(ROLES)}")
        if self.role == "edge" and not self.redis_url:
            raise ValueError("a wall at an edge needs Redis (the origin owns the posts)")
        for text in self.mastodon:
            TagTimeline.parse(text)  # fails at startup, naming the bad value


class Wall:
    def __init__(self, settings: WallSettings, is_operator: IsOperator = lambda request: False, *,
                 page_context: PageContext | None = None, require_operator: RequireOperator | None = None) -> None:
        """`is_operator` answers the moderation page (a redirect to sign in otherwise);
        `require_operator`, when given, guards the moderation API instead of `is_operator` alone: the
        ops console's check, which delays failed tokens and locks out whoever keeps guessing."""
        self.settings = settings
        self._is_operator = is_operator
        self._require_operator_hook = require_operator
        self._page_context = page_context or (lambda: {"title": "Live wall", "description": ""})
        self._policy = Policy(settings.moderation, account_set(settings.allow), account_set(settings.block_accounts),
                              tuple(settings.block_words))
        self._limiter = RateLimiter(Limit(settings.posts_per_minute, settings.burst))
        self._identity = (settings.identity_secret or secrets.token_urlsafe(32)).encode()
        self.origin = settings.role == "origin"
        self.store = Store(settings.database) if self.origin else None
        self._redis = client(settings.redis_url) if settings.redis_url else None
        keys = Keys(settings.redis_prefix)
        self._publisher = (RedisPublisher(self._redis, keys, self.store, settings.redis_max_len)
                           if self._redis is not None and self.store is not None else None)
        self.hub = Hub(settings.stream, self._backfill)
        self._subscriber = (RedisSubscriber(self._redis, keys, self.hub)
                            if self._redis is not None and not self.origin else None)
        self._intake = RedisIntake(self._redis, keys, settings.redis_max_len) if self._redis is not None else None
        self._webhook = (WebhookIntake(settings.webhook_secret.encode(), self.take)
                         if settings.webhook_secret and self.origin else None)
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task] = []
        # The moderation page, mounted at the origin; the viewers' wall pages and wall.css are the landing's.
        self.pages = PageAssets(Path(__file__).parent, "/ops/wall/static")
        metrics.init_wall_labels()

    # ---- wiring -------------------------------------------------------------------------------

    def setup(self, app: web.Application) -> None:
        app.cleanup_ctx.append(lifespan(self.start, self.stop))
        if self.origin:
            self.pages.setup(app)

    def routes(self) -> list[web.RouteDef]:
        routes = [
            web.post("/api/wall/posts", counted(self.post_submission)),
            web.get("/api/wall/events", counted(self.hub.handle)),
            web.get("/wall", self.wall_page),
        ]
        if self.origin:
            routes += [
                web.get("/api/ops/wall/queue", counted(self.ops_queue)),
                web.post(r"/api/ops/wall/{id:[A-Za-z0-9_-]{1,32}}/{action:[a-z]{1,16}}", counted(self.ops_action)),
                web.get("/ops/wall", self.moderation_page),
                self.pages.route(),
            ]
        if self._webhook is not None:
            routes.append(web.post("/api/wall/webhook", counted(self._webhook.handle)))
        return routes

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.store is not None:
            await self.store.open()
            visible = await self.store.visible(self.settings.stream.snapshot_size)
            self.hub.reset(await self.store.last_seq(), [dumps(post.public()) for post in visible])
        elif self._subscriber is not None:
            with contextlib.suppress(*REDIS_ERRORS):  # Redis down at start: the follower retries
                await self._subscriber.load()
        self.hub.start()
        tasks: list[Awaitable[None]] = []
        if self._publisher is not None:
            tasks.append(self._publisher.run())
        if self._subscriber is not None:
            tasks.append(self._subscriber.run())
        if self.origin and self._intake is not None:
            tasks.append(self._intake.consume(self.take))
        if self.store is not None:
            tasks.append(self._update_gauges())
            tasks += [connector.run() for connector in self._connectors()]
        self._tasks = [loop.create_task(task, name="wall") for task in tasks]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=STOP_TIMEOUT)
            if pending:
                log.warning("%d wall tasks did not stop within %.0f s", len(pending), STOP_TIMEOUT)
        self._tasks = []
        await self.hub.close()
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._redis is not None:
            await self._redis.aclose()
        if self.store is not None:
            await self.store.close()

    def _connectors(self) -> list[MastodonConnector | FeedConnector]:
        settings = self.settings
        if not settings.mastodon and not settings.feeds:
            return []
        assert self.store is not None
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15, connect=5))
        return [
            *(MastodonConnector(TagTimeline.parse(text), self._session, self.store, self.take,
                                settings.mastodon_interval) for text in settings.mastodon),
            *(FeedConnector(url, self._session, self.take, settings.feed_interval) for url in settings.feeds),
        ]

    # ---- the wall's work ------------------------------------------------------------------------

    async def take(self, candidate: Candidate) -> Post:
        """Store a post from any source, moderated on arrival; visible ones go out at once.
        Raises store.Duplicate for an item the source delivered before."""
        assert self.store is not None, "only the origin stores posts"
        post, event = await self.store.add(candidate, self._policy.initial_state)
        metrics.WALL_POSTS_RECEIVED.labels(post.source, post.state.value).inc()
        self._publish([event] if event else [])
        return post

    async def moderate(self, post_id: str, action: str) -> Post | None:
        """Apply a moderator's action; None if there is no such post. Raises ActionError."""
        assert self.store is not None
        post = await self.store.get(post_id)
        if post is None:
            return None
        if action == "ban":
            self._publish(await self.store.ban(post.author))
            return await self.store.get(post_id)
        result = await self.store.transition(post_id, target_state(post, action))
        if result is None:
            return None
        post, event = result
        self._publish([event] if event else [])
        return post

    def _publish(self, events: list[Event]) -> None:
        for event in events:
            self.hub.publish(event)
        if events and self._publisher is not None:
            self._publisher.notify()

    async def _backfill(self, after: int, limit: int) -> list[Event] | None:
        if self.store is not None:
            return await self.store.events_after(after, limit)
        if self._subscriber is not None:
            return await self._subscriber.backfill(after, limit)
        return None

    async def _update_gauges(self) -> None:
        assert self.store is not None
        while True:
            counts = await self.store.counts()
            for source in SOURCES:
                for state in State:
                    metrics.WALL_POSTS.labels(source, state.value).set(counts.get((source, state.value), 0))
            metrics.WALL_MODERATION_QUEUE.set(sum(n for (_, state), n in counts.items() if state == "pending"))
            await asyncio.sleep(GAUGE_INTERVAL)

    # ---- viewers ------------------------------------------------------------------------------

    async def post_submission(self, request: web.Request) -> web.Response:
        author = self._client_key(request)
        wait = self._limiter.take(author)
        if wait:
            raise Refusal(429, f"too many posts: try again in {wait} s", "rate_limited", {"Retry-After": str(wait)})
        try:
            fields = parse_submission(parse_json(await read_body(request, MAX_BODY)))
        except ValidationError as error:
            raise Refusal(400, str(error), "invalid") from None
        candidate = Candidate(source="page", kind=Kind(fields["kind"]), text=fields["text"], author=author,
                              name=fields["name"], outlet=fields["outlet"], id=new_post_id())
        await self._submit(candidate)
        return web.json_response({"id": candidate.id}, status=202, headers=NO_STORE)

    async def _submit(self, candidate: Candidate) -> None:
        if self.store is not None:
            await self.take(candidate)
            return
        assert self._intake is not None
        try:
            await self._intake.submit(candidate)
        except REDIS_ERRORS:
            log.warning("wall: Redis unreachable, a post was refused (503)")
            raise Refusal(503, "the wall cannot take posts right now, retry shortly", "unavailable",
                          {"Retry-After": "5"}) from None

    def _client_key(self, request: web.Request) -> str:
        """Who posted, as far as bans and rate limits go: a keyed hash of the client's address (never
        stored raw). `request.remote` is the client's address behind `--trusted-proxies` (the
        TrustedProxies middleware rewrites it), so viewers behind one ingress are told apart."""
        address = (request.remote or "unknown").encode()
        return "page:" + hmac.new(self._identity, address, hashlib.sha256).hexdigest()[:16]

    async def wall_page(self, request: web.Request) -> web.Response:
        return self._render("wall.html", request, "public, max-age=5, stale-while-revalidate=30, stale-if-error=600")

    # ---- operators ----------------------------------------------------------------------------

    async def ops_queue(self, request: web.Request) -> web.Response:
        await self._require_operator(request)
        assert self.store is not None
        queue = await self.store.queue(500)
        return web.json_response({
            "mode": self._policy.mode,
            "pending": [post.moderation() for post in queue["pending"]],
            "questions": [post.moderation() for post in queue["questions"]],
            "sse_clients": self.hub.clients,
        }, headers=NO_STORE, dumps=dumps)

    async def ops_action(self, request: web.Request) -> web.Response:
        await self._require_operator(request)
        action = request.match_info["action"]
        post_id = request.match_info["id"]
        if action not in ACTIONS or not POST_ID.match(post_id):
            raise Refusal(404, f"unknown action; expected one of {', '.join(ACTIONS)}", "not_found")
        require_content_type(request, JSON)  # state changes take JSON only: no cross-site form (CSRF)
        await read_body(request, 1024)
        try:
            post = await self.moderate(post_id, action)
        except ActionError as error:
            raise Refusal(409, str(error), "conflict") from None
        if post is None:
            raise Refusal(404, "no such post", "not_found")
        return web.json_response(post.moderation(), headers=NO_STORE, dumps=dumps)

    async def moderation_page(self, request: web.Request) -> web.Response:
        if not self._is_operator(request):
            raise web.HTTPSeeOther("/ops")  # the console's sign-in form, then back here
        return self._render("wall_moderation.html", request, "no-store")

    async def _require_operator(self, request: web.Request) -> None:
        if self._require_operator_hook is not None:
            await self._require_operator_hook(request)
        elif not self._is_operator(request):
            raise Refusal(401, "ops token required (Authorization: Bearer <LAUNCHKIT_OPS_TOKEN>)", "unauthorized",
                          {"WWW-Authenticate": 'Bearer realm="launchkit-ops"'})

    def _render(self, template: str, request: web.Request, cache: str) -> web.Response:
        response = aiohttp_jinja2.render_template(template, request, self._page_context())
        response.headers.update({"Cache-Control": cache, **PAGE_HEADERS})
        return response
