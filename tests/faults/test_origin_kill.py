"""The origin SIGKILLed with two edges up: viewers on the edges keep playing what is cached, wait
(503 + Retry-After, or a stall) while nothing new exists, and resume when the origin restarts on
the same port and data directory, without any edge being restarted.

Real processes: `launchkit origin` (test card, 1 s segments) with a data directory, two `launchkit
edge` processes, and simulated hls.js viewers (loadtests/player.py) at real pace on both edges.
What the viewers lived through is printed: stalls, rebuffering, errors, waiting-room answers.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from loadtests.player import PlayerConfig, Swarm
from loadtests.target import free_port, start_edge, stop_all
from tests.support.faults import figures, go_live, sigkill, start_origin

pytestmark = pytest.mark.faults

VIEWERS_PER_EDGE = 6
OUTAGE = 6.0  # seconds between the kill and the restart command
PLAY = 32.0  # seconds each viewer plays


def _media_after(viewer, moment: float) -> int:
    """Segments or parts this viewer got after `moment` (seconds since its swarm's start)."""
    return sum(r.status == 200 and r.kind in ("segment", "part") and r.started >= moment for r in viewer.requests)


async def test_origin_killed_viewers_play_the_cache_then_resume_after_restart(tmp_path):
    port = free_port()
    origin = start_origin(tmp_path, port)
    edges, restarted = [], None
    try:
        go_live(origin.url)
        edges = [start_edge(origin.url, tmp_path, upstream_timeout=1.0, origin_grace=30.0) for _ in range(2)]
        config = PlayerConfig(duration=PLAY, rendition="bottom", request_timeout=5.0)
        crowds = [Swarm(edge.url + "/hls/index.m3u8", VIEWERS_PER_EDGE, config, spread=2.0) for edge in edges]
        runs = [asyncio.create_task(crowd.run()) for crowd in crowds]
        started = time.monotonic()
        await asyncio.sleep(8.0)  # everyone plays, with a few segments buffered
        sigkill(origin)
        killed = time.monotonic() - started
        await asyncio.sleep(OUTAGE)
        restarted = await asyncio.to_thread(start_origin, tmp_path, port)  # same port, same data dir
        back = time.monotonic() - started
        results = await asyncio.gather(*runs)
        pids = [edge.process.pid for edge in edges if edge.process.poll() is None]
    finally:
        stop_all(*edges, restarted, origin)
    print(f"\norigin killed at {killed:.1f} s, serving again at {back:.1f} s ({back - killed:.1f} s down)")
    viewers = [v for result in results for v in result.viewers]
    for edge, result in zip(edges, results):
        figures(f"viewers on edge {edge.url}", result)
    assert len(pids) == 2  # the same edge processes throughout
    # No error: every answer was media, or a 503 + Retry-After the player honoured (never a timeout,
    # a reset or a bare 5xx).
    assert {k: n for v in viewers for k, n in v.errors.items()} == {}, [v.as_dict() for v in viewers if v.errors]
    assert all(v.startup_seconds is not None for v in viewers)
    # Before the kill nobody stalled; through the outage each viewer stalled at most once, for no longer
    # than the origin was away plus the time to get the next segment; then everyone played again.
    outage = back - killed
    assert all(v.stalls <= 1 for v in viewers), [v.as_dict() for v in viewers]
    assert max(v.rebuffer_seconds for v in viewers) <= outage + 3.0, sorted(v.rebuffer_seconds for v in viewers)
    resumed = [_media_after(v, back + 1.0) for v in viewers]
    assert min(resumed) >= 5, resumed
