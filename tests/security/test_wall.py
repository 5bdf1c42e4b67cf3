"""Attacks on the social wall (issue #12, items 4, 6, 10 and the connectors of 11).

- Per-proxy limits (6): through a real `launchkit demo --trusted-proxies 127.0.0.2`, viewers behind
  that proxy have their own rate limits and bans, and nobody else can pick a key by forging
  X-Forwarded-For (nor a client behind the proxy, by writing the left part of it).
- Unauthenticated input (10): `?last_event_id=%C2%B2`, a webhook timestamp "²", a non-ASCII
  signature, JSON nested too deeply: a 4xx with a message, nothing in the log but what we say.
- Feeds (4): entity declarations are refused in UTF-8 and UTF-16 alike (the old byte check for
  "<!DOCTYPE" missed UTF-16), nothing named by an external entity or DTD is fetched.
- Redirects (11): a source cannot send a connector to another host or port (SSRF).
- Hostile sources: headers like `Retry-After: ²` and deeply nested answers are counted errors, not
  crashes with a traceback.
Loopback only: other hosts are other 127.0.0.0/8 addresses. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections import Counter

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from launchkit.auth import FailedCredentials
from launchkit.wall.connectors import MAX_REDIRECTS, FetchError, fetch, same_site
from launchkit.wall.connectors.rss import parse_feed
from launchkit.wall.connectors.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from launchkit.web.clients import parse_networks
from launchkit.web.credentials import require_bearer
from launchkit.web.ratelimit import Limit
from loadtests.target import start_demo
from tests.support.client import fetch_metrics
from tests.support.feeds import RSS, errors, mastodon_server, stored
from tests.support.logs import assert_no_traceback
from tests.support.wall import TOKENS, post, serve, settings

pytestmark = pytest.mark.security


SMALL = ("--ladder", "180p:320x180:300", "--fps", "15", "--segment-duration", "1")
OPS_TOKEN = secrets.token_hex(24)
WEBHOOK_SECRET = secrets.token_hex(24)
PROXY = "127.0.0.2"  # the ingress the demo trusts
SAFE_PROXY_SETTINGS = ("--trusted-proxies", f"{PROXY}/32", "--wall-posts-per-minute", "6", "--wall-burst", "3")


@pytest.fixture(scope="module")
def origin(tmp_path_factory):
    env = {"LAUNCHKIT_OPS_TOKEN": OPS_TOKEN, "LAUNCHKIT_PUBLISH_TOKEN": secrets.token_hex(24),
           "LAUNCHKIT_WALL_WEBHOOK_SECRET": WEBHOOK_SECRET}
    with start_demo(*SMALL, *SAFE_PROXY_SETTINGS, env=env, log_dir=tmp_path_factory.mktemp("wall-origin"),
                    wait_for_media=False) as demo:
        yield demo


@contextlib.asynccontextmanager
async def client_from(address: str):
    """An HTTP client whose connections come from `address` (a loopback address: another 'host')."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0), force_close=True),
                                     timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


def forwarded(client: str) -> dict[str, str]:
    return {"X-Forwarded-For": client}


async def posts(session: aiohttp.ClientSession, url: str, count: int, client: str, label: str) -> list[int]:
    statuses = []
    for n in range(count):
        statuses.append((await post(session, url, {"text": f"{label} {n}"}, headers=forwarded(client)))[0])
    return statuses


async def ops(session: aiohttp.ClientSession, method: str, url: str) -> dict:
    async with session.request(method, url, headers={"Authorization": f"Bearer {OPS_TOKEN}",
                                                     "Content-Type": "application/json"}, data="{}") as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def pending_texts(session: aiohttp.ClientSession, url: str) -> set[str]:
    return {p["text"] for p in (await ops(session, "GET", url + "/api/ops/wall/queue"))["pending"]}


# ---- 6. per-proxy limits -------------------------------------------------------------------------

