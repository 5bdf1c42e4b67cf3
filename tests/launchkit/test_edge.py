"""`launchkit edge` as real processes in front of a real origin: load, outage, drain, workers, tiers.

Origin load is counted at the origin itself: it runs with `--access-log`, and every edge process
names itself in its User-Agent (`launchkit-edge/V (HOST:PORT; pid N)`), so the log gives the
requests per object (path + query) per edge process. That is what the origin really received, and
it cannot be fooled by an edge miscounting its own requests.
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import re
import signal
import time
import urllib.request
from collections import Counter

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from launchkit.edge.relay.relay import REVALIDATE_HOLD
from loadtests.player import PlayerConfig, Swarm, ViewerResult
from loadtests.target import free_port, http_status, start_demo, start_edge, start_launchkit, stop_all
from tests.support.client import fetch, fetch_metrics
from tests.support.edges import StubOrigin, origin_requests

LADDER = ("--ladder", "360p:640x360:500,180p:320x180:200", "--fps", "15")
SEGMENT_DURATION = 2.0


@pytest.fixture(scope="module")
def origin(tmp_path_factory):
    """A small live demo whose access log counts what edges ask for."""
    with start_demo(*LADDER, "--access-log", log_dir=tmp_path_factory.mktemp("origin")) as demo:
        yield demo


def _hostless(counts: Counter, edge) -> Counter:
    """The origin's requests from one edge process: target -> count."""
    port = edge.url.rsplit(":", 1)[1]
    return Counter({target: n for (who, target), n in counts.items() if who.split("/")[0].endswith(f":{port}")})


async def _classic_audience(edges: list[str], viewers: int, seconds: float,
                            spread: float) -> list[tuple[str, ViewerResult]]:
    """(edge, result) of `viewers` classic HLS players (whole segments, no blocking reload) at real
    pace, spread evenly over `edges` and over the top and bottom renditions, arriving within
    `spread` seconds (a flash crowd), each playing for `seconds`."""
    crowds = [(edge, Swarm(f"{edge}/hls/index.m3u8", viewers // (2 * len(edges)),
                           PlayerConfig(duration=seconds, rendition=rendition, request_timeout=10.0,
                                        low_latency=False, blocking_reload=False), spread=spread))
              for edge in edges for rendition in ("top", "bottom")]
    results = await asyncio.gather(*(crowd.run() for _, crowd in crowds))
    return [(edge, viewer) for (edge, _), result in zip(crowds, results) for viewer in result.viewers]


