"""Mastodon and RSS/Atom connectors against local servers on 127.0.0.1 with realistic payloads:
pagination (Link + min_id), rate-limit headers, 429 and 5xx, malformed JSON/XML. Posts appear once,
errors are counted and retried with backoff, nothing crashes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from datetime import datetime, timedelta, timezone

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from launchkit.wall.connectors import MAX_RESPONSE, FetchError, fetch
from launchkit.wall.connectors.mastodon import FIRST_PAGE, MastodonConnector, TagTimeline
from launchkit.wall.connectors.rss import parse_feed
from tests.support.feeds import RSS, errors, mastodon_server, status, stored
from tests.support.wall import serve, settings


async def test_mastodon_pages_forward_with_min_id_and_stores_each_status_once(tmp_path):
    async with mastodon_server() as fake, serve(settings(tmp_path / "w.sqlite3", moderation="auto")) as (_, wall), \
            aiohttp.ClientSession() as session:
        fake.add(50)
        timeline = TagTimeline.parse(f"{fake.url}#launch")
        connector = MastodonConnector(timeline, session, wall.store, wall.take, interval=30)
        assert await connector.poll() == 30
        assert await stored(wall, "mastodon") == 20  # the newest page only: not the archive
        assert "min_id" not in fake.requests[0]
        fake.add(90)
        await connector.poll()
        assert [r.get("min_id") for r in fake.requests[1:]] == [
            fake.statuses[49]["id"], fake.statuses[89]["id"], fake.statuses[129]["id"]]  # 40 + 40 + 10
        assert await stored(wall, "mastodon") == 110
        await connector.poll()  # nothing new
        assert await stored(wall, "mastodon") == 110
        # Restart: the cursor was kept, nothing is read twice.
        again = MastodonConnector(timeline, session, wall.store, wall.take, interval=30)
        await again.poll()
        assert fake.requests[-1]["min_id"] == fake.statuses[-1]["id"]
        visible = (await wall.store.visible(500))
        assert len({p.id for p in visible}) == 110
        newest = visible[-1]
        assert newest.text == "Launch post 139 #launch" and newest.name == "Alice :verified:"
        assert newest.author == "mastodon:alice@127.0.0.1" and newest.url.startswith("https://127.0.0.1:")
        # The quota nearly used up: the next poll waits for X-RateLimit-Reset.
        fake.remaining = 2
        fake.reset = datetime.now(timezone.utc) + timedelta(seconds=120)
        wait = await again.poll()
        assert 100 < wait <= 120


async def test_mastodon_faults_are_counted_retried_with_backoff_and_posts_appear_once(tmp_path):
    async with mastodon_server() as fake:
        fake.add(5)
        fake.faults = ["500", "429", "malformed", "500"]
        before = {r: errors("mastodon", r) for r in ("server_error", "rate_limited", "malformed")}
        wall_settings = settings(tmp_path / "w.sqlite3", moderation="auto", mastodon_interval=0.05,
                                 mastodon=(f"{fake.url}#launch", f"{fake.url}#launchday"))
        async with serve(wall_settings) as (_, wall):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and (fake.faults or await stored(wall, "mastodon") < 5):
                await asyncio.sleep(0.05)
            fake.add(3)
            while time.monotonic() < deadline and await stored(wall, "mastodon") < 8:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)  # both tags polled several more times
            # Both tags see the same statuses (same URIs): stored once.
            assert await stored(wall, "mastodon") == 8
        assert errors("mastodon", "server_error") - before["server_error"] == 2
        assert errors("mastodon", "rate_limited") - before["rate_limited"] == 1
        assert errors("mastodon", "malformed") - before["malformed"] == 1


ATOM = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>Launch blog</title><id>urn:uuid:feed</id>
<updated>2026-12-01T13:00:00Z</updated>
<entry><title type="html">&lt;em&gt;Live&lt;/em&gt; now</title><id>urn:uuid:e1</id>
  <link rel="alternate" href="https://blog.example/live"/><updated>2026-12-01T13:00:00Z</updated>
  <author><name>Press team</name></author><summary>Watch it &lt;svg onload=alert(1)&gt;here</summary></entry>
</feed>"""

