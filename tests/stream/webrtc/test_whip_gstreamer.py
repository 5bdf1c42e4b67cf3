"""GStreamer publishes H.264 + Opus over WHIP (webrtcbin, libnice, x264enc; gstreamer_whip.py) from
the viewer's namespace to an origin in the server's, across the veth pair (tests/support/netns.py);
the program puts it on air, and the publisher's DELETE frees the slot at once. No STUN or TURN
server is given, so libnice gathers only the namespace's own address."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
import urllib.request
from pathlib import Path

from loadtests.target import within_namespace
from tests.support.netns import Topology, two_namespaces

PUBLISHER = Path(__file__).with_name("gstreamer_whip.py")
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's GStreamer bindings (python3-gst-1.0) live there
SECONDS = 8
ON_AIR_TIMEOUT = 15.0
RELEASE_TIMEOUT = 3.0  # a DELETE frees the slot at once; a vanished publisher holds it for ICE's ~30 s


def _ops_status(net: Topology, url: str, ops_token: str) -> dict:
    request = urllib.request.Request(f"{url}/api/ops/status", headers={"Authorization": f"Bearer {ops_token}"})

    def get() -> dict:
        with urllib.request.urlopen(request, timeout=2) as response:
            return json.load(response)

    return within_namespace(net.server, get)


def _whip_input(status: dict) -> dict | None:
    return next((i for i in status["inputs"] if i.get("protocol") == "whip"), None)


def _wait_for(net: Topology, url: str, ops_token: str, done, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    status = _ops_status(net, url, ops_token)
    while not done(status) and time.monotonic() < deadline:
        time.sleep(0.25)
        status = _ops_status(net, url, ops_token)
    return status


def test_gstreamer_webrtcbin_publishes_h264_and_opus_goes_on_air_and_deletes_its_session():
    publish, ops = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    with two_namespaces() as net:
        origin = net.start_launchkit("origin", env={"LAUNCHKIT_PUBLISH_TOKEN": publish, "LAUNCHKIT_OPS_TOKEN": ops})
        client = subprocess.Popen(
            net.command(net.viewer, SYSTEM_PYTHON, str(PUBLISHER), f"{origin.url}/whip", publish, str(SECONDS)),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            live = _wait_for(net, origin.url, ops, lambda s: (_whip_input(s) or {}).get("frames", 0) > 45,
                             ON_AIR_TIMEOUT)
            output, errors = client.communicate(timeout=SECONDS + 10)
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
        released = _wait_for(net, origin.url, ops, lambda s: _whip_input(s) is None, RELEASE_TIMEOUT)
    lines = output.strip().splitlines()
    assert client.returncode == 0 and lines, errors[-3000:]
    published = json.loads(lines[-1])
    assert published["error"] is None and "connected" in published["connection"], published
    assert published["post"]["status"] == 201 and published["post"]["candidates"] >= 1, published
    ingest = _whip_input(live)
    assert ingest is not None, (published, errors[-3000:])
    assert (ingest["video_codec"], ingest["audio_codec"], ingest["role"]) == ("h264", "opus", "primary"), ingest
    assert (ingest["width"], ingest["height"]) == (320, 180) and ingest["frames"] > 45, ingest
    assert live["on_air"] == "primary", live
    assert published["delete"] == {"status": 200}, published
    assert _whip_input(released) is None, released
