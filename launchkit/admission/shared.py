"""Admission state shared by every edge through Redis.

Keys (one hash tag, so a Redis Cluster keeps them in one slot, which Lua scripts need):

    {P}:active       zset  admitted ticket id -> deadline (ms, Redis clock); expired by score
    {P}:queue        zset  place (seq) -> seq: queue order; ZRANK + 1 is the position
    {P}:deadlines    zset  place (seq) -> deadline (ms) by which its viewer must retry
    {P}:seq          int   last place handed out (INCR)
    {P}:drain        zset  places admitted from the queue -> time (ms), trimmed to the rate window
    {P}:edges        hash  edge id -> capacity (viewers; -1 unlimited)
    {P}:edges:seen   zset  edge id -> last heartbeat (ms); edges silent for edge_ttl are dropped
    {P}:edges:info   hash  edge id -> JSON {url, headroom, viewers, lagging} (recommended edge)

where {P} is `{<prefix>:admission}`, and the channel `{P}:freed` on which an edge announces that a viewer
left, so every edge pumps its held line at once (line.py) rather than on its next tick. Every
decision is one Lua script (ADMIT), so it is atomic: two
edges can never admit beyond the shared capacity together, and the queue is one FIFO. Time is the
Redis server's (TIME), so edges with skewed clocks agree. The shared capacity is the sum of the
capacities the live edges register: adding an edge frees capacity for the queue.

Media requests never wait on Redis: tickets are verified locally (HMAC) and the ids seen are flushed
in batches once per tick (TOUCH), with the heartbeat (HEARTBEAT) that also reads the shared numbers.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from launchkit.admission.settings import AdmissionSettings
from launchkit.admission.state import Decision

_COMMON = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Forget edges that stopped heart-beating; the capacity of the live ones (-1: unlimited).
local function live_capacity(caps, seen, info, now, edge_ttl_ms)
  local stale = redis.call('ZRANGEBYSCORE', seen, '-inf', now - edge_ttl_ms)
  for _, e in ipairs(stale) do
    redis.call('HDEL', caps, e)
    redis.call('HDEL', info, e)
  end
  if #stale > 0 then redis.call('ZREMRANGEBYSCORE', seen, '-inf', now - edge_ttl_ms) end
  local total = 0
  for _, c in ipairs(redis.call('HVALS', caps)) do
    c = tonumber(c)
    if c < 0 then return -1 end
    total = total + c
  end
  return total
end

-- Admitted tickets past their deadline; places whose viewer stopped retrying (bounded per call).
local function expire(active, queue, deadlines, now)
  redis.call('ZREMRANGEBYSCORE', active, '-inf', now)
  local dead = redis.call('ZRANGEBYSCORE', deadlines, '-inf', now, 'LIMIT', 0, 1000)
  if #dead > 0 then
    redis.call('ZREM', queue, unpack(dead))
    redis.call('ZREM', deadlines, unpack(dead))
  end
end

local function drained(drain, now, window_ms)
  redis.call('ZREMRANGEBYSCORE', drain, '-inf', now - window_ms)
  return redis.call('ZCARD', drain)
end
"""

