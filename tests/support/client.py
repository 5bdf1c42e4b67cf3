"""HTTP as the tests speak it to real servers: a GET that returns any status, /metrics with the
metrics token, a request target sent byte for byte, the one bounded poll the tests wait with, and
waiting for a server's WebRTC (over the caller's session: scenarios speak from chosen addresses)."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import aiohttp

from tests.support.environment import METRICS_AUTH


def fetch(url: str, timeout: float = 5, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def fetch_metrics(base_url: str, timeout: float = 5) -> tuple[int, dict[str, str], bytes]:
    """`GET /metrics` as Prometheus does it: with the metrics token."""
    return fetch(base_url + "/metrics", timeout, METRICS_AUTH)


def wait_for(condition: Callable[[], object], timeout: float, what: str, step: float = 0.05) -> float:
    """Poll `condition` until true (bounded); returns the seconds it took, fails the test naming `what`."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"timed out waiting for {what}"
        time.sleep(step)
    return time.monotonic() - started


async def raw_get(host: str, port: int, target: str) -> tuple[int, bytes]:
    """Send the request target byte for byte (clients normalise `..`; attackers do not)."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode("latin-1"))
    await writer.drain()
    response = await reader.read()
    writer.close()
    status_line, _, rest = response.partition(b"\r\n")
    body = rest.partition(b"\r\n\r\n")[2]
    return int(status_line.split()[1]), body


async def until_webrtc_available(session: aiohttp.ClientSession, url: str, timeout: float) -> None:
    """Poll `url`'s /api/status until it offers WebRTC (an edge: once it receives its origin's feed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with session.get(url + "/api/status") as response:
            if (await response.json()).get("webrtc", {}).get("available"):
                return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{url}: WebRTC never became available")
