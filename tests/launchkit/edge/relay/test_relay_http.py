"""The edge app in process against a scriptable stub origin: coalescing, caching, failures, input."""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from launchkit.edge.app import EDGE, create_edge_app
from launchkit.edge.relay.relay import REVALIDATE_HOLD
from launchkit.edge.settings import EdgeSettings
from tests.support.bad_urls import bad_media_targets
from tests.support.client import raw_get
from tests.support.edges import StubOrigin
from tests.support.environment import METRICS_AUTH

SEGMENT = "/hls/a/1.m4s"


@pytest.fixture
async def stub():
    origin = StubOrigin()
    server = TestServer(origin.app(), host="127.0.0.1")
    await server.start_server()
    origin.url = f"http://127.0.0.1:{server.port}"
    yield origin
    await server.close()


async def start_edge(origin_url: str, **overrides) -> TestClient:
    values = dict(origin=origin_url, port=0, upstream_timeout=0.5, negative_ttl=0.3, origin_grace=1.0)
    client = TestClient(TestServer(create_edge_app(EdgeSettings(**{**values, **overrides})), host="127.0.0.1"))
    await client.start_server()
    deadline = time.monotonic() + 5
    while (await client.get("/readyz")).status != 200:
        assert time.monotonic() < deadline, "edge not ready"
        await asyncio.sleep(0.05)
    return client


@pytest.fixture
async def edge(stub):
    client = await start_edge(stub.url)
    yield client
    await client.close()


async def _get(client: TestClient, path: str, **kwargs) -> tuple[int, dict[str, str], bytes]:
    async with client.get(path, **kwargs) as response:
        return response.status, dict(response.headers), await response.read()


async def test_concurrent_viewers_cause_one_upstream_request(stub, edge):
    stub.delay = 0.2
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def get() -> tuple[int, str, bytes]:
            async with session.get(f"http://{edge.host}:{edge.port}{SEGMENT}") as response:
                return response.status, response.headers["X-Cache"], await response.read()

        results = await asyncio.gather(*(get() for _ in range(300)))
    assert stub.media_requests() == [SEGMENT]
    assert {(status, body) for status, _, body in results} == {(200, stub.segments["1.m4s"])}
    caches = Counter(cache for _, cache, _ in results)
    # Followers that connected while the fetch ran were coalesced; later ones were cache hits.
    assert caches["MISS"] == 1 and caches["COALESCED"] >= 100 and caches["COALESCED"] + caches["HIT"] == 299
    status, headers, _ = await _get(edge, SEGMENT)
    assert status == 200 and headers["X-Cache"] == "HIT" and stub.media_requests() == [SEGMENT]


async def test_an_upstream_error_reaches_every_waiting_viewer_as_a_503(stub, edge):
    stub.delay, stub.fail = 0.1, 500
    results = await asyncio.gather(*(_get(edge, SEGMENT) for _ in range(50)))
    assert len(stub.media_requests()) == 1
    assert {status for status, _, _ in results} == {503}
    assert all(headers["Retry-After"] == "3" for _, headers, _ in results)  # the origin's own Retry-After
    # Within the negative TTL, retries are answered without asking the origin again...
    assert (await _get(edge, SEGMENT))[0] == 503 and len(stub.media_requests()) == 1
    # ...then the edge tries again, and recovers by itself.
    stub.fail, stub.delay = None, 0.0
    await asyncio.sleep(0.35)
    assert (await _get(edge, SEGMENT))[0] == 200 and len(stub.media_requests()) == 2