RDF = b"""<?xml version="1.0"?>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/">
<channel rdf:about="https://old.example/"><title>Old site</title></channel>
<item rdf:about="https://old.example/1"><title>RDF item</title><link>https://old.example/1</link></item>
</rdf:RDF>"""

BOMB = b"""<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>
<rss><channel><title>&lol2;</title></channel></rss>"""


def test_feed_formats_parse_to_plain_text():
    title, items = parse_feed(RSS)
    assert title == "Tech Daily"
    assert [i.text for i in items] == ["The box ships in May: Hands-on first look.",
                                       "Price & availability: Cheaper than expected"]
    assert items[0].author == "Bo Chen" and items[0].url == "https://news.example/box" and items[1].url is None
    title, items = parse_feed(ATOM)
    # An SVG's content is never text: an unclosed one drops the rest (nothing of it can run either way).
    assert (title, items[0].text, items[0].url, items[0].author) == (
        "Launch blog", "Live now: Watch it", "https://blog.example/live", "Press team")
    assert parse_feed(RDF)[1][0].key == "https://old.example/1"
    for bad in (BOMB, b"<rss><channel><item>", b"\xff\xfe not xml", b"<html><body>hi</body></html>"):
        with pytest.raises(FetchError) as caught:
            parse_feed(bad)
        assert caught.value.reason == "malformed"


