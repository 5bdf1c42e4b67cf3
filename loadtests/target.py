"""A local `launchkit demo` (or `origin`) process to measure or test against, stopped by PID: on
loopback, or inside a network namespace a test made (`namespace`: an `ip netns add` name) on the
address it gave the server there.

A server in a namespace runs under `ip netns exec NAME`, which execs it (the PID we hold is the
server's) and gathers ICE on the address it serves (LAUNCHKIT_ICE_ADDRESSES = `host`): that is the
only address it has there. This process stays where it is; to see whether the server is ready it
opens its sockets from a thread that joined the namespace (`within_namespace`: setns(2) moves only
the calling thread), so no probe process is spawned per poll.
"""

from __future__ import annotations

import ctypes
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
    deadline = time.monotonic() + ready_timeout
    url = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{role} exited with {process.returncode}:\n{log_path.read_text()}")
        if url is None and (match := _URL_LINE.search(log_path.read_text(errors="replace"))):
            url = match.group(1)
        if url and (not wait_for_media or http_status(f"{url}/readyz", namespace) == 200):
            return LocalDemo(process, url, log_path)
        time.sleep(0.2)
    process.kill()
    process.wait()
    raise RuntimeError(f"{role} not ready within {ready_timeout}s:\n{log_path.read_text()}")


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