async def test_content_type_and_cache_headers_are_relayed_and_origin_cookies_are_not(stub, edge):
    status, headers, _ = await _get(edge, SEGMENT)
    assert status == 200
    assert headers["Content-Type"] == "video/mp4"
    assert headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert headers["Access-Control-Allow-Origin"] == "*" and headers["Age"] == "0"
    assert "Set-Cookie" not in headers
    status, headers, _ = await _get(edge, "/hls/a/index.m3u8")
    assert headers["Content-Type"] == "application/vnd.apple.mpegurl"
    assert headers["Cache-Control"] == "public, max-age=1"
    async with edge.head(SEGMENT) as response:
        assert response.status == 200 and await response.read() == b""
        assert response.headers["Content-Length"] == str(len(stub.segments["1.m4s"]))
    assert stub.media_requests() == [SEGMENT, "/hls/a/index.m3u8"]


async def test_no_viewer_header_reaches_the_origin(stub, edge):
    await _get(edge, SEGMENT, headers={
        "Cookie": "session=secret", "Authorization": "Bearer secret", "Range": "bytes=0-10",
        "X-Forwarded-For": "203.0.113.9", "Accept-Encoding": "gzip", "User-Agent": "viewer-browser",
        "If-None-Match": '"x"',
    })
    (target, headers), = [(t, h) for t, h in stub.requests if t == SEGMENT]
    sent = {name.lower(): value for name, value in headers.items()}
    assert "secret" not in str(sent) and "203.0.113.9" not in str(sent)
    assert not {"cookie", "authorization", "range", "x-forwarded-for", "if-none-match"} & sent.keys()
    assert sent["user-agent"].startswith("launchkit-edge/") and sent["accept-encoding"] == "identity"
    assert sent["via"].endswith("(launchkit-edge)")


async def test_not_found_is_cached_for_a_moment_only(stub, edge):
    for _ in range(10):
        assert (await _get(edge, "/hls/a/99.m4s"))[0] == 404
    assert stub.media_requests() == ["/hls/a/99.m4s"]
    await asyncio.sleep(0.35)
    assert (await _get(edge, "/hls/a/99.m4s"))[0] == 404
    assert len(stub.media_requests()) == 2


async def test_a_revalidate_every_use_playlist_is_held_briefly_not_fetched_per_viewer(stub, edge):
    stub.playlist_cache = "public, no-cache"  # the origin's LL-HLS live playlist
    started = time.monotonic()
    polls = 0
    while time.monotonic() - started < 1.0:
        await asyncio.gather(*(_get(edge, "/hls/a/index.m3u8") for _ in range(5)))
        polls += 5
        await asyncio.sleep(0.02)
    upstream = len(stub.media_requests())
    assert polls >= 100
    assert 2 <= upstream <= 1.0 / REVALIDATE_HOLD + 2, upstream
    assert (await _get(edge, "/hls/a/index.m3u8"))[1]["Cache-Control"] == "public, no-cache"  # caches below revalidate


async def test_playlists_are_served_stale_while_the_origin_fails_then_503(stub, edge):
    assert (await _get(edge, "/hls/a/index.m3u8"))[0] == 200
    assert (await _get(edge, SEGMENT))[0] == 200
    stub.fail = 500
    await asyncio.sleep(1.1)  # past max-age=1
    status, headers, body = await _get(edge, "/hls/a/index.m3u8")
    assert status == 200 and headers["X-Cache"] == "STALE" and b"1.m4s" in body and int(headers["Age"]) >= 1
    assert (await _get(edge, SEGMENT))[1]["X-Cache"] == "HIT"  # immutable: still fresh
    await asyncio.sleep(2.0)  # past two target durations (TARGETDURATION:1)
    status, headers, _ = await _get(edge, "/hls/a/index.m3u8")
    assert status == 503 and headers["Retry-After"] == "3"
    assert (await _get(edge, "/hls/a/2.m4s"))[0] == 503


