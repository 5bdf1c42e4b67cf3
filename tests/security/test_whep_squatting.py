"""Item 11 of the hardening issue, WHEP part: offers that never connect cannot keep viewers out.
In the real topology (tests/support/netns.py; whep_scenario.py `whep-squatters` in the viewer's
namespace): a demo with 20 WebRTC places gets 100 well-formed offers from 25 of the viewer
namespace's addresses whose only ICE candidate swallows every check; a few seconds later a real
(aiortc) viewer asks for a place from an address of its own."""

from __future__ import annotations

import pytest

from tests.stream.webrtc.whep_scenario import MODULE, ORIGIN
from tests.support.logs import assert_no_traceback
from tests.support.netns import two_namespaces

pytestmark = pytest.mark.security


def test_offers_that_never_connect_hold_a_bounded_share_and_a_real_viewer_still_plays():
    with two_namespaces(viewer_addresses=26) as net:
        origin = net.start_demo(*ORIGIN, "--max-webrtc-viewers", "20")
        result = net.run_scenario(MODULE, "whep-squatters", origin.url, "100", "25", timeout=120)
        log = origin.log()
    statuses, after, viewer = result["statuses"], result["after_flood"], result["viewer"]
    print(f"\nsquatters: {statuses.count(201)} offers answered 201, {statuses.count(503)} refused 503; "
          f"after the flood {after['viewers']} sessions, headroom {after['headroom']}/{after['max_viewers']}; "
          f"{result['pending_refusals']:.0f} squatters given up for a viewer; the viewer, {result['viewer_after']:.1f} s "
          f"after the flood: {viewer['status']}, {viewer['frames']} frames, first after {viewer['first_frame_after']} s")
    assert set(statuses) <= {201, 503}  # refused with a clear answer, never an error
    assert after["viewers"] == after["max_viewers"] == 20  # the squatters took every place...
    # ...and the old code kept them 15 s (the connect timeout): the viewer got a 503.
    assert viewer["status"] == 201 and viewer["error"] is None and viewer["frames"] >= 30, viewer
    assert result["pending_refusals"] >= 1 and result["viewer_after"] < 15
    assert_no_traceback(log)
