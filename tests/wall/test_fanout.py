"""Fan-out across replicas through a real redis-server: the origin's approvals reach an edge's SSE
clients, edges hand viewers' posts to the origin, and event ids mean the same everywhere."""

from __future__ import annotations

import random
import time

import aiohttp

from tests.support.wall import act, post, queue, serve, settings, sse


def redis_settings(redis, tmp_path=None, **changes):
    prefix = f"test-{random.getrandbits(40):x}"  # tests sharing one redis-server never see each other
    return settings(tmp_path / "wall.sqlite3" if tmp_path else None, redis_url=redis.url, redis_prefix=prefix,
                    **changes)


async def test_post_approved_on_the_origin_appears_on_an_edge(redis_server, tmp_path):
    origin_settings = redis_settings(redis_server, tmp_path)
    edge_settings = settings(None, role="edge", redis_url=redis_server.url, redis_prefix=origin_settings.redis_prefix)
    async with aiohttp.ClientSession() as session, serve(origin_settings) as (origin, _), \
            serve(edge_settings) as (edge, _):
        async with sse(session, edge) as on_edge, sse(session, edge) as also_on_edge:
            await on_edge.wait_for(1)
            await also_on_edge.wait_for(1)
            # A viewer of the edge asks; the origin's moderators see it in their queue.
            status, body = await post(session, edge, {"text": "Asked at the edge", "kind": "question"})
            assert status == 202
            deadline = time.monotonic() + 5
            pending = []
            while time.monotonic() < deadline and not pending:
                pending = (await queue(session, origin))["pending"]
            assert [p["id"] for p in pending] == [body["id"]]
            approved_at = time.monotonic()
            assert (await act(session, origin, body["id"], "approve"))[0] == 200
            for client in (on_edge, also_on_edge):
                events = await client.wait_for(2, timeout=1.0)
                assert [e.type for e in events] == ["snapshot", "post"], events
                assert events[1].data["text"] == "Asked at the edge"
                assert events[1].received - approved_at < 1.0
            edge_id = on_edge.events[1].id
        async with sse(session, origin) as on_origin:
            assert (await on_origin.wait_for(1))[0].id == edge_id  # the same event id on every replica
        # A second edge started later begins from Redis's view of the wall.
        async with serve(edge_settings) as (late_edge, _), sse(session, late_edge) as late:
            snapshot = (await late.wait_for(1))[0]
            assert snapshot.type == "snapshot" and [p["id"] for p in snapshot.data["posts"]] == [body["id"]]
            # Resuming on an edge from an id the origin issued.
            await act(session, origin, body["id"], "reject")
            async with sse(session, late_edge, last_event_id=edge_id) as resumed:
                events = await resumed.wait_for(1)
                assert [(e.type, e.id) for e in events] == [("remove", edge_id + 1)]


async def test_origin_catches_up_on_redis_after_an_outage(own_redis, tmp_path):
    origin_settings = redis_settings(own_redis, tmp_path, moderation="auto")
    edge_settings = settings(None, role="edge", redis_url=own_redis.url, redis_prefix=origin_settings.redis_prefix)
    async with aiohttp.ClientSession() as session, serve(origin_settings) as (origin, _):
        await post(session, origin, {"text": "before the outage"})
        own_redis.stop()
        await post(session, origin, {"text": "during the outage"})  # stored at the origin; Redis is down
        own_redis.start()
        async with serve(edge_settings) as (edge, _), sse(session, edge) as client:
            deadline = time.monotonic() + 15
            texts = []
            while time.monotonic() < deadline and len(texts) < 2:
                await client.wait_for(len(client.events) + 1, timeout=0.5)
                posts = {}
                for event in client.events:
                    if event.type == "snapshot":
                        posts = {p["id"]: p["text"] for p in event.data["posts"]}
                    elif event.type == "post":
                        posts[event.data["id"]] = event.data["text"]
                texts = sorted(posts.values())
            assert texts == ["before the outage", "during the outage"]
