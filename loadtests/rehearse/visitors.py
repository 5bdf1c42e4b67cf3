"""Landing-page visitors: what a browser on `/` does besides playing the stream.

A visitor loads the page, polls `/api/status` (as player.js does), follows the wall over SSE
(`GET /api/wall/events`) and sometimes posts a question (`POST /api/wall/posts`), for `stay`
seconds. A 404 on the wall counts as "wall unavailable" (not every deployment mounts it), and a
429 on a post is the per-client rate limit doing its job: neither is an error.
"""

from __future__ import annotations

import asyncio
import random

import aiohttp

from loadtests.player import classify_error
from loadtests.rehearse.profiles import Arrival
from loadtests.rehearse.results import ArrivalResult

STATUS_EVERY = 5.0  # seconds between /api/status polls
POST_PROBABILITY = 0.2  # share of visitors who ask a question
REQUEST_TIMEOUT = 5.0
QUESTIONS = ("Which markets get the box first?", "What does it cost?", "Does it support 4K HDR?",
             "When can journalists get a review unit?")


async def visitor(session: aiohttp.ClientSession, base_url: str, arrival: Arrival, record: ArrivalResult) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + arrival.stay
    rng = random.Random(arrival.index)  # the same visitor asks the same thing in every run
    record.state = "visiting"
    record.detail.update(status_polls=0, wall="unavailable", wall_events=0, posts=0, posts_accepted=0,
                         posts_rate_limited=0)
    sent = loop.time()
    status = await _get(session, f"{base_url}/", record)
    record.joined = status == 200
    record.startup = loop.time() - sent
    if record.joined:
        jobs = [_poll_status(session, base_url, record, deadline), _follow_wall(session, base_url, record, deadline)]
        if rng.random() < POST_PROBABILITY:
            jobs.append(_post_question(session, base_url, record, loop.time() + rng.uniform(0, arrival.stay),
                                       rng.choice(QUESTIONS)))
        try:
            async with asyncio.timeout_at(deadline):
                await asyncio.gather(*jobs)
        except TimeoutError:
            pass  # time to leave the page
    record.state = "done"


async def _get(session: aiohttp.ClientSession, url: str, record: ArrivalResult) -> int | None:
    """GET the whole body; the status, or None on a network error (recorded)."""
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)) as response:
            record.bytes += len(await response.read())
            _check(record, response.status)
            return response.status
    except (aiohttp.ClientError, asyncio.TimeoutError) as error:
        _error(record, classify_error(error))
        return None


def _check(record: ArrivalResult, status: int, expected: tuple[int, ...] = (200,)) -> None:
    if status >= 500:
        record.http_5xx += 1
    if status not in expected:
        _error(record, f"http_{status}")


def _error(record: ArrivalResult, kind: str) -> None:
    record.errors[kind] = record.errors.get(kind, 0) + 1


async def _poll_status(session: aiohttp.ClientSession, base_url: str, record: ArrivalResult, deadline: float) -> None:
    loop = asyncio.get_running_loop()
    while loop.time() < deadline:
        await _get(session, f"{base_url}/api/status", record)
        record.detail["status_polls"] += 1
        await asyncio.sleep(STATUS_EVERY)


async def _follow_wall(session: aiohttp.ClientSession, base_url: str, record: ArrivalResult, deadline: float) -> None:
    """Read the SSE stream until the visitor leaves (the caller's timeout ends it)."""
    loop = asyncio.get_running_loop()
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=REQUEST_TIMEOUT)
    try:
        async with session.get(f"{base_url}/api/wall/events", timeout=timeout,
                               headers={"Accept": "text/event-stream"}) as response:
            if response.status == 404:
                return  # no wall on this deployment
            _check(record, response.status)
            if response.status != 200:
                return
            record.detail["wall"] = "ok"
            while loop.time() < deadline:
                line = await response.content.readline()
                if not line:
                    return
                if line.startswith(b"data:"):
                    record.detail["wall_events"] += 1
                record.bytes += len(line)
    except (aiohttp.ClientError, asyncio.TimeoutError) as error:
        _error(record, f"wall_{classify_error(error)}")


async def _post_question(session: aiohttp.ClientSession, base_url: str, record: ArrivalResult, at: float,
                         text: str) -> None:
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, at - loop.time()))
    record.detail["posts"] += 1
    try:
        async with session.post(f"{base_url}/api/wall/posts", json={"text": text, "kind": "question"},
                                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)) as response:
            await response.read()
            if response.status == 202:
                record.detail["posts_accepted"] += 1
            elif response.status == 429:
                record.detail["posts_rate_limited"] += 1
            elif response.status == 404:
                record.detail["wall"] = "unavailable"
            else:
                _check(record, response.status, expected=(202,))
    except (aiohttp.ClientError, asyncio.TimeoutError) as error:
        _error(record, f"wall_post_{classify_error(error)}")
