"""An edge SIGKILLed under its viewers: they continue on another edge.

Real processes: a demo origin, two `launchkit edge` processes sharing a redis-server (the edge
registry behind `recommended.edges` in /api/status) and one admission secret, and simulated hls.js
viewers (loadtests/player.py) at real pace. The browser version (landing page + hls.js in Chromium)
is tests/landing/test_player_failover.py; this one is about several viewers and their figures.

The simulator plays one URL and has no failover of its own: it retries the dead edge until its
time is up. What moves a viewer is the landing page (player.js), so `FailoverSession` gives the
simulator exactly the page's rule, around its HTTP session: learn `recommended.edges` from
/api/status (every 5 s, as the page polls while playing); when a request to the current edge gets
no HTTP answer, or a 5xx other than 503 (a 503 is an edge answering for an origin outage: moving
would not help), mark that edge failed for 30 s and send every later request, hls.js's retry
included, to the next edge listed. Two viewers on the doomed edge play without it, as the control
group: they show what the kill does to a viewer nobody moves.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from yarl import URL

from loadtests.player import Player, PlayerConfig, ViewerResult, summarize
from loadtests.target import free_port, start_demo, start_edge, stop_all
from tests.support.faults import ADMISSION_SECRET, LADDER, sigkill

pytestmark = pytest.mark.faults

STATUS_POLL = 5.0  # player.js STATUS_POLL_PLAYING_MS
FAILED_FOR = 30.0  # player.js EDGE_FAILED_MS
PLAY = 26.0
KILL_AT = 9.0


def _origin(url: str | URL) -> str:
    return str(URL(url).origin())


class FailoverSession:
    """An aiohttp session for one simulated viewer that moves it between edges as player.js does."""

    def __init__(self, session: aiohttp.ClientSession, page: str) -> None:
        self.session = session
        self.page = _origin(page)  # the server the page came from
        self.base = self.page  # where requests go now
        self.known: list[str] = []  # recommended.edges of the last status, best first
        self.failed_at: dict[str, float] = {}
        self.switches: list[tuple[float, str, str, str]] = []  # (when, from, to, why)
        self.answers: list[tuple[float, str, int]] = []  # (when, edge, status) of every HTTP answer

    def get(self, url: str, **kwargs: Any) -> _Request:
        return _Request(self, url, kwargs)

    def rebase(self, url: str) -> str:
        """player.js onEdge(): a URL on a known edge (or the page's server) goes to the current edge."""
        target = URL(url)
        origin = _origin(target)
        if origin != self.base and (origin == self.page or origin in self.known):
            return str(URL(self.base).join(URL(target.raw_path_qs)))
        return url

    def failed(self, edge: str, reason: str) -> None:
        """player.js moveEdge(reason, true), once per failure of the edge in use."""
        if edge != self.base:
            return  # a request that was already in flight when we moved
        now = time.monotonic()
        self.failed_at[edge] = now
        following = [e for e in self.known if e != edge and now - self.failed_at.get(e, -FAILED_FOR) >= FAILED_FOR]
        if following:
            self.switches.append((now, edge, following[0], reason))
            self.base = following[0]

    async def follow_status(self, until: float) -> None:
        """player.js fetchStatus() while playing: learn the edges; an unreachable status moves too."""
        while time.monotonic() < until:
            base = self.base
            try:
                async with self.session.get(base + "/api/status", timeout=aiohttp.ClientTimeout(total=5)) as response:
                    status = await response.json()
                self.known = [_origin(url) for url in status["recommended"]["edges"]]
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, KeyError, TypeError):
                self.failed(base, "status unreachable")
            await asyncio.sleep(min(STATUS_POLL, max(0.0, until - time.monotonic())))


class _Request:
    """One `session.get(...)` context, sent to the current edge; failures without an answer move the viewer."""

    def __init__(self, owner: FailoverSession, url: str, kwargs: dict[str, Any]) -> None:
        self.owner, self.url, self.kwargs = owner, url, kwargs
        self.edge = owner.base

    async def __aenter__(self) -> aiohttp.ClientResponse:
        self.context = self.owner.session.get(self.owner.rebase(self.url), **self.kwargs)
        try:
            response = await self.context.__aenter__()
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            self.owner.failed(self.edge, type(error).__name__)
            raise
        self.owner.answers.append((time.monotonic(), self.edge, response.status))
        if response.status >= 500 and response.status != 503:
            self.owner.failed(self.edge, f"http {response.status}")
        return response

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: Any) -> bool | None:
        if isinstance(error, (aiohttp.ClientError, asyncio.TimeoutError)):  # cut in the middle of a body
            self.owner.failed(self.edge, type(error).__name__)
        return await self.context.__aexit__(kind, error, trace)


