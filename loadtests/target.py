"""Local servers to measure or test against, stopped by PID: `launchkit demo`, `origin` or `edge`
processes and `redis-server`. The one place the load tests and the tests start them (and wait until
they are ready): on loopback, or inside a network namespace a test made (`namespace`: an `ip netns
add` name) on the address it gave the server there.

A server in a namespace runs under `ip netns exec NAME`, which execs it (the PID we hold is the
server's) and gathers ICE on the address it serves (LAUNCHKIT_ICE_ADDRESSES = `host`): that is the
only address it has there. This process stays where it is; to see whether the server is ready it
opens its sockets from a thread that joined the namespace (`within_namespace`: setns(2) moves only
the calling thread), so no probe process is spawned per poll.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

_URL_LINE = re.compile(r"landing page\s+(http://\S+?)/\s")
_CLONE_NEWNET = 0x40000000  # <sched.h>: setns(2) joins a network namespace
REDIS_SERVER = "/usr/bin/redis-server"
# An edge as `launchkit edge` runs it (cli.py): its settings as one JSON argument, so callers pass
# EdgeSettings fields (numbers, booleans) rather than command-line text.
_EDGE_MAIN = """
import json, logging, sys
from launchkit.edge.process import run_edge
from launchkit.edge.settings import EdgeSettings
settings = EdgeSettings(**json.loads(sys.argv[1]))
logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr,
                    format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
sys.exit(run_edge(settings))
"""
T = TypeVar("T")


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
                    ready_timeout: float = 20, wait_for_media: bool = True, host: str = "127.0.0.1",
                    namespace: str | None = None) -> LocalDemo:
    """Start `launchkit ROLE` on a free port of `host` (in `namespace` when given); wait until it
    serves HTTP and, unless told otherwise, until /readyz says media flows."""
    metrics_auth()  # the server shares the metrics token of whoever scrapes it from here
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix=f"launchkit-{role}-"))
    log_path = log_dir / f"{role}-{time.monotonic_ns()}.log"
    with open(log_path, "wb") as log:
        process = server_process(launchkit_command(role, "--host", host, "--port", "0", *args), log,
                                 host=host, namespace=namespace, env=env)
    return wait_until_ready(role, process, log_path, ready=wait_for_media, timeout=ready_timeout,
                            namespace=namespace)


def start_edge(origin: str, log_dir: Path | None = None, *, wait_ready: bool = True, ready_timeout: float = 20,
               namespace: str | None = None, **settings: object) -> LocalDemo:
    """An edge process in front of `origin`, `settings` being EdgeSettings fields, on a free port of
    `host` (loopback unless given; in `namespace` when given: see `server_process`). Waits for its
    announcement and, unless told otherwise, for /readyz 200."""
    # No WebRTC viewers unless asked: tests keep WebRTC inside the network namespaces they build.
    values = {"origin": origin, "host": "127.0.0.1", "port": 0, "drain_seconds": 0.5, "max_webrtc_viewers": 0,
              **settings}
    metrics_auth()
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="launchkit-edge-"))
    log_path = log_dir / f"edge-{time.monotonic_ns()}.log"
    with open(log_path, "wb") as log:
        process = server_process([sys.executable, "-c", _EDGE_MAIN, json.dumps(values)], log,
                                 host=str(values["host"]), namespace=namespace)
    return wait_until_ready("edge", process, log_path, ready=wait_ready, timeout=ready_timeout, namespace=namespace)


def wait_until_ready(role: str, process: subprocess.Popen, log_path: Path, *, ready: bool, timeout: float,
                     namespace: str | None = None) -> LocalDemo:
    """Poll a starting server until it announces its URL and, when `ready`, its /readyz answers 200;
    a server that exits or is not ready within `timeout` seconds fails with its log (and is killed)."""
    deadline = time.monotonic() + timeout
    url = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{role} exited with {process.returncode}:\n{log_path.read_text()}")
        if url is None and (match := _URL_LINE.search(log_path.read_text(errors="replace"))):
            url = match.group(1)
        if url and (not ready or http_status(f"{url}/readyz", namespace) == 200):
            return LocalDemo(process, url, log_path)
        time.sleep(0.1)
    process.kill()
    process.wait()
    raise RuntimeError(f"{role} not ready within {timeout}s:\n{log_path.read_text()}")


def stop_all(*running: LocalDemo | None) -> None:
    """Stop every server given (by PID), whatever happens to the others."""
    for item in running:
        if item is None or item.process.poll() is not None:
            continue
        try:
            item.stop()
        except Exception:
            item.process.kill()
            item.process.wait()


@dataclass
class RedisProcess:
    """redis-server on loopback. `persistent`: with its append-only file on (fsync every second), as
    a deployment that must not lose what Redis acknowledged runs it; a restart on the same port and
    directory loads what the killed process had acknowledged."""

    port: int
    directory: Path
    process: subprocess.Popen | None = None
    persistent: bool = False
    executable: str = REDIS_SERVER
    ready_timeout: float = 10.0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it and wait until it answers PING; RuntimeError if it exits or does not answer in time."""
        with open(self.directory / "redis.log", "ab") as log:
            self.process = subprocess.Popen(
                [self.executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "yes" if self.persistent else "no", "--appendfsync", "everysec",
                 "--dir", str(self.directory)],
                stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:  # PING answers +PONG only once the append-only file is loaded
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode} "
                                   f"(see {self.directory / 'redis.log'})")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer within {self.ready_timeout:.0f} s")

    def stop(self, kill: bool = False) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill() if kill else self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def server_process(command: list[str], log: object, *, host: str, namespace: str | None,
                   env: dict[str, str] | None = None) -> subprocess.Popen:
    """Popen a server listening on `host`, its output to `log`; in `namespace` it runs under
    `ip netns exec` and gathers ICE on `host` (its address there) unless `env` says otherwise."""
    environment = {**os.environ, **({"LAUNCHKIT_ICE_ADDRESSES": host} if namespace else {}), **(env or {})}
    prefix = ["ip", "netns", "exec", namespace] if namespace else []
    return subprocess.Popen([*prefix, *command], stdout=log, stderr=subprocess.STDOUT, env=environment)


def http_status(url: str, namespace: str | None = None, timeout: float = 2) -> int | None:
    """The status of GET `url` (from inside `namespace` when given), None when nothing answers."""

    def get() -> int | None:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code
        except OSError:
            return None

    return within_namespace(namespace, get)


def within_namespace(namespace: str | None, call: Callable[[], T]) -> T:
    """`call()` with the sockets it opens in network namespace `namespace` (None: here). It runs in
    a thread of its own that joins the namespace and then ends, so no other thread moves."""
    if namespace is None:
        return call()
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            with open(f"/run/netns/{namespace}") as handle:
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.setns(handle.fileno(), _CLONE_NEWNET) != 0:
                    error = ctypes.get_errno()
                    raise OSError(error, f"setns into network namespace {namespace}: {os.strerror(error)}")
            outcome["value"] = call()
        except BaseException as error:  # handed to the caller's thread
            outcome["error"] = error

    thread = threading.Thread(target=run, name=f"netns:{namespace}")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]
