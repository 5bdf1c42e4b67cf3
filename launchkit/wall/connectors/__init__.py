"""Connectors: server-side sources of wall posts, fetched once for every viewer.

Pollers (Mastodon, RSS/Atom) share one HTTP fetch with a size cap and timeouts, one way to classify
failures for the metrics, and one backoff: exponential with jitter after errors, reset on success.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Awaitable, Callable

import aiohttp
from multidict import CIMultiDictProxy

from launchkit import metrics
from launchkit.wall.posts import Candidate

log = logging.getLogger(__name__)

Take = Callable[[Candidate], Awaitable[None]]  # store and moderate one post (raises store.Duplicate)
MAX_RESPONSE = 2 * 1024 * 1024
MAX_RATE_WAIT = 900.0  # never sleep longer than this on a server's say-so
USER_AGENT = "Launchkit social wall (+https://github.com/launchkit)"


class FetchError(Exception):
    """A failed poll; `reason` is the bounded metric label, `retry_after` what the server asked for."""

    def __init__(self, reason: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.reason, self.retry_after = reason, retry_after


@dataclass(frozen=True, slots=True)
class Fetched:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


async def fetch(session: aiohttp.ClientSession, url: str, *, params: dict | None = None,
                headers: dict | None = None, max_bytes: int = MAX_RESPONSE) -> Fetched:
    """GET `url`; 2xx/304 are returned, anything else raises FetchError with a reason label."""
    try:
        async with session.get(url, params=params, headers={"User-Agent": USER_AGENT, **(headers or {})},
                               allow_redirects=True, max_redirects=3) as response:
            if response.status == 429:
                raise FetchError("rate_limited", "429 Too Many Requests", retry_after_seconds(response.headers))
            if response.status >= 500:
                raise FetchError("server_error", f"HTTP {response.status}", retry_after_seconds(response.headers))
            if response.status >= 400:
                raise FetchError("client_error", f"HTTP {response.status}")
            body = await response.content.read(max_bytes + 1)
            if len(body) > max_bytes:
                raise FetchError("too_large", f"response over {max_bytes} bytes")
            return Fetched(response.status, response.headers, body)
    except asyncio.TimeoutError:
        raise FetchError("timeout", "timed out") from None
    except aiohttp.ClientError as error:
        raise FetchError("unreachable", str(error) or type(error).__name__) from None


def retry_after_seconds(headers: CIMultiDictProxy[str]) -> float | None:
    """What the server asked for: Retry-After (seconds), else the rate-limit window's reset time."""
    value = headers.get("Retry-After", "")
    return float(value) if value.isdigit() else rate_limit_reset(headers)


def rate_limit_reset(headers: CIMultiDictProxy[str]) -> float | None:
    """Seconds until `X-RateLimit-Reset` (an ISO 8601 time, as Mastodon sends it), or None."""
    try:
        reset = datetime.fromisoformat(headers.get("X-RateLimit-Reset", "").replace("Z", "+00:00"))
    except ValueError:
        return None
    if reset.tzinfo is None:
        return None
    return min(MAX_RATE_WAIT, max(1.0, reset.timestamp() - time.time()))


class Backoff:
    """Seconds to wait before the next poll: the interval after success, doubling after each failure
    (with jitter, so many edges or feeds do not retry in step), never below what the server asked."""

    def __init__(self, interval: float, maximum: float = 300.0) -> None:
        self.interval, self.maximum = interval, maximum
        self.failures = 0

    def success(self) -> float:
        self.failures = 0
        return self.interval

    def failure(self, retry_after: float | None = None) -> float:
        self.failures += 1
        wait = min(self.maximum, self.interval * 2 ** min(self.failures, 10)) * random.uniform(0.5, 1.0)
        return min(self.maximum, max(wait, retry_after or 0.0))


async def run_poller(name: str, connector: str, poll: Callable[[], Awaitable[float]],
                     backoff: Backoff) -> None:
    """Poll until cancelled; every failure is counted and logged, none stops the loop."""
    while True:
        try:
            wait = await poll()
        except FetchError as error:
            metrics.WALL_CONNECTOR_ERRORS.labels(connector, error.reason).inc()
            wait = backoff.failure(error.retry_after)
            log.warning("%s: %s (retry in %.1f s)", name, error, wait)
        except Exception:  # a bug on one payload must not stop the wall: count it, back off, go on
            metrics.WALL_CONNECTOR_ERRORS.labels(connector, "internal").inc()
            wait = backoff.failure()
            log.exception("%s: poll failed (retry in %.1f s)", name, wait)
        await asyncio.sleep(wait)
