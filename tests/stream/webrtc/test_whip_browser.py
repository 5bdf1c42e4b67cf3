"""Headless Chromium publishes its fake camera from publish.html over WHIP, with H.264 and with
VP8, and the program puts it on air. In the real topology (tests/support/netns.py): the page and
the WHIP endpoint in the server's namespace, Chromium in the viewer's, across the veth pair, with
no WebRTC-changing flag (the fake camera only)."""

from __future__ import annotations

import pytest

from tests.support.netns import two_namespaces

pytestmark = pytest.mark.browser
MODULE = "tests.stream.webrtc.scenario"


def test_browser_publishes_h264_and_vp8_and_stop_frees_the_slot():
    with two_namespaces() as net:
        result = net.run_scenario(MODULE, "whip-browser", "video/H264", "video/VP8@cross-origin", side="server")
    assert sorted(result["interfaces"]) == ["eth0", "lo"], "not the server's namespace of the topology"
    assert result["publishers"] == [net.viewer_ip], "the publisher was not Chromium in the viewer's namespace"
    assert result["console_errors"] == []
    # Over plain HTTP from another machine the browser offers no camera: the operator is told why.
    insecure = result["insecure"]
    assert insecure["state"] == "failed" and "https://" in insecure["status"], insecure
    for run, mime, name in (("video/H264", "video/H264", "h264"), ("video/VP8@cross-origin", "video/VP8", "vp8")):
        outcome = result["runs"][run]
        ingest, publisher = outcome["input"], outcome["publisher"]
        assert ingest["frames"] > 20, outcome
        assert (ingest["video_codec"], ingest["audio_codec"]) == (name, "opus"), outcome
        assert (ingest["protocol"], ingest["role"]) == ("whip", "primary")
        assert ingest["bytes"] > 0
        assert outcome["on_air"] == "primary" and outcome["sessions_while_live"] == 1
        assert publisher["state"] == "live" and publisher["codec"] == mime and publisher["errors"] == [], outcome
        # Stop: the page DELETEs its session (cross-origin too, through the CORS preflight).
        assert outcome["released"] and outcome["closed"]
        assert outcome["after_stop"]["state"] == "stopped" and outcome["after_stop"]["errors"] == [], outcome
    assert result["runs"]["video/VP8@cross-origin"]["whip_url"].startswith(f"https://{net.server_ip}:")


def test_console_publish_page_feeds_the_origin_and_viewers_play_the_hls():
    with two_namespaces() as net:
        result = net.run_scenario(MODULE, "origin-whip", "video/H264", "video/VP8", side="server", timeout=120)
    for codec, name in (("video/H264", "h264"), ("video/VP8", "vp8")):
        outcome = result["runs"][codec]
        assert outcome["input"]["video_codec"] == name and outcome["input"]["protocol"] == "whip", outcome
        assert outcome["viewer_errors"] == [] and outcome["viewer_time"] > 2, outcome
        assert outcome["viewer_engine"] in {"hls.js", "native"}, outcome
        probe = outcome["ffprobe"]
        assert probe["returncode"] == 0 and probe["stderr"] == "" and probe["codecs"] == ["aac", "h264"], probe
