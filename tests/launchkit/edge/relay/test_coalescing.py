"""Single flight: one execution per key however many concurrent callers, shared results and errors."""

from __future__ import annotations

import asyncio

import pytest

from launchkit.edge.relay.coalescing import SingleFlight


async def test_concurrent_callers_share_one_execution():
    flights: SingleFlight[str, bytes] = SingleFlight()
    calls = 0
    release = asyncio.Event()

    async def fetch() -> bytes:
        nonlocal calls
        calls += 1
        await release.wait()
        return b"segment"

    callers = [asyncio.create_task(flights.do("/hls/a/1.m4s", fetch)) for _ in range(500)]
    await asyncio.sleep(0.01)
    assert calls == 1 and "/hls/a/1.m4s" in flights
    release.set()
    results = await asyncio.gather(*callers)
    assert calls == 1
    assert {value for value, _ in results} == {b"segment"}
    assert sum(leader for _, leader in results) == 1
    assert len(flights) == 0  # forgotten once done: the next caller starts afresh
    await flights.do("/hls/a/1.m4s", fetch)
    assert calls == 2


async def test_different_keys_run_separately():
    flights: SingleFlight[str, str] = SingleFlight()
    calls: list[str] = []

    async def fetch(key: str) -> str:
        calls.append(key)
        await asyncio.sleep(0.01)
        return key

    results = await asyncio.gather(*(flights.do(k, lambda k=k: fetch(k)) for k in ["a", "b", "a", "b", "c"]))
    assert sorted(calls) == ["a", "b", "c"]
    assert [value for value, _ in results] == ["a", "b", "a", "b", "c"]


async def test_an_error_reaches_every_follower_and_is_not_kept():
    flights: SingleFlight[str, bytes] = SingleFlight()
    calls = 0

    async def failing() -> bytes:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.02)
        raise ConnectionError("origin down")

    results = await asyncio.gather(*(flights.do("k", failing) for _ in range(50)), return_exceptions=True)
    assert calls == 1
    assert all(isinstance(r, ConnectionError) and str(r) == "origin down" for r in results)
    with pytest.raises(ConnectionError):
        await flights.do("k", failing)
    assert calls == 2


async def test_a_cancelled_leader_does_not_cancel_the_followers():
    flights: SingleFlight[str, str] = SingleFlight()

    async def slow() -> str:
        await asyncio.sleep(0.05)
        return "done"

    leader = asyncio.create_task(flights.do("k", slow))
    await asyncio.sleep(0)
    follower = asyncio.create_task(flights.do("k", slow))
    await asyncio.sleep(0.01)
    leader.cancel()  # the viewer who triggered the fetch hung up
    assert await follower == ("done", False)
    with pytest.raises(asyncio.CancelledError):
        await leader
