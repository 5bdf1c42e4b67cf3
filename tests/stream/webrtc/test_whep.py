"""WHEP viewing end to end, in the real topology (tests/support/netns.py: servers in one network
namespace, viewers in another, joined by a veth pair; whep_scenario.py runs the viewers): Chromium
plays the landing page over WebRTC with no WebRTC-changing flag, 30 viewers on one edge, a frozen
viewer, and the fallback to LL-HLS."""

from __future__ import annotations

import statistics

import pytest

from tests.stream.webrtc.whep_scenario import MODULE, ORIGIN
from tests.support.netns import two_namespaces


@pytest.mark.browser
def test_chromium_plays_the_page_over_whep_with_h264_within_200_ms_of_capture():
    with two_namespaces() as net:
        origin = net.start_demo(*ORIGIN)
        edge = net.start_edge(origin.url, max_webrtc_viewers=5)
        result = net.run_scenario(MODULE, "whep-browser", origin.url, edge.url, timeout=120)
    first, last, edge_page = result["first"], result["last"], result["edge"]
    # A viewer's Chromium: it hides its address behind an mDNS name, and WebRTC connects anyway.
    assert result["candidates"] and all(c.endswith(".local") for c in result["candidates"]), result["candidates"]
    # Chromium lists VP8 first; the answer takes H.264, the rendition encoded once.
    assert result["offered"][0] == "VP8" and "H264" in result["offered"]
    assert first["engine"] == last["engine"] == "webrtc" and last["codec"] == "video/H264", result
    assert last["frames"] > first["frames"] + 30 and last["time"] > first["time"] + 2, result
    assert last["errors"] == [] and last["warnings"] == [] and result["console_errors"] == []
    # Through an edge too (its own WHEP, fed by the origin).
    assert edge_page["engine"] == "webrtc" and edge_page["codec"] == "video/H264", edge_page
    assert edge_page["errors"] == [] and edge_page["warnings"] == [], edge_page
    print(f"\nfirst picture {first['first_picture'] * 1000:.0f} ms after navigation, WebRTC on screen after "
          f"{first['webrtc_won'] * 1000:.0f} ms (demo); through the edge: {edge_page['first_picture'] * 1000:.0f} ms, "
          f"WebRTC after {edge_page['webrtc_won'] * 1000:.0f} ms")
    # Glass to glass: the capture time burned into the picture vs the wall clock when it is on screen.
    latencies = result["latencies"]
    print(f"\nWHEP glass-to-glass: median {statistics.median(latencies) * 1000:.0f} ms, "
          f"max {max(latencies) * 1000:.0f} ms over {len(latencies)} samples")
    assert len(latencies) >= 20 and statistics.median(latencies) <= 0.2 and max(latencies) < 1.0, latencies


def test_30_viewers_on_one_edge_get_99_percent_of_frames_from_one_encoder_and_one_feed():
    with two_namespaces(viewer_addresses=31) as net:
        origin = net.start_demo(*ORIGIN)
        edge = net.start_edge(origin.url, max_webrtc_viewers=35)
        result = net.run_scenario(MODULE, "whep-fanout", origin.url, edge.url, "30", "30", timeout=150)
    viewers, fps = result["viewers"], result["fps"]
    assert len(viewers) == 30
    for viewer in viewers:
        assert viewer["status"] == 201 and viewer["error"] is None and viewer["video_codec"] == "video/H264", viewer
        assert viewer["frames"] >= 0.99 * viewer["expected"] and viewer["expected"] >= 25 * fps, viewer
        assert viewer["keyframes"] >= 1 and viewer["audio_packets"] > 0
    # Encoded once: the WebRTC encoder made one frame per program frame, not one per viewer...
    expected_frames = result["elapsed"] * fps
    assert 0.8 * expected_frames <= result["webrtc_frames_encoded"] <= 1.1 * expected_frames, result
    # ...reaching the edge over one feed; the viewers are the edge's, none the origin's.
    assert result["during"] == {"edge_viewers": 30.0, "origin_viewers": 0.0, "origin_feeds": 1.0,
                                "status_viewers": 30}, result["during"]  # the page's count includes them
    worst = min(v["frames"] / v["expected"] for v in viewers)
    print(f"\n30 WHEP viewers on one edge: worst viewer got {worst:.1%} of frames; encoder frames "
          f"{result['webrtc_frames_encoded']:.0f} in {result['elapsed']:.1f} s")


def test_a_viewer_that_stops_reading_costs_the_others_nothing_and_memory_stays_bounded():
    with two_namespaces(viewer_addresses=6) as net:
        origin = net.start_demo(*ORIGIN)
        result = net.run_scenario(MODULE, "whep-frozen-viewer", origin.url, str(origin.process.pid), "15",
                                  timeout=120)
    for viewer in result["viewers"]:
        assert viewer["status"] == 201 and viewer["frames"] >= 0.99 * viewer["expected"], viewer
    growth = max(result["rss"]) - result["rss_before"]
    print(f"\nfrozen viewer: origin RSS grew {growth / 2**20:.1f} MiB over {len(result['rss'])} s; "
          f"frames dropped for slow senders: {result['frames_dropped']:.0f}")
    assert growth < 30 * 2**20, result["rss"]


@pytest.mark.browser
def test_full_webrtc_capacity_falls_back_to_ll_hls_without_an_error_then_webrtc_again():
    with two_namespaces() as net:
        origin = net.start_demo(*ORIGIN, "--max-webrtc-viewers", "1")
        result = net.run_scenario(MODULE, "whep-fallback", origin.url, timeout=150)
    states = result["states"]
    assert states["first"]["engine"] == "webrtc"
    # /api/status says WebRTC has no headroom: the next page plays LL-HLS without trying.
    second = states["second"]
    assert second["engine"] == "hls.js" and second["time"] > 2 and second["errors"] == [], second
    assert second["warnings"] == [], second
    # A page that tries anyway is refused (503 + Retry-After) and moves to LL-HLS by itself.
    forced = states["forced"]
    assert forced["engine"] == "hls.js" and forced["time"] > 2 and forced["errors"] == [], forced
    assert forced["warnings"] == ["WHEP 503"], forced
    assert result["second_messages"] == [""]  # nothing shown to either viewer
    assert states["third"]["engine"] == "webrtc" and states["third"]["codec"] == "video/H264", states["third"]
    # The refused page does not ask again before its Retry-After, even with a place free meanwhile.
    assert states["forced_later"]["engine"] == "hls.js", states["forced_later"]