async def test_a_hung_origin_never_hangs_a_viewer(stub, edge):
    assert (await _get(edge, "/hls/a/index.m3u8"))[0] == 200
    await asyncio.sleep(1.05)
    stub.delay = 30  # accepts, never answers in time
    started = time.monotonic()
    status, headers, _ = await _get(edge, "/hls/a/2.m4s")
    assert status == 503 and headers["Retry-After"] == "2"
    assert time.monotonic() - started < 0.5 + 0.4  # --upstream-timeout 0.5
    started = time.monotonic()  # the origin is now known unreachable: other misses fail fast
    assert (await _get(edge, "/hls/a/3.m4s"))[0] == 503
    assert time.monotonic() - started < 0.2
    started = time.monotonic()
    status, headers, _ = await _get(edge, "/hls/a/index.m3u8")  # a stale copy exists: served after the patience
    assert status == 200 and headers["X-Cache"] == "STALE"
    assert time.monotonic() - started < 1.4


async def test_blocking_reloads_may_take_three_target_durations_and_are_keyed_by_their_query(stub, edge):
    await _get(edge, "/hls/a/index.m3u8")  # the edge learns TARGETDURATION:1
    stub.blocking_delay = 1.2  # over --upstream-timeout 0.5, within 0.5 + 3 × 1 s
    target = "/hls/a/index.m3u8?_HLS_part=1&cachebuster=7&_HLS_msn=5"
    results = await asyncio.gather(*(_get(edge, target) for _ in range(20)))
    assert {status for status, _, _ in results} == {200}
    blocked = [t for t in stub.media_requests() if "_HLS" in t]
    assert blocked == ["/hls/a/index.m3u8?_HLS_msn=5&_HLS_part=1"]  # canonical, no cache buster
    assert (await _get(edge, "/hls/a/index.m3u8?_HLS_msn=5&_HLS_part=1"))[1]["X-Cache"] == "HIT"
    assert (await _get(edge, "/hls/a/index.m3u8?_HLS_msn=6"))[0] == 200
    assert len([t for t in stub.media_requests() if "_HLS" in t]) == 2
    for bad in ("_HLS_msn=abc", "_HLS_msn=1&_HLS_msn=2", "_HLS_part=-1", "_HLS_skip=maybe"):
        assert (await _get(edge, f"/hls/a/index.m3u8?{bad}"))[0] == 400, bad
    assert len([t for t in stub.media_requests() if "_HLS" in t]) == 2


# The corpus both roles share, and what only an edge must refuse before its origin sees it.
BAD_TARGETS = [
    *bad_media_targets("a"),
    "/replay/../api/status",
    "/hls/a/index.m3u8?_HLS_msn=" + "9" * 40,
    "/hls/a/index.m3u8?" + "x=1&" * 3000,
    "/" + "a" * 9000,
]


