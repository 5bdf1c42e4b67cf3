"""Redis SIGKILLed and restarted during a live event: no wall post answered 202 is lost or stored
twice, and admission goes on.

Real processes: redis-server with its append-only file on (`RedisProcess(persistent=True)`: what a deployment
must run, see the README's limits), a `launchkit origin` with a data directory and `--redis`, and
a `launchkit edge` sharing that Redis (wall intake, shared waiting room). Posters send comments at
a steady pace to the edge (which hands them to Redis) and to the origin (which stores them in
SQLite) all through the fault; every post answered 202 must end up in the origin's moderation
queue, once.

Two moments are at risk. (1) Redis dies with everything running: posts in flight, the origin's
consumer blocked in XREADGROUP, viewers arriving. (2) Redis dies while posts accepted at the edge
wait in its intake stream because the origin is not reading (SIGSTOPped here, as a busy or
restarting origin would be): only Redis's own persistence stands between them and oblivion.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from loadtests.player import PlayerConfig, Swarm
from loadtests.target import free_port, start_edge, stop_all
from tests.support.faults import ADMISSION_SECRET, OPS_AUTH, figures, go_live, start_origin

pytestmark = pytest.mark.faults

POST_INTERVAL = 0.15  # seconds between two posts to one server (under the raised per-client limits)
POST_TIMEOUT = 15.0  # covers redis-py's own retries (about 7 s) before the edge answers 503
WALL_LIMITS = ("--wall-posts-per-minute", "600", "--wall-burst", "100")


@dataclass
class Poster:
    """Posts comments to one server at a steady pace and remembers every answer."""

    base: str
    label: str
    accepted: dict[str, tuple[str, float]] = field(default_factory=dict)  # id -> (text, answered at)
    refused: Counter = field(default_factory=Counter)

    async def run(self, session: aiohttp.ClientSession, seconds: float) -> None:
        """One post every POST_INTERVAL, each on its own task: a post held by a fault never delays the next."""
        posts = []
        for n in range(int(seconds / POST_INTERVAL)):
            posts.append(asyncio.create_task(self._post(session, f"{self.label} post {n}")))
            await asyncio.sleep(POST_INTERVAL)
        await asyncio.gather(*posts)

    async def _post(self, session: aiohttp.ClientSession, text: str) -> None:
        try:
            async with session.post(self.base + "/api/wall/posts", json={"text": text, "kind": "comment"},
                                    timeout=aiohttp.ClientTimeout(total=POST_TIMEOUT)) as response:
                body = await response.json(content_type=None)
                if response.status == 202:
                    self.accepted[body["id"]] = (text, time.monotonic())
                else:
                    self.refused[f"{response.status}{' + Retry-After' * ('Retry-After' in response.headers)}"] += 1
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            self.refused[type(error).__name__] += 1


@pytest.fixture(scope="module")
def stack(persistent_redis, tmp_path_factory):
    """Origin (SQLite wall, --redis) and one edge sharing the persistent Redis; the event is live."""
    tmp_path = tmp_path_factory.mktemp("redis-fault")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LAUNCHKIT_ADMISSION_SECRET", ADMISSION_SECRET)
        origin = start_origin(tmp_path, free_port(), "--redis", persistent_redis.url, *WALL_LIMITS)
        edge = None
        try:
            go_live(origin.url)
            edge = start_edge(origin.url, tmp_path, redis=persistent_redis.url, max_viewers=4, retry_after=2,
                              retry_jitter=1, max_loop_lag_ms=0, upstream_timeout=2.0,
                              wall_posts_per_minute=600, wall_burst=100)
            yield origin, edge, tmp_path / "data" / "wall.sqlite3"
        finally:
            stop_all(edge, origin)


def _stored(database: Path) -> Counter:
    """Post text -> rows in the origin's SQLite store (read-only, beside the running origin: WAL)."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        return Counter(text for (text,) in db.execute("SELECT text FROM posts WHERE source = 'page'"))


async def _queued_ids(session: aiohttp.ClientSession, origin: str) -> set[str]:
    async with session.get(origin + "/api/ops/wall/queue", headers=OPS_AUTH) as response:
        assert response.status == 200
        return {post["id"] for post in (await response.json())["pending"]}


