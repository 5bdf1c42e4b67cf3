"""Hostile input through every source (page posts, webhook, Mastodon HTML, RSS) ends up as inert
text; oversized bodies get 413 without being read whole; a flood from one client gets 429; bad JSON,
unknown fields and wrong types get 400; webhook signatures, timestamps and replays are checked."""

from __future__ import annotations

import json
import time

import aiohttp

from launchkit.wall.connectors.mastodon import MastodonConnector, TagTimeline
from launchkit.wall.connectors.rss import FeedItem, _item
from launchkit.wall.connectors.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from launchkit.wall.posts import Candidate, Kind
from tests.support.feeds import mastodon_server, status
from tests.support.wall import queue, serve, settings, sse

SECRET = "webhook-secret-for-tests"
CORPUS = [
    "<script>alert(1)</script>hello",
    '<img src=x onerror="window.__xss=1">',
    '<a href="javascript:alert(1)">click</a>',
    '<svg onload=alert(1)><circle r="1"/></svg>svg',
    "<iframe src=//evil.example></iframe>frame",
    '"><body onload=alert(1)>',
    "abc\u202edcba\u2066isolate\u2069 rtl",
    "nul\x00bel\x07 and \ud800 lone surrogate",
    # In HTML this is text that reads "<script>...": it stays that text, and is served escaped.
    "&lt;script&gt;alert(1)&lt;/script&gt;",
]
BIDI = {chr(c) for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]}


def assert_inert_text(text: str) -> None:
    assert not BIDI & set(text), repr(text)
    assert not any(ord(c) < 32 and c != "\n" for c in text), repr(text)
    assert not any(0xD800 <= ord(c) <= 0xDFFF for c in text), repr(text)


def assert_inert_bytes(body: bytes) -> None:
    """What we serve never contains markup characters: JSON escapes them."""
    assert b"<" not in body and b">" not in body, body[:200]


async def test_corpus_through_every_source_is_served_as_inert_text(tmp_path):
    wall_settings = settings(tmp_path / "w.sqlite3", moderation="auto", webhook_secret=SECRET)
    async with aiohttp.ClientSession() as session, mastodon_server() as fake, serve(wall_settings) as (url, wall):
        for n, text in enumerate(CORPUS):
            async with session.post(url + "/api/wall/posts", json={"text": text, "name": text[:40]}) as response:
                assert response.status == 202, await response.text()
            body = json.dumps({"id": f"d{n}", "text": text, "html": n % 2 == 0, "url": "javascript:alert(1)"}).encode()
            stamp = int(time.time())
            async with session.post(url + "/api/wall/webhook", data=body, headers={
                    TIMESTAMP_HEADER: str(stamp), SIGNATURE_HEADER: sign(SECRET.encode(), stamp, body),
                    "Content-Type": "application/json"}) as response:
                assert response.status == 202, await response.text()
            fake.statuses.append({**status(n, "127.0.0.1", content=text), "url": "javascript:alert(1)"})
            item = _item(f"k{n}", text, text, text, "javascript:alert(1)")
            assert isinstance(item, FeedItem) and item.url is None
            if item.text:  # an item that was only markup has no text and is skipped, as the connector does
                await wall.take(Candidate(source="rss", kind=Kind.COMMENT, text=item.text, author="rss:test",
                                          url=item.url, source_key=f"rss:{n}"))
        connector = MastodonConnector(TagTimeline.parse(f"{fake.url}#x"), session, wall.store, wall.take)
        await connector.poll()
        posts = await wall.store.visible(500)
        assert {p.source for p in posts} == {"page", "webhook", "mastodon", "rss"}
        for post in posts:
            assert_inert_text(post.text)
            assert post.url is None or post.url.startswith(("http://", "https://"))
            if post.source in ("mastodon", "rss") and "alert(1)</script>" not in post.text:
                assert "<" not in post.text and "onerror" not in post.text, post  # HTML sources: no tag survives
        by_text = {p.text for p in posts if p.source == "mastodon"}
        assert "hello" in by_text and "click" in by_text and "abcdcbaisolate rtl" in by_text
        async with sse(session, url) as client:
            await client.wait_for(1)
        async with session.get(url + "/api/wall/events") as response:
            assert_inert_bytes(await response.content.read(200_000))
        async with session.get(url + "/api/ops/wall/queue",
                               headers={"Authorization": "Bearer ops-token-0123456789abcdef"}) as response:
            assert_inert_bytes(await response.read())
        page_texts = {p.text for p in posts if p.source == "page"}
        assert '<img src=x onerror="window.__xss=1">' in page_texts  # typed text stays text, shown as typed