async def test_viewers_behind_a_trusted_proxy_have_their_own_rate_limits_and_bans(origin):
    url = origin.url
    async with client_from(PROXY) as proxy, client_from("127.0.0.4") as untrusted_proxy:
        # The attack as it was: behind a proxy we do not trust, two viewers are one client to us.
        # The second viewer is refused because of the first one's posts.
        shared = await posts(untrusted_proxy, url, 3, "203.0.113.1", "first viewer")
        shared += await posts(untrusted_proxy, url, 1, "203.0.113.2", "second viewer")
        assert shared == [202, 202, 202, 429], shared

        # Behind the trusted proxy each viewer has its own bucket.
        first = await posts(proxy, url, 4, "203.0.113.10", "viewer A")
        second = await posts(proxy, url, 3, "203.0.113.11", "viewer B")
        print(f"\nbehind the trusted proxy: A {first}, B {second}; behind an untrusted one: {shared}")
        assert first == [202, 202, 202, 429] and second == [202, 202, 202], (first, second)
        # A viewer cannot shed its limit by writing its own X-Forwarded-For: the proxy appends the
        # address it saw, and that rightmost address is the one believed.
        spoofed = (await post(proxy, url, {"text": "A again"}, headers=forwarded("198.51.100.99, 203.0.113.10")))[0]
        assert spoofed == 429

        # A ban hits one viewer, not everyone behind the proxy.
        _, banned = await post(proxy, url, {"text": "viewer C, soon banned"}, headers=forwarded("203.0.113.20"))
        assert (await post(proxy, url, {"text": "viewer D, before"}, headers=forwarded("203.0.113.21")))[0] == 202
        await ops(proxy, "POST", f"{url}/api/ops/wall/{banned['id']}/ban")
        assert (await post(proxy, url, {"text": "viewer C, after the ban"}, headers=forwarded("203.0.113.20")))[0] == 202
        assert (await post(proxy, url, {"text": "viewer D, after"}, headers=forwarded("203.0.113.21")))[0] == 202
        pending = await pending_texts(proxy, url)
        assert {"viewer D, before", "viewer D, after"} <= pending
        assert not {"viewer C, soon banned", "viewer C, after the ban"} & pending  # rejected
    assert_no_traceback(origin.log())


async def test_a_forged_forwarded_for_from_an_untrusted_peer_changes_nothing(origin):
    url = origin.url
    async with client_from("127.0.0.3") as attacker:
        statuses = [(await post(attacker, url, {"text": f"flood {n}"}, headers=forwarded(f"192.0.2.{n}")))[0]
                    for n in range(6)]
        print(f"\nforged X-Forwarded-For from an untrusted peer: {statuses}")
        assert statuses == [202, 202, 202, 429, 429, 429]
        beacon = {"protocol": "llhls", "played": 1}
        qoe, started = [], time.monotonic()
        for n in range(40):
            async with attacker.post(url + "/api/qoe", json=beacon, headers=forwarded(f"192.0.2.{n}")) as response:
                qoe.append(response.status)
        elapsed = time.monotonic() - started
        print(f"QoE beacons, forged X-Forwarded-For: {dict(Counter(qoe))} in {elapsed:.2f} s")
        # QoE's limit is the peer's too: a burst of 30, then one a second.
        assert qoe[:30] == [204] * 30 and 429 in qoe and qoe.count(204) <= 30 + elapsed + 1, qoe
    async with client_from("127.0.0.5") as troll:
        _, first = await post(troll, url, {"text": "troll before"}, headers=forwarded("192.0.2.50"))
        await ops(troll, "POST", f"{url}/api/ops/wall/{first['id']}/ban")
        assert (await post(troll, url, {"text": "troll in disguise"}, headers=forwarded("192.0.2.51")))[0] == 202
        assert not {"troll before", "troll in disguise"} & await pending_texts(troll, url)
    assert_no_traceback(origin.log())


