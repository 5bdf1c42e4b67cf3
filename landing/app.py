"""Landing page and embed, rendered with autoescaped Jinja2 templates.

Static assets are addressed with a content hash (`?v=`), so they can be cached for a year;
the HTML itself is short-lived because it carries the initial live/offline state. A page is
rendered once per distinct content (a small LRU keyed by its template context) and served with
an ETag, so a CDN miss storm costs a dictionary lookup per request, and revalidations a 304.

The operator's pages live beside the code that serves them (launchkit/origin/: the console and the
publish page; launchkit/wall/: the moderation page) and mount the same way (`PageAssets`): their
templates join the app's one Jinja2 environment, where they may extend base.html, and their static
files are served under their own URL (/ops/static/, /ops/wall/static/) with the same versioning
and caching as /static/.

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


class PageAssets:
    """A component's pages: the `templates/` and `static/` directories beside its code.

    `setup(app)` adds the templates to the app's one Jinja2 environment (one name space: a page may
    extend another component's, a name two components use is refused at startup); `route()` serves
    the static files under `url`. Templates address any component's file by name, `asset("ops.js")`:
    `url/name?v=<content hash>` (None for a file that is not there), one name space as well. A
    response for the current version is cached for a year, any other for five minutes.
    """

    def __init__(self, directory: Path, url: str) -> None:
        self.templates_dir, self.static_dir, self.url = directory / "templates", directory / "static", url
        self.versions = {
            path.relative_to(self.static_dir).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()[:10]
            for path in self.static_dir.rglob("*") if path.is_file()
        }

    def setup(self, app: web.Application) -> None:
        _Pages.of(app).mount(self)

    def route(self) -> web.RouteDef:
        return web.static(self.url, self.static_dir, append_version=False)

    def asset(self, name: str) -> str | None:
        version = self.versions.get(name)
        return f"{self.url}/{name}?v={version}" if version else None

    def cache_control(self, path: str, version: str | None) -> str | None:
        """Cache-Control for a 200 on `path` with `?v=version`; None for a path outside `url`."""
        if not path.startswith(self.url + "/"):
            return None
        current = version is not None and version == self.versions.get(path.removeprefix(self.url + "/"))
        return "public, max-age=31536000, immutable" if current else "public, max-age=300"


class _Pages:
    """The app's Jinja2 environment and the PageAssets mounted on it, created by the first mount."""

    def __init__(self, app: web.Application) -> None:
        self._mounted: list[PageAssets] = []
        self._loader = jinja2.ChoiceLoader([])
        environment = aiohttp_jinja2.setup(app, loader=self._loader, autoescape=jinja2.select_autoescape(default=True))
        environment.globals["asset"] = self.asset  # every template (page, console) addresses assets alike
        app.on_response_prepare.append(self._cache_static)

    @classmethod
    def of(cls, app: web.Application) -> _Pages:
        if PAGES not in app:
            app[PAGES] = cls(app)
        return app[PAGES]

    def mount(self, assets: PageAssets) -> None:
        loader = jinja2.FileSystemLoader(assets.templates_dir)
        for other in self._mounted:
            if other.url == assets.url:
                raise ValueError(f"page assets at {assets.url} are mounted twice")
            clashes = ({*loader.list_templates()} & {*jinja2.FileSystemLoader(other.templates_dir).list_templates()}
                       | assets.versions.keys() & other.versions.keys())
            if clashes:
                raise ValueError(f"{assets.url} and {other.url} both have {', '.join(sorted(clashes))}")
        self._mounted.append(assets)
        self._loader.loaders.append(loader)

    def asset(self, name: str) -> str | None:
        return next((url for assets in self._mounted if (url := assets.asset(name))), None)

    async def _cache_static(self, request: web.Request, response: web.StreamResponse) -> None:
        if response.status != 200:
            return
        for assets in self._mounted:
            cache = assets.cache_control(request.path, request.query.get("v"))
            if cache is not None:
                response.headers["Cache-Control"] = cache
                return


PAGES = web.AppKey("pages", _Pages)


def landing_assets() -> PageAssets:
    """This package's pages (the viewers'), their static files at /static/."""
    return PageAssets(PACKAGE_DIR, "/static")


class LandingPage:
    def __init__(self, config: PageText, status: StatusSource, *, wall: bool = False) -> None:
        self._config, self._status = config, status
        self.wall = wall  # whether this server mounts the live wall (pages show its panel)
        self._rendered: OrderedDict[str, tuple[bytes, str]] = OrderedDict()  # context key -> (body, ETag)
        self.assets = landing_assets()
        if HLSJS not in self.assets.versions:
            log.warning("hls.js is missing from %s: run `make setup`; only browsers with native HLS will play", STATIC_DIR)

    def setup(self, app: web.Application) -> None:
        """The page's templates and the security headers of every HTML response; the app routes
        `/static/` (`self.assets.route()`)."""
        self.assets.setup(app)
        app.on_response_prepare.append(self._security_headers)

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
