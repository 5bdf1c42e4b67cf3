"""The operator console (/ops) and its API: who is publishing, how the encoders keep up, the
event's state controls, and the publish URLs to copy.

Operators authenticate with the ops token: as `Authorization: Bearer` (CLI, scripts) or once
through the login form, which opens a server-side session (launchkit/sessions.py: expiring,
revoked by signing out, HttpOnly, SameSite=Strict, Secure over HTTPS). State changes require a
JSON body, which a cross-site form cannot send, so the cookie cannot be ridden by another site.
Failed tokens are answered late and repeated ones locked out (launchkit/auth.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Awaitable, Callable

import aiohttp_jinja2
from aiohttp import web

from launchkit.auth import bearer_token
from launchkit.event import TRANSITIONS, TransitionError
from launchkit.sessions import LIFETIME, OpsSessions
from launchkit.web.body import read_json
from launchkit.web.credentials import require_bearer
from launchkit.web.refusal import Refusal

if TYPE_CHECKING:
    from launchkit.app import Services

COOKIE = "launchkit_ops"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_BODY = 4096


class OpsConsole:
    def __init__(self, services: Services) -> None:
        self._services = services
        data_dir = services.config.data_dir
        self.sessions = OpsSessions(services.tokens.ops, data_dir / "ops_sessions.sqlite3" if data_dir else None)

    def is_operator(self, request: web.Request) -> bool:
        """Whether `request` comes from an operator. Also asked of viewers' requests (which carry no
        token), so it never waits; but a wrong token counts as a failure and a locked-out client is
        nobody's operator, so no page that answers differently to operators is a free token oracle."""
        if self.sessions.valid(request.cookies.get(COOKIE)):
            return True
        presented = bearer_token(request.headers.get("Authorization"))
        if presented is None:
            return False
        failures = self._services.failures
        if failures.locked_out(request.remote, "ops"):
            return False
        if self._services.tokens.is_ops(presented):
            return True
        failures.record(request.remote, "ops")
        return False

    async def require(self, request: web.Request) -> None:
        """Raises the 401 (after the failure delay) or 429 (locked out) unless an operator asks."""
        if self.sessions.valid(request.cookies.get(COOKIE)):
            return
        await require_bearer(request, self._services.failures, "ops", self._services.tokens.is_ops, "launchkit-ops",
                             "the ops token (LAUNCHKIT_OPS_TOKEN)")

    async def console(self, request: web.Request) -> web.Response:
        template = "ops.html" if self.is_operator(request) else "ops_login.html"
        response = aiohttp_jinja2.render_template(template, request, {"title": self._services.config.title, "error": None})
        response.headers["Cache-Control"] = "no-store"
        return response

    async def login(self, request: web.Request) -> web.Response:
        failures = self._services.failures
        wait = failures.locked_out(request.remote, "ops")
        if wait:
            return self._login_page(request, f"Too many failed attempts: try again in {wait} s.", 429,
                                    {"Retry-After": str(wait)})
        form = await request.post()
        if not self._services.tokens.is_ops(str(form.get("token", ""))):
            await failures.failed(request.remote, "ops")
            return self._login_page(request, "That is not the ops token.", 401)
        redirect = web.HTTPSeeOther("/ops")
        redirect.set_cookie(COOKIE, await self.sessions.open(), httponly=True, samesite="Strict",
                            secure=request.secure, path="/", max_age=int(LIFETIME))
        raise redirect

    def _login_page(self, request: web.Request, error: str, status: int,
                    headers: dict[str, str] | None = None) -> web.Response:
        response = aiohttp_jinja2.render_template(
            "ops_login.html", request, {"title": self._services.config.title, "error": error}, status=status)
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
            "publish.html", request, {"whip_url": "/whip", "token": self._services.tokens.publish},
        )
        response.headers["Cache-Control"] = "no-store"
        return response

    async def api_status(self, request: web.Request) -> web.Response:
        await self.require(request)
        return web.json_response(self.status(request), headers={"Cache-Control": "no-store"})

    def status(self, request: web.Request) -> dict:
        services = self._services
        program = services.pipeline.program
        return {
            "event": services.events.event.to_json(),
            "on_air": program.on_air,
            "on_air_since": program.on_air_changed_at,
            "inputs": [
                {**vars(i.stats), "fps": i.fps()} for i in program.inputs()
            ],
            "encoders": [
                {"rendition": w.rendition, "lag_seconds": round(w.lag, 4), "frames": w.frames_encoded}
                for w in services.pipeline.ladder.workers
            ],
            "publish": services.publish_urls(request),
            "recording": services.recorder.status() if services.recorder is not None else None,
        }

    async def api_event(self, request: web.Request) -> web.Response:
        await self.require(request)
        action, start_at = _parse_event_request(await read_json(request, MAX_BODY))
        try:
            event = await self._services.events.apply(action, start_at)
        except TransitionError as error:
            raise Refusal(409, str(error), "conflict") from None
        await self._services.on_event_changed()
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
