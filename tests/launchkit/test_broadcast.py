"""A real broadcast end to end: the ffmpeg CLI publishes to a running origin, viewers get HLS."""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.request

import pytest
from playwright.sync_api import sync_playwright

from loadtests.browser import CHROMIUM, CHROMIUM_FLAGS, PLAYER_STATE
from loadtests.target import LocalDemo, free_port, start_launchkit
from tests.support.client import fetch, fetch_metrics, wait_for

PUBLISH, OPS = "publish-token-for-tests", "ops-token-for-the-tests"
ENV = {"LAUNCHKIT_PUBLISH_TOKEN": PUBLISH, "LAUNCHKIT_OPS_TOKEN": OPS}
LADDER = ("--ladder", "360p:640x360:600,180p:320x180:200", "--fps", "15", "--segment-duration", "1")
PUBLISHER_INPUT = ["-re", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=15", "-f", "lavfi",
                   "-i", "sine=frequency=440:sample_rate=48000", "-c:v", "libx264", "-preset", "veryfast",
                   "-tune", "zerolatency", "-g", "15", "-c:a", "aac"]


def ops(origin: LocalDemo, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        origin.url + path, data=json.dumps(body).encode() if body else None,
        headers={"Authorization": f"Bearer {OPS}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())




def on_air(origin: LocalDemo) -> str:
    return ops(origin, "/api/ops/status")["on_air"]


def ffprobe_renditions(origin: LocalDemo) -> dict[str, dict]:
    """Decode a few seconds of every rendition the multivariant playlist lists."""
    _, _, multivariant = fetch(origin.url + "/hls/index.m3u8")
    results = {}
    for uri in [line for line in multivariant.decode().splitlines() if line.endswith("index.m3u8")]:
        result = subprocess.run(
            ["ffprobe", "-v", "error", "-read_intervals", "%+3", "-show_entries", "stream=codec_name,width:frame=media_type",
             "-of", "json", f"{origin.url}/hls/{uri}"],
            capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 0 and result.stderr == "", (uri, result.stderr)
        results[uri.split("/")[0]] = json.loads(result.stdout)
    return results


@pytest.fixture
def origin(tmp_path):
    srt_port, rtmp_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    with start_launchkit("origin", *LADDER, "--rtmp-port", str(rtmp_port), "--srt-port", str(srt_port),
                         "--data-dir", str(tmp_path / "data"), env=ENV, log_dir=tmp_path) as running:
        running.srt_port, running.rtmp_port = srt_port, rtmp_port
        ops(running, "/api/ops/event", {"action": "live"})
        yield running


def test_srt_publisher_goes_on_air_and_every_rendition_decodes(origin):
    url = f"srt://127.0.0.1:{origin.srt_port}?mode=caller&passphrase={PUBLISH}&pbkeylen=16"
    publisher = subprocess.Popen(["ffmpeg", "-nostdin", "-loglevel", "error", *PUBLISHER_INPUT, "-t", "20",
                                  "-f", "mpegts", url], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: on_air(origin) == "primary", 15, "the SRT publisher on air")
        status = ops(origin, "/api/ops/status")
        (publisher_stats,) = status["inputs"]
        assert (publisher_stats["protocol"], publisher_stats["video_codec"]) == ("srt", "h264")
        decoded = ffprobe_renditions(origin)
        assert set(decoded) == {"360p", "180p"}
        for rendition, probe in decoded.items():
            assert {s["codec_name"] for s in probe["streams"]} == {"h264", "aac"}, rendition
            assert sum(f["media_type"] == "video" for f in probe["frames"]) >= 30, rendition
    finally:
        publisher.kill()
        publisher.wait()


def test_srt_with_a_wrong_passphrase_is_refused(origin):
    url = f"srt://127.0.0.1:{origin.srt_port}?mode=caller&passphrase=not-the-publish-token&pbkeylen=16"
    publisher = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", *PUBLISHER_INPUT, "-t", "3",
                                "-f", "mpegts", url], capture_output=True, timeout=30)
    assert publisher.returncode != 0
    assert on_air(origin) == "slate" and ops(origin, "/api/ops/status")["inputs"] == []
    _, _, metrics = fetch_metrics(origin.url)
    assert 'launchkit_ingest_rejected_total{protocol="srt",reason="bad_key"} 1.0' in metrics.decode()
    assert PUBLISH not in origin.log() and "not-the-publish-token" not in origin.log()


def test_publish_urls_in_the_console_are_the_ones_that_work(origin):
    publish = ops(origin, "/api/ops/status")["publish"]
    assert publish["srt"] == f"srt://127.0.0.1:{origin.srt_port}?mode=caller&passphrase={PUBLISH}&pbkeylen=16"
    assert publish["rtmp"] == f"rtmp://127.0.0.1:{origin.rtmp_port}/live/{PUBLISH}"
    assert publish["token"] == PUBLISH


def rtmp_publisher(origin: LocalDemo, path: str, seconds: int = 60) -> subprocess.Popen:
    return subprocess.Popen(
        ["ffmpeg", "-nostdin", "-loglevel", "error", *PUBLISHER_INPUT, "-t", str(seconds), "-f", "flv",
         f"rtmp://127.0.0.1:{origin.rtmp_port}/{path}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("path", [f"live/{PUBLISH[:-1]}x", "live", f"other/{PUBLISH}"])
def test_rtmp_with_a_wrong_key_or_app_is_refused_before_any_media(origin, path):
    publisher = rtmp_publisher(origin, path, seconds=3)
    try:
        assert publisher.wait(timeout=30) != 0
    finally:
        publisher.kill()
    status = ops(origin, "/api/ops/status")
    assert status["on_air"] == "slate" and status["inputs"] == []
    _, _, metrics = fetch_metrics(origin.url)
    assert 'launchkit_ingest_rejected_total{protocol="rtmp",reason="bad_key"} 1.0' in metrics.decode()
    assert 'launchkit_ingest_frames_total{role="primary"}' not in metrics.decode()
    assert "refused" in origin.log().lower() and PUBLISH not in origin.log()


def test_publisher_loss_shows_the_slate_and_the_replay_covers_the_gap(origin, tmp_path):
    first = rtmp_publisher(origin, f"live/{PUBLISH}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            wait_for(lambda: on_air(origin) == "primary", 15, "the RTMP publisher on air")
            page = browser.new_page()
            page.goto(origin.url + "/")
            page.wait_for_function("() => document.getElementById('player').currentTime > 1", timeout=20_000)
            first.kill()  # the venue's uplink dies
            first.wait()
            to_slate = wait_for(lambda: on_air(origin) == "slate", 5, "the slate")
            assert to_slate <= 1.0  # the segment duration: viewers see the slate in the next segment
            watched = page.evaluate(PLAYER_STATE)["time"]
            page.wait_for_function(f"() => document.getElementById('player').currentTime > {watched + 2}",
                                   timeout=10_000)
            second = rtmp_publisher(origin, f"live/{PUBLISH}")
            try:
                wait_for(lambda: on_air(origin) == "primary", 15, "the publisher back on air")
                watched = page.evaluate(PLAYER_STATE)["time"]
                page.wait_for_function(f"() => document.getElementById('player').currentTime > {watched + 2}",
                                       timeout=10_000)
                state = page.evaluate(PLAYER_STATE)
                assert state["errors"] == [] and state["error"] is None, state
            finally:
                second.kill()
                second.wait()
        finally:
            browser.close()
    ended = ops(origin, "/api/ops/event", {"action": "end"})
    assert ended["state"] == "ended"
    live_seconds = ended["ended_at"] - ended["live_at"]
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "frame=media_type,pts_time", "-of", "json",
         origin.url + "/replay/360p/index.m3u8"], capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    video = [float(f["pts_time"]) for f in json.loads(result.stdout)["frames"] if f["media_type"] == "video"]
    # One continuous timeline from start to end: publisher, slate, publisher again. The publisher
    # was gone for over 2 s; a step of a few frames can only be an encoder skipping frames under load.
    steps = [b - a for a, b in zip(video, video[1:])]
    assert max(steps) < 0.5 and video[-1] - video[0] >= live_seconds - 3
    _, _, vod = fetch(origin.url + "/replay/360p/index.m3u8")
    assert b"#EXT-X-DISCONTINUITY" not in vod and vod.rstrip().endswith(b"#EXT-X-ENDLIST")


def test_operator_console_shows_the_publisher_and_controls_the_event(origin):
    publisher = rtmp_publisher(origin, f"live/{PUBLISH}")
    try:
        wait_for(lambda: on_air(origin) == "primary", 15, "the RTMP publisher on air")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            try:
                page = browser.new_page()
                page.goto(origin.url + "/ops")
                page.fill("#token", OPS)
                page.click("button[type=submit]")
                page.wait_for_function("() => document.getElementById('on-air').textContent === 'primary'",
                                       timeout=10_000)
                row = page.locator("#inputs tr").first.inner_text()
                assert "rtmp" in row and "h264 + aac" in row and "640x360" in row, row
                assert page.locator("#encoders tr").count() == 2
                assert f"rtmp://127.0.0.1:{origin.rtmp_port}/live/{PUBLISH}" in page.locator("#publish").inner_text()
                page.once("dialog", lambda dialog: dialog.accept())
                page.click("#end-event")
                page.wait_for_function("() => document.getElementById('event-state').textContent === 'ended'",
                                       timeout=10_000)
            finally:
                browser.close()
    finally:
        publisher.kill()
        publisher.wait()
    assert ops(origin, "/api/ops/status")["event"]["state"] == "ended"