ADMIT = _COMMON + """
local active, queue, deadlines, seqkey, caps, seen, info, drain =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local edge, cap = ARGV[1], tonumber(ARGV[2])
local probation_ms, edge_ttl_ms = tonumber(ARGV[3]), tonumber(ARGV[4])
local ticket_id, queue_seq, allow = ARGV[5], ARGV[6], ARGV[7] == '1'
local retry_base, retry_max, jitter = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local grace_ms, max_queue, window_ms = tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])
local hold_ms = tonumber(ARGV[14])

local now = now_ms()
redis.call('HSET', caps, edge, cap)
redis.call('ZADD', seen, now, edge)
local total = live_capacity(caps, seen, info, now, edge_ttl_ms)
expire(active, queue, deadlines, now)
local viewers = redis.call('ZCARD', active)
local qlen = redis.call('ZCARD', queue)
local n = drained(drain, now, window_ms)
local reason = 2
if allow then reason = 1 end

local function room(slots) return total < 0 or total - viewers >= slots end

local function admit(from_queue)
  redis.call('ZADD', active, now + probation_ms, ticket_id)
  return {1, 0, qlen, 0, 0, -1, from_queue, 0, viewers + 1, total}
end

local function wait(seq, position, length)
  local est = -1
  local base = retry_base
  if n > 0 then
    est = math.ceil(position * window_ms / n / 1000)
    base = math.max(retry_base, math.min(retry_max, math.floor(est / 4)))
  end
  local r = base + jitter
  if seq == nil then
    seq = redis.call('INCR', seqkey)
    redis.call('ZADD', queue, seq, seq)
  end
  local deadline = now + r * 1000 + grace_ms
  if hold_ms > 0 then deadline = now + hold_ms end
  redis.call('ZADD', deadlines, deadline, seq)
  return {0, position, length, seq, r, est, 0, reason, viewers, total}
end

if queue_seq ~= '' then
  local rank = redis.call('ZRANK', queue, queue_seq)
  if rank then
    if allow and room(rank + 1) then
      redis.call('ZREM', queue, queue_seq)
      redis.call('ZREM', deadlines, queue_seq)
      redis.call('ZADD', drain, now, queue_seq)
      qlen = qlen - 1
      return admit(1)
    end
    return wait(tonumber(queue_seq), rank + 1, qlen)
  end
end
if allow and room(qlen + 1) then return admit(0) end
if qlen >= max_queue then return {0, qlen + 1, qlen, 0, retry_max + jitter, -1, 0, 3, viewers, total} end
return wait(nil, qlen + 1, qlen + 1)
"""

HEARTBEAT = _COMMON + """
local active, queue, deadlines, caps, seen, info, drain =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local edge, cap, edge_info = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local edge_ttl_ms, window_ms = tonumber(ARGV[4]), tonumber(ARGV[5])
local now = now_ms()
redis.call('HSET', caps, edge, cap)
redis.call('HSET', info, edge, edge_info)
redis.call('ZADD', seen, now, edge)
local total = live_capacity(caps, seen, info, now, edge_ttl_ms)
expire(active, queue, deadlines, now)
local n = drained(drain, now, window_ms)
return {redis.call('ZCARD', active), redis.call('ZCARD', queue), total, n, redis.call('HGETALL', info)}
"""

# Tickets seen on media requests: their deadline moves to now + ttl (GT: never shortened). A ticket
# Redis does not know (admitted elsewhere, Redis restarted) is added back: admitted viewers stay.
TOUCH = """
local t = redis.call('TIME')
local deadline = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'GT', deadline, ARGV[i]) end
return #ARGV - 1
"""

# The places of held requests live on: new deadlines, and their positions now (0: the place is gone).
REFRESH = """
local t = redis.call('TIME')
local deadline = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
local positions = {}
for i = 2, #ARGV do
  local rank = redis.call('ZRANK', KEYS[1], ARGV[i])
  if rank then
    redis.call('ZADD', KEYS[2], deadline, ARGV[i])
    positions[#positions + 1] = rank + 1
  else
    positions[#positions + 1] = 0
  end
end
return positions
"""

_REASONS = {0: None, 1: "capacity", 2: "loop_lag", 3: "queue_full"}
TOUCH_BATCH = 1000
# Admission scripts in flight per process: a flash crowd waits its turn here instead of opening
# thousands of Redis connections (each script takes well under a millisecond in Redis).
MAX_CONCURRENT_SCRIPTS = 32


@dataclass(slots=True)
class SharedSnapshot:
    viewers: int = 0
    queued: int = 0
    capacity: int | None = None  # None: unlimited
    admitted_in_window: int = 0
    edges: dict[str, dict] = field(default_factory=dict)


