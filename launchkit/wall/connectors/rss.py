"""RSS 2.0, RSS 1.0 (RDF) and Atom feeds, polled with conditional GETs (ETag / Last-Modified).

Feeds are parsed with the standard library's expat-based ElementTree, which never fetches external
entities; documents carrying a DTD are refused outright (no entity tricks: billion laughs and the
like), as are malformed ones (counted, retried with backoff). Elements are matched by local name,
so namespaces and prefixes do not matter. Titles and descriptions are HTML: reduced to text.
"""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from launchkit.wall.connectors import Backoff, FetchError, Take, fetch, run_poller
from launchkit.wall.posts import Candidate, Kind, clean_line, html_to_text, safe_link
from launchkit.wall.store import Duplicate

FIRST_ITEMS = 20   # the first poll takes the newest items only, not the whole archive
SUMMARY = 280      # characters of the description shown after the title
_DTD = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class FeedItem:
    key: str      # guid / id / link: de-duplicates re-reads
    text: str
    author: str
    url: str | None


def parse_feed(data: bytes) -> tuple[str, list[FeedItem]]:
    """(feed title, items newest first as in the document). Raises FetchError('malformed')."""
    if _DTD.search(data):
        raise FetchError("malformed", "feeds with a DTD are not accepted")
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as error:
        raise FetchError("malformed", f"malformed XML: {error}") from None
    kind = _local(root.tag)
    if kind == "rss":
        channel = _child(root, "channel")
        if channel is None:
            raise FetchError("malformed", "RSS without a channel")
        return _text(_child(channel, "title")), [_rss_item(i) for i in channel if _local(i.tag) == "item"]
    if kind == "RDF":
        channel = _child(root, "channel")
        return _text(_child(channel, "title")) if channel is not None else "", [
            _rss_item(i) for i in root if _local(i.tag) == "item"]
    if kind == "feed":
        return _text(_child(root, "title")), [_atom_entry(e) for e in root if _local(e.tag) == "entry"]
    raise FetchError("malformed", f"not a feed (root element {kind!r})")


def _rss_item(item: ElementTree.Element) -> FeedItem:
    title, link = _text(_child(item, "title")), _text(_child(item, "link"))
    body = _text(_child(item, "description")) or _text(_child(item, "encoded"))
    author = _text(_child(item, "creator")) or _text(_child(item, "author"))
    key = _text(_child(item, "guid")) or item.get("{http://www.w3.org/1999/02/22-rdf-syntax-ns#}about") or link
    return _item(key, title, body, author, link)


def _atom_entry(entry: ElementTree.Element) -> FeedItem:
    link = ""
    for element in entry:
        if _local(element.tag) == "link" and element.get("rel", "alternate") == "alternate":
            link = element.get("href", "")
            break
    author_element = _child(entry, "author")
    author = _text(_child(author_element, "name")) if author_element is not None else ""
    body = _text(_child(entry, "summary")) or _text(_child(entry, "content"))
    return _item(_text(_child(entry, "id")) or link, _text(_child(entry, "title")), body, author, link)


def _item(key: str, title: str, body: str, author: str, link: str) -> FeedItem:
    title_text = html_to_text(title, 200)
    summary = html_to_text(body, SUMMARY)
    text = f"{title_text}: {summary}" if title_text and summary else title_text or summary
    if not key:
        key = hashlib.sha256(text.encode()).hexdigest()  # no id at all: the content is the identity
    return FeedItem(key[:500], text, clean_line(author), safe_link(link))


def _local(tag: object) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _child(element: ElementTree.Element | None, name: str) -> ElementTree.Element | None:
    if element is None:
        return None
    return next((child for child in element if _local(child.tag) == name), None)


def _text(element: ElementTree.Element | None) -> str:
    return "".join(element.itertext()).strip() if element is not None else ""


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
        title, items = parse_feed(fetched.body)
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
