"""Headless Chromium publishes its fake camera from publish.html over WHIP, with H.264 and with
VP8, and the program puts it on air. Runs in a private network namespace (see scenario.py), so
127.0.0.1 is the only address either side can gather or reach."""

from __future__ import annotations

import pytest

from tests.stream.webrtc.scenario import run_in_private_network

pytestmark = pytest.mark.browser


def test_browser_publishes_h264_and_vp8_and_stop_frees_the_slot():
    result = run_in_private_network("whip-browser", "video/H264", "video/VP8@cross-origin")
    assert result["interfaces"] == ["lo"], "not isolated: the namespace has other interfaces"
    assert result["console_errors"] == []
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
    assert result["runs"]["video/VP8@cross-origin"]["whip_url"].startswith("http://127.0.0.1:")


def test_console_publish_page_feeds_the_origin_and_viewers_play_the_hls():
    result = run_in_private_network("origin-whip", "video/H264", "video/VP8", timeout=120)
    for codec, name in (("video/H264", "h264"), ("video/VP8", "vp8")):
        outcome = result["runs"][codec]
        assert outcome["input"]["video_codec"] == name and outcome["input"]["protocol"] == "whip", outcome
        assert outcome["viewer_errors"] == [] and outcome["viewer_time"] > 2, outcome
        probe = outcome["ffprobe"]
        assert probe["returncode"] == 0 and probe["stderr"] == "" and probe["codecs"] == ["aac", "h264"], probe
