"""Connectors: server-side sources of wall posts, fetched once for every viewer.

Pollers (Mastodon, RSS/Atom) share one HTTP fetch with a size cap and timeouts, one way to classify
failures for the metrics, and one backoff: exponential with jitter after errors, reset on success.

The fetch reads the whole body, chunk by chunk as it arrives, and stops as soon as it is over the
cap (a single `read(n)` returns what has arrived so far, not the body: a 121 kB answer came back cut
at 16 kB). Redirects are followed by hand, at most MAX_REDIRECTS of them and only on the host
configured by the operator (same scheme and port, or an http→https upgrade to port 443): a source
must not be able to send the connector to another host or port (SSRF: `302 Location:
http://127.0.0.1:6379/`, a cloud metadata address, an internal service). Anything else is a counted
`redirect` error.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Awaitable, Callable

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from launchkit import metrics
from launchkit.wall.posts import Candidate

log = logging.getLogger(__name__)

Take = Callable[[Candidate], Awaitable[None]]  # store and moderate one post (raises store.Duplicate)
MAX_RESPONSE = 2 * 1024 * 1024
MAX_RATE_WAIT = 900.0  # never sleep longer than this on a server's say-so
MAX_REDIRECTS = 3
REDIRECTS = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "Launchkit social wall (+https://github.com/launchkit)"
WHOLE_NUMBER = re.compile(r"[0-9]{1,9}")  # ASCII digits only: str.isdigit() also says yes to "²", int() does not


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
    """GET `url` (following same-host redirects); 2xx/304 are returned, anything else raises
    FetchError with a reason label."""
    target = URL(url).update_query(params) if params else URL(url)
    try:
        for _ in range(MAX_REDIRECTS + 1):
            async with session.get(target, headers={"User-Agent": USER_AGENT, **(headers or {})},
                                   allow_redirects=False) as response:
                if response.status in REDIRECTS:
                    target = redirect_target(target, response.headers.get("Location"))
                    continue
                _check_status(response)
                return Fetched(response.status, response.headers, await read_capped(response, max_bytes))
        raise FetchError("redirect", f"more than {MAX_REDIRECTS} redirects")
    except asyncio.TimeoutError:
        raise FetchError("timeout", "timed out") from None
    except aiohttp.ClientError as error:
        raise FetchError("unreachable", str(error) or type(error).__name__) from None


def _check_status(response: aiohttp.ClientResponse) -> None:
    if response.status == 429:
        raise FetchError("rate_limited", "429 Too Many Requests", retry_after_seconds(response.headers))
    if response.status >= 500:
        raise FetchError("server_error", f"HTTP {response.status}", retry_after_seconds(response.headers))
    if response.status >= 400:
        raise FetchError("client_error", f"HTTP {response.status}")
    if 300 <= response.status < 400 and response.status != 304:
        raise FetchError("redirect", f"HTTP {response.status} is not followed")


async def read_capped(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    """The whole body, however many reads it takes; FetchError('too_large') once over `max_bytes`
    (a Content-Length over the cap is refused before reading)."""
    if response.content_length is not None and response.content_length > max_bytes:
        raise FetchError("too_large", f"response over {max_bytes} bytes")
    body = bytearray()
    async for chunk in response.content.iter_any():
        body += chunk
        if len(body) > max_bytes:
            raise FetchError("too_large", f"response over {max_bytes} bytes")
    return bytes(body)


def redirect_target(current: URL, location: str | None) -> URL:
    """Where a redirect from `current` leads, if a connector may go there; else FetchError('redirect')."""
    if not location:
        raise FetchError("redirect", "redirect without a Location")
    try:
        target = current.join(URL(location))
    except ValueError:
        raise FetchError("redirect", "redirect to a malformed Location") from None
    if not same_site(current, target):
        raise FetchError("redirect", f"redirect refused (same host and port only, or http→https): "
                                     f"{str(target)[:200]!r}")
    return target


def same_site(source: URL, target: URL) -> bool:
    """The same host and port over the same scheme, or the same host upgraded from http to https on
    its default port; never another host, another port, or a downgrade."""
    if not source.host or not target.host or source.host.lower() != target.host.lower():
        return False
    if target.scheme == source.scheme:
        return target.scheme in ("http", "https") and target.port == source.port
    return (source.scheme, target.scheme, target.port) == ("http", "https", 443)


def retry_after_seconds(headers: CIMultiDictProxy[str]) -> float | None:
    """What the server asked for: Retry-After (seconds), else the rate-limit window's reset time."""
    value = headers.get("Retry-After", "")
    return float(value) if WHOLE_NUMBER.fullmatch(value) else rate_limit_reset(headers)


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