async def test_without_trusted_proxies_forwarded_for_is_ignored(tmp_path):
    async with aiohttp.ClientSession() as session, \
            serve(settings(None, posts_per_minute=6, burst=3)) as (url, _):  # no --trusted-proxies
        statuses = [(await post(session, url, {"text": f"x {n}"}, headers=forwarded(f"192.0.2.{n}")))[0]
                    for n in range(5)]
        assert statuses == [202, 202, 202, 429, 429]


async def test_guessing_the_ops_token_on_the_moderation_api_is_slowed_then_locked_out(tmp_path):
    """With the ops console's check (`require_operator`), each wrong token is answered after the
    failure delay and a client that keeps guessing is locked out, even with the right token then;
    an operator elsewhere is not."""
    failures = FailedCredentials(Limit(per_minute=6, burst=3), delay=0.3)

    async def require_operator(request: web.Request) -> None:
        await require_bearer(request, failures, "ops", TOKENS.is_ops, "launchkit-ops", "the ops token")

    async with aiohttp.ClientSession() as session, serve(settings(None), parse_networks("127.0.0.1"),
                                                         require_operator=require_operator) as (url, _):
        async def queue(token: str, client: str) -> tuple[int, float]:
            started = time.monotonic()
            async with session.get(url + "/api/ops/wall/queue", headers={
                    "Authorization": f"Bearer {token}", **forwarded(client)}) as response:
                return response.status, time.monotonic() - started

        guesses = [await queue(f"guess-{n}", "198.51.100.7") for n in range(5)]
        right_from_guesser = await queue(TOKENS.ops, "198.51.100.7")
        operator = await queue(TOKENS.ops, "198.51.100.8")
    print("\nguesses (status, s): " + ", ".join(f"({status}, {seconds:.2f})" for status, seconds in guesses))
    assert [status for status, _ in guesses] == [401, 401, 401, 429, 429]
    assert all(seconds >= 0.3 for _, seconds in guesses[:3]) and all(seconds < 0.3 for _, seconds in guesses[3:])
    assert right_from_guesser[0] == 429 and operator[0] == 200


# ---- 10. unauthenticated input: a 4xx, never a 500 with a traceback --------------------------------