def test_two_edges_serve_300_viewers_with_one_origin_request_per_object(origin, tmp_path):
    edges = [start_edge(origin.url, tmp_path) for _ in range(2)]
    try:
        mark = len(origin.log())
        seconds, spread = 10.0, 1.0
        started = time.monotonic()
        reports = asyncio.run(_classic_audience([e.url for e in edges], viewers=300, seconds=seconds, spread=spread))
        elapsed = time.monotonic() - started
        time.sleep(0.3)  # the last access-log lines
        counts = origin_requests(origin.log()[mark:])
        viewer_requests = sum(len(r.requests) for _, r in reports)
        summary = {"viewers": len(reports), "viewer_requests": viewer_requests, "elapsed": round(elapsed, 1),
                   "max_stall": round(max(r.rebuffer_seconds for _, r in reports), 2),
                   "segments_per_viewer": min(r.media_fetched for _, r in reports)}
        for edge in edges:
            seen = _hostless(counts, edge)
            media = {t: n for t, n in seen.items() if t.endswith((".m4s", ".mp4"))}
            playlists = {t: n for t, n in seen.items() if re.fullmatch(r"/hls/\w+/index\.m3u8", t)}
            summary[edge.url] = {"origin_requests": sum(n for t, n in seen.items() if t != "/api/status"),
                                 "segments": len(media), "max_per_segment": max(media.values()),
                                 "per_playlist": playlists, "multivariant": seen["/hls/index.m3u8"]}
            # Every segment and init: at most one origin request per edge process, whatever the audience.
            assert max(media.values()) == 1, {t: n for t, n in media.items() if n > 1}
            # The live playlist says `no-cache` (LL-HLS): the edge holds it REVALIDATE_HOLD, so each
            # costs the origin at most 1/REVALIDATE_HOLD requests per second per edge, not one per viewer poll.
            for target, n in playlists.items():
                assert n <= elapsed / REVALIDATE_HOLD + 3, (target, n)
            assert seen["/hls/index.m3u8"] <= elapsed / 5 + 2  # multivariant: max-age=5
            assert seen["/api/status"] <= elapsed + 3  # one status poll per second
        print("\nedge load:", json.dumps(summary))
        # Every viewer got every segment it asked for, with no 5xx, no error and no stall beyond a segment.
        assert {request.status for _, r in reports for request in r.requests} == {200}
        assert [dict(r.errors) for _, r in reports if r.errors] == []
        # Nothing listed after joining went unfetched: no segment given up, no jump to the live edge.
        assert [(r.skipped, r.fell_behind) for _, r in reports if r.skipped or r.fell_behind] == []
        assert min(r.media_fetched for _, r in reports) >= 4
        stalls = sorted(r.rebuffer_seconds for _, r in reports)
        assert stalls[-1] <= SEGMENT_DURATION, stalls[-5:]
        assert {(edge, r.rendition) for edge, r in reports} == {(e.url, r) for e in edges for r in ("360p", "180p")}
        # Cross-check with the edges' own metrics: upstream segment fetches = distinct segments seen.
        for edge in edges:
            samples = _scrape(edge.url)
            fetched = samples.get(("launchkit_edge_upstream_requests_total", (("kind", "segment"), ("outcome", "ok"))))
            assert fetched == summary[edge.url]["segments"]
            coalesced = sum(v for (name, labels), v in samples.items()
                            if name == "launchkit_edge_requests_total" and ("result", "coalesced") in labels)
            hits = sum(v for (name, labels), v in samples.items()
                       if name == "launchkit_edge_requests_total" and ("result", "hit") in labels)
            assert hits + coalesced > 20 * fetched
    finally:
        stop_all(*edges)


def test_400_arrivals_on_two_edges_sharing_redis_100_play_300_wait_and_get_in_in_order(
        origin, redis_server, tmp_path, monkeypatch):
    monkeypatch.setenv("LAUNCHKIT_ADMISSION_SECRET", "flash-crowd-test-secret-0123456789abcdef")
    # The event-loop lag guard is tested on its own; on this 2-core machine with 3 edges, an origin
    # and 400 simulated players it would (rightly) pause admissions and blur the counts.
    shared = {"redis": redis_server.url, "retry_after": 2, "retry_jitter": 1, "max_loop_lag_ms": 0}
    edges = [start_edge(origin.url, tmp_path, max_viewers=50, **shared) for _ in range(2)]
    late = None
    config = PlayerConfig(duration=24.0, rendition="bottom", request_timeout=5.0)
    try:
        async def crowd():
            nonlocal late
            runs = [asyncio.create_task(Swarm(edge.url + "/hls/index.m3u8", 200, config, spread=5.0).run())
                    for edge in edges]
            await asyncio.sleep(10)  # the crowd has arrived and settled: 100 play, 300 wait in line
            late = await asyncio.to_thread(start_edge, origin.url, tmp_path, max_viewers=100, **shared)
            return await asyncio.gather(*runs)

        results = asyncio.run(crowd())
    finally:
        stop_all(late, *edges)
    viewers = [v for result in results for v in result.viewers]
    errors = Counter(kind for v in viewers for kind in v.errors.elements())
    assert errors == Counter(), errors  # never a 5xx, a reset or a timeout
    played = [v for v in viewers if not v.waits]
    queued = [v for v in viewers if v.waits]
    # The first 100 arrivals (give or take a race between the two edges) play without a stall.
    assert len(played) == 100 and len(queued) == 300
    assert max(v.arrival for v in played) <= min(v.arrival for v in queued) + 0.5
    assert all(v.stalls == 0 and v.startup_seconds is not None for v in played), [v.as_dict() for v in played]
    # The other 300 got a place in line: one FIFO queue across both edges.
    first_places = sorted(v.positions[0] for v in queued)
    assert first_places == list(range(1, 301)), first_places[:10]
    # Capacity appears (an edge with room for 100 joins): exactly the head of the line gets in, and plays.
    let_in = [v for v in queued if v.admitted_at is not None]
    assert sorted(v.positions[0] for v in let_in) == list(range(1, 101))
    assert all(v.played_seconds > 0 for v in let_in)
    assert all(v.positions == sorted(v.positions, reverse=True) for v in queued)  # places only move forward
    waited = [v.admitted_at - v.arrival for v in let_in]
    print(f"\nflash crowd: 100 played at once; 100 let in after {min(waited):.1f}-{max(waited):.1f} s "
          f"when an edge joined; 200 still in line; errors {dict(errors)}")


