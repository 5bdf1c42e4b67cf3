"""Shared pieces of the fault suite (tests/faults): a real `launchkit origin` with a data directory
(restartable on the same port), a SIGKILL by PID, a lower open-files limit, and one printable line
of viewer figures."""

from __future__ import annotations

import contextlib
import json
import resource
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from loadtests.player import SwarmResult
from loadtests.target import LocalDemo, start_launchkit

OPS_TOKEN = "faults-ops-token-8c1f4e7a2b9d3650"
PUBLISH_TOKEN = "faults-publish-token-3e8a5c1d7f2b9460"
ADMISSION_SECRET = "faults-admission-secret-5b2e8d1c4a7f9036"
LADDER = ("--ladder", "360p:640x360:500,180p:320x180:200", "--fps", "15")
ORIGIN_ARGS = (*LADDER, "--segment-duration", "1", "--rtmp-port", "off", "--srt-port", "off", "--source", "testcard")
ORIGIN_ENV = {"LAUNCHKIT_OPS_TOKEN": OPS_TOKEN, "LAUNCHKIT_PUBLISH_TOKEN": PUBLISH_TOKEN}
OPS_AUTH = {"Authorization": f"Bearer {OPS_TOKEN}"}


def sigkill(running: LocalDemo) -> None:
    """No goodbye: the process we started dies at once (by PID)."""
    running.process.send_signal(signal.SIGKILL)
    running.process.wait(5)


def start_origin(tmp_path: Path, port: int, *args: str) -> LocalDemo:
    """A real `launchkit origin` on `port` keeping its state in `tmp_path/data`: starting it again with
    the same arguments is a restart (same event, same wall)."""
    return start_launchkit("origin", *ORIGIN_ARGS, "--port", str(port), "--data-dir", str(tmp_path / "data"), *args,
                           env=ORIGIN_ENV, log_dir=tmp_path)


def go_live(url: str) -> None:
    request = urllib.request.Request(url + "/api/ops/event", data=b'{"action": "live"}', method="POST",
                                     headers={**OPS_AUTH, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


@contextlib.contextmanager
def open_files_soft_limit(soft: int) -> Iterator[None]:
    """Processes started inside inherit RLIMIT_NOFILE's soft limit `soft` (the common default is
    1024: systemd services, containerd 2 containers); this process gets its own back after."""
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, before[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


def figures(label: str, result: SwarmResult) -> dict:
    """The victims' figures of one swarm, printed as one JSON line and returned."""
    summary = result.summary()
    line = {key: summary[key] for key in ("viewers", "started", "never_started", "stalls", "viewers_with_stalls",
                                          "rebuffer_seconds", "errors", "waiting_room", "fell_behind")}
    line["ttfb_p50_p99"] = [summary["ttfb"]["p50"], summary["ttfb"]["p99"]]
    print(f"\n{label}: {json.dumps(line)}")
    return summary
