"""A press question from the page to the screens: queue, approval, live delivery over SSE, restart,
and Last-Event-ID resume; plus the moderation rules."""

from __future__ import annotations

import hmac
import time
from dataclasses import replace

import aiohttp

from launchkit.wall.sse import StreamSettings
from tests.support.wall import act, post, queue, serve, settings, sse


async def test_question_is_moderated_delivered_kept_and_resumed(tmp_path):
    database = tmp_path / "wall.sqlite3"
    async with aiohttp.ClientSession() as session:
        async with serve(settings(database)) as (url, _wall):
            status, answer = await post(session, url, {"text": "When does it ship?", "name": "Ana",
                                                       "outlet": "Tech Daily", "kind": "question"})
            assert status == 202
            question = answer["id"]
            pending = (await queue(session, url))["pending"]
            assert [p["id"] for p in pending] == [question] and pending[0]["state"] == "pending"
            assert pending[0]["kind"] == "question" and pending[0]["outlet"] == "Tech Daily"

            async with sse(session, url) as first, sse(session, url) as second:
                await first.wait_for(1)
                await second.wait_for(1)
                assert first.events[0].type == "snapshot" and first.events[0].data == {"posts": []}
                approved_at = time.monotonic()
                assert (await act(session, url, question, "approve"))[0] == 200
                for client in (first, second):
                    events = await client.wait_for(2, timeout=1.0)
                    assert len(events) == 2, events
                    assert events[1].type == "post" and events[1].data["id"] == question
                    assert events[1].data["text"] == "When does it ship?" and events[1].data["state"] == "approved"
                    assert events[1].received - approved_at < 1.0
                    assert "author" not in events[1].data  # the poster's key is for moderators only
                seen = first.events[1].id
            assert (await queue(session, url))["pending"] == []
            # Missed while away: two approvals and one rejection of an approved post.
            ids = [(await post(session, url, {"text": f"comment {n}"}))[1]["id"] for n in range(2)]
            for post_id in ids:
                await act(session, url, post_id, "approve")
            await act(session, url, ids[0], "reject")

        # A new server on the same file (a restart): the approved question is still there.
        async with serve(settings(database)) as (url, _wall):
            async with sse(session, url) as fresh:
                snapshot = (await fresh.wait_for(1))[0]
                assert snapshot.type == "snapshot"
                assert [p["id"] for p in snapshot.data["posts"]] == [question, ids[1]]
            async with sse(session, url, last_event_id=seen) as resumed:
                events = await resumed.wait_for(3)
                await resumed.wait_for(4, timeout=0.3)  # nothing more may come
                assert [(e.type, e.data["id"]) for e in resumed.events] == [
                    ("post", ids[0]), ("post", ids[1]), ("remove", ids[0])]
                assert [e.id for e in events] == [seen + 1, seen + 2, seen + 3]


async def test_resume_beyond_the_memory_ring_comes_from_the_store_and_too_old_gets_a_snapshot(tmp_path):
    wall_settings = replace(settings(tmp_path / "wall.sqlite3", moderation="auto"),
                            stream=StreamSettings(ring_size=2, max_backlog=5, retry_ms=200))
    async with aiohttp.ClientSession() as session, serve(wall_settings) as (url, _wall):
        for n in range(4):
            assert (await post(session, url, {"text": f"auto {n}"}))[0] == 202
        async with sse(session, url, last_event_id=1) as resumed:  # ring holds 3 and 4: 2 comes from SQLite
            events = await resumed.wait_for(3)
            assert [e.id for e in events] == [2, 3, 4] and all(e.type == "post" for e in events)
        for n in range(6):
            await post(session, url, {"text": f"more {n}"})
        async with sse(session, url, last_event_id=1) as too_old:  # 9 missed > max_backlog
            events = await too_old.wait_for(1)
            assert events[0].type == "snapshot" and events[0].id == 10 and len(events[0].data["posts"]) == 10


async def test_moderation_rules(tmp_path):
    wall_settings = settings(tmp_path / "wall.sqlite3", block_words=("scam",), block_accounts=("mastodon:troll@x.y",))
    async with aiohttp.ClientSession() as session, serve(wall_settings) as (url, wall):
        async with session.post(url + "/api/ops/wall/abc/approve", data="{}",
                                headers={"Content-Type": "application/json"}) as response:
            assert response.status == 401  # no ops token
        _, comment = await post(session, url, {"text": "nice launch"})
        assert (await act(session, url, comment["id"], "answer"))[0] == 409  # comments cannot be answered
        assert (await act(session, url, "nosuchpost", "approve"))[0] == 404
        async with session.post(f"{url}/api/ops/wall/{comment['id']}/approve", data="x=1",
                                headers={"Authorization": "Bearer ops-token-0123456789abcdef",
                                         "Content-Type": "application/x-www-form-urlencoded"}) as response:
            assert response.status == 415  # state changes take JSON only (no cross-site forms)
        _, blocked = await post(session, url, {"text": "total SCAM, sell now"})
        state = await wall.store.get(blocked["id"])
        assert state.state.value == "rejected"

        async with sse(session, url) as client:
            await client.wait_for(1)
            _, question = await post(session, url, {"text": "price?", "kind": "question"})
            for action in ("approve", "pin", "answer"):
                status, body = await act(session, url, question["id"], action)
                assert status == 200 and body["state"] == {"approve": "approved", "pin": "pinned",
                                                           "answer": "answered"}[action]
            assert (await queue(session, url))["questions"][0]["state"] == "answered"
            await act(session, url, comment["id"], "approve")
            # Banning the poster (same client address) hides everything they posted, and what comes next.
            status, _ = await act(session, url, comment["id"], "ban")
            assert status == 200
            events = await client.wait_for(7)
            assert [e.type for e in events[1:]] == ["post", "post", "post", "post", "remove", "remove"]
            assert {e.data["id"] for e in events[-2:]} == {comment["id"], question["id"]}
            _, later = await post(session, url, {"text": "I am back"})
            assert (await wall.store.get(later["id"])).state.value == "rejected"


async def test_auto_mode_and_allow_list(tmp_path):
    async with aiohttp.ClientSession() as session:
        async with serve(settings(None, moderation="auto")) as (url, wall):
            _, body = await post(session, url, {"text": "straight to the wall"})
            assert (await wall.store.get(body["id"])).state.value == "approved"
        page_author = "page:" + hmac.new(b"test-identity", b"127.0.0.1", "sha256").hexdigest()[:16]
        async with serve(settings(None, allow=(page_author,))) as (url, wall):
            _, body = await post(session, url, {"text": "trusted"})
            assert (await wall.store.get(body["id"])).state.value == "approved"
