"""Where the rehearsal points: a URL the operator names (loopback unless `--allow-remote`), or a
local `launchkit demo` it starts itself on a free loopback port and stops afterwards (by PID).

Load tests are weapons against anything they point at; so a remote target must be asked for
explicitly, and the local demo runs a small ladder this machine can carry next to the load.
"""

from __future__ import annotations

import contextlib
import ipaddress
import shlex
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from loadtests.target import start_demo

# One small rendition at 15 fps and a small WebRTC rendition: the demo shares the machine with the
# load generator. The waiting room answers quickly so a short rehearsal sees the queue move.
DEMO_ARGS = ("--ladder", "360p:640x360:600", "--fps", "15", "--segment-duration", "1",
             "--webrtc", "320x180:300", "--retry-after", "2", "--retry-jitter", "1")
DEMO_FPS = 15
LOOPBACK_ICE_ENV = {"LAUNCHKIT_ICE_ADDRESSES": "127.0.0.1"}


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
        if demo.process.poll() is None:
            demo.stop()
