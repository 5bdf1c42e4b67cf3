"""Fan-out across replicas through Redis, so a post approved once appears on every edge.

The origin's SQLite event log stays the source of truth. `RedisPublisher` (origin) copies it into a
Redis stream whose entry ids are the log's own sequence numbers (`<seq>-0`), and keeps a hash of
the posts visible now; both in one MULTI. Because ids are the log's, `Last-Event-ID` means the same
on every replica, and a publisher that was cut off (Redis restart, network) simply resumes from the
stream's last id: nothing is skipped, nothing is sent twice.

`RedisSubscriber` (edges) starts from the hash plus the stream's last id, then tails the stream
with XREAD BLOCK and hands every entry to the local SSE hub. A gap it cannot fill (the stream was
trimmed past what it had) resets the hub from the hash: clients then get a snapshot.

`RedisIntake` carries posts taken in at edges to the origin: an edge XADDs the validated post to an
intake stream and answers 202 once Redis has it; the origin reads the stream in a consumer group,
stores each post, and only then XACKs it (a crash in between re-delivers it; the post id makes the
second insert a no-op). Accepted posts are not lost.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from typing import Awaitable, Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from launchkit import metrics
from launchkit.wall.posts import Candidate, candidate_dict, candidate_from_dict
from launchkit.wall.sse import Hub
from launchkit.wall.store import Duplicate, Event, Store

log = logging.getLogger(__name__)

REDIS_ERRORS = (RedisError, OSError, asyncio.TimeoutError)
BATCH = 500
BLOCK_MS = 2000
MAX_BACKOFF = 10.0


class Keys:
    def __init__(self, prefix: str) -> None:
        self.events = f"{prefix}:wall:events"
        self.visible = f"{prefix}:wall:visible"
        self.intake = f"{prefix}:wall:intake"
        self.group = f"{prefix}:wall:origin"


def client(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(url, socket_timeout=BLOCK_MS / 1000 + 3, socket_connect_timeout=2,
                                   health_check_interval=30)


def _seq(entry_id: bytes | str) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.split("-", 1)[0])


def _event(entry_id: bytes, fields: dict) -> Event:
    return Event(_seq(entry_id), fields[b"type"].decode(), fields[b"data"].decode(), float(fields[b"at"]))


async def _backoff(failures: int) -> None:
    await asyncio.sleep(min(MAX_BACKOFF, 0.2 * 2 ** failures) * random.uniform(0.5, 1.0))


class RedisPublisher:
    def __init__(self, redis: aioredis.Redis, keys: Keys, store: Store, max_len: int) -> None:
        self._redis, self._keys, self._store, self._max_len = redis, keys, store, max_len
        self._wake = asyncio.Event()

    def notify(self) -> None:
        """Something was logged: copy it to Redis now (the loop also catches up by itself)."""
        self._wake.set()

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                while await self._publish_batch():
                    pass
                if failures:
                    log.info("wall fan-out: Redis answers again, caught up")
                failures = 0
                metrics.WALL_REDIS_UP.set(1)
                try:
                    await asyncio.wait_for(self._wake.wait(), 1.0)
                except asyncio.TimeoutError:
                    pass
                self._wake.clear()
            except REDIS_ERRORS as error:
                if not failures:
                    log.warning("wall fan-out: Redis unreachable (%s); edges miss new posts until it answers", error)
                metrics.WALL_REDIS_UP.set(0)
                failures += 1
                await _backoff(failures)

    async def _publish_batch(self) -> bool:
        """Copy the next batch of the log after the stream's last entry; True if there may be more."""
        last = await self._redis.xrevrange(self._keys.events, count=1)
        after = _seq(last[0][0]) if last else 0
        events = await self._store.events_after(after, BATCH)
        if not events:
            return False
        async with self._redis.pipeline(transaction=True) as pipe:
            for event in events:
                pipe.xadd(self._keys.events, {"type": event.type, "data": event.data, "at": repr(event.at)},
                          id=f"{event.seq}-0", maxlen=self._max_len, approximate=True)
                post_id = json.loads(event.data)["id"]
                if event.type == "post":
                    pipe.hset(self._keys.visible, post_id, event.data)
                else:
                    pipe.hdel(self._keys.visible, post_id)
            await pipe.execute()
        return len(events) == BATCH


