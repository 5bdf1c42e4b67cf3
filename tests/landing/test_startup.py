"""Time to first picture on the networks viewers are on (#13), in the real topology
(tests/support/netns.py): 20 first visits of the landing page per case, by Chromium as a viewer runs
it (no WebRTC-changing flag), from the viewer's namespace; the page plays LL-HLS at once and
switches to WebRTC when its first frame is decoded.

- UDP open: WebRTC on screen 3 s after navigation in at least 95 % of loads.
- UDP dropped (a firewall drops every UDP packet of the viewer's network), coturn beside the
  server: LL-HLS first, then WebRTC relayed over TURN/TCP.
- UDP dropped, no TURN: LL-HLS, with no wait for the WebRTC attempt that cannot succeed.

The first picture, in every case: each load of the page is followed by a load of the same page
forced to LL-HLS (`?protocol=hls`: nothing raced beside it), on the same machine in the same
minutes, and the page's p50 and p95 must stay within REFERENCE_RATIO of that reference's: racing
WebRTC beside LL-HLS costs the first picture little (the ratios allow for two cores shared by the
encoder, the servers and two Chromium pipelines; on this machine under the suite's load they were
1.0–1.2). And it stays under
FIRST_PICTURE_CEILING on any machine, far below the 6 s WebRTC start timeout a serial fallback
costs (7.2 s before #13). The issue's absolute figure (p95 within a second) depends on the machine
(here the encoder, the servers and Chromium share two cores, and CI machines are slower): the
startup benchmark measures it (loadtests/bench/startup.py, the same cases watched to 5 s;
loadtests/RESULTS.md).
"""

from __future__ import annotations

import secrets

import pytest

from launchkit.webrtc.turn import SECRET_ENV
from tests.stream.webrtc.coturn import start_coturn
from tests.stream.webrtc.whep_scenario import ORIGIN
from tests.support.netns import Topology, dropped_udp_packets, two_namespaces

pytestmark = pytest.mark.browser
LOADS = 20
REFERENCE_RATIO = {"first_frame_p50": 1.25, "first_frame_p95": 1.4}  # page / LL-HLS-only page, same run
FIRST_PICTURE_CEILING = 2.0  # seconds from navigation, p95, on any machine that runs the suite


def first_visits(net: Topology, url: str, watch: float) -> dict:
    result = net.run_scenario("loadtests.startup", url, "--loads", str(LOADS), "--watch", str(watch),
                              "--reference", url + "?protocol=hls", timeout=LOADS * (watch + 32) + 30)
    reference = result["reference"]
    print(f"\n{url}: first picture p50 {result['first_frame_p50']} s, p95 {result['first_frame_p95']} s, "
          f"max {result['first_frame_max']} s over {result['pictures']}/{result['loads']} loads (LL-HLS-only "
          f"page: p50 {reference['first_frame_p50']} s, p95 {reference['first_frame_p95']} s); WebRTC on "
          f"screen at {result['webrtc_at']}, LL-HLS at {result['hls_at']}; relayed {result['relayed']} "
          f"{result['relay_protocols']}; WebRTC outcomes {result['outcomes']}")
    assert result["pictures"] == LOADS and result["errors"] == 0, result
    assert reference["pictures"] == LOADS and reference["errors"] == 0, reference
    for figure, ratio in REFERENCE_RATIO.items():
        assert result[figure] <= ratio * reference[figure], (figure, result)
    assert result["first_frame_p95"] <= FIRST_PICTURE_CEILING, result
    return result


def test_udp_open_first_picture_as_fast_as_ll_hls_and_webrtc_by_3_s():
    with two_namespaces() as net:
        demo = net.start_demo(*ORIGIN)
        result = first_visits(net, demo.url + "/", watch=3)
    assert result["webrtc_at"]["3s"] >= 0.95, result
    assert result["relayed"] == 0, "UDP is open: no relay should be needed"


def test_udp_dropped_with_turn_plays_ll_hls_first_then_webrtc_relayed_over_tcp():
    with two_namespaces(udp_dropped=True) as net:
        secret = secrets.token_hex(16)
        coturn = start_coturn(net.server_ip, secret, net.directory, namespace=net.server)
        try:
            demo = net.start_demo(*ORIGIN, "--turn-urls", coturn.urls()[0], env={SECRET_ENV: secret})
            result = first_visits(net, demo.url + "/", watch=3)
            dropped = dropped_udp_packets(net)
        finally:
            coturn.stop()
    assert result["webrtc_at"]["3s"] >= 0.95 and result["relayed"] >= 0.95 * LOADS, result
    assert result["relay_protocols"] == ["tcp"], result
    assert dropped["egress"] > 0, "the firewall saw no UDP: the case did not test a UDP-blocked network"


def test_udp_dropped_without_turn_plays_ll_hls_at_once():
    with two_namespaces(udp_dropped=True) as net:
        demo = net.start_demo(*ORIGIN)
        result = first_visits(net, demo.url + "/", watch=2)
        dropped = dropped_udp_packets(net)
    assert result["hls_at"]["2s"] == 1.0, [load for load in result["each"] if load["engines"].get("2s") != "hls.js"]
    assert dropped["egress"] > 0, "the firewall saw no UDP: the case did not test a UDP-blocked network"
