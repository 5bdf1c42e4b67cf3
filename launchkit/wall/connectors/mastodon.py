"""Mastodon hashtag timelines: `GET /api/v1/timelines/tag/:tag`, polled with `min_id`.

With `min_id` Mastodon returns the page of statuses right after that id, so a poll walks forward
page by page (the `Link: <…min_id=…>; rel="prev"` header says where the next newer page starts)
until a page comes back short. The cursor is kept in SQLite per instance and tag: a restart neither
re-reads the archive nor misses what was posted while it was down. A status federated to several
configured instances is stored once (keyed by its ActivityPub URI). Boosts are skipped (the boosted
status is what counts). `X-RateLimit-Remaining`/`X-RateLimit-Reset` are honoured before the limit is
hit; 429 and 5xx back off (Retry-After when given).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from urllib.parse import parse_qs, quote, urlsplit

import aiohttp

from launchkit.wall.connectors import (
    WHOLE_NUMBER,
    Backoff,
    Fetched,
    FetchError,
    Take,
    fetch,
    rate_limit_reset,
    run_poller,
)
from launchkit.wall.posts import Candidate, Kind, clean_line, html_to_text, safe_link
from launchkit.wall.store import Duplicate, Store

PAGE = 40            # Mastodon's maximum page size for timelines
MAX_PAGES = 5        # pages per poll: a burst is read over a few polls instead of one long one
FIRST_PAGE = 20      # on the very first poll only the newest statuses are taken, not the archive
_LINK = re.compile(r'<([^>]*)>\s*;\s*rel="?([a-z]+)"?')


@dataclass(frozen=True, slots=True)
class TagTimeline:
    instance: str  # https://mastodon.example
    tag: str       # without '#'

    @classmethod
    def parse(cls, text: str) -> TagTimeline:
        """`https://instance#tag` (as in the --wall-mastodon option)."""
        base, _, tag = text.strip().partition("#")
        tag = tag.strip().lstrip("#")
        if not safe_link(base) or not re.fullmatch(r"[\w]{1,100}", tag):
            raise ValueError(f"expected https://INSTANCE#TAG, got {text!r}")
        return cls(base.rstrip("/"), tag)

    @property
    def key(self) -> str:
        return f"mastodon:{self.instance}#{self.tag}"

    @property
    def url(self) -> str:
        return f"{self.instance}/api/v1/timelines/tag/{quote(self.tag, safe='')}"


class MastodonConnector:
    def __init__(self, timeline: TagTimeline, session: aiohttp.ClientSession, store: Store, take: Take,
                 interval: float = 15.0) -> None:
        self.timeline, self._session, self._store, self._take = timeline, session, store, take
        self.backoff = Backoff(interval)
        self._host = urlsplit(timeline.instance).hostname or ""

    async def run(self) -> None:
        await run_poller(self.timeline.key, "mastodon", self.poll, self.backoff)

    async def poll(self) -> float:
        """Read every new page (up to MAX_PAGES); returns the seconds until the next poll."""
        cursor = await self._store.cursor(self.timeline.key)
        wait = self.backoff.success()
        for _ in range(MAX_PAGES):
            params = {"limit": str(PAGE if cursor else FIRST_PAGE)}
            if cursor:
                params["min_id"] = cursor
            fetched = await fetch(self._session, self.timeline.url, params=params,
                                  headers={"Accept": "application/json"})
            statuses = _statuses(fetched.body)
            for status in sorted(statuses, key=lambda s: _id_order(s["id"])):
                await self._take_status(status)
            newest = _next_min_id(fetched, statuses)
            if newest is not None and (cursor is None or _id_order(newest) > _id_order(cursor)):
                cursor = newest
                await self._store.set_cursor(self.timeline.key, cursor)
            wait = max(wait, _rate_limit_wait(fetched))
            if wait > self.backoff.interval or len(statuses) < int(params["limit"]) or "min_id" not in params:
                break
        return wait

    async def _take_status(self, status: dict) -> None:
        if status.get("reblog") or status.get("visibility") not in (None, "public", "unlisted"):
            return
        account = status.get("account") if isinstance(status.get("account"), dict) else {}
        acct = str(account.get("acct") or account.get("username") or "unknown")
        if "@" not in acct:
            acct = f"{acct}@{self._host}"  # local accounts are listed without their domain
        text = html_to_text(" ".join(str(status.get(k) or "") for k in ("spoiler_text", "content")))
        if not text:
            return
        key = str(status.get("uri") or f"{self.timeline.instance}/statuses/{status['id']}")
        try:
            await self._take(Candidate(
                source="mastodon", kind=Kind.COMMENT, text=text, author=f"mastodon:{acct.casefold()}",
                name=clean_line(str(account.get("display_name") or account.get("username") or acct)),
                url=safe_link(status.get("url")) or safe_link(status.get("uri")), source_key=f"mastodon:{key}"[:500],
            ))
        except Duplicate:
            pass  # seen through another instance or tag, or re-read after a restart


def _statuses(body: bytes) -> list[dict]:
    try:
        data = json.loads(body)
    except ValueError as error:
        raise FetchError("malformed", f"malformed JSON: {error}") from None
    except RecursionError:
        raise FetchError("malformed", "malformed JSON: nested too deeply") from None
    if not isinstance(data, list):
        raise FetchError("malformed", "expected a JSON array of statuses")
    return [s for s in data if isinstance(s, dict) and isinstance(s.get("id"), (str, int))]


def _id_order(status_id: str | int) -> tuple[int, str]:
    """Mastodon ids are numeric strings (snowflakes) that grow with time: longer is newer."""
    text = str(status_id)
    return len(text), text


def _next_min_id(fetched: Fetched, statuses: list[dict]) -> str | None:
    """Where the next newer page starts: the `prev` link's min_id, else the newest id seen."""
    for url, rel in _LINK.findall(fetched.headers.get("Link", "")):
        if rel == "prev":
            values = parse_qs(urlsplit(url).query).get("min_id")
            if values and values[0]:
                return values[0]
    return max((str(s["id"]) for s in statuses), key=_id_order, default=None)


def _rate_limit_wait(fetched: Fetched) -> float:
    """Seconds to hold off because the quota is (nearly) used up, until X-RateLimit-Reset."""
    remaining = fetched.headers.get("X-RateLimit-Remaining", "")
    if not WHOLE_NUMBER.fullmatch(remaining) or int(remaining) > 1:
        return 0.0
    return rate_limit_reset(fetched.headers) or 60.0