def _scrape(url: str) -> dict[tuple[str, tuple], float]:
    status, headers, body = fetch_metrics(url)
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def test_edge_behind_an_edge_serves_the_same_bytes_and_only_the_first_tier_reaches_the_origin(origin, tmp_path):
    parent = start_edge(origin.url, tmp_path)
    child = start_edge(parent.url, tmp_path)
    try:
        mark = len(origin.log())
        status, _, playlist = fetch(child.url + "/hls/180p/index.m3u8")
        assert status == 200
        name = re.findall(r"^(\d+\.m4s)$", playlist.decode(), re.M)[-1]
        _, headers, through_child = fetch(f"{child.url}/hls/180p/{name}")
        _, _, direct = fetch(f"{origin.url}/hls/180p/{name}")
        assert through_child == direct and headers["Cache-Control"] == "public, max-age=31536000, immutable"
        status = json.loads(fetch(child.url + "/api/status")[2])
        assert status["event"]["state"] == "live" and status["edge"]["origin_up"]
        page = fetch(child.url + "/")[2].decode()
        assert "Launchkit demo" in page
        time.sleep(0.3)
        counts = origin_requests(origin.log()[mark:])
        assert _hostless(counts, child) == Counter()  # the child only talks to its parent
        assert _hostless(counts, parent)[f"/hls/180p/{name}"] == 1
    finally:
        stop_all(child, parent)


def test_an_edge_pointed_at_itself_answers_fast_and_is_never_ready(tmp_path):
    port = free_port()
    edge = start_edge(f"http://127.0.0.1:{port}", tmp_path, port=port, wait_ready=False, upstream_timeout=1.0)
    try:
        started = time.monotonic()
        assert fetch(edge.url + "/hls/index.m3u8")[0] == 503
        assert time.monotonic() - started < 1.5
        assert http_status(edge.url + "/readyz") == 503
    finally:
        stop_all(edge)


OPS_TOKEN = "ops-token-for-the-edge-tests"
ORIGIN_ARGS = (*LADDER, "--segment-duration", "1", "--rtmp-port", "off", "--srt-port", "off", "--source", "testcard")


