"""The edge's HTTP client to its upstream (the origin, or a parent edge: both serve the same contract).

- Requests carry no viewer header at all: a coalesced response is shared by every viewer, so no
  viewer's cookie, authorization, range or encoding may shape it. The edge sends a fixed
  `User-Agent` naming itself (origins can count requests per edge in their access log), a `Via`
  chain for loop detection, and asks for the identity encoding.
- Every request is bounded in time (connect and total); bodies are bounded in size.
- Reachability is tracked from every exchange, at the transport level: any HTTP answer (a 503 of a
  blocking reload that timed out included) means reachable; timeouts, connection failures and a
  request loop (508: the origin URL leads back to this edge) mean unreachable. A state change is logged once, not per request, and exported as
  `launchkit_edge_origin_up`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import socket
import time
from collections import Counter
from dataclasses import dataclass
from typing import AsyncIterator
from urllib.parse import urlsplit

import aiohttp

from launchkit import __version__, metrics

log = logging.getLogger(__name__)

# Response headers worth keeping: what a player or a CDN in front needs. Hop-by-hop headers,
# cookies and the origin's Server/Date never reach viewers.
KEPT_RESPONSE_HEADERS = (
    "Content-Type", "Cache-Control", "Expires", "ETag", "Last-Modified", "Content-Encoding", "Content-Language",
    "Access-Control-Allow-Origin", "Access-Control-Expose-Headers", "Retry-After",
)
VIA_MARK = "(launchkit-edge)"
MAX_VIA_HOPS = 8
_VIA_HOP = re.compile(r"^1\.1 [A-Za-z0-9._:\[\]-]{1,300} \(launchkit-edge\)$")


class ConfigurationError(ValueError):
    pass


def parse_origin_url(text: str) -> str:
    """`http(s)://host[:port][/prefix]` without query, fragment or credentials; returned without
    a trailing slash. Raises ValueError with a message an operator can act on."""
    text = text.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as error:
        raise ConfigurationError(f"expected http(s)://HOST[:PORT], got {text!r} ({error})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"expected http(s)://HOST[:PORT], got {text!r}")
    if parts.username or parts.password:
        raise ConfigurationError("the origin URL must not carry credentials")
    if parts.query or parts.fragment:
        raise ConfigurationError(f"the origin URL takes no query or fragment, got {text!r}")
    if port == 0:
        raise ConfigurationError(f"port 0 is not a valid origin port, got {text!r}")
    return text.rstrip("/")


class UpstreamError(Exception):
    """The upstream could not give a usable answer: outcome is timeout, unreachable, server_error,
    too_large (not cached, streamed instead)."""

    def __init__(self, outcome: str, detail: str, status: int | None = None, retry_after: str | None = None) -> None:
        super().__init__(detail)
        self.outcome, self.status, self.retry_after = outcome, status, retry_after


@dataclass(frozen=True, slots=True)
class Fetched:
    status: int
    headers: tuple[tuple[str, str], ...]  # the kept ones
    body: bytes

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers if k.lower() == lowered), None)


def outcome_of(status: int) -> str:
    if status in (404, 410):
        return "not_found"
    if status >= 500:
        return "server_error"
    if status >= 400:
        return "client_error"
    return "ok"


class OriginHealth:
    """Reachability from real exchanges. `up` is None until the first answer."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._started = time.monotonic()
        self.up: bool | None = None
        self.last_ok: float | None = None  # time.monotonic() of the last good exchange
        self.down_since: float | None = None
        self.changes = 0

    def ok(self) -> None:
        self.last_ok = time.monotonic()
        if self.up is not True:
            if self.up is False:
                log.warning("origin %s is reachable again after %.1f s", self._name, self.last_ok - self.down_since)
            else:
                log.info("origin %s is reachable", self._name)
            self.up, self.down_since = True, None
            self.changes += 1
            metrics.EDGE_ORIGIN_UP.set(1)

    def failed(self, reason: str) -> None:
        if self.up is not False:
            log.warning("origin %s is unreachable (%s): serving from cache, 503 + Retry-After for the rest",
                        self._name, reason)
            self.up, self.down_since = False, time.monotonic()
            self.changes += 1
            metrics.EDGE_ORIGIN_UP.set(0)

    def unreachable_for(self, now: float | None = None) -> float:
        """Seconds since the last good exchange (since start if there was none)."""
        now = time.monotonic() if now is None else now
        return now - (self.last_ok if self.last_ok is not None else self._started)


def via_chain(incoming: str | None, own: str) -> str | None:
    """The Via value to send upstream: the launchkit hops of `incoming` plus ours; None if ours is
    already there (a loop) or the chain is too long."""
    hops = [hop.strip() for hop in (incoming or "").split(",") if _VIA_HOP.match(hop.strip())]
    if own in hops or len(hops) >= MAX_VIA_HOPS:
        return None
    return ", ".join([*hops, own])


