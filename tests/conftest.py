"""Shared fixtures: a real `launchkit demo` process, raw HTTP, and headless Chromium settings."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from loadtests.target import start_demo

ARTIFACTS = Path(__file__).parent / "artifacts"


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory):
    """One default (720p30) demo for the whole session: the product as a newcomer runs it."""
    running = start_demo(log_dir=tmp_path_factory.mktemp("demo"))
    yield running
    if running.process.poll() is None:
        running.stop()


def fetch(url: str, timeout: float = 5) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


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
