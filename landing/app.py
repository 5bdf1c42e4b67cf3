"""Landing page and embed, rendered with autoescaped Jinja2 templates.

Static assets are addressed with a content hash (`?v=`), so they can be cached for a year;
the HTML itself is short-lived because it carries the initial live/offline state.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Protocol

import aiohttp_jinja2
import jinja2
from aiohttp import web

from launchkit.config import Config

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).parent
STATIC_DIR = PACKAGE_DIR / "static"
HLSJS = "vendor/hls.min.js"
PAGE_CACHE = "public, max-age=5, stale-while-revalidate=30, stale-if-error=600"


class StatusSource(Protocol):
    def status(self) -> dict: ...


class LandingPage:
    static_dir = STATIC_DIR

    def __init__(self, config: Config, status: StatusSource) -> None:
        self._config, self._status = config, status
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

    def asset(self, name: str) -> str | None:
        version = self._versions.get(name)
        return f"/static/{name}?v={version}" if version else None

    def _context(self) -> dict:
        status = self._status.status()
        return {
            "title": self._config.title,
            "description": self._config.description,
            "state": status["event"]["state"],
            "start_at": status["event"]["start_at"],
            "live": status["stream"]["live"],
            "replay": status["replay"]["available"],
            "hls_url": "/hls/index.m3u8",
            "status_url": "/api/status",
        }

    async def index(self, request: web.Request) -> web.Response:
        return self._render("index.html", request)

    async def embed(self, request: web.Request) -> web.Response:
        return self._render("embed.html", request)

    def _render(self, template: str, request: web.Request) -> web.Response:
        response = aiohttp_jinja2.render_template(template, request, self._context())
        response.headers["Cache-Control"] = PAGE_CACHE
        return response

    async def _cache_static(self, request: web.Request, response: web.StreamResponse) -> None:
        if not request.path.startswith("/static/") or response.status != 200:
            return
        name = request.path.removeprefix("/static/")
        versioned = request.query.get("v") == self._versions.get(name)
        response.headers["Cache-Control"] = "public, max-age=31536000, immutable" if versioned else "public, max-age=300"
