"""Live delivery of wall events over Server-Sent Events, with `Last-Event-ID` resume.

One `Hub` per process: every event is encoded once and handed to each connected client's bounded
queue. A client whose queue is full (it reads slower than the wall moves) is dropped: its connection
is aborted and the browser's EventSource reconnects with `Last-Event-ID`, getting exactly what it
missed from the in-memory ring or, further back, from the backfill (SQLite at the origin, the Redis
stream at an edge). One heartbeat timer for all clients keeps proxies from closing idle streams.

Wire format: `event: post` (show or update a post, data = the post's JSON), `event: remove`
(data = {"id"}), and `event: snapshot` (data = {"posts": [...]}: replace the whole list) sent on a
fresh connection and whenever the gap to resume is beyond what is kept. Every event carries `id:`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from aiohttp import web

from launchkit import metrics
from launchkit.wall.store import Event
from launchkit.web.cors import cors
from launchkit.web.refusal import Refusal

log = logging.getLogger(__name__)

# What a too-old Last-Event-ID can be resumed from (None: not any more: send a snapshot instead).
Backfill = Callable[[int, int], Awaitable["list[Event] | None"]]
_HEARTBEAT = b": keep-alive\n\n"
# ASCII digits only ([0-9], not \d nor str.isdigit: "²" is a digit to both and not to int()), at
# most 18 of them (fits SQLite's integer).
_EVENT_ID = re.compile(r"[0-9]{1,18}")


@dataclass(frozen=True, slots=True)
class StreamSettings:
    max_clients: int = 20_000      # per process; beyond, 503 + Retry-After (scale out edges)
    queue_size: int = 64           # events a client may lag behind before it is dropped
    ring_size: int = 2048          # recent events kept in memory for resumes
    max_backlog: int = 1000        # events replayed on resume; a bigger gap gets a snapshot
    snapshot_size: int = 200       # posts in a snapshot (pinned ones kept first)
    heartbeat: float = 15.0        # seconds between keep-alive comments
    retry_ms: int = 2000           # EventSource reconnection delay we ask for


def encode(seq: int, kind: str, data: str) -> bytes:
    return f"id: {seq}\nevent: {kind}\ndata: {data}\n\n".encode()


@dataclass(eq=False)
class _Client:
    queue: asyncio.Queue
    transport: asyncio.Transport | None
    dropped: bool = False

    def drop(self) -> None:
        """Too slow: forget what is queued, wake the handler, cut the connection (it resumes)."""
        self.dropped = True
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)
        if self.transport is not None:
            self.transport.abort()


@dataclass
class View:
    """The posts viewers currently see (what a snapshot sends), kept from the events themselves."""

    limit: int
    posts: dict[str, str] = field(default_factory=dict)  # id -> JSON, insertion order = arrival order
    pinned: set[str] = field(default_factory=set)

    def apply(self, kind: str, data: str) -> None:
        post = json.loads(data)
        post_id = post["id"]
        if kind == "remove":
            self.posts.pop(post_id, None)
            self.pinned.discard(post_id)
            return
        self.posts[post_id] = data
        (self.pinned.add if post.get("state") == "pinned" else self.pinned.discard)(post_id)
        while len(self.posts) > self.limit:
            oldest = next((i for i in self.posts if i not in self.pinned), next(iter(self.posts)))
            self.posts.pop(oldest)
            self.pinned.discard(oldest)

    def replace(self, posts: list[str]) -> None:
        self.posts.clear()
        self.pinned.clear()
        for data in posts:
            self.apply("post", data)

    def snapshot(self) -> str:
        # The stored JSON is already escaped: splice it in rather than decode and re-encode it.
        return '{"posts":[' + ",".join(self.posts.values()) + "]}"


class Hub:
    def __init__(self, settings: StreamSettings, backfill: Backfill | None = None) -> None:
        self.settings = settings
        self._backfill = backfill
        self._clients: set[_Client] = set()
        self._ring: deque[tuple[int, bytes, float]] = deque(maxlen=settings.ring_size)
        self.view = View(settings.snapshot_size)
        self.last_seq = 0
        self._heartbeat: asyncio.Task | None = None
        self._closing = False

    def reset(self, last_seq: int, posts: list[str]) -> None:
        """Start (or restart after a gap) from a known state: `posts` visible as of `last_seq`."""
        self.view.replace(posts)
        self._ring.clear()
        self.last_seq = last_seq

    def publish(self, event: Event) -> None:
        """Hand one event to every client. Events at or below what was published are ignored, so a
        source that repeats itself (a Redis re-read, a catch-up) cannot deliver a post twice."""
        if event.seq <= self.last_seq:
            return
        self.last_seq = event.seq
        self.view.apply(event.type, event.data)
        item = (event.seq, encode(event.seq, event.type, event.data), event.at)
        self._ring.append(item)
        for client in self._clients:
            if client.dropped:
                continue
            try:
                client.queue.put_nowait(item)
            except asyncio.QueueFull:
                metrics.WALL_SSE_DROPPED.inc()
                client.drop()

    @property
    def clients(self) -> int:
        return len(self._clients)

    def start(self) -> None:
        self._closing = False
        self._heartbeat = asyncio.get_running_loop().create_task(self._beat(), name="wall-sse-heartbeat")

    async def close(self) -> None:
        """Ends every stream (clients reconnect elsewhere and resume) and stops the heartbeat."""
        self._closing = True
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
            self._heartbeat = None
        for client in list(self._clients):
            while not client.queue.empty():
                client.queue.get_nowait()
            client.queue.put_nowait(None)

    async def _beat(self) -> None:
        item = (0, _HEARTBEAT, 0.0)
        while True:
            await asyncio.sleep(self.settings.heartbeat)
            for client in self._clients:
                if not client.dropped and not client.queue.full():
                    client.queue.put_nowait(item)

    # ---- the GET /api/wall/events handler -------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        last_id = _last_event_id(request)
        if self._closing or len(self._clients) >= self.settings.max_clients:
            raise Refusal(503, "wall stream at capacity, retry shortly", "unavailable", {"Retry-After": "5"})
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache, no-transform",
            "X-Accel-Buffering": "no", **cors(),
        })
        client = _Client(asyncio.Queue(self.settings.queue_size), request.transport)
        # Registered before the backlog is computed, with no await in between: nothing published
        # meanwhile can be missed, and anything sent twice is filtered by `sent` below.
        self._clients.add(client)
        metrics.WALL_SSE_CLIENTS.inc()
        try:
            backlog, sent = self._from_memory(last_id)
            await response.prepare(request)
            await response.write(f"retry: {self.settings.retry_ms}\n\n".encode())
            if backlog is None:
                backlog, sent = await self._from_backfill(last_id)
            if backlog:
                await response.write(backlog)
            while not client.dropped:
                item = await client.queue.get()
                if item is None:
                    break
                seq, chunk, at = item
                if seq and seq <= sent:
                    continue
                await response.write(chunk)
                if seq:
                    sent = seq
                    metrics.WALL_DELIVERY_LAG.observe(max(0.0, time.time() - at))
        except ConnectionError:
            pass  # the viewer left, or was dropped: nothing to clean but our bookkeeping
        finally:
            self._clients.discard(client)
            metrics.WALL_SSE_CLIENTS.dec()
        return response

    def _from_memory(self, last_id: int | None) -> tuple[bytes | None, int]:
        """The bytes that bring a client to `last_seq`, from memory, or None if the backfill is needed."""
        if last_id is None or last_id > self.last_seq:  # fresh, or an id from another history: start over
            return self._snapshot(), self.last_seq
        if last_id == self.last_seq:
            return b"", last_id
        if self._ring and self._ring[0][0] <= last_id + 1 and self.last_seq - last_id <= self.settings.max_backlog:
            return b"".join(chunk for seq, chunk, _ in self._ring if seq > last_id), self.last_seq
        return None, last_id

    async def _from_backfill(self, last_id: int) -> tuple[bytes, int]:
        events = await self._backfill(last_id, self.settings.max_backlog) if self._backfill else None
        if not events or events[0].seq != last_id + 1 or len(events) >= self.settings.max_backlog:
            return self._snapshot(), self.last_seq
        return b"".join(encode(e.seq, e.type, e.data) for e in events), events[-1].seq

    def _snapshot(self) -> bytes:
        return encode(self.last_seq, "snapshot", self.view.snapshot())


def _last_event_id(request: web.Request) -> int | None:
    """From the `Last-Event-ID` header (EventSource reconnects) or `?last_event_id=` (a page that
    kept the id across a reload). A malformed value is a client bug: 400."""
    raw = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
    if raw is None or raw == "":
        return None
    if not _EVENT_ID.fullmatch(raw):
        raise Refusal(400, "Last-Event-ID must be a wall event id (digits)", "malformed")
    return int(raw)
