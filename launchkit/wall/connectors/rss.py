"""RSS 0.9x, RSS 1.0 (RDF), RSS 2.0 and Atom feeds, polled with conditional GETs (ETag / Last-Modified).

Parsing is left to well-kept libraries, in two steps, off the event loop (a 2 MB feed takes a while):

1. defusedxml parses the bytes with expat, which decodes them by their BOM or XML declaration
   (UTF-8, UTF-16, ...), and refuses any entity declaration (billion laughs and other expansion
   bombs, external entities) and any external reference, whatever the encoding: the check runs on
   what the parser reads, not on the bytes (a byte search for "<!DOCTYPE" misses it in UTF-16). A
   bare DOCTYPE without entities is accepted (RSS 0.91 feeds carry Netscape's); its external DTD
   is never fetched. Malformed XML is refused here too (counted, retried with backoff).
2. feedparser extracts the items from that tree, serialised again as UTF-8: it sees exactly what
   expat read (no second guess at the encoding, no DTD at all), and knows every feed dialect and
   its namespaces. It gets a file object, never bytes or a string: it would take those for a file
   name or a URL to open.

Titles and descriptions are HTML: reduced to text (posts.html_to_text).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
import feedparser
from defusedxml import DefusedXmlException
from defusedxml import ElementTree as DefusedElementTree

from launchkit.wall.connectors import Backoff, FetchError, Take, fetch, run_poller
from launchkit.wall.posts import Candidate, Kind, clean_line, html_to_text, safe_link
from launchkit.wall.store import Duplicate

FIRST_ITEMS = 20   # the first poll takes the newest items only, not the whole archive
SUMMARY = 280      # characters of the description shown after the title


@dataclass(frozen=True, slots=True)
class FeedItem:
    key: str      # guid / id / link: de-duplicates re-reads
    text: str
    author: str
    url: str | None


def parse_feed(data: bytes) -> tuple[str, list[FeedItem]]:
    """(feed title, items newest first as in the document). Raises FetchError('malformed')."""
    parsed = feedparser.parse(io.BytesIO(_defused(data)), sanitize_html=True)
    if not parsed.version:
        raise FetchError("malformed", "not an RSS or Atom feed")
    items = [_entry(entry) for entry in parsed.entries]
    return str(parsed.feed.get("title") or ""), items


def _defused(data: bytes) -> bytes:
    """The document as UTF-8 XML, re-serialised from what expat read; FetchError if it is malformed
    or declares entities."""
    try:
        root = DefusedElementTree.fromstring(data, forbid_dtd=False, forbid_entities=True, forbid_external=True)
        return ElementTree.tostring(root, encoding="utf-8", xml_declaration=True)
    except DefusedXmlException as refused:
        raise FetchError("malformed", f"feeds declaring entities are not accepted ({type(refused).__name__})") from None
    except ElementTree.ParseError as error:
        raise FetchError("malformed", f"malformed XML: {error}") from None
    except RecursionError:  # serialising recurses per level: no feed nests a thousand elements deep
        raise FetchError("malformed", "malformed XML: nested too deeply") from None


def _entry(entry: feedparser.FeedParserDict) -> FeedItem:
    content = entry.get("content") or [{}]
    body = entry.get("summary") or content[0].get("value") or ""
    author = (entry.get("author_detail") or {}).get("name") or entry.get("author") or ""
    link = entry.get("link") or ""
    return _item(entry.get("id") or link, entry.get("title") or "", body, author, link)


def _item(key: str, title: str, body: str, author: str, link: str) -> FeedItem:
    title_text = html_to_text(title, 200)
    summary = html_to_text(body, SUMMARY)
    text = f"{title_text}: {summary}" if title_text and summary else title_text or summary
    if not key:
        key = hashlib.sha256(text.encode()).hexdigest()  # no id at all: the content is the identity
    return FeedItem(key[:500], text, clean_line(author), safe_link(link))


class FeedConnector:
    def __init__(self, url: str, session: aiohttp.ClientSession, take: Take, interval: float = 60.0) -> None:
        if not safe_link(url):
            raise ValueError(f"feed URL must be http(s): {url!r}")
        self.url, self._session, self._take = url, session, take
        self.backoff = Backoff(interval)
        self._validators: dict[str, str] = {}
        self._host = urlsplit(url).hostname or ""
        self._archive: set[str] | None = None  # keys left out on the first poll, never taken later

    async def run(self) -> None:
        await run_poller(f"feed {self.url}", "rss", self.poll, self.backoff)

    async def poll(self) -> float:
        fetched = await fetch(self._session, self.url, headers={
            "Accept": "application/rss+xml, application/atom+xml, application/xml;q=0.9, text/xml;q=0.8",
            **self._validators})
        if fetched.status == 304:
            return self.backoff.success()
        title, items = await asyncio.to_thread(parse_feed, fetched.body)
        if self._archive is None:
            self._archive = {item.key for item in items[FIRST_ITEMS:]}
        for item in reversed(items):  # oldest first: the wall shows them in the order they were written
            if not item.text or item.key in self._archive:
                continue
            try:
                await self._take(Candidate(
                    source="rss", kind=Kind.COMMENT, text=item.text, url=item.url,
                    author=f"rss:{self._host}:{item.author.casefold()}" if item.author else f"rss:{self._host}",
                    name=item.author or clean_line(title) or self._host, source_key=f"rss:{self.url}#{item.key}"[:1000],
                ))
            except Duplicate:
                pass
        self._validators = {name: value for name, value in (
            ("If-None-Match", fetched.headers.get("ETag")), ("If-Modified-Since", fetched.headers.get("Last-Modified")))
            if value}
        return self.backoff.success()