class RedisSubscriber:
    def __init__(self, redis: aioredis.Redis, keys: Keys, hub: Hub) -> None:
        self._redis, self._keys, self._hub = redis, keys, hub

    async def load(self) -> None:
        """The hub's starting point: visible posts and the stream's last id, read atomically."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hvals(self._keys.visible)
            pipe.xrevrange(self._keys.events, count=1)
            posts, last = await pipe.execute()
        posts = sorted((p.decode() for p in posts), key=lambda data: json.loads(data).get("created_at", 0))
        self._hub.reset(_seq(last[0][0]) if last else 0, posts)

    async def run(self) -> None:
        failures = 0
        loaded = False
        while True:
            try:
                if not loaded:
                    await self.load()
                    loaded = True
                await self._follow()
                failures = 0
                metrics.WALL_REDIS_UP.set(1)
            except REDIS_ERRORS as error:
                if not failures:
                    log.warning("wall fan-out: Redis unreachable (%s); retrying", error)
                metrics.WALL_REDIS_UP.set(0)
                failures += 1
                await _backoff(failures)

    async def _follow(self) -> None:
        after = self._hub.last_seq
        reply = await self._redis.xread({self._keys.events: f"{after}-0"}, count=BATCH, block=BLOCK_MS)
        for _stream, entries in reply or ():
            if entries and _seq(entries[0][0]) != after + 1 and after:
                log.warning("wall fan-out: events after %d were trimmed from Redis; clients get a snapshot", after)
                await self.load()
                return
            for entry_id, fields in entries:
                self._hub.publish(_event(entry_id, fields))

    async def backfill(self, after: int, limit: int) -> list[Event] | None:
        """Events after `after` still in the stream (for a client resuming beyond the memory ring)."""
        try:
            entries = await self._redis.xrange(self._keys.events, min=f"{after + 1}-0", count=limit)
        except REDIS_ERRORS:
            return None
        return [_event(entry_id, fields) for entry_id, fields in entries]


class RedisIntake:
    def __init__(self, redis: aioredis.Redis, keys: Keys, max_len: int) -> None:
        self._redis, self._keys, self._max_len = redis, keys, max_len
        # One active origin per event: a fixed consumer name lets a restarted origin pick up the
        # entries its previous run read but never acknowledged.
        self._consumer = "origin"

    async def submit(self, candidate: Candidate) -> None:
        """Edge side: raises a Redis error if the post could not be handed over (the client gets 503)."""
        await self._redis.xadd(self._keys.intake, {"post": json.dumps(candidate_dict(candidate))},
                               maxlen=self._max_len, approximate=True)

    async def consume(self, take: Callable[[Candidate], Awaitable[None]]) -> None:
        """Origin side: store every post the edges took in, then acknowledge it."""
        failures = 0
        backlog = True  # first our own unacknowledged entries (a crash before XACK), then new ones
        grouped = False
        while True:
            try:
                if not grouped:
                    await self._create_group()
                    grouped = True
                reply = await self._redis.xreadgroup(self._keys.group, self._consumer,
                                                     {self._keys.intake: "0" if backlog else ">"},
                                                     count=100, block=None if backlog else BLOCK_MS)
                entries = reply[0][1] if reply else []
                backlog = backlog and bool(entries)
                for entry_id, fields in entries:
                    await self._take_one(take, fields)
                    await self._redis.xack(self._keys.intake, self._keys.group, entry_id)
                failures = 0
            except REDIS_ERRORS as error:
                if not failures:
                    log.warning("wall intake: Redis unreachable (%s); posts taken in at edges wait there", error)
                failures += 1
                backlog, grouped = True, False
                await _backoff(failures)

    async def _create_group(self) -> None:
        try:
            await self._redis.xgroup_create(self._keys.intake, self._keys.group, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):  # the group exists already: fine
                raise

    async def _take_one(self, take: Callable[[Candidate], Awaitable[None]], fields: dict) -> None:
        try:
            candidate = candidate_from_dict(json.loads(fields[b"post"]))
        except (KeyError, ValueError, TypeError) as error:
            log.error("wall intake: dropping an unreadable entry (%s)", error)  # never retried forever
            return
        try:
            await take(candidate)
        except Duplicate:
            pass  # re-delivered after a crash before XACK: already stored
