"""The origin's event lifecycle, operator console and replay, in process against the real app."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import time

import pytest
from aiohttp.test_utils import TestClient, TestServer

from launchkit.auth import Tokens
from launchkit.config import Config
from launchkit.event import EventStore, State, TransitionError
from launchkit.origin.app import create_app
from loadtests.target import launchkit_command, start_launchkit
from stream.ladder import Rendition

TOKENS = Tokens("publish-token-for-tests", "ops-token-for-the-tests")
OPS = {"Authorization": f"Bearer {TOKENS.ops}"}


def origin_config(data_dir, **overrides) -> Config:
    values = dict(
        port=0, title="Launch", ladder=(Rendition("180p", 320, 180, 300_000), Rendition("90p", 160, 90, 100_000)),
        fps=15, audio_bitrate=64, segment_duration=1.0, playlist_window=3, rtmp_port=None, srt_port=None,
        data_dir=data_dir, source="testcard",
    )
    return Config.for_role("origin", {**values, **overrides})


@pytest.fixture
async def origin(tmp_path):
    async with TestClient(TestServer(create_app(origin_config(tmp_path), TOKENS))) as client:
        yield client


async def _wait_for_media(client: TestClient, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while (await client.get("/readyz")).status != 200:
        assert time.monotonic() < deadline, "no media"
        await asyncio.sleep(0.2)


async def _event(client: TestClient, body: dict, headers: dict | None = None):
    return await client.post("/api/ops/event", json=body, headers=headers if headers is not None else OPS)


async def test_event_store_persists_and_refuses_impossible_transitions(tmp_path):
    store = EventStore.open(tmp_path, None)
    assert store.event.state is State.SCHEDULED
    await store.apply("live")
    with pytest.raises(TransitionError, match="cannot live an event that is live"):
        await store.apply("live")
    reopened = EventStore.open(tmp_path, None)
    assert reopened.event.state is State.LIVE and reopened.event.live_at == store.event.live_at


async def test_ops_api_needs_the_ops_token(origin):
    assert (await origin.get("/api/ops/status")).status == 401
    wrong = {"Authorization": "Bearer not-the-token"}
    assert (await origin.get("/api/ops/status", headers=wrong)).status == 401
    assert (await _event(origin, {"action": "live"}, headers={})).status == 401
    assert (await _event(origin, {"action": "live"}, headers={"Authorization": f"Bearer {TOKENS.publish}"})).status == 401
    response = await origin.get("/api/ops/status", headers=OPS)
    status = await response.json()
    assert response.status == 200 and status["event"]["state"] == "scheduled"
    assert status["inputs"][0]["protocol"] == "testcard" and status["publish"]["token"] == TOKENS.publish


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b"not json", "application/json", 400),
        (b'{"action": 3}', "application/json", 400),
        (b'{"action": "explode"}', "application/json", 400),
        (b'{"action": "schedule", "start_at": "tomorrow"}', "application/json", 400),
        (b'{"action": "schedule", "start_at": "2030-01-01T10:00:00"}', "application/json", 400),
        (b'{"action": "end"}', "application/json", 409),
        (b"action=live", "application/x-www-form-urlencoded", 415),
        (b'{"action": "live", "pad": "' + b"x" * 5000 + b'"}', "application/json", 413),
    ],
)
async def test_bad_event_requests_get_a_clear_4xx_and_change_nothing(origin, body, content_type, expected):
    response = await origin.post("/api/ops/event", data=body, headers={**OPS, "Content-Type": content_type})
    assert response.status == expected, await response.text()
    assert "Traceback" not in await response.text()
    status = await (await origin.get("/api/ops/status", headers=OPS)).json()
    assert status["event"]["state"] == "scheduled" and status["event"]["start_at"] is None


async def test_scheduled_event_counts_down_and_hides_the_rehearsal(origin):
    await _wait_for_media(origin)
    response = await _event(origin, {"action": "schedule", "start_at": "2030-06-01T14:00:00+02:00"})
    assert response.status == 200
    status = await (await origin.get("/api/status")).json()
    assert status["event"]["state"] == "scheduled" and status["event"]["starts_in"] > 0
    assert status["recommended"]["url"] is None
    page = await (await origin.get("/")).text()
    assert "Scheduled" in page and 'datetime="2030-06-01T14:00:00+02:00"' in page
    # The rehearsal feed is the operator's preview, not the viewers'.
    assert (await origin.get("/hls/index.m3u8")).status == 404
    assert (await origin.get("/hls/index.m3u8", headers=OPS)).status == 200


async def test_live_then_ended_serves_the_recorded_replay(origin, tmp_path):
    await _wait_for_media(origin)
    assert (await _event(origin, {"action": "live"})).status == 200
    assert (await origin.get("/hls/index.m3u8")).status == 200
    assert (await origin.get("/replay/index.m3u8")).status == 404
    await asyncio.sleep(3.5)
    assert (await _event(origin, {"action": "end"})).status == 200
    status = await (await origin.get("/api/status")).json()
    assert status["event"]["state"] == "ended" and status["replay"]["available"]
    assert status["recommended"]["url"] == "/replay/index.m3u8"
    assert (await origin.get("/hls/index.m3u8")).status == 404
    multivariant = await (await origin.get("/replay/index.m3u8")).text()
    assert "180p/index.m3u8" in multivariant and "90p/index.m3u8" in multivariant
    vod = await (await origin.get("/replay/180p/index.m3u8")).text()
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in vod and vod.rstrip().endswith("#EXT-X-ENDLIST")
    assert vod.count(".m4s") >= 3
    # ffprobe decodes the replay from start to end over HTTP.
    url = f"http://{origin.host}:{origin.port}/replay/index.m3u8"
    result = await asyncio.to_thread(
        subprocess.run,
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "json", url],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert float(json.loads(result.stdout)["format"]["duration"]) >= 3.0
    assert (tmp_path / "recording" / "index.sqlite3").exists()


async def test_replay_names_are_checked_against_the_recording(origin):
    await _wait_for_media(origin)
    await _event(origin, {"action": "live"})
    await asyncio.sleep(1.5)
    await _event(origin, {"action": "end"})
    for path in ("/replay/180p/..%2findex.sqlite3", "/replay/180p/999.m4s", "/replay/nope/index.m3u8",
                 "/replay/180p/index.sqlite3"):
        assert (await origin.get(path)).status == 404, path


async def test_console_login_sets_a_session_cookie(origin):
    page = await origin.get("/ops")
    assert "Ops token" in await page.text()
    refused = await origin.post("/ops/login", data={"token": "wrong"}, allow_redirects=False)
    assert refused.status == 401 and "launchkit_ops" not in refused.cookies
    accepted = await origin.post("/ops/login", data={"token": TOKENS.ops}, allow_redirects=False)
    assert accepted.status == 303
    cookie = accepted.cookies["launchkit_ops"]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and TOKENS.ops not in cookie.value
    assert (await origin.get("/api/ops/status")).status == 200  # the client keeps the cookie
    assert "Operator console" in await (await origin.get("/ops")).text()
    await origin.post("/ops/logout", allow_redirects=False)
    assert (await origin.get("/api/ops/status")).status == 401


ORIGIN_ARGS = ("--ladder", "180p:320x180:300", "--fps", "15", "--segment-duration", "1", "--rtmp-port", "off",
               "--srt-port", "off", "--source", "testcard")


def _event_cli(origin, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        launchkit_command("event", *args, "--origin", origin.url), capture_output=True, text=True, timeout=30,
        env={**os.environ, "LAUNCHKIT_OPS_TOKEN": TOKENS.ops},
    )


async def test_operator_pages_load_their_own_files_versioned_and_cached_like_the_landing_s(origin):
    """The console, the publish page and the wall moderation live beside the code that serves them:
    their own scripts and styles come from /ops/static/ and /ops/wall/static/, what they share with
    the landing (base.html's style and icon, hls.js, wall.css) from /static/, all versioned."""
    own = {"/ops": {"/ops/static/ops.js"}, "/ops/publish": {"/ops/static/publish.js", "/ops/static/publish.css"},
           "/ops/wall": {"/ops/wall/static/wall-moderation.js"}}
    for page, files in own.items():
        response = await origin.get(page, headers=OPS)
        assert response.status == 200 and "script-src 'self'" in response.headers["Content-Security-Policy"], page
        urls = re.findall(r'(?:src|href)="(/[^"?]*static/[^"]*)"', await response.text())
        assert files <= {url.partition("?")[0] for url in urls}, (page, urls)
        for url in urls:
            assert re.fullmatch(r"(/ops(/wall)?)?/static/[\w./-]+\?v=\w+", url), (page, url)
            asset = await origin.get(url)
            assert asset.status == 200 and asset.headers["Cache-Control"] == "public, max-age=31536000, immutable", url
            if url.startswith("/ops/"):
                unversioned = await origin.get(url.partition("?")[0])
                assert unversioned.headers["Cache-Control"] == "public, max-age=300", url
    for moved in ("ops.js", "publish.js", "publish.css", "wall-moderation.js"):
        assert (await origin.get(f"/static/{moved}")).status == 404, moved  # landing/ is what viewers see


def test_event_state_survives_an_origin_restart_driven_by_the_cli(tmp_path):
    env = {"LAUNCHKIT_PUBLISH_TOKEN": TOKENS.publish, "LAUNCHKIT_OPS_TOKEN": TOKENS.ops}
    args = (*ORIGIN_ARGS, "--data-dir", str(tmp_path / "data"))
    with start_launchkit("origin", *args, env=env, log_dir=tmp_path) as origin:
        scheduled = _event_cli(origin, "schedule", "--start-at", "2030-06-01T14:00:00Z")
        assert scheduled.returncode == 0, scheduled.stderr
        assert json.loads(scheduled.stdout)["start_at"] == "2030-06-01T14:00:00+00:00"
        assert _event_cli(origin, "live").returncode == 0
        again = _event_cli(origin, "live")
        assert again.returncode == 1 and "cannot live an event that is live" in again.stderr
    with start_launchkit("origin", *args, env=env, log_dir=tmp_path) as restarted:
        status = _event_cli(restarted, "status")
        assert status.returncode == 0 and json.loads(status.stdout)["state"] == "live"
        assert json.loads(status.stdout)["start_at"] == "2030-06-01T14:00:00+00:00"


def test_event_cli_without_the_ops_token_is_a_clear_usage_error():
    env = {k: v for k, v in os.environ.items() if k != "LAUNCHKIT_OPS_TOKEN"}
    result = subprocess.run(launchkit_command("event", "status"), capture_output=True, text=True, timeout=30, env=env)
    assert result.returncode == 2 and "LAUNCHKIT_OPS_TOKEN" in result.stderr
