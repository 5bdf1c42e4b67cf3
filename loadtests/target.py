"""A local `launchkit demo` (or `origin`) process to measure or test against (loopback only,
stopped by PID)."""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

_URL_LINE = re.compile(r"landing page\s+(http://\S+?)/\s")


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A loopback port free now (TCP by default; socket.SOCK_DGRAM for UDP)."""
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class LocalDemo:
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

    def __enter__(self) -> LocalDemo:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process.poll() is None:
            self.stop()


def metrics_auth() -> dict[str, str]:
    """The header `/metrics` needs, with the metrics token of this process's environment (made up
    if unset: the servers this process starts inherit it, as a deployment's share one)."""
    token = os.environ.setdefault("LAUNCHKIT_METRICS_TOKEN", secrets.token_urlsafe(24))
    return {"Authorization": f"Bearer {token}"}


def launchkit_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "launchkit", *args]


def start_demo(*args: str, **kwargs) -> LocalDemo:
    return start_launchkit("demo", *args, **kwargs)


def start_launchkit(role: str, *args: str, env: dict[str, str] | None = None, log_dir: Path | None = None,
                    ready_timeout: float = 20, wait_for_media: bool = True) -> LocalDemo:
    """Start `launchkit ROLE` on a free loopback port; wait until it serves HTTP and, unless told
    otherwise, until /readyz says media flows."""
    metrics_auth()  # the server shares the metrics token of whoever scrapes it from here
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix=f"launchkit-{role}-"))
    log_path = log_dir / f"{role}-{time.monotonic_ns()}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            launchkit_command(role, "--host", "127.0.0.1", "--port", "0", *args),
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
        )
    deadline = time.monotonic() + ready_timeout
    url = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{role} exited with {process.returncode}:\n{log_path.read_text()}")
        if url is None and (match := _URL_LINE.search(log_path.read_text(errors="replace"))):
            url = match.group(1)
        if url and (not wait_for_media or _ready(url)):
            return LocalDemo(process, url, log_path)
        time.sleep(0.2)
    process.kill()
    process.wait()
    raise RuntimeError(f"{role} not ready within {ready_timeout}s:\n{log_path.read_text()}")


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False