async def test_feeds_are_polled_conditionally_and_malformed_ones_retried(tmp_path):
    served = {"rss": [b"<rss><channel><title>broken", RSS], "atom": [ATOM]}
    hits: list[tuple[str, str | None]] = []

    async def feed(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        hits.append((name, request.headers.get("If-None-Match")))
        if request.headers.get("If-None-Match") == f'"{name}-v1"':
            return web.Response(status=304)
        body = served[name].pop(0) if len(served[name]) > 1 else served[name][0]
        return web.Response(body=body, content_type="application/xml", headers={"ETag": f'"{name}-v1"'})

    app = web.Application()
    app.router.add_get("/{name}.xml", feed)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    base = f"http://127.0.0.1:{server.port}"
    before = errors("rss", "malformed")
    try:
        wall_settings = settings(tmp_path / "w.sqlite3", moderation="auto", feed_interval=0.05,
                                 feeds=(f"{base}/rss.xml", f"{base}/atom.xml"))
        async with serve(wall_settings) as (_, wall):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and await stored(wall, "rss") < 3:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
            assert await stored(wall, "rss") == 3
            texts = sorted(p.text for p in await wall.store.visible(10))
            assert texts[0] == "Live now: Watch it"
        assert errors("rss", "malformed") - before == 1
        assert ("rss", '"rss-v1"') in hits and ("atom", '"atom-v1"') in hits  # conditional GETs after the first
    finally:
        await server.close()


def full_status(n: int, host: str) -> dict:
    """A status the size Mastodon really sends (~6 kB): the account's bio, profile fields, emojis,
    a media attachment with its metadata and a preview card."""
    bio = "<p>Tech reporter covering launches, chips and the companies behind them. " * 45 + "</p>"
    return status(
        n, host, content=f"<p>Launch post {n}: " + "live from the keynote, the box looks great. " * 20 + "</p>",
        account={"id": str(n), "username": "alice", "acct": "alice", "display_name": "Alice :verified:",
                 "url": f"https://{host}/@alice", "note": bio, "avatar": f"https://{host}/avatars/{'a' * 64}.png",
                 "fields": [{"name": f"field {i}", "value": f"<a href=\"https://{host}/{i}\">link {i}</a>"}
                            for i in range(4)],
                 "emojis": [{"shortcode": "verified", "url": f"https://{host}/emoji/{'e' * 64}.png"}]},
        media_attachments=[{"id": str(n), "type": "image", "url": f"https://{host}/media/{'m' * 64}.jpg",
                            "meta": {"original": {"width": 1920, "height": 1080, "size": "1920x1080"},
                                     "small": {"width": 640, "height": 360}},
                            "description": "The box on stage " * 10, "blurhash": "U" * 30}],
        card={"url": f"https://{host}/article", "title": "Hands-on", "description": "First look " * 30},
    )


async def test_a_real_size_mastodon_answer_arriving_in_pieces_is_read_whole(tmp_path):
    """~125 kB per answer, sent in 16 kB pieces 30 ms apart, with Content-Length and chunked: a
    single read() returned the first piece only (rejected as malformed JSON)."""
    sizes: dict[str, int] = {}

    async def timeline(request: web.Request) -> web.StreamResponse:
        tag = request.match_info["tag"]
        offset = 0 if tag == "chunked" else 1000
        host = request.host
        body = json.dumps([full_status(offset + n, host) for n in range(int(request.query["limit"]))][::-1]).encode()
        sizes[tag] = len(body)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        if tag == "chunked":
            response.enable_chunked_encoding()
        else:
            response.content_length = len(body)
        await response.prepare(request)
        for start in range(0, len(body), 16384):
            await response.write(body[start:start + 16384])
            await asyncio.sleep(0.03)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/api/v1/timelines/tag/{tag}", timeline)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        async with serve(settings(tmp_path / "w.sqlite3", moderation="auto")) as (_, wall), \
                aiohttp.ClientSession() as session:
            for tag in ("chunked", "length"):
                timeline_ = TagTimeline.parse(f"http://127.0.0.1:{server.port}#{tag}")
                await MastodonConnector(timeline_, session, wall.store, wall.take, interval=30).poll()
            print(f"\nanswers of {sizes} bytes, in 16 kB pieces 30 ms apart")
            assert all(size > 120_000 for size in sizes.values()), sizes
            assert await stored(wall, "mastodon") == 2 * FIRST_PAGE
    finally:
        await server.close()


async def test_answers_over_the_cap_are_refused_without_reading_them_whole():

    async def big(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        if name == "declared":
            response.content_length = 3 * MAX_RESPONSE  # then sends a little, and waits
        else:
            response.enable_chunked_encoding()
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            for _ in range(3 * MAX_RESPONSE // 65536):
                await response.write(b" " * 65536)
                if name == "declared":
                    await asyncio.sleep(10)
        return response

    app = web.Application()
    app.router.add_get("/{name}", big)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            for name in ("declared", "chunked"):
                started = time.monotonic()
                with pytest.raises(FetchError) as caught:
                    await fetch(session, f"http://127.0.0.1:{server.port}/{name}")
                assert caught.value.reason == "too_large"
                assert time.monotonic() - started < 5  # refused, not waited for
            within = await fetch(session, f"http://127.0.0.1:{server.port}/chunked", max_bytes=4 * MAX_RESPONSE)
            assert len(within.body) == 3 * MAX_RESPONSE // 65536 * 65536
    finally:
        await server.close()


FEEDS_WITHOUT_DTD = {
    "RSS 2.0, UTF-8": RSS,
    "RSS 2.0, UTF-16 LE (BOM)": RSS.decode().replace("UTF-8", "UTF-16").encode("utf-16"),
    "Atom, UTF-16 BE (BOM)": ("\ufeff" + ATOM.decode().replace("utf-8", "UTF-16")).encode("utf-16-be"),
    "RSS 1.0, UTF-16, no declaration": RDF.decode().replace('<?xml version="1.0"?>\n', "").encode("utf-16"),
}


async def test_feeds_without_a_dtd_are_read_in_utf8_and_utf16(tmp_path):
    async def feed(request: web.Request) -> web.Response:
        return web.Response(body=FEEDS_WITHOUT_DTD[request.query["name"]], content_type="application/xml")

    app = web.Application()
    app.router.add_get("/feed", feed)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    urls = tuple(str(URL(f"http://127.0.0.1:{server.port}/feed").with_query(name=name)) for name in FEEDS_WITHOUT_DTD)
    try:
        async with serve(settings(tmp_path / "w.sqlite3", moderation="auto", feed_interval=30,
                                  feeds=urls)) as (_, wall):
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and await stored(wall, "rss") < 4:
                await asyncio.sleep(0.05)
            texts = sorted(p.text for p in await wall.store.visible(20))
    finally:
        await server.close()
    # The two RSS 2.0 feeds are two sources (two URLs) with the same items: 2 + 2 + 1 + 1.
    assert texts == ["Live now: Watch it", "Price & availability: Cheaper than expected",
                     "Price & availability: Cheaper than expected", "RDF item",
                     "The box ships in May: Hands-on first look.", "The box ships in May: Hands-on first look."]