async def test_bad_input_gets_a_4xx_and_never_reaches_the_origin(stub, edge):
    for target in BAD_TARGETS:
        status, body = await raw_get(edge.host, edge.port, target)
        assert 400 <= status < 500, (target, status)
        assert b"Traceback" not in body
    # Huge headers, and methods the edge does not take.
    reader, writer = await asyncio.open_connection(edge.host, edge.port)
    writer.write(f"GET {SEGMENT} HTTP/1.1\r\nHost: x\r\nX-Big: {'a' * 20000}\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    status_line = (await reader.read()).split(b"\r\n", 1)[0]
    writer.close()
    assert 400 <= int(status_line.split()[1]) < 500, status_line
    many = {f"X-H{i}": "v" for i in range(200)}
    assert 400 <= (await _get(edge, SEGMENT, headers=many))[0] < 500
    for method in ("POST", "PUT", "DELETE"):
        async with edge.request(method, SEGMENT, data=b"x" * 10) as response:
            assert response.status == 405, method
    assert stub.media_requests() == []


async def test_operator_and_publisher_paths_are_not_served_by_edges(stub, edge):
    for method, path in (("GET", "/ops"), ("POST", "/ops/login"), ("GET", "/api/ops/status"),
                         ("POST", "/api/ops/event"), ("POST", "/whip"), ("DELETE", "/whip/abc")):
        async with edge.request(method, path) as response:
            assert response.status == 404, path
    assert all(not t.startswith(("/ops", "/api/ops", "/whip")) for t, _ in stub.requests)


async def test_status_page_and_probes(stub, edge):
    status, headers, body = await _get(edge, "/api/status")
    assert status == 200 and headers["Cache-Control"] == "no-cache"
    data = __import__("json").loads(body)
    assert data["event"]["title"] == "Stub launch" and data["stream"]["live"] is True
    assert data["recommended"]["url"] == "/hls/index.m3u8"
    assert data["edge"]["origin_up"] is True and data["edge"]["draining"] is False
    assert data["capacity"] == {"max_viewers": None, "headroom": None}
    page = (await _get(edge, "/"))[2].decode()
    assert "Stub launch" in page and "Stub description" in page and "/static/player.js?v=" in page
    asset = re.search(r'src="(/static/player\.js\?v=\w+)"', page).group(1)
    status, headers, _ = await _get(edge, asset)
    assert status == 200 and "immutable" in headers["Cache-Control"]
    assert (await _get(edge, "/embed"))[0] == 200
    assert (await _get(edge, "/healthz"))[0] == 200
    # Status is polled once per second for everyone, not per request.
    polls = sum(1 for t, _ in stub.requests if t == "/api/status")
    await asyncio.gather(*(_get(edge, "/api/status") for _ in range(100)))
    assert sum(1 for t, _ in stub.requests if t == "/api/status") <= polls + 1


async def test_before_the_origin_ever_answers_the_page_renders_and_status_says_retry():
    app = create_edge_app(EdgeSettings(origin="http://127.0.0.1:9", port=0))  # discard port: refused
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        page = await client.get("/")
        assert page.status == 200 and "The stream has not started yet" in await page.text()
        status = await client.get("/api/status")
        assert status.status == 503 and status.headers["Retry-After"] == "2"
        body = await status.json()
        assert body["stream"]["live"] is False and body["edge"]["origin_up"] is False
        ready = await client.get("/readyz")
        assert ready.status == 503 and (await ready.json())["reason"] == "origin not reached yet"


async def test_draining_turns_readiness_off_and_keeps_serving(stub, edge):
    assert (await _get(edge, "/readyz"))[0] == 200
    edge.server.app[EDGE].begin_drain()
    status, _, body = await _get(edge, "/readyz")
    assert status == 503 and b"draining" in body
    status, headers, _ = await _get(edge, SEGMENT)
    assert status == 200 and headers["Connection"] == "close"  # clients move to another edge


async def test_capacity_and_edges_hooks(stub):
    app = create_edge_app(EdgeSettings(origin=stub.url, port=0), capacity=lambda: {"max_viewers": 7, "queued": 0},
                          edges=lambda: ["https://edge-2.example.org", "https://edge-1.example.org"])
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        data = await (await client.get("/api/status")).json()
    assert data["capacity"] == {"max_viewers": 7, "queued": 0}
    assert data["recommended"] == {"protocol": "hls", "url": "/hls/index.m3u8", "edge": "https://edge-2.example.org",
                                   "edges": ["https://edge-2.example.org", "https://edge-1.example.org"]}


async def test_a_request_loop_between_edges_is_refused(stub, edge):
    via = edge.server.app[EDGE].upstream.via
    for path in (SEGMENT, "/api/status", "/"):
        status, _, _ = await _get(edge, path, headers={"Via": f"1.1 other:1 (launchkit-edge), {via}"})
        assert status == 508, path
    assert stub.media_requests() == []


async def test_objects_over_the_size_limit_are_streamed_through_uncached(stub):
    stub.segments["big.m4s"] = bytes(range(256)) * 6000  # 1.5 MB
    client = await start_edge(stub.url, max_object_mb=1)
    try:
        for _ in range(3):
            status, headers, body = await _get(client, "/hls/a/big.m4s")
            assert status == 200 and headers["X-Cache"] == "BYPASS" and body == stub.segments["big.m4s"]
        # The first attempt stops at the headers (Content-Length over the limit); then one each.
        assert stub.media_requests() == ["/hls/a/big.m4s"] * 4
    finally:
        await client.close()


async def test_a_byte_range_is_answered_from_the_cache(stub, edge):
    data = stub.segments["1.m4s"]
    status, headers, body = await _get(edge, SEGMENT, headers={"Range": "bytes=10-19"})
    assert status == 206 and body == data[10:20] and headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    assert (await _get(edge, SEGMENT, headers={"Range": "bytes=-5"}))[2] == data[-5:]
    assert (await _get(edge, SEGMENT, headers={"Range": f"bytes={len(data)}-"}))[0] == 416
    assert (await _get(edge, SEGMENT, headers={"Range": "bytes=0-1,5-6"}))[0] == 200
    assert stub.media_requests() == [SEGMENT]


async def test_edge_to_edge_tiers_coalesce_at_every_tier(stub, edge):
    child = await start_edge(f"http://{edge.host}:{edge.port}")
    try:
        stub.delay = 0.1
        results = await asyncio.gather(*(_get(child, "/hls/a/2.m4s") for _ in range(30)))
        assert {(status, body) for status, _, body in results} == {(200, stub.segments["2.m4s"])}
        assert stub.media_requests() == ["/hls/a/2.m4s"]
        (_, headers), = [(t, h) for t, h in stub.requests if t == "/hls/a/2.m4s"]
        assert headers["Via"].count("(launchkit-edge)") == 2  # child, then parent
        status = await (await child.get("/api/status")).json()
        assert status["event"]["title"] == "Stub launch"
    finally:
        await child.close()


async def test_the_cache_stays_within_its_budget(stub):
    for n in range(4, 64):
        stub.segments[f"{n}.m4s"] = bytes([n]) * 100_000
    client = await start_edge(stub.url, cache_mb=1)
    try:
        edge = client.server.app[EDGE]
        for n in range(4, 64):
            assert (await _get(client, f"/hls/a/{n}.m4s"))[0] == 200
            assert edge.cache.bytes <= 1024 * 1024
        assert 8 <= len(edge.cache) <= 10
        samples = {s.name: s.value for f in text_string_to_metric_families((await _get(client, "/metrics", headers=METRICS_AUTH))[2].decode())
                   for s in f.samples}
        assert samples["launchkit_edge_cache_bytes"] == edge.cache.bytes
        assert samples["launchkit_edge_cache_evictions_total"] >= 50
    finally:
        await client.close()


async def test_metrics_expose_the_edge_families(stub, edge):
    await _get(edge, SEGMENT)
    await _get(edge, SEGMENT)
    families = {f.name: f for f in text_string_to_metric_families((await _get(edge, "/metrics", headers=METRICS_AUTH))[2].decode())}
    expected = {
        "launchkit_edge_requests": "counter", "launchkit_edge_upstream_requests": "counter",
        "launchkit_edge_upstream_request_duration_seconds": "histogram", "launchkit_edge_upstream_bytes": "counter",
        "launchkit_edge_upstream_in_flight": "gauge", "launchkit_edge_cache_bytes": "gauge",
        "launchkit_edge_cache_objects": "gauge", "launchkit_edge_cache_evictions": "counter",
        "launchkit_edge_origin_up": "gauge", "launchkit_edge_draining": "gauge",
        "launchkit_event_loop_lag_seconds": "gauge", "launchkit_http_requests": "counter",
    }
    for name, kind in expected.items():
        assert families[name].type == kind, name
    labels = {tuple(sorted(s.labels.items())) for s in families["launchkit_edge_requests"].samples
              if s.name.endswith("_total")}
    assert (("kind", "segment"), ("result", "hit")) in labels
