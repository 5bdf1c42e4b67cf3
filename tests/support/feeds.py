"""Sources for the wall's connectors, on 127.0.0.1: a Mastodon tag timeline with its paging,
rate-limit headers and scripted faults, a realistic RSS feed, and the counters the tests read
(connector errors, posts stored per source)."""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta, timezone

from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import REGISTRY

RSS = b"""<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:content="http://purl.org/rss/1.0/modules/content/">
<channel><title>Tech Daily</title><link>https://news.example/</link><description>News</description>
<item><title>The box ships in May</title><link>https://news.example/box</link>
  <guid isPermaLink="false">tag:news.example,2026:1</guid><dc:creator>Bo Chen</dc:creator>
  <description><![CDATA[<p>Hands-on <b>first look</b>.</p><script>alert(1)</script>]]></description></item>
<item><title>Price &amp; availability</title><link>javascript:alert(1)</link><guid>tag:news.example,2026:2</guid>
  <description>&lt;img src=x onerror=alert(1)&gt;Cheaper than expected</description></item>
</channel></rss>"""


def errors(connector: str, reason: str) -> float:
    return REGISTRY.get_sample_value("launchkit_wall_connector_errors_total",
                                     {"connector": connector, "reason": reason}) or 0.0


def status(n: int, host: str, content: str | None = None, **changes) -> dict:
    """A status as Mastodon 4.x serialises it (the fields the connector reads, and some it does not)."""
    return {
        "id": str(110_000_000_000_000_000 + n), "created_at": "2026-12-01T13:00:00.000Z",
        "uri": f"https://{host}/users/alice/statuses/{n}", "url": f"https://{host}/@alice/{n}",
        "visibility": "public", "sensitive": False, "spoiler_text": "", "language": "en",
        "content": content or f"<p>Launch post {n} <a href=\"https://{host}/tags/launch\" class=\"mention hashtag\" "
                              f"rel=\"tag\">#<span>launch</span></a></p>",
        "account": {"id": "1", "username": "alice", "acct": "alice", "display_name": "Alice :verified:",
                    "url": f"https://{host}/@alice"},
        "reblog": None, "media_attachments": [], "mentions": [], "tags": [{"name": "launch"}], "emojis": [],
        **changes,
    }


class FakeMastodon:
    """`GET /api/v1/timelines/tag/:tag` with Mastodon's paging (min_id → the page right after it,
    newest first; Link next/prev), rate-limit headers, and scripted faults."""

    def __init__(self) -> None:
        self.statuses: list[dict] = []
        self.faults: list[str] = []
        self.requests: list[dict] = []
        self.remaining = 300
        self.reset = datetime.now(timezone.utc) + timedelta(minutes=5)
        self.url = ""

    def add(self, count: int, **changes) -> None:
        start = len(self.statuses)
        host = self.url.split("//")[1]
        self.statuses += [status(start + i, host, **changes) for i in range(count)]

    async def timeline(self, request: web.Request) -> web.Response:
        self.requests.append(dict(request.query))
        self.remaining -= 1
        headers = {"X-RateLimit-Limit": "300", "X-RateLimit-Remaining": str(max(0, self.remaining)),
                   "X-RateLimit-Reset": self.reset.isoformat().replace("+00:00", "Z")}
        fault = self.faults.pop(0) if self.faults else None
        if fault == "500":
            return web.Response(status=502, text="<html>Bad gateway</html>", content_type="text/html")
        if fault == "429":
            return web.json_response({"error": "Too many requests"}, status=429, headers={**headers, "Retry-After": "0"})
        if fault == "malformed":
            return web.Response(text='[{"id": "1", "content": ', content_type="application/json", headers=headers)
        if fault == "nested":
            return web.Response(body=b"[" * 100_000, content_type="application/json", headers=headers)
        if fault == "429 ²":  # digits to str.isdigit(), not to int()
            return web.json_response({"error": "Too many requests"}, status=429, headers={"Retry-After": "²"})
        if fault == "remaining ²":
            headers["X-RateLimit-Remaining"] = "²"
        limit = min(40, int(request.query.get("limit", "20")))
        ordered = sorted(self.statuses, key=lambda s: int(s["id"]))
        if "min_id" in request.query:
            page = [s for s in ordered if int(s["id"]) > int(request.query["min_id"])][:limit]
        else:
            page = ordered[-limit:]
        page.reverse()  # newest first, as Mastodon answers
        if page:
            base = f"{self.url}/api/v1/timelines/tag/{request.match_info['tag']}"
            headers["Link"] = (f'<{base}?max_id={page[-1]["id"]}>; rel="next", '
                               f'<{base}?min_id={page[0]["id"]}>; rel="prev"')
        return web.json_response(page, headers=headers)


@contextlib.asynccontextmanager
async def mastodon_server():
    fake = FakeMastodon()
    app = web.Application()
    app.router.add_get("/api/v1/timelines/tag/{tag}", fake.timeline)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    fake.url = f"http://127.0.0.1:{server.port}"
    try:
        yield fake
    finally:
        await server.close()


async def stored(wall, source: str) -> int:
    return sum(n for (s, _), n in (await wall.store.counts()).items() if s == source)