class Upstream:
    def __init__(self, base_url: str, *, edge_id: str, timeout: float, connect_timeout: float,
                 max_object_bytes: int, connections: int = 100) -> None:
        self.base_url = parse_origin_url(base_url)
        self.edge_id = edge_id
        self.via = f"1.1 {edge_id} {VIA_MARK}"
        self.timeout, self.connect_timeout = timeout, min(connect_timeout, timeout)
        self.max_object_bytes = max_object_bytes
        self.health = OriginHealth(self.base_url)
        self.counts: Counter[tuple[str, str]] = Counter()  # (kind, outcome): for tests and status
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._headers = {
            "User-Agent": f"launchkit-edge/{__version__} ({edge_id}; pid {_pid()})",
            "Accept": "*/*",
            "Accept-Encoding": "identity",
        }

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self._connections, ttl_dns_cache=10, enable_cleanup_closed=True)
        self._session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, trust_env=False, cookie_jar=aiohttp.DummyCookieJar(),
            headers=self._headers,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _request_headers(self, via: str | None) -> dict[str, str]:
        return {"Via": via or self.via}

    async def fetch(self, target: str, kind: str, timeout: float | None = None, via: str | None = None) -> Fetched:
        """GET `target` (path + canonical query) upstream, whole body in memory. Any status the
        upstream answers below 500 is a result; 5xx, timeouts and connection errors raise."""
        assert self._session is not None, "Upstream.start() first"
        timeout = timeout or self.timeout
        started = time.monotonic()
        metrics.EDGE_UPSTREAM_IN_FLIGHT.inc()
        outcome, detail = "unreachable", ""
        try:
            async with self._session.get(
                self.base_url + target, headers=self._request_headers(via), allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout, connect=self.connect_timeout),
            ) as response:
                if response.status >= 500:
                    outcome = "server_error"
                    if response.status == 508:  # our own Via came back: --origin leads back to this edge
                        detail = "request loop: the origin URL leads back to this edge"
                    await response.read()
                    raise UpstreamError(outcome, f"HTTP {response.status}", response.status,
                                        response.headers.get("Retry-After"))
                length = response.content_length
                if length is not None and length > self.max_object_bytes:
                    outcome = "too_large"
                    raise UpstreamError(outcome, f"{length} bytes")
                body = await _read_bounded(response, self.max_object_bytes)
                if body is None:
                    outcome = "too_large"
                    raise UpstreamError(outcome, f"over {self.max_object_bytes} bytes")
                outcome = outcome_of(response.status)
                kept = tuple((name, response.headers[name]) for name in KEPT_RESPONSE_HEADERS
                             if name in response.headers)
                metrics.EDGE_UPSTREAM_BYTES.labels(kind).inc(len(body))
                return Fetched(response.status, kept, body)
        except UpstreamError as error:
            detail = detail or str(error)
            raise
        except asyncio.TimeoutError:
            outcome, detail = "timeout", f"no answer within {timeout:g} s"
            raise UpstreamError(outcome, detail) from None
        except (aiohttp.ClientError, OSError) as error:
            outcome, detail = "unreachable", _describe(error)
            raise UpstreamError(outcome, detail) from None
        finally:
            metrics.EDGE_UPSTREAM_IN_FLIGHT.dec()
            metrics.EDGE_UPSTREAM_REQUESTS.labels(kind, outcome).inc()
            metrics.EDGE_UPSTREAM_SECONDS.labels(kind).observe(time.monotonic() - started)
            self.counts[(kind, outcome)] += 1
            if outcome not in ("timeout", "unreachable") and not detail.startswith("request loop"):
                self.health.ok()
            else:
                self.health.failed(detail or outcome)

    @contextlib.asynccontextmanager
    async def stream(self, target: str, kind: str, via: str | None = None) -> AsyncIterator[aiohttp.ClientResponse]:
        """An uncached pass-through request for objects over the size limit (idle reads bounded)."""
        assert self._session is not None
        metrics.EDGE_UPSTREAM_REQUESTS.labels(kind, "too_large").inc()
        self.counts[(kind, "too_large")] += 1
        try:
            async with self._session.get(
                self.base_url + target, headers=self._request_headers(via), allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=None, connect=self.connect_timeout, sock_read=self.timeout),
            ) as response:
                yield response
        except asyncio.TimeoutError:
            raise UpstreamError("timeout", f"no data within {self.timeout:g} s") from None
        except (aiohttp.ClientError, OSError) as error:
            raise UpstreamError("unreachable", _describe(error)) from None


async def _read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes | None:
    if response.content_length is not None:
        return await response.read()
    chunks, size = [], 0
    async for chunk in response.content.iter_chunked(65536):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _describe(error: BaseException) -> str:
    if isinstance(error, aiohttp.ClientConnectorError):
        return f"cannot connect: {error.os_error.strerror or error.os_error}"
    return f"{type(error).__name__}: {error}".rstrip(": ")


def _pid() -> int:
    return os.getpid()


def default_edge_id(port: int | None = None) -> str:
    """HOST:PORT for a listening edge (all its workers share it); unique per app otherwise."""
    host = socket.gethostname() or "edge"
    return f"{host}:{port}" if port else f"{host}-{_pid()}-{secrets.token_hex(3)}"