class SharedState:
    def __init__(self, settings: AdmissionSettings, edge_id: str) -> None:
        assert settings.redis_url
        self.settings = settings
        self.edge_id = edge_id
        # Short timeouts and no retries: a request never waits long on Redis; the caller falls back.
        self.client = Redis.from_url(
            settings.redis_url, socket_timeout=settings.redis_timeout,
            socket_connect_timeout=settings.redis_timeout, retry=Retry(NoBackoff(), 0), decode_responses=True,
        )
        tag = "{" + settings.redis_prefix + ":admission}"
        self.keys = {name: f"{tag}:{name}" for name in
                     ("active", "queue", "deadlines", "seq", "drain", "edges", "edges:seen", "edges:info")}
        self.freed_channel = f"{tag}:freed"
        self._admit = self.client.register_script(ADMIT)
        self._heartbeat = self.client.register_script(HEARTBEAT)
        self._touch = self.client.register_script(TOUCH)
        self._refresh = self.client.register_script(REFRESH)
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_SCRIPTS)

    async def close(self) -> None:
        await self.client.aclose()

    async def admit(self, ticket_id: str, queue_seq: int | None, capacity: int | None, allow: bool,
                    jitter: int, hold: float = 0.0) -> Decision:
        s, k = self.settings, self.keys
        async with self._slots:
            reply = await self._admit(
                keys=[k["active"], k["queue"], k["deadlines"], k["seq"], k["edges"], k["edges:seen"],
                      k["edges:info"], k["drain"]],
                args=[self.edge_id, -1 if capacity is None else capacity, int(s.probation * 1000),
                      int(s.edge_ttl * 1000), ticket_id, "" if queue_seq is None else str(queue_seq),
                      1 if allow else 0, s.retry_after, s.retry_after_max, jitter, int(s.queue_grace * 1000),
                      s.max_queue, int(s.rate_window * 1000), int(hold * 1000)],
            )
        admitted, position, length, seq, retry, wait_s, from_queue, reason, viewers, total = (int(v) for v in reply)
        return Decision(
            admitted=bool(admitted), position=position or None, queue_length=length, seq=seq or None,
            retry_after=retry, estimated_wait=None if wait_s < 0 else wait_s, from_queue=bool(from_queue),
            reason=_REASONS.get(reason), viewers=viewers, capacity=None if total < 0 else total,
        )

    async def heartbeat(self, capacity: int | None, info: dict, touched: list[str]) -> SharedSnapshot:
        s, k = self.settings, self.keys
        for start in range(0, len(touched), TOUCH_BATCH):
            await self._touch(keys=[k["active"]], args=[int(s.ticket_ttl * 1000), *touched[start:start + TOUCH_BATCH]])
        viewers, queued, total, admitted, flat = await self._heartbeat(
            keys=[k["active"], k["queue"], k["deadlines"], k["edges"], k["edges:seen"], k["edges:info"], k["drain"]],
            args=[self.edge_id, -1 if capacity is None else capacity, json.dumps(info), int(s.edge_ttl * 1000),
                  int(s.rate_window * 1000)],
        )
        edges = {}
        for edge_id, raw in zip(flat[::2], flat[1::2]):
            try:
                edges[edge_id] = json.loads(raw)
            except ValueError:
                continue
        return SharedSnapshot(int(viewers), int(queued), None if int(total) < 0 else int(total), int(admitted), edges)

    async def refresh(self, seqs: list[int], hold: float) -> dict[int, int]:
        """Keep the places of held requests for `hold` seconds more; their positions now."""
        positions: dict[int, int] = {}
        for start in range(0, len(seqs), TOUCH_BATCH):
            batch = seqs[start:start + TOUCH_BATCH]
            async with self._slots:
                reply = await self._refresh(keys=[self.keys["queue"], self.keys["deadlines"]],
                                            args=[int(hold * 1000), *batch])
            positions.update((seq, int(position)) for seq, position in zip(batch, reply) if int(position))
        return positions

    async def leave(self, ticket_id: str) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.zrem(self.keys["active"], ticket_id).publish(self.freed_channel, self.edge_id)
            await pipe.execute()

    async def listen_freed(self, on_freed: Callable[[], None]) -> None:
        """Call `on_freed` whenever any edge announces a freed place; reconnects until cancelled."""
        while True:
            listener = Redis.from_url(self.settings.redis_url, socket_connect_timeout=self.settings.redis_timeout,
                                      socket_keepalive=True)  # no read timeout: it waits for messages
            try:
                async with listener.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self.freed_channel)
                    async for _ in pubsub.listen():
                        on_freed()
            except (RedisError, OSError):
                await asyncio.sleep(1.0)  # Redis is away: the held line still pumps on its own tick
            finally:
                await listener.aclose()

    async def deregister(self) -> None:
        k = self.keys
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hdel(k["edges"], self.edge_id).hdel(k["edges:info"], self.edge_id).zrem(k["edges:seen"], self.edge_id)
            await pipe.execute()

    async def ping(self) -> None:
        await self.client.ping()
