"""Shared fixtures: a real `launchkit demo` process, raw HTTP, and headless Chromium settings."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--no-first-run", "--disable-sync", "--disable-quic", "--autoplay-policy=no-user-gesture-required",
]
_URL_LINE = re.compile(r"landing page\s+(http://\S+?)/\s")


@dataclass
class Demo:
    process: subprocess.Popen
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 10) -> float:
        """Signal the demo and return how long it took to exit."""
        started = time.monotonic()
        self.process.send_signal(signum)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise
        return time.monotonic() - started


def launchkit_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "launchkit", *args]


def start_demo(tmp_path: Path, *args: str, env: dict[str, str] | None = None, ready_timeout: float = 20) -> Demo:
    log_path = tmp_path / f"demo-{time.monotonic_ns()}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            launchkit_command("demo", "--port", "0", *args),
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
        )
    deadline = time.monotonic() + ready_timeout
    url = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"demo exited with {process.returncode}:\n{log_path.read_text()}")
        match = url or _URL_LINE.search(log_path.read_text(errors="replace"))
        url = url or (match.group(1) if match else None)
        if url and _ready(url):
            return Demo(process, url, log_path)
        time.sleep(0.2)
    process.kill()
    process.wait()
    raise RuntimeError(f"demo not ready within {ready_timeout}s:\n{log_path.read_text()}")


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory):
    """One default (720p30) demo for the whole session: the product as a newcomer runs it."""
    running = start_demo(tmp_path_factory.mktemp("demo"))
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
