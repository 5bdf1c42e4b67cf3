"""Bad requests get a clear 4xx, touch no file, and never see a traceback."""

from __future__ import annotations

import sys
import threading

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from launchkit.auth import Tokens
from launchkit.config import Config
from launchkit.origin.app import create_app
from launchkit.web import middleware
from stream.ladder import Rendition
from tests.support.bad_urls import bad_media_targets
from tests.support.client import raw_get

_file_access: list[tuple] = []
_watching = threading.Event()


def _audit(event: str, args: tuple) -> None:
    if _watching.is_set() and event in ("open", "os.listdir", "os.scandir"):
        _file_access.append((event, args[0] if args else None))


sys.addaudithook(_audit)

# The corpus both roles share, and names that are well formed but name nothing this origin made.
BAD_TARGETS = [
    *bad_media_targets("180p"),
    "/hls/180p/123.m4s",
    "/hls/180p/init-000000000000.mp4",
    "/hls/720p/index.m3u8",
]


MEDIA_THREADS = ("source-", "encoder-", "program")


def small_config(**overrides) -> Config:
    values = dict(
        port=0, title="Test", description="Test event", ladder=(Rendition("180p", 320, 180, 300_000),), fps=15,
        audio_bitrate=64, segment_duration=1.0, playlist_window=3,
    )
    return Config.for_role("demo", {**values, **overrides})


def demo_app(config: Config | None = None):
    return create_app(config or small_config(), Tokens.from_values(None, None))


@pytest.fixture
async def client():
    async with TestClient(TestServer(demo_app())) as test_client:
        yield test_client


async def test_unknown_paths_are_404(client):
    for path in ("/nope", "/api/nope", "/hls/", "/hls/index.m3u8/extra", "/static/nope.js"):
        response = await client.get(path)
        assert response.status == 404, path


@pytest.mark.parametrize("target", BAD_TARGETS)
async def test_bad_media_names_are_404_without_touching_the_filesystem(client, target):
    _file_access.clear()
    _watching.set()
    try:
        status, body = await raw_get(client.host, client.port, target)
    finally:
        _watching.clear()
    assert status == 404, (target, body)
    assert b"Traceback" not in body
    assert _file_access == []


async def test_static_files_cannot_escape_their_directory(client):
    for target in ("/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2fapp.py"):
        status, body = await raw_get(client.host, client.port, target)
        assert status in (403, 404), target
        assert b"LandingPage" not in body


async def test_an_unexpected_error_is_a_500_without_traceback():
    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("secret internals")

    app = web.Application(middlewares=[middleware.observe])
    app.router.add_get("/broken", broken)
    async with TestClient(TestServer(app)) as test_client:
        response = await test_client.get("/broken")
        body = await response.text()
    assert response.status == 500
    assert "secret internals" not in body and "Traceback" not in body


async def test_page_renders_with_a_clear_message_before_the_stream_is_up(client):
    # The first segment exists only once the second keyframe is encoded (1 s in).
    page = await client.get("/")
    body = await page.text()
    assert page.status == 200
    assert "The stream has not started yet" in body
    status = await (await client.get("/api/status")).json()
    assert status["stream"]["live"] is False
    assert (await client.get("/readyz")).status == 503
    # A playlist that comes within seconds: hls.js retries a 503, it gives up on a 404.
    playlist = await client.get("/hls/180p/index.m3u8")
    assert playlist.status == 503, await playlist.text()
    assert playlist.headers["Retry-After"] == "1" and playlist.headers["Cache-Control"] == "no-store"


async def test_no_media_thread_survives_cleanup():
    async with TestClient(TestServer(demo_app())) as test_client:
        assert (await test_client.get("/healthz")).status == 200
        assert any(t.name.startswith(MEDIA_THREADS) for t in threading.enumerate())
    assert not any(t.name.startswith(MEDIA_THREADS) for t in threading.enumerate())


async def test_the_file_access_probe_does_see_file_reads(client):
    # Control for the test above: a static file is read from disk, and the probe notices.
    _file_access.clear()
    _watching.set()
    try:
        status, _ = await raw_get(client.host, client.port, "/static/player.js")
    finally:
        _watching.clear()
    assert status == 200
    assert any(str(path).endswith("player.js") for _, path in _file_access)


async def test_event_text_is_escaped_on_the_page():
    config = small_config(title='<script>alert("t")</script>', description="Q&A <b>live</b>")
    async with TestClient(TestServer(demo_app(config))) as test_client:
        body = await (await test_client.get("/")).text()
    assert "<script>alert" not in body and "&lt;script&gt;alert(&#34;t&#34;)&lt;/script&gt;" in body
    assert "Q&amp;A &lt;b&gt;live&lt;/b&gt;" in body
