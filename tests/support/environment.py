"""What every server a test starts inherits: tests/conftest.py puts SERVER_ENVIRONMENT in this
process's environment before any test runs.

Network rule: outside the network namespaces a test builds, WebRTC may only gather and reach
loopback. Every server a test starts gathers 127.0.0.1 only and offers no WebRTC to viewers, so
browsers in this machine's namespace play LL-HLS. The WebRTC tests build their own topology
(tests/support/netns.py: a server and a viewer namespace joined by a veth pair) and turn WHEP (and
its rendition) on there explicitly.

Every server a test starts shares these credentials: edges reach their origin's WebRTC feed, tests
(and Prometheus in tests/k8s) read /metrics with the metrics token, as a deployment would.
"""

from __future__ import annotations

EDGE_TOKEN = "tests-edge-token-4f9c2a7b1e8d"
METRICS_TOKEN = "tests-metrics-token-7d3e9b2c5a1f"
METRICS_AUTH = {"Authorization": f"Bearer {METRICS_TOKEN}"}
SERVER_ENVIRONMENT = {
    "LAUNCHKIT_ICE_ADDRESSES": "127.0.0.1",
    "LAUNCHKIT_MAX_WEBRTC_VIEWERS": "0",
    "LAUNCHKIT_WEBRTC": "off",  # nor encode the WebRTC rendition: its CPU would slow every other test
    "LAUNCHKIT_EDGE_TOKEN": EDGE_TOKEN,
    "LAUNCHKIT_METRICS_TOKEN": METRICS_TOKEN,
}