def _go_live(url: str) -> None:
    request = urllib.request.Request(url + "/api/ops/event", data=b'{"action": "live"}', method="POST",
                                     headers={"Authorization": f"Bearer {OPS_TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def _timed(url: str) -> tuple[int, dict[str, str], float]:
    started = time.monotonic()
    status, headers, _ = fetch(url, timeout=10)
    return status, headers, time.monotonic() - started


def test_origin_outage_cache_then_503_then_recovery_without_restarting_the_edge(tmp_path):
    env = {"LAUNCHKIT_OPS_TOKEN": OPS_TOKEN, "LAUNCHKIT_PUBLISH_TOKEN": "publish-token-for-edge-tests"}
    port = free_port()
    args = (*ORIGIN_ARGS, "--port", str(port), "--data-dir", str(tmp_path / "data"))
    first = start_launchkit("origin", *args, env=env, log_dir=tmp_path)
    edge = None
    try:
        _go_live(first.url)
        edge = start_edge(first.url, tmp_path, origin_grace=2.0, upstream_timeout=1.0)
        status, _, playlist = fetch(edge.url + "/hls/180p/index.m3u8")
        assert status == 200
        cached = re.findall(r"^(\d+\.m4s)$", playlist.decode(), re.M)[-1]
        assert fetch(f"{edge.url}/hls/180p/{cached}")[0] == 200
        first.process.kill()  # SIGKILL: no goodbye
        first.process.wait()
        down_at = time.monotonic()
        # The cached segment is served; a playlist for a while (stale-if-error: 2 target durations).
        status, headers, took = _timed(f"{edge.url}/hls/180p/{cached}")
        assert status == 200 and headers["X-Cache"] == "HIT" and took < 0.5
        status, headers, took = _timed(edge.url + "/hls/180p/index.m3u8")
        assert status == 200 and took < 1.5
        # Anything not cached: 503 + Retry-After at once, never a hang.
        status, headers, took = _timed(f"{edge.url}/hls/180p/{int(cached[:-4]) + 50}.m4s")
        assert status == 503 and headers["Retry-After"].isdigit() and took < 1.5
        readiness = []
        while time.monotonic() - down_at < 10:
            for path in ("/hls/180p/index.m3u8", "/hls/360p/index.m3u8", "/hls/index.m3u8", f"/hls/180p/{cached}"):
                status, headers, took = _timed(edge.url + path)
                assert took < 1.5, (path, took)  # every request bounded
                assert status in (200, 503), (path, status)
                if status == 503:
                    assert headers["Retry-After"].isdigit()
            readiness.append((round(time.monotonic() - down_at, 1), http_status(edge.url + "/readyz")))
            time.sleep(0.5)
        assert readiness[0][1] == 200  # within the grace period
        assert readiness[-1][1] == 503  # unreachable past the grace, no playlist left to serve
        assert fetch(edge.url + "/hls/180p/index.m3u8")[0] == 503
        assert fetch(f"{edge.url}/hls/180p/{cached}")[0] == 200  # immutable segments stay available
        with start_launchkit("origin", *args, env=env, log_dir=tmp_path):  # same port, same data dir: still live
            deadline = time.monotonic() + 10
            while http_status(edge.url + "/readyz") != 200 or fetch(edge.url + "/hls/180p/index.m3u8")[0] != 200:
                assert time.monotonic() < deadline, "the edge did not recover"
                time.sleep(0.2)
            recovered_after = time.monotonic() - down_at
            _, _, playlist = fetch(edge.url + "/hls/180p/index.m3u8")
            fresh = re.findall(r"^(\d+\.m4s)$", playlist.decode(), re.M)[-1]
            assert fetch(f"{edge.url}/hls/180p/{fresh}")[0] == 200
            assert edge.process.poll() is None  # the same edge process throughout
            log = edge.log()
            # One line per state change, not one per failed request.
            assert log.count("is unreachable") == 1 and log.count("is reachable again") == 1, log
        print(f"\noutage: readiness {readiness}; recovered {recovered_after:.1f} s after the kill")
    finally:
        stop_all(edge, first)


async def _stub_server() -> tuple[StubOrigin, TestServer]:
    stub = StubOrigin()
    server = TestServer(stub.app(), host="127.0.0.1")
    await server.start_server()
    stub.url = f"http://127.0.0.1:{server.port}"
    return stub, server


async def _wait_exit(process, timeout: float) -> float:
    started = time.monotonic()
    while process.poll() is None:
        assert time.monotonic() - started < timeout, "did not exit"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_sigterm_drains_readiness_off_at_once_requests_served_then_exit(tmp_path):
    stub, server = await _stub_server()
    edge = await asyncio.to_thread(start_edge, stub.url, tmp_path, drain_seconds=3.0, upstream_timeout=5.0)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            stub.delay = 1.5
            in_flight = asyncio.create_task(session.get(edge.url + "/hls/a/1.m4s"))
            await asyncio.sleep(0.3)
            edge.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            await asyncio.sleep(0.1)
            async with aiohttp.ClientSession() as fresh:  # a new connection, as a probe makes
                async with fresh.get(edge.url + "/readyz") as response:
                    assert response.status == 503 and (await response.json())["reason"] == "draining"
            response = await in_flight
            assert response.status == 200 and await response.read() == stub.segments["1.m4s"]
            stub.delay = 0.0
            async with aiohttp.ClientSession() as fresh:  # new viewers are still served while draining
                async with fresh.get(edge.url + "/hls/a/2.m4s") as late:
                    assert late.status == 200 and late.headers["Connection"] == "close"
            assert edge.process.poll() is None
        waited = await _wait_exit(edge.process, timeout=8)
        assert edge.process.returncode == 0
        assert 2.5 <= time.monotonic() - signalled <= 5.0, waited
        assert "draining" in edge.log()
    finally:
        stop_all(edge)
        await server.close()


async def test_sigint_twice_stops_at_once(tmp_path):
    stub, server = await _stub_server()
    edge = await asyncio.to_thread(start_edge, stub.url, tmp_path, drain_seconds=30.0)
    try:
        edge.process.send_signal(signal.SIGINT)
        await asyncio.sleep(0.3)
        assert edge.process.poll() is None and http_status(edge.url + "/readyz") == 503
        edge.process.send_signal(signal.SIGINT)
        assert await _wait_exit(edge.process, timeout=2.0) < 1.5
        assert edge.process.returncode == 0
    finally:
        stop_all(edge)
        await server.close()


async def test_workers_share_one_port_and_metrics_aggregate_across_them(tmp_path):
    stub, server = await _stub_server()
    edge = await asyncio.to_thread(start_edge, stub.url, tmp_path, workers=2, drain_seconds=0.5)
    try:
        metrics_dirs = glob.glob(f"/tmp/launchkit-edge-{edge.process.pid}-metrics-*")
        assert len(metrics_dirs) == 1

        async def worker_pid() -> int:
            async with aiohttp.ClientSession() as session:  # a new connection each time
                async with session.get(edge.url + "/api/status") as response:
                    return (await response.json())["edge"]["worker"]

        pids = Counter([await worker_pid() for _ in range(40)])
        assert len(pids) == 2, pids  # both processes accept on the same port
        for _ in range(30):
            async with aiohttp.ClientSession() as session:
                async with session.get(edge.url + "/healthz") as response:
                    assert response.status == 200
        samples = await asyncio.to_thread(_scrape, edge.url)
        route = (("method", "GET"), ("route", "/healthz"), ("status", "200"))
        assert samples[("launchkit_http_requests_total", route)] == 30  # whichever worker answers /metrics
        assert samples[("launchkit_http_requests_total", (("method", "GET"), ("route", "/api/status"),
                                                          ("status", "200")))] == 40
        assert samples[("launchkit_edge_origin_up", ())] == 1
        # A worker that dies is replaced; the port keeps serving meanwhile.
        victim = next(iter(pids))
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while victim in (seen := {await worker_pid() for _ in range(20)}) or len(seen) < 2:
            assert time.monotonic() < deadline, seen
            await asyncio.sleep(0.3)
        edge.process.send_signal(signal.SIGTERM)
        await _wait_exit(edge.process, timeout=6)
        assert edge.process.returncode == 0
        assert not os.path.exists(metrics_dirs[0])  # the multiprocess metrics directory is cleaned up
        assert "restarting it" in edge.log()
    finally:
        stop_all(edge)
        await server.close()
