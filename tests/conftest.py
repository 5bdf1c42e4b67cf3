"""Shared fixtures: a real `launchkit demo` process, raw HTTP, and headless Chromium settings."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from loadtests.target import free_port, start_demo

ARTIFACTS = Path(__file__).parent / "artifacts"
REDIS_SERVER = "/usr/bin/redis-server"

# Network rule: outside the network namespaces a test builds, WebRTC may only gather and reach
# loopback. Every server a test starts inherits these: it gathers 127.0.0.1 only and offers no
# WebRTC to viewers, so browsers in this machine's namespace play LL-HLS. The WebRTC tests build
# their own topology (tests/support/netns.py: a server and a viewer namespace joined by a veth
# pair) and turn WHEP (and its rendition) on there explicitly.
os.environ["LAUNCHKIT_ICE_ADDRESSES"] = "127.0.0.1"
os.environ["LAUNCHKIT_MAX_WEBRTC_VIEWERS"] = "0"
os.environ["LAUNCHKIT_WEBRTC"] = "off"  # nor encode the WebRTC rendition: its CPU would slow every other test
# Every server a test starts shares these credentials: edges reach their origin's WebRTC feed, tests
# (and Prometheus in tests/k8s) read /metrics with the metrics token, as a deployment would.
EDGE_TOKEN = "tests-edge-token-4f9c2a7b1e8d"
METRICS_TOKEN = "tests-metrics-token-7d3e9b2c5a1f"
os.environ["LAUNCHKIT_EDGE_TOKEN"] = EDGE_TOKEN
os.environ["LAUNCHKIT_METRICS_TOKEN"] = METRICS_TOKEN
METRICS_AUTH = {"Authorization": f"Bearer {METRICS_TOKEN}"}


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory):
    """One default (720p30) demo for the whole session: the product as a newcomer runs it."""
    running = start_demo(log_dir=tmp_path_factory.mktemp("demo"))
    yield running
    if running.process.poll() is None:
        running.stop()


def fetch(url: str, timeout: float = 5, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def wait_for(condition, timeout: float, what: str, step: float = 0.05) -> float:
    """Poll `condition` until true (bounded); returns the seconds it took, fails the test naming `what`."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"timed out waiting for {what}"
        time.sleep(step)
    return time.monotonic() - started


def fetch_metrics(base_url: str, timeout: float = 5) -> tuple[int, dict[str, str], bytes]:
    """`GET /metrics` as Prometheus does it: with the metrics token."""
    return fetch(base_url + "/metrics", timeout, METRICS_AUTH)


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


# ---- redis-server on a free loopback port ---------------------------------------------------------

@dataclass
class RedisProcess:
    """redis-server on loopback. `persistent`: with its append-only file on (fsync every second), as
    a deployment that must not lose what Redis acknowledged runs it; a restart on the same port and
    directory loads what the killed process had acknowledged."""

    port: int
    directory: Path
    process: subprocess.Popen | None = None
    persistent: bool = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes" if self.persistent else "no", "--appendfsync", "everysec",
             "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # PING answers +PONG only once the append-only file is loaded
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
            assert self.process.poll() is None, "redis-server exited"
            time.sleep(0.05)
        raise TimeoutError("redis-server did not answer within 10 s")

    def stop(self, kill: bool = False) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill() if kill else self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def require(tool: str) -> None:
    """`make test` installs every tool the tests use: a missing one is a setup defect, never a skip."""
    if not Path(tool).exists():
        pytest.fail(f"{tool} is not installed (run `make system-packages` as root)", pytrace=False)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    require(REDIS_SERVER)
    server = RedisProcess(free_port(), tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_redis(tmp_path):
    require(REDIS_SERVER)
    server = RedisProcess(free_port(), tmp_path)
    server.start()
    yield server
    server.stop()