async def raw_request(port: int, head: str, body: bytes = b"") -> tuple[int, bytes]:
    """One request sent byte for byte (header values in UTF-8, as a client may send them)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.replace("\n", "\r\n").encode("utf-8") + b"\r\n" + body)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def refused_count(url: str, reason: str) -> float:
    status, _, body = fetch_metrics(url)
    assert status == 200
    line = f'launchkit_wall_requests_refused_total{{reason="{reason}"}} '
    return next(float(row[len(line):]) for row in body.decode().splitlines() if row.startswith(line))


async def test_hostile_wall_input_gets_a_clear_4xx_and_no_traceback(origin):
    port = URL(origin.url).port
    malformed_before = refused_count(origin.url, "malformed")
    signature_before = refused_count(origin.url, "bad_signature")
    answers = {}
    for name, head in {
        "?last_event_id=%C2%B2": "GET /api/wall/events?last_event_id=%C2%B2 HTTP/1.1\nHost: x\nConnection: close\n",
        "Last-Event-ID: ²": "GET /api/wall/events HTTP/1.1\nHost: x\nLast-Event-ID: ²\nConnection: close\n",
        "Last-Event-ID: ١٢": "GET /api/wall/events HTTP/1.1\nHost: x\nLast-Event-ID: ١٢\nConnection: close\n",
    }.items():
        answers[name] = await raw_request(port, head)
    body = json.dumps({"id": "d-1", "text": "from the CMS"}).encode()
    stamp = int(time.time())
    good = sign(WEBHOOK_SECRET.encode(), stamp, body)
    for name, (stamp_value, signature) in {
        "timestamp ²": ("²", good),
        "timestamp ¹⁷⁰⁰⁰⁰⁰⁰⁰⁰": ("¹⁷⁰⁰⁰⁰⁰⁰⁰⁰", good),
        "non-ASCII signature": (str(stamp), "sha256=" + "é" * 64),
        "non-ASCII signature, right length": (str(stamp), good[:-1] + "é"),
    }.items():
        answers[name] = await raw_request(port, (
            f"POST /api/wall/webhook HTTP/1.1\nHost: x\nContent-Type: application/json\nContent-Length: {len(body)}\n"
            f"{TIMESTAMP_HEADER}: {stamp_value}\n{SIGNATURE_HEADER}: {signature}\nConnection: close\n"), body)
    nested = b"[" * 5000
    answers["nested JSON post"] = await raw_request(port, (
        f"POST /api/wall/posts HTTP/1.1\nHost: x\nContent-Type: application/json\nContent-Length: {len(nested)}\n"
        "Connection: close\n"), nested)
    signed_stamp = int(time.time())
    answers["nested JSON, signed webhook"] = await raw_request(port, (
        f"POST /api/wall/webhook HTTP/1.1\nHost: x\nContent-Type: application/json\nContent-Length: {len(nested)}\n"
        f"{TIMESTAMP_HEADER}: {signed_stamp}\n{SIGNATURE_HEADER}: {sign(WEBHOOK_SECRET.encode(), signed_stamp, nested)}\n"
        "Connection: close\n"), nested)
    summary = {name: (status, json.loads(answer)["error"]) for name, (status, answer) in answers.items()}
    print("\n" + "\n".join(f"{name}: {status} {message}" for name, (status, message) in summary.items()))
    for name in ("?last_event_id=%C2%B2", "Last-Event-ID: ²", "Last-Event-ID: ١٢"):
        assert summary[name] == (400, "Last-Event-ID must be a wall event id (digits)"), name
    for name in ("timestamp ²", "timestamp ¹⁷⁰⁰⁰⁰⁰⁰⁰⁰", "non-ASCII signature", "non-ASCII signature, right length"):
        assert summary[name][0] == 401 and "sign the request" in summary[name][1], name
    for name in ("nested JSON post", "nested JSON, signed webhook"):
        assert summary[name] == (400, "malformed JSON: nested too deeply"), name
    assert refused_count(origin.url, "malformed") - malformed_before == 5
    assert refused_count(origin.url, "bad_signature") - signature_before == 4
    # Other clients are served as before.
    async with aiohttp.ClientSession() as session:
        assert (await post(session, origin.url, {"text": "still here"}))[0] == 202
        async with session.get(origin.url + "/api/wall/events?last_event_id=0") as response:
            assert response.status == 200 and response.headers["Access-Control-Allow-Origin"] == "*"
    assert_no_traceback(origin.log())


# ---- 4. feeds: no entity tricks in any encoding ---------------------------------------------------

class Recorder:
    """A server on 127.0.0.2 that only counts who came: what an entity, DTD or redirect would reach."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.hits.append(request.path)
        return web.Response(text="secret", content_type="text/plain")


@contextlib.asynccontextmanager
async def recorder(host: str = "127.0.0.2"):
    target = Recorder()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", target.handle)
    server = TestServer(app, host=host, port=0)
    await server.start_server()
    target.url = f"http://{host}:{server.port}"
    try:
        yield target
    finally:
        await server.close()


def entity_feeds(victim: str) -> dict[str, str]:
    """Feeds whose DTD declares entities: expansion (billion laughs, kept small so that the old
    parser accepts it rather than hitting expat's own amplification limit) and external entities."""
    channel = "<rss version='2.0'><channel><title>{title}</title><item><title>{title}</title>" \
              "<guid>x</guid></item></channel></rss>"
    return {
        "laughs": "<!DOCTYPE rss [<!ENTITY lol 'lol'><!ENTITY lol2 '&lol;&lol;&lol;&lol;&lol;'>"
                  "<!ENTITY lol3 '&lol2;&lol2;&lol2;&lol2;&lol2;'>]>" + channel.format(title="&lol3;"),
        "external entity": f"<!DOCTYPE rss [<!ENTITY xxe SYSTEM '{victim}/xxe'>]>" + channel.format(title="&xxe;"),
        "local file": "<!DOCTYPE rss [<!ENTITY xxe SYSTEM 'file:///etc/hostname'>]>" + channel.format(title="&xxe;"),
        "parameter entity": f"<!DOCTYPE rss [<!ENTITY % dtd SYSTEM '{victim}/dtd'> %dtd;]>" + channel.format(title="t"),
    }


