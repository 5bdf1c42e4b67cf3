"""Item 1 of the hardening issue: the embargo holds. Before the event is live, nothing of the stream
leaves the origin: not the HLS (404), not the WebRTC feed (edges only, with the edge token, and it
carries no packet until the event is live), not WHEP at an edge. Real origin and edge processes;
the feed is a WebSocket (no ICE), so this runs in the machine's own namespace."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from launchkit.auth import FailedCredentials, Tokens
from launchkit.web import middleware
from launchkit.web.credentials import edge_credential
from launchkit.webrtc.feed import FeedServer
from loadtests.target import start_edge, start_launchkit, stop_all
from stream.bus import PacketBus
from stream.webrtc.feed import PATH as FEED
from tests.support.client import fetch, fetch_metrics
from tests.support.environment import EDGE_TOKEN
from tests.support.logs import assert_no_traceback

pytestmark = pytest.mark.security

OPS_TOKEN = "embargo-test-ops-token-5c1e8a"
ORIGIN_ARGS = ("--data-dir", "{data}", "--source", "testcard", "--rtmp-port", "off", "--srt-port", "off",
               "--ladder", "180p:320x180:300", "--fps", "15", "--segment-duration", "1",
               "--webrtc", "320x180:300", "--max-webrtc-viewers", "10")


@pytest.fixture
def scheduled_origin(tmp_path):
    args = [arg.format(data=tmp_path / "data") for arg in ORIGIN_ARGS]
    origin = start_launchkit("origin", *args, env={"LAUNCHKIT_OPS_TOKEN": OPS_TOKEN}, log_dir=tmp_path)
    yield origin
    stop_all(origin)


def _ws_url(base: str) -> str:
    return base.replace("http://", "ws://") + FEED


async def _packets(url: str, token: str | None, seconds: float) -> tuple[int | None, int]:
    """(HTTP status of a refused handshake or None, packets received in `seconds`)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session:
        try:
            async with session.ws_connect(_ws_url(url), headers=headers) as ws:
                received, deadline = 0, time.monotonic() + seconds
                while (left := deadline - time.monotonic()) > 0:
                    try:
                        message = await ws.receive(timeout=left)
                    except asyncio.TimeoutError:
                        break
                    if message.type == aiohttp.WSMsgType.BINARY:
                        received += 1
                    elif message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                        break
                return None, received
        except aiohttp.WSServerHandshakeError as error:
            return error.status, 0


def _go_live(origin) -> None:
    request = urllib.request.Request(origin.url + "/api/ops/event", data=json.dumps({"action": "live"}).encode(),
                                     headers={"Authorization": f"Bearer {OPS_TOKEN}",
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def _webrtc_status(url: str) -> dict:
    return json.loads(fetch(url + "/api/status")[2])["webrtc"]


async def test_the_feed_is_for_edges_and_silent_until_the_event_is_live(scheduled_origin):
    origin = scheduled_origin
    assert fetch(origin.url + "/hls/index.m3u8")[0] == 404  # the embargo as viewers see it
    # Operators preview it on their own paths (which the ops host routes to the origin).
    assert fetch(origin.url + "/ops/hls/index.m3u8")[0] == 401
    status, _, playlist = fetch(origin.url + "/ops/hls/index.m3u8", headers={"Authorization": f"Bearer {OPS_TOKEN}"})
    assert status == 200 and b"#EXT-X-STREAM-INF" in playlist
    assert await _packets(origin.url, None, 1) == (401, 0)  # anonymous: refused before the upgrade
    started = time.monotonic()
    assert await _packets(origin.url, "not-the-edge-token-at-all-1234", 1) == (401, 0)
    assert time.monotonic() - started >= 0.9, "a failed credential is answered after a delay"

    status, before_live = await _packets(origin.url, EDGE_TOKEN, 3)
    print(f"\nfeed before the event is live: {before_live} packets in 3 s (the old code sent ~180)")
    assert status is None and before_live == 0
    assert _webrtc_status(origin.url)["available"] is False

    _go_live(origin)
    status, after_live = await _packets(origin.url, EDGE_TOKEN, 4)
    print(f"feed once live: {after_live} packets in 4 s")
    assert status is None and after_live > 20

    _, _, body = fetch_metrics(origin.url)
    assert 'launchkit_auth_failures_total{credential="edge"} 1.0' in body.decode()  # the wrong token, not none
    assert_no_traceback(origin.log())


async def test_an_edge_offers_no_webrtc_before_the_event_is_live(scheduled_origin, tmp_path):
    origin = scheduled_origin
    edge = start_edge(origin.url, tmp_path, max_webrtc_viewers=5, wait_ready=False)
    try:
        deadline = time.monotonic() + 15
        while "WebRTC feed connected" not in edge.log():
            assert time.monotonic() < deadline, edge.log()
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.5)  # a status poll or two: the edge knows the origin's state
        assert _webrtc_status(edge.url)["available"] is False
        offer = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
        status, _, body = _post(edge.url + "/whep", offer)
        assert status == 503 and b"not live" in body

        _go_live(origin)
        deadline = time.monotonic() + 15
        while not _webrtc_status(edge.url)["available"]:
            assert time.monotonic() < deadline, "the edge offers WebRTC once the origin is live"
            await asyncio.sleep(0.3)
        assert_no_traceback(edge.log())
    finally:
        stop_all(edge)


def _post(url: str, offer: str) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, data=offer.encode(), headers={"Content-Type": "application/sdp"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


async def test_an_edge_with_the_wrong_token_gets_no_feed_and_says_why(scheduled_origin, tmp_path, monkeypatch):
    origin = scheduled_origin
    _go_live(origin)
    monkeypatch.setenv("LAUNCHKIT_EDGE_TOKEN", "a-forged-edge-token-9d8c7b6a")
    edge = start_edge(origin.url, tmp_path, max_webrtc_viewers=5, wait_ready=False)
    try:
        deadline = time.monotonic() + 15
        while "refused this edge's credential" not in edge.log():
            assert time.monotonic() < deadline, edge.log()
            await asyncio.sleep(0.2)
        assert "WebRTC feed connected" not in edge.log()
        assert _webrtc_status(edge.url)["available"] is False
        assert "a-forged-edge-token" not in edge.log() and "a-forged-edge-token" not in origin.log()
    finally:
        stop_all(edge)


async def test_feed_connections_are_capped_and_guessing_is_locked_out():
    tokens = Tokens("publish-token-9f8e7d6c5b4a", "ops-token-1a2b3c4d5e6f7a")
    failures = FailedCredentials(delay=0.0)
    feed = FeedServer(PacketBus(), lambda reason: None, authorize=edge_credential(tokens, failures),
                      live=lambda: True, max_downstreams=2)
    app = web.Application(middlewares=[middleware.observe])
    app.router.add_get(FEED, feed.handle)
    async with TestClient(TestServer(app)) as client:
        good = {"Authorization": f"Bearer {tokens.edge}"}
        first = await client.ws_connect(FEED, headers=good)
        second = await client.ws_connect(FEED, headers=good)
        refused = await client.get(FEED, headers={**good, "Connection": "Upgrade", "Upgrade": "websocket",
                                                  "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "x" * 22 + "=="})
        assert refused.status == 503 and refused.headers["Retry-After"]
        await first.close()
        await second.close()

        for _ in range(10):
            assert (await client.get(FEED, headers={"Authorization": "Bearer guess-0123456789abcdef"})).status == 401
        locked = await client.get(FEED, headers=good)  # even the right token: the client is locked out
        assert locked.status == 429 and int(locked.headers["Retry-After"]) > 0
        assert "retry in" in (await locked.json())["error"]
