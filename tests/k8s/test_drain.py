"""What Kubernetes relies on when it removes an edge (scale-down, rollout, node drain): on SIGTERM the
edge's readiness flips at once, and every viewer request during the drain is still served."""

from __future__ import annotations

import asyncio
import signal
import time

import aiohttp

from loadtests.player import PlayerConfig, Swarm
from loadtests.target import start_demo, start_edge, stop_all
from tests.support.k8s import LADDER

DRAIN_SECONDS = 6.0


async def watch_readiness(url: str, until: float) -> list[tuple[float, int]]:
    """(time, /readyz status) every 50 ms until `until` or the edge stops answering."""
    seen = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as session:
        while time.monotonic() < until:
            try:
                async with session.get(f"{url}/readyz") as response:
                    seen.append((time.monotonic(), response.status))
            except (aiohttp.ClientError, asyncio.TimeoutError):
                break  # the edge has exited
            await asyncio.sleep(0.05)
    return seen


async def load_then_sigterm(edge, viewers: int, play: float, sigterm_after: float):
    swarm = Swarm(f"{edge.url}/hls/index.m3u8", viewers, PlayerConfig(duration=play, request_timeout=5), spread=1.0)
    started = time.monotonic()  # the swarm's epoch (request times are relative to it), within a few ms
    running = asyncio.create_task(swarm.run())
    await asyncio.sleep(sigterm_after)
    sent = time.monotonic()
    edge.process.send_signal(signal.SIGTERM)
    readiness = await watch_readiness(edge.url, sent + DRAIN_SECONDS + 2)
    return sent - started, sent, readiness, await running


def test_sigterm_under_load_readiness_flips_first_and_no_viewer_request_fails(tmp_path):
    origin = edge = None
    try:
        origin = start_demo(*LADDER, log_dir=tmp_path)
        edge = start_edge(origin.url, tmp_path, drain_seconds=DRAIN_SECONDS)
        # 20 LL-HLS viewers play for ~9 s; SIGTERM after 4 s: the rest of their sessions falls in the drain.
        offset, sent, readiness, result = asyncio.run(
            load_then_sigterm(edge, viewers=20, play=9.0, sigterm_after=4.0))
        assert readiness, "the edge stopped answering at once"
        first_at, first_status = readiness[0]
        assert first_status == 503 and first_at - sent < 0.5, readiness[:3]  # not ready right away
        assert all(status == 503 for _, status in readiness)  # and never ready again
        summary = result.summary()
        assert summary["viewers"] == 20 and summary["started"] == 20, summary
        assert summary["error_count"] == 0, summary["errors"]  # no request failed, before or during the drain
        during = [r for v in result.viewers for r in v.requests if r.started >= offset]
        assert len(during) > 50 and all(r.status == 200 for r in during), [r.status for r in during]
        assert edge.process.wait(DRAIN_SECONDS + 5) == 0
    finally:
        stop_all(edge, origin)