ENCODINGS = {"utf-8": "utf-8", "utf-16 (LE, BOM)": "utf-16", "utf-16-be (BOM)": "utf-16-be"}


def encode(document: str, encoding: str) -> bytes:
    declared = "UTF-8" if encoding == "utf-8" else "UTF-16"
    text = f'<?xml version="1.0" encoding="{declared}"?>\n{document}'
    return ("\ufeff" + text).encode(encoding) if encoding == "utf-16-be" else text.encode(encoding)


async def test_feeds_declaring_entities_are_refused_in_every_encoding(tmp_path):
    async with recorder() as victim:
        refused = {}
        for kind, document in entity_feeds(victim.url).items():
            for name, encoding in ENCODINGS.items():
                data = encode(document, encoding)
                with pytest.raises(FetchError) as caught:
                    parse_feed(data)
                assert caught.value.reason == "malformed"
                refused[f"{kind}, {name}"] = str(caught.value)
        print("\n" + "\n".join(f"{name}: {message}" for name, message in refused.items()))
        assert all("not accepted" in message for message in refused.values()), refused

        # The whole way: a UTF-16 bomb served to a polling connector takes nothing in.
        bomb = encode(entity_feeds(victim.url)["laughs"], "utf-16")
        async def feed(request: web.Request) -> web.Response:
            return web.Response(body=bomb, content_type="application/rss+xml")

        app = web.Application()
        app.router.add_get("/feed.xml", feed)
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        before = errors("rss", "malformed")
        try:
            async with serve(settings(tmp_path / "w.sqlite3", moderation="auto", feed_interval=0.05,
                                      feeds=(f"http://127.0.0.1:{server.port}/feed.xml",))) as (_, wall):
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline and errors("rss", "malformed") - before < 2:
                    await asyncio.sleep(0.05)
                assert await stored(wall, "rss") == 0
        finally:
            await server.close()
        assert errors("rss", "malformed") - before >= 2
        assert victim.hits == []  # nothing an entity named was fetched


async def test_a_feed_with_a_bare_doctype_is_read_and_its_dtd_never_fetched():
    """RSS 0.91 feeds carry Netscape's DOCTYPE: no entity in it, so the feed is read; the DTD it
    names is never fetched (here it points at a local recorder)."""
    async with recorder() as victim:
        for name, encoding in ENCODINGS.items():
            document = (f'<!DOCTYPE rss PUBLIC "-//Netscape Communications//DTD RSS 0.91//EN" "{victim.url}/rss.dtd">'
                        '<rss version="0.91"><channel><title>Old news</title><link>https://old.example/</link>'
                        '<description>d</description><language>en</language><item><title>Still here</title>'
                        '<link>https://old.example/1</link><description>in 0.91</description></item>'
                        '</channel></rss>')
            title, items = parse_feed(encode(document, encoding))
            assert (title, [(i.text, i.url) for i in items]) == (
                "Old news", [("Still here: in 0.91", "https://old.example/1")]), name
        assert victim.hits == []


# ---- 11. redirects stay on the configured host ----------------------------------------------------

@contextlib.asynccontextmanager
async def redirecting_feed(targets: dict[str, str]):
    """A feed host on 127.0.0.1: `/feed.xml` is a feed, each key of `targets` redirects to its value."""
    hits: Counter[str] = Counter()

    async def handle(request: web.Request) -> web.StreamResponse:
        hits[request.path] += 1
        if request.path == "/feed.xml":
            return web.Response(body=RSS, content_type="application/rss+xml")
        raise web.HTTPFound(targets[request.path])

    app = web.Application()
    app.router.add_get("/{name}", handle)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}", hits
    finally:
        await server.close()


