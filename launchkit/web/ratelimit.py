"""Per-client rate limits (wall posts, QoE beacons, failed credentials): a token bucket per client
key, in memory, bounded.

Keys are derived from the client address (never exported as metric labels). The table holds at
most `max_clients` buckets; the least recently seen are forgotten first (a forgotten client starts
again with a full bucket, which only ever errs on the side of letting a post through).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limit:
    per_minute: float = 6.0  # sustained posts per client
    burst: int = 3           # posts a client may send back to back

    def __post_init__(self) -> None:
        if self.per_minute <= 0 or self.burst < 1:
            raise ValueError("rate limit: per_minute must be > 0 and burst >= 1")


class RateLimiter:
    def __init__(self, limit: Limit, max_clients: int = 100_000) -> None:
        self._limit = limit
        self._rate = limit.per_minute / 60.0
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)
        self._max_clients = max_clients

    def take(self, key: str, now: float | None = None) -> int:
        """0 if `key` may post now (a token is taken), else the whole seconds until it may."""
        now = time.monotonic() if now is None else now
        tokens, at = self._buckets.pop(key, (float(self._limit.burst), now))
        tokens = min(float(self._limit.burst), tokens + (now - at) * self._rate)
        if tokens >= 1.0:
            tokens -= 1.0
            wait = 0
        else:
            wait = max(1, math.ceil((1.0 - tokens) / self._rate))
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self._max_clients:
            self._buckets.popitem(last=False)
        return wait

    def wait(self, key: str, now: float | None = None) -> int:
        """What `take` would answer, without taking a token: 0, or the whole seconds until one is free."""
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(key)
        if bucket is None:
            return 0
        tokens = min(float(self._limit.burst), bucket[0] + (now - bucket[1]) * self._rate)
        return 0 if tokens >= 1.0 else max(1, math.ceil((1.0 - tokens) / self._rate))
