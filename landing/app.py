"""Landing page and embed, rendered with autoescaped Jinja2 templates.

Static assets are addressed with a content hash (`?v=`), so they can be cached for a year;
the HTML itself is short-lived because it carries the initial live/offline state. A page is
rendered once per distinct content (a small LRU keyed by its template context) and served with
an ETag, so a CDN miss storm costs a dictionary lookup per request, and revalidations a 304.

Every HTML response of the app gets the Content-Security-Policy here (one place): our pages
load scripts and styles from this server only and run no inline script.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
from collections import OrderedDict
from datetime import datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import quote, urlencode

import aiohttp_jinja2
import jinja2
from aiohttp import web

from landing.agenda import Agenda

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).parent
STATIC_DIR = PACKAGE_DIR / "static"
HLSJS = "vendor/hls.light.min.js"
PAGE_CACHE = "public, max-age=5, stale-while-revalidate=30, stale-if-error=600"
OG_IMAGE = "og-image.png"  # the built-in 1200x630 share card
RENDER_CACHE_SIZE = 64  # distinct pages kept rendered (state x host x variant): bounded whatever Host says
# Media and API requests may go to the event's other edges (failover, recommended edge), which are
# only known at run time: connect/media sources stay open to http(s); scripts never are.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "media-src 'self' blob: http: https:; connect-src 'self' http: https:; worker-src 'self' blob:; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors {ancestors}")
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "strict-origin-when-cross-origin"}


class StatusSource(Protocol):
    def status(self) -> dict: ...


class PageText(Protocol):
    """What the page says about the event: the origin's Config, or at an edge the origin's status."""

    title: str
    description: str
    agenda: Agenda
    og_image: str
    captions: str
    captions_lang: str
    frame_ancestors: str


class LandingPage:
    static_dir = STATIC_DIR

    def __init__(self, config: PageText, status: StatusSource, *, wall: bool = False) -> None:
        self._config, self._status = config, status
        self.wall = wall  # whether this server mounts the live wall (pages show its panel)
        self._rendered: OrderedDict[str, tuple[bytes, str]] = OrderedDict()  # context key -> (body, ETag)
        self._versions = {
            path.relative_to(STATIC_DIR).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()[:10]
            for path in STATIC_DIR.rglob("*") if path.is_file()
        }
        if HLSJS not in self._versions:
            log.warning("hls.js is missing from %s: run `make setup`; only browsers with native HLS will play", STATIC_DIR)

    def setup(self, app: web.Application) -> None:
        environment = aiohttp_jinja2.setup(
            app, loader=jinja2.PackageLoader("landing", "templates"), autoescape=jinja2.select_autoescape(default=True)
        )
        environment.globals["asset"] = self.asset  # every template (page, console) addresses assets alike
        app.on_response_prepare.append(self._cache_static)
        app.on_response_prepare.append(self._security_headers)

    def asset(self, name: str) -> str | None:
        version = self._versions.get(name)
        return f"/static/{name}?v={version}" if version else None

    def _context(self, request: web.Request, embed: bool) -> dict:
        status = self._status.status()
        config = self._config
        event = status["event"]
        site = _site(request)
        page_url = site + "/"
        start_at = event["start_at"]
        return {
            "title": config.title,
            "description": config.description,
            "agenda": config.agenda,
            "state": event["state"],
            "start_at": start_at,
            "start_label": _start_label(start_at),
            "live": status["stream"]["live"],
            "replay": status["replay"]["available"],
            "hls_url": "/hls/index.m3u8",
            "status_url": "/api/status",
            "wall": self.wall and (not embed or request.query.get("wall") == "1"),
            "page_url": page_url,
            "og_image": config.og_image or site + f"/static/{OG_IMAGE}",
            "captions": config.captions,
            "captions_lang": config.captions_lang,
            "share": _share_links(page_url, config.title),
            "embed_code": _embed_code(site, config.title),
        }

    async def index(self, request: web.Request) -> web.Response:
        return self._render("index.html", request, self._context(request, embed=False))

    async def embed(self, request: web.Request) -> web.Response:
        return self._render("embed.html", request, self._context(request, embed=True))

    def _render(self, template: str, request: web.Request, context: dict) -> web.Response:
        key = template + json.dumps(context, default=repr, sort_keys=True)
        cached = self._rendered.pop(key, None)
        if cached is None:
            body = aiohttp_jinja2.render_string(template, request, context).encode()
            cached = (body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
        self._rendered[key] = cached
        while len(self._rendered) > RENDER_CACHE_SIZE:
            self._rendered.popitem(last=False)
        body, etag = cached
        headers = {"Cache-Control": PAGE_CACHE, "ETag": etag}
        if _matches(request.headers.get("If-None-Match", ""), etag):
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, content_type="text/html", charset="utf-8", headers=headers)

    async def _security_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        if response.content_type != "text/html" and response.status != 304:
            return
        ancestors = self._config.frame_ancestors if request.path == "/embed" else "'self'"
        response.headers.setdefault("Content-Security-Policy", CSP.format(ancestors=ancestors))
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)

    async def _cache_static(self, request: web.Request, response: web.StreamResponse) -> None:
        if not request.path.startswith("/static/") or response.status != 200:
            return
        name = request.path.removeprefix("/static/")
        versioned = request.query.get("v") == self._versions.get(name)
        response.headers["Cache-Control"] = "public, max-age=31536000, immutable" if versioned else "public, max-age=300"


def _site(request: web.Request) -> str:
    """scheme://host the viewer used (behind a trusted TLS terminator, the scheme it says: launchkit.web.clients)."""
    return f"{request.scheme}://{request.host}"


def _matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 weak comparison, as If-None-Match asks."""
    candidates = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in candidates or etag in candidates


def _start_label(start_at: str | None) -> str:
    """The announced start as the page shows it without JavaScript (the player localises it)."""
    if not start_at:
        return ""
    try:
        moment = datetime.fromisoformat(start_at)
    except ValueError:
        return start_at
    return moment.strftime("%-d %B %Y, %H:%M ") + (moment.strftime("UTC%z") if moment.utcoffset() else "UTC")


def _share_links(url: str, title: str) -> list[tuple[str, str]]:
    """Plain links to each network's share page: no third-party script or widget on our page."""
    return [
        ("X / Twitter", "https://twitter.com/intent/tweet?" + urlencode({"text": title, "url": url})),
        ("Facebook", "https://www.facebook.com/sharer/sharer.php?" + urlencode({"u": url})),
        ("LinkedIn", "https://www.linkedin.com/sharing/share-offsite/?" + urlencode({"url": url})),
        ("Email", f"mailto:?subject={quote(title)}&body={quote(url)}"),
    ]


def _embed_code(site: str, title: str) -> str:
    """The snippet news sites paste (shown as text, so autoescaping is what we want)."""
    return (f'<iframe src="{site}/embed" title="{html.escape(title)}" width="640" height="360" '
            'allow="autoplay; fullscreen; picture-in-picture" allowfullscreen style="border:0"></iframe>')
