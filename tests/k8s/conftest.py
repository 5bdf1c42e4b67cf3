"""A running Launchkit as Kubernetes would run it, on loopback: an origin (the demo), an edge with two
worker processes (prometheus-client multiprocess mode) sharing admission through a real Redis.
Rendering the manifests: tests/support/k8s.py."""

from __future__ import annotations

import pytest

from loadtests.target import start_demo, start_edge, stop_all
from tests.support.k8s import LADDER, OPS_TOKEN, WEBRTC


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
