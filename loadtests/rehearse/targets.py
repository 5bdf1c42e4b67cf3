"""Where the rehearsal points: URLs the operator names (loopback unless `--allow-remote`; several
URLs are edges the arrivals are spread over), or local servers it starts itself on free loopback
ports and stops afterwards (by PID): a `launchkit demo`, or (`--edges N`) that demo as the origin
of N `launchkit edge` processes sharing admission through a `redis-server` of their own, the way a
deployment runs (through loadtests/target.py, which starts the tests' servers too).

Load tests are weapons against anything they point at; so a remote target must be asked for
explicitly, and the local demo runs a small ladder this machine can carry next to the load.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from loadtests.target import LocalDemo, RedisProcess, free_port, start_demo, start_launchkit

# One small rendition at 15 fps and a small WebRTC rendition: the demo shares the machine with the
# load generator. The waiting room answers quickly so a short rehearsal sees the queue move.
DEMO_ARGS = ("--ladder", "360p:640x360:600", "--fps", "15", "--segment-duration", "1",
             "--webrtc", "320x180:300", "--retry-after", "2", "--retry-jitter", "1")
DEMO_FPS = 15
LOOPBACK_ICE_ENV = {"LAUNCHKIT_ICE_ADDRESSES": "127.0.0.1"}
MAX_LOCAL_EDGES = 8
# Local edges have nobody to drain for when the rehearsal is over: stop within a second.
EDGE_ARGS = ("--drain-seconds", "1")
STOP_SECONDS = 10.0
REDIS_READY_SECONDS = 10.0


class TargetError(ValueError):
    pass


def check_target(url: str, allow_remote: bool) -> str:
    """The base URL without a trailing slash; refuses non-HTTP URLs, and non-loopback hosts
    unless allowed."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetError(f"--target: an http(s) URL, got {url!r}")
    if not allow_remote and not is_loopback(parts.hostname):
        raise TargetError(f"--target {url} is not on this machine: pass --allow-remote to load-test it "
                          "(only systems you are allowed to load-test)")
    return url.rstrip("/")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@contextlib.contextmanager
def local_demo(extra_args: str, log_dir: Path | None = None) -> Iterator[str]:
    """A `launchkit demo` on 127.0.0.1 (WebRTC gathering loopback only) for the duration of the block."""
    demo = start_demo(*DEMO_ARGS, *shlex.split(extra_args), env=LOOPBACK_ICE_ENV,
                      log_dir=log_dir or Path(tempfile.mkdtemp(prefix="launchkit-rehearsal-")), ready_timeout=40)
    try:
        yield demo.url
    finally:
        _stop(demo.process)


@contextlib.contextmanager
def local_edges(count: int, demo_args: str, edge_args: str, log_dir: Path | None = None) -> Iterator[list[str]]:
    """`count` edges (URLs) in front of a local demo, sharing a local redis-server, for the block.
    Every process started is stopped by PID, whatever happens."""
    if not 1 <= count <= MAX_LOCAL_EDGES:
        raise TargetError(f"--edges: 1 to {MAX_LOCAL_EDGES}, got {count}")
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        raise TargetError("--edges needs redis-server on PATH (the edges share admission through it)")
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="launchkit-rehearsal-"))
    # One deployment: every edge honours the others' tickets and reaches the origin's WebRTC feed.
    env = {**LOOPBACK_ICE_ENV,
           "LAUNCHKIT_ADMISSION_SECRET": os.environ.get("LAUNCHKIT_ADMISSION_SECRET") or secrets.token_urlsafe(32),
           "LAUNCHKIT_EDGE_TOKEN": os.environ.get("LAUNCHKIT_EDGE_TOKEN") or secrets.token_urlsafe(24)}
    started: list[LocalDemo] = []
    redis = RedisProcess(free_port(), log_dir, executable=redis_server, ready_timeout=REDIS_READY_SECONDS)
    try:
        try:
            redis.start()
        except RuntimeError as error:
            raise TargetError(str(error)) from None
        started.append(start_demo(*DEMO_ARGS, *shlex.split(demo_args), env=env, log_dir=log_dir, ready_timeout=40))
        for _ in range(count):
            started.append(start_launchkit("edge", "--origin", started[0].url, "--redis", redis.url, *EDGE_ARGS,
                                           *shlex.split(edge_args), env=env, log_dir=log_dir, ready_timeout=40))
        yield [edge.url for edge in started[1:]]
    finally:
        for server in reversed(started):
            _stop(server.process)
        redis.stop()


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM, SIGKILL if it lingers; never raises: stopping a server must not lose the results."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(STOP_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(STOP_SECONDS)
