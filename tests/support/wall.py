"""Wall test helpers: a real aiohttp server in process with the wall mounted the way the origin and
edges mount it (behind the same middlewares as launchkit/origin/app.py: trusted proxies, then `observe`),
an SSE reader, and the ops token. Loopback only; every wait is bounded."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from landing.app import LandingPage
from launchkit.auth import Tokens, bearer_token
from launchkit.config import Config
from launchkit.wall.service import Wall, WallSettings
from launchkit.wall.sse import StreamSettings
from launchkit.web import middleware
from launchkit.web.clients import Network, TrustedProxies

TOKENS = Tokens.from_values("publish-token-0123456789", "ops-token-0123456789abcdef")
OPS = {"Authorization": f"Bearer {TOKENS.ops}", "Content-Type": "application/json"}


class _NoStatus:
    def status(self) -> dict:
        return {"event": {"state": "live", "start_at": None}, "stream": {"live": False}, "replay": {"available": False}}


def is_operator(request: web.Request) -> bool:
    return TOKENS.is_ops(bearer_token(request.headers.get("Authorization")))


def settings(database: Path | None = None, **changes) -> WallSettings:
    # A generous rate limit: the flood test sets its own.
    base = WallSettings(database=database, identity_secret="test-identity", posts_per_minute=6000, burst=1000,
                        stream=StreamSettings(heartbeat=5.0, retry_ms=200))
    return replace(base, **changes)


@contextlib.asynccontextmanager
async def serve(wall_settings: WallSettings, trusted_proxies: tuple[Network, ...] = (), **wall_options):
    """The wall on a real server at http://127.0.0.1:PORT, started and stopped like in the apps."""
    wall = Wall(wall_settings, is_operator, page_context=lambda: {"title": "Wall test", "description": ""},
                **wall_options)
    app = web.Application(middlewares=[TrustedProxies(trusted_proxies).middleware, middleware.observe],
                          client_max_size=1024)
    landing = LandingPage(Config.for_role("demo", {}), _NoStatus())
    landing.setup(app)
    wall.setup(app)
    app.add_routes([*wall.routes(), landing.assets.route()])
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}", wall
    finally:
        await server.close()


@dataclass
class SseEvent:
    id: int | None
    type: str
    data: dict
    received: float


@dataclass
class SseClient:
    """Reads one event stream in the background; `events` fills as they arrive."""

    response: aiohttp.ClientResponse
    events: list[SseEvent] = field(default_factory=list)
    task: asyncio.Task | None = None

    async def _read(self) -> None:
        fields: dict[str, str] = {}
        async for raw in self.response.content:
            line = raw.decode().rstrip("\r\n")
            if line == "":
                if "data" in fields:
                    self.events.append(SseEvent(int(fields["id"]) if "id" in fields else None,
                                                fields.get("event", "message"), json.loads(fields["data"]),
                                                time.monotonic()))
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")

    async def wait_for(self, count: int, timeout: float = 2.0) -> list[SseEvent]:
        deadline = time.monotonic() + timeout
        while len(self.events) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return self.events

    def of_type(self, kind: str) -> list[SseEvent]:
        return [e for e in self.events if e.type == kind]


@contextlib.asynccontextmanager
async def sse(session: aiohttp.ClientSession, url: str, last_event_id: int | None = None):
    headers = {"Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    response = await session.get(url + "/api/wall/events", headers=headers, timeout=aiohttp.ClientTimeout(total=30))
    assert response.status == 200, await response.text()
    client = SseClient(response)
    client.task = asyncio.create_task(client._read())
    try:
        yield client
    finally:
        client.task.cancel()
        await asyncio.gather(client.task, return_exceptions=True)
        response.close()


async def post(session: aiohttp.ClientSession, url: str, body: dict, **kwargs) -> tuple[int, dict]:
    async with session.post(url + "/api/wall/posts", json=body, **kwargs) as response:
        return response.status, await response.json()


async def act(session: aiohttp.ClientSession, url: str, post_id: str, action: str) -> tuple[int, dict]:
    async with session.post(f"{url}/api/ops/wall/{post_id}/{action}", data="{}", headers=OPS) as response:
        return response.status, await response.json()


async def queue(session: aiohttp.ClientSession, url: str) -> dict:
    async with session.get(url + "/api/ops/wall/queue", headers=OPS) as response:
        assert response.status == 200
        return await response.json()