async def test_redirects_never_take_a_connector_to_another_host_or_port(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    async with recorder("127.0.0.2") as other_host, recorder("127.0.0.1") as other_port:
        targets = {"/moved": "/feed.xml", "/away": f"{other_host.url}/", "/port": f"{other_port.url}/",
                   "/scheme": "ftp://127.0.0.1/feed.xml", "/loop": "/loop"}
        async with redirecting_feed(targets) as (base, hits), aiohttp.ClientSession() as session:
            reasons = {}
            for path in ("/away", "/port", "/scheme", "/loop"):
                with pytest.raises(FetchError) as caught:
                    await fetch(session, base + path)
                reasons[path] = (caught.value.reason, str(caught.value))
            print("\n" + "\n".join(f"{path}: {reason}" for path, reason in reasons.items()))
            assert {reason for reason, _ in reasons.values()} == {"redirect"}
            assert other_host.hits == [] and other_port.hits == []  # the SSRF targets saw nothing
            assert hits["/loop"] == MAX_REDIRECTS + 1
            # A move on the same host is followed.
            moved = await fetch(session, base + "/moved")
            assert moved.status == 200 and moved.body == RSS

            # The whole way: a polling connector counts the refusal and takes nothing in.
            before = errors("rss", "redirect")
            async with serve(settings(tmp_path / "w.sqlite3", moderation="auto", feed_interval=0.05,
                                      feeds=(base + "/away", base + "/moved"))) as (_, wall):
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline and (errors("rss", "redirect") - before < 2
                                                       or await stored(wall, "rss") < 2):
                    await asyncio.sleep(0.05)
                assert await stored(wall, "rss") == 2  # the two items of the moved feed, and nothing else
            assert errors("rss", "redirect") - before >= 2
            assert other_host.hits == []
    assert_no_traceback(caplog.text)


def test_same_site_rule():
    feed = URL("http://feeds.example/rss")
    allowed = ["http://feeds.example/new", "http://FEEDS.example:80/x", "https://feeds.example/secure"]
    refused = ["http://169.254.169.254/latest/meta-data/", "http://127.0.0.1:6379/", "http://feeds.example:6379/",
               "https://feeds.example:8443/", "http://feeds.example.evil/", "file:///etc/passwd"]
    assert [same_site(feed, URL(u)) for u in allowed] == [True] * len(allowed)
    assert [same_site(feed, URL(u)) for u in refused] == [False] * len(refused)
    assert not same_site(URL("https://feeds.example/"), URL("http://feeds.example/"))  # no downgrade


# ---- hostile sources: counted errors, never a crash -----------------------------------------------

async def test_hostile_source_answers_are_counted_errors_not_crashes(tmp_path, caplog):
    """`Retry-After: ²` and `X-RateLimit-Remaining: ²` (digits to str.isdigit, not to int) and
    JSON or XML nested too deeply: counted as what they are, never an 'internal' crash."""
    caplog.set_level(logging.WARNING)
    async with mastodon_server() as fake:
        fake.add(3)
        fake.faults = ["429 ²", "remaining ²", "nested"]
        before = {reason: errors("mastodon", reason) for reason in ("rate_limited", "malformed", "internal")}
        async with serve(settings(tmp_path / "w.sqlite3", moderation="auto", mastodon_interval=0.05,
                                  mastodon=(f"{fake.url}#launch",))) as (_, wall):
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and (fake.faults or len(fake.requests) < 5):
                await asyncio.sleep(0.05)
            assert await stored(wall, "mastodon") == 3
        assert errors("mastodon", "rate_limited") - before["rate_limited"] == 1
        assert errors("mastodon", "malformed") - before["malformed"] == 1
        assert errors("mastodon", "internal") == before["internal"]
    with pytest.raises(FetchError) as caught:
        parse_feed(b"<rss>" + b"<a>" * 50_000 + b"</a>" * 50_000 + b"</rss>")
    assert caught.value.reason == "malformed"
    assert_no_traceback(caplog.text)