async def _assert_all_reach_moderation(session: aiohttp.ClientSession, origin: str, database: Path,
                                       posters: list[Poster], timeout: float = 20.0) -> float:
    """Every post answered 202 is in the moderation queue (waiting at most `timeout`), and stored once.
    Returns how long the last ones took to arrive."""
    accepted = {post_id for poster in posters for post_id in poster.accepted}
    started = time.monotonic()
    missing = accepted
    while missing and time.monotonic() - started < timeout:
        missing = accepted - await _queued_ids(session, origin)
        if missing:
            await asyncio.sleep(0.25)
    lost = {poster.label: sorted(poster.accepted[i][0] for i in missing if i in poster.accepted) for poster in posters}
    assert not missing, f"answered 202, never reached moderation: {lost}"
    rows = _stored(database)
    texts = [text for poster in posters for text, _ in poster.accepted.values()]
    assert [t for t in texts if rows[t] != 1] == [], "stored more than once (or not at all)"
    assert max(rows.values()) == 1, [t for t, n in rows.items() if n > 1]
    return time.monotonic() - started


def _count_between(poster: Poster, start: float, end: float) -> int:
    return sum(start <= at < end for _, at in poster.accepted.values())


async def test_redis_killed_and_restarted_loses_no_accepted_post_and_admission_goes_on(stack, persistent_redis):
    origin, edge, database = stack
    posters = [Poster(edge.url, "edge"), Poster(origin.url, "origin")]
    # Eight viewers arriving over 12 s for an edge that admits 4: arrivals before, during and after the outage.
    crowd = Swarm(edge.url + "/hls/index.m3u8", 8, PlayerConfig(duration=18.0, rendition="bottom", request_timeout=5.0),
                  spread=12.0)
    async with aiohttp.ClientSession() as session:
        viewers = asyncio.create_task(crowd.run())
        posting = [asyncio.create_task(p.run(session, 16.0)) for p in posters]
        await asyncio.sleep(4.0)
        persistent_redis.stop(kill=True)  # SIGKILL
        killed = time.monotonic()
        await asyncio.sleep(4.0)
        await asyncio.to_thread(persistent_redis.start)  # same port, same directory: loads the append-only file
        restarted = time.monotonic()
        await asyncio.gather(*posting)
        result = await viewers
        arrived = await _assert_all_reach_moderation(session, origin.url, database, posters)
    timeline = {p.label: {"accepted_before_kill": _count_between(p, 0, killed),
                          "accepted_while_down": _count_between(p, killed, restarted),
                          "accepted_after_restart": _count_between(p, restarted, float("inf")),
                          "refused": dict(p.refused)} for p in posters}
    print(f"\nredis kill: posts {timeline}; all in moderation {arrived:.1f} s after the last post")
    summary = figures("viewers on the edge through the Redis outage", result)
    # The origin stores its own posts without Redis: every one accepted, even while Redis is down.
    assert timeline["origin"]["refused"] == {} and timeline["origin"]["accepted_while_down"] > 0
    # The edge refuses (503 + Retry-After), never accepts what it cannot hand over; accepted before and after.
    assert set(timeline["edge"]["refused"]) <= {"503 + Retry-After"}
    assert timeline["edge"]["accepted_before_kill"] > 0 and timeline["edge"]["accepted_after_restart"] > 0
    # Admission: never a 5xx or a broken request; every viewer plays or waits in line; players do not stall.
    assert summary["errors"] == {}, summary["errors"]
    assert all(v.startup_seconds is not None or v.waits for v in result.viewers), [v.as_dict() for v in result.viewers]
    assert summary["started"] >= 4
    assert summary["stalls"] == 0, [v.as_dict() for v in result.viewers if v.stalls]


async def test_posts_waiting_in_redis_for_a_busy_origin_survive_a_redis_kill(stack, persistent_redis):
    origin, edge, database = stack
    poster = Poster(edge.url, "edge-while-origin-paused")
    async with aiohttp.ClientSession() as session:
        origin.process.send_signal(signal.SIGSTOP)  # the origin reads nothing: accepted posts wait in Redis
        try:
            await poster.run(session, 3.0)
            waiting = len(poster.accepted)
            persistent_redis.stop(kill=True)
            await asyncio.to_thread(persistent_redis.start)
        finally:
            origin.process.send_signal(signal.SIGCONT)
        arrived = await _assert_all_reach_moderation(session, origin.url, database, [poster])
    print(f"\nredis kill with {waiting} accepted posts waiting in it: all in moderation after {arrived:.1f} s; "
          f"refused {dict(poster.refused)}")
    assert waiting >= 15 and poster.refused == Counter()
    assert edge.process.poll() is None and origin.process.poll() is None
