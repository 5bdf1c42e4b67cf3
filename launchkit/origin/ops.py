"""The operator console (/ops) and its API: who is publishing, how the encoders keep up, the
event's state controls, and the publish URLs to copy.

Operators authenticate with the ops token: as `Authorization: Bearer` (CLI, scripts) or once
through the login form, which opens a server-side session (launchkit/origin/sessions.py: expiring,
revoked by signing out, HttpOnly, SameSite=Strict, Secure over HTTPS). State changes require a
JSON body, which a cross-site form cannot send, so the cookie cannot be ridden by another site.
Failed tokens are answered late and repeated ones locked out (launchkit/auth.py).

Its pages (templates/, beside this module) extend the landing's base.html; their scripts and styles
(static/) are served under /ops/static/, versioned and cached like the landing's (landing.app.PageAssets).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import aiohttp_jinja2
from aiohttp import web

from landing.app import PageAssets
from launchkit.auth import FailedCredentials, Tokens, bearer_token
from launchkit.config import Config
from launchkit.event import TRANSITIONS, TransitionError
from launchkit.origin.media import Media
from launchkit.origin.sessions import LIFETIME, OpsSessions
from launchkit.web.body import read_json
from launchkit.web.credentials import require_bearer
from launchkit.web.refusal import Refusal
from launchkit.web.routes import Handler, hls_routes

COOKIE = "launchkit_ops"
MAX_BODY = 4096


def console_assets() -> PageAssets:
    """The console's and the publish page's templates, their static files at /ops/static/."""
    return PageAssets(Path(__file__).parent, "/ops/static")


class OpsConsole:
    def __init__(self, config: Config, tokens: Tokens, failures: FailedCredentials, media: Media) -> None:
        self._config, self._tokens, self._failures, self._media = config, tokens, failures, media
        data_dir = config.data_dir
        self.sessions = OpsSessions(tokens.ops, data_dir / "ops_sessions.sqlite3" if data_dir else None)
        self.pages = console_assets()

    def setup(self, app: web.Application) -> None:
        """The console's templates join the app's (the routes serve its static files)."""
        self.pages.setup(app)

    def routes(self, hls_multivariant: Handler, hls_media_playlist: Handler, hls_media: Handler) -> list[web.RouteDef]:
        """The console and its API; its preview is the live HLS (these handlers), for operators only,
        on the operator paths (before the event is live, and wherever viewer paths are routed to the edges)."""
        preview = self.preview
        return [
            web.get("/ops", self.console),
            web.post("/ops/login", self.login),
            web.post("/ops/logout", self.logout),
            web.get("/ops/publish", self.publish_page),
            self.pages.route(),
            *hls_routes("/ops/hls", preview(hls_multivariant), preview(hls_media_playlist), preview(hls_media)),
            web.get("/api/ops/status", self.api_status),
            web.post("/api/ops/event", self.api_event),
        ]

    def is_operator(self, request: web.Request) -> bool:
        """Whether `request` comes from an operator. Also asked of viewers' requests (which carry no
        token), so it never waits; but a wrong token counts as a failure and a locked-out client is
        nobody's operator, so no page that answers differently to operators is a free token oracle."""
        if self.sessions.valid(request.cookies.get(COOKIE)):
            return True
        presented = bearer_token(request.headers.get("Authorization"))
        if presented is None:
            return False
        failures = self._failures
        if failures.locked_out(request.remote, "ops"):
            return False
        if self._tokens.is_ops(presented):
            return True
        failures.record(request.remote, "ops")
        return False

    async def require(self, request: web.Request) -> None:
        """Raises the 401 (after the failure delay) or 429 (locked out) unless an operator asks."""
        if self.sessions.valid(request.cookies.get(COOKIE)):
            return
        await require_bearer(request, self._failures, "ops", self._tokens.is_ops, "launchkit-ops",
                             "the ops token (LAUNCHKIT_OPS_TOKEN)")

    async def console(self, request: web.Request) -> web.Response:
        template = "ops.html" if self.is_operator(request) else "ops_login.html"
        response = aiohttp_jinja2.render_template(template, request, {"title": self._config.title, "error": None})
        response.headers["Cache-Control"] = "no-store"
        return response

    async def login(self, request: web.Request) -> web.Response:
        failures = self._failures
        wait = failures.locked_out(request.remote, "ops")
        if wait:
            return self._login_page(request, f"Too many failed attempts: try again in {wait} s.", 429,
                                    {"Retry-After": str(wait)})
        form = await request.post()
        if not self._tokens.is_ops(str(form.get("token", ""))):
            await failures.failed(request.remote, "ops")
            return self._login_page(request, "That is not the ops token.", 401)
        redirect = web.HTTPSeeOther("/ops")
        redirect.set_cookie(COOKIE, await self.sessions.open(), httponly=True, samesite="Strict",
                            secure=request.secure, path="/", max_age=int(LIFETIME))
        raise redirect

    def _login_page(self, request: web.Request, error: str, status: int,
                    headers: dict[str, str] | None = None) -> web.Response:
        response = aiohttp_jinja2.render_template(
            "ops_login.html", request, {"title": self._config.title, "error": error}, status=status)
        response.headers.update({"Cache-Control": "no-store", **(headers or {})})
        return response

    async def logout(self, request: web.Request) -> web.Response:
        await self.sessions.close(request.cookies.get(COOKIE))
        redirect = web.HTTPSeeOther("/ops")
        redirect.del_cookie(COOKIE, path="/")
        raise redirect

    def preview(self, handler: Handler) -> Handler:
        """`handler` for operators only (the console's preview of the HLS)."""
        async def operator_only(request: web.Request) -> web.StreamResponse:
            await self.require(request)
            return await handler(request)
        return operator_only

    async def publish_page(self, request: web.Request) -> web.Response:
        await self.require(request)
        response = aiohttp_jinja2.render_template(
            "publish.html", request, {"whip_url": "/whip", "token": self._tokens.publish},
        )
        response.headers["Cache-Control"] = "no-store"
        return response

    async def api_status(self, request: web.Request) -> web.Response:
        await self.require(request)
        return web.json_response(self.status(request), headers={"Cache-Control": "no-store"})

    def status(self, request: web.Request) -> dict:
        media = self._media
        program = media.pipeline.program
        return {
            "event": media.events.event.to_json(),
            "on_air": program.on_air,
            "on_air_since": program.on_air_changed_at,
            "inputs": [
                {**vars(i.stats), "fps": i.fps()} for i in program.inputs()
            ],
            "encoders": [
                {"rendition": w.rendition, "lag_seconds": round(w.lag, 4), "frames": w.frames_encoded}
                for w in media.pipeline.ladder.workers
            ],
            "publish": self.publish_urls(request),
            "recording": media.recorder.status() if media.recorder is not None else None,
        }

    def publish_urls(self, request: web.Request) -> dict:
        config, host, token = self._config, self._config.advertised_host, self._tokens.publish
        return {
            "token": token,
            "whip": f"{request.scheme}://{request.host}/whip",
            "rtmp": f"rtmp://{host}:{config.rtmp_port}/live/{token}" if config.rtmp_port is not None else None,
            "srt": (f"srt://{host}:{config.srt_port}?mode=caller&passphrase={token}&pbkeylen=16"
                    if config.srt_port is not None else None),
        }

    async def api_event(self, request: web.Request) -> web.Response:
        await self.require(request)
        action, start_at = _parse_event_request(await read_json(request, MAX_BODY))
        try:
            event = await self._media.events.apply(action, start_at)
        except TransitionError as error:
            raise Refusal(409, str(error), "conflict") from None
        await self._media.on_event_changed()
        return web.json_response(event.to_json())


def _parse_event_request(data: object) -> tuple[str, datetime | None]:
    if not isinstance(data, dict) or data.get("action") not in TRANSITIONS:
        raise Refusal(400, 'expected {"action": "schedule"|"live"|"end"}')
    start_at = data.get("start_at")
    if start_at is None:
        return data["action"], None
    try:
        parsed = datetime.fromisoformat(str(start_at).replace("Z", "+00:00"))
    except ValueError:
        raise Refusal(400, "start_at must be an ISO 8601 time with a UTC offset") from None
    if parsed.tzinfo is None:
        raise Refusal(400, "start_at needs a UTC offset (e.g. 2026-12-01T14:00:00+01:00)")
    return data["action"], parsed
