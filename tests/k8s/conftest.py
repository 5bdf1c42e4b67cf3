"""A running Launchkit as Kubernetes would run it, on loopback: an origin (the demo), an edge with two
worker processes (prometheus-client multiprocess mode) sharing admission through a real Redis."""

from __future__ import annotations

import pytest

from loadtests.target import start_demo
from tests.stream.relay.harness import start_edge, stop_all

LADDER = ("--ladder", "360p:640x360:500,180p:320x180:200", "--fps", "15")
# The WebRTC rendition is encoded (its metrics are exported) but nobody may watch it over WHEP here
# (tests/conftest.py: no WebRTC viewers outside private network namespaces).
WEBRTC = ("--webrtc", "320x180:200")
OPS_TOKEN = "k8s-stack-ops-token-0123456789"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, redis_server):
    """(origin, edge). The edge admits 6 viewers in all, so tests can fill its waiting room."""
    logs = tmp_path_factory.mktemp("k8s-stack")
    origin = edge = None
    try:
        origin = start_demo(*LADDER, *WEBRTC, env={"LAUNCHKIT_OPS_TOKEN": OPS_TOKEN}, log_dir=logs)
        edge = start_edge(origin.url, logs, workers=2, redis=redis_server.url, max_viewers=6, retry_after=1,
                          retry_jitter=0, drain_seconds=0.5)
        yield origin, edge
    finally:
        stop_all(edge, origin)