async def test_oversized_bodies_get_413_without_being_read(tmp_path):
    async with aiohttp.ClientSession() as session, serve(settings(None, webhook_secret=SECRET)) as (url, _):
        big = b'{"text": "' + b"a" * (4 * 1024 * 1024) + b'"}'
        for path in ("/api/wall/posts", "/api/wall/webhook"):
            async with session.post(url + path, data=big, headers={"Content-Type": "application/json"}) as response:
                assert response.status == 413 and "over" in (await response.json())["error"]

        async def chunks():  # no Content-Length: refused once the limit is crossed
            for _ in range(64):
                yield b"a" * 65536

        async with session.post(url + "/api/wall/posts", data=chunks()) as response:
            assert response.status == 413
        async with session.post(url + "/api/wall/posts", json={"text": "x" * 5000}) as response:
            assert response.status == 400 and "too long" in (await response.json())["error"]


async def test_malformed_requests_get_400_with_a_message(tmp_path):
    async with aiohttp.ClientSession() as session, serve(settings(None)) as (url, _):
        cases = {
            b"{not json": "malformed JSON", b"": "empty body", b"\xff\xfe{}": "UTF-8", b"[1, 2]": "JSON object",
            b'{"text": "hi", "admin": true}': "unknown field", b'{"text": 5}': "text must be a str",
            b'{"text": "hi", "kind": "rant"}': "kind must be", b'{"text": "   "}': "text is empty",
            b'{"name": "x"}': "text is required", b'{"text": "hi", "name": ["a"]}': "name must be a str",
        }
        for body, message in cases.items():
            async with session.post(url + "/api/wall/posts", data=body,
                                    headers={"Content-Type": "application/json"}) as response:
                answer = await response.json()
                assert response.status == 400 and message in answer["error"], (body, answer)
                assert "Traceback" not in answer["error"]
        async with session.get(url + "/api/wall/events", headers={"Last-Event-ID": "12abc"}) as response:
            assert response.status == 400
        assert (await queue(session, url))["pending"] == []  # nothing was stored


async def test_a_flood_from_one_client_gets_429_with_retry_after(tmp_path):
    async with aiohttp.ClientSession() as session, serve(settings(None, posts_per_minute=6, burst=3)) as (url, _):
        statuses, retry = [], None
        for n in range(10):
            async with session.post(url + "/api/wall/posts", json={"text": f"spam {n}"}) as response:
                statuses.append(response.status)
                if response.status == 429:
                    retry = int(response.headers["Retry-After"])
        assert statuses == [202, 202, 202] + [429] * 7
        assert 1 <= retry <= 10
        assert len((await queue(session, url))["pending"]) == 3


async def test_webhook_signature_timestamp_and_replay(tmp_path):
    async with aiohttp.ClientSession() as session, serve(settings(None, webhook_secret=SECRET)) as (url, _):
        body = json.dumps({"id": "delivery-1", "text": "from the CMS", "kind": "question"}).encode()

        async def send(stamp: int, signature: str, data: bytes = body) -> int:
            async with session.post(url + "/api/wall/webhook", data=data, headers={
                    TIMESTAMP_HEADER: str(stamp), SIGNATURE_HEADER: signature}) as response:
                return response.status

        now = int(time.time())
        assert await send(now, "sha256=" + "0" * 64) == 401
        assert await send(now, sign(b"wrong secret", now, body)) == 401
        assert await send(now - 3600, sign(SECRET.encode(), now - 3600, body)) == 401  # stale
        good = sign(SECRET.encode(), now, body)
        assert await send(now, good) == 202
        assert await send(now, good) == 409  # the same signed request again: a replay
        assert await send(now + 1, sign(SECRET.encode(), now + 1, body)) == 200  # a retried delivery: stored once
        pending = (await queue(session, url))["pending"]
        assert [(p["text"], p["kind"], p["source"]) for p in pending] == [("from the CMS", "question", "webhook")]