def _report(label: str, viewers: list[ViewerResult]) -> dict:
    summary = summarize(viewers)
    line = {key: summary[key] for key in ("viewers", "started", "stalls", "rebuffer_seconds", "errors", "fell_behind")}
    print(f"{label}: {line}")
    return summary


def test_viewers_of_a_killed_edge_continue_on_the_other_edge(redis_server, tmp_path, monkeypatch):
    monkeypatch.setenv("LAUNCHKIT_ADMISSION_SECRET", ADMISSION_SECRET)  # one event, one ticket key
    ports = free_port(), free_port()
    with start_demo(*LADDER, log_dir=tmp_path) as origin:
        a, b = (start_edge(origin.url, tmp_path, port=port, redis=redis_server.url, max_viewers=20,
                          advertise_url=f"http://127.0.0.1:{port}", upstream_timeout=2.0) for port in ports)
        try:
            moved, unmoved, others, sessions, killed = asyncio.run(_watch(a, b))
        finally:
            stop_all(a, b)
    survivor = _origin(b.url)
    print(f"\nedge {a.url} SIGKILLed {KILL_AT:.0f} s in; viewers' moves: "
          f"{[[(round(t - killed, 2), why) for t, _, _, why in s.switches] for s in sessions]}")
    moved_summary = _report("viewers of the killed edge, moved as the page moves them", moved)
    unmoved_summary = _report("viewers of the killed edge, not moved (the simulator alone)", unmoved)
    others_summary = _report("viewers of the other edge", others)
    served_after = [sum(at > killed and edge == survivor and status == 200 for at, edge, status in s.answers)
                    for s in sessions]
    print(f"answers from {survivor} after the kill, per moved viewer: {served_after}")
    # Each moved viewer went to the surviving edge once, within a request of the kill, and played on.
    assert [[(edge, to) for _, edge, to, _ in s.switches] for s in sessions] == [[(_origin(a.url), survivor)]] * 5
    assert all(0 <= s.switches[0][0] - killed < 3.0 for s in sessions)
    assert min(served_after) >= 10, served_after
    # What the move cost: the failed request(s) at the moment of the kill, and no stall beyond one segment.
    assert all(sum(v.errors.values()) <= 3 for v in moved), [v.as_dict() for v in moved]
    assert set(moved_summary["errors"]) <= {"reset", "connect", "payload"}, moved_summary["errors"]
    assert max(v.rebuffer_seconds for v in moved) <= 2.0, [v.as_dict() for v in moved]
    # The control group shows the fault is real: nobody moves them, they stall until they leave.
    assert unmoved_summary["error_count"] > 0 and all(v.stalls >= 1 for v in unmoved)
    # Viewers of the other edge did not notice.
    assert others_summary["error_count"] == 0 and others_summary["stalls"] == 0


async def _watch(a, b) -> tuple[list[ViewerResult], list[ViewerResult], list[ViewerResult], list[FailoverSession], float]:
    """5 viewers on edge A that fail over, 2 on A that do not, 3 on B; A is SIGKILLed at KILL_AT."""
    config = PlayerConfig(duration=PLAY, rendition="bottom", request_timeout=5.0)
    loop = asyncio.get_running_loop()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                     auto_decompress=False) as http:
        until = time.monotonic() + PLAY
        epoch = loop.time()
        sessions = [FailoverSession(http, a.url) for _ in range(5)]
        moved = [Player(s, a.url + "/hls/index.m3u8", config, index=i, epoch=epoch) for i, s in enumerate(sessions)]
        unmoved = [Player(http, a.url + "/hls/index.m3u8", config, index=5 + i, epoch=epoch) for i in range(2)]
        others = [Player(http, b.url + "/hls/index.m3u8", config, index=7 + i, epoch=epoch) for i in range(3)]
        pollers = [asyncio.create_task(s.follow_status(until)) for s in sessions]
        plays = [asyncio.create_task(p.run()) for p in (*moved, *unmoved, *others)]
        await asyncio.sleep(KILL_AT)
        sigkill(a)
        killed = time.monotonic()
        results = await asyncio.gather(*plays)
        await asyncio.gather(*pollers)
    return results[:5], results[5:7], results[7:], sessions, killed
