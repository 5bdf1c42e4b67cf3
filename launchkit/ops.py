"""The operator console (/ops) and its API: who is publishing, how the encoders keep up, the
event's state controls, and the publish URLs to copy.

Operators authenticate with the ops token: as `Authorization: Bearer` (CLI, scripts) or once
through the login form, which sets an HttpOnly, SameSite=Strict cookie holding an HMAC of the
token (never the token itself). State changes require a JSON body, which a cross-site form
cannot send, so the cookie cannot be ridden by another site.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime
from typing import TYPE_CHECKING

import aiohttp_jinja2
from aiohttp import web

from launchkit.auth import bearer_token
from launchkit.event import TRANSITIONS, TransitionError

if TYPE_CHECKING:
    from launchkit.app import Services

COOKIE = "launchkit_ops"
MAX_BODY = 4096


class OpsConsole:
    def __init__(self, services: Services) -> None:
        self._services = services
        self._session = hmac.new(services.tokens.ops.encode(), b"launchkit ops session", hashlib.sha256).hexdigest()

    def is_operator(self, request: web.Request) -> bool:
        if self._services.tokens.is_ops(bearer_token(request.headers.get("Authorization"))):
            return True
        cookie = request.cookies.get(COOKIE, "")
        return hmac.compare_digest(cookie.encode(), self._session.encode())

    def _require(self, request: web.Request) -> None:
        if not self.is_operator(request):
            raise web.HTTPUnauthorized(
                text="ops token required (Authorization: Bearer <LAUNCHKIT_OPS_TOKEN>)",
                headers={"WWW-Authenticate": 'Bearer realm="launchkit-ops"', "Cache-Control": "no-store"},
            )

    async def console(self, request: web.Request) -> web.Response:
        template = "ops.html" if self.is_operator(request) else "ops_login.html"
        response = aiohttp_jinja2.render_template(template, request, {"title": self._services.config.title, "error": None})
        response.headers["Cache-Control"] = "no-store"
        return response

    async def login(self, request: web.Request) -> web.Response:
        form = await request.post()
        if not self._services.tokens.is_ops(str(form.get("token", ""))):
            response = aiohttp_jinja2.render_template(
                "ops_login.html", request, {"title": self._services.config.title, "error": "That is not the ops token."},
                status=401,
            )
            response.headers["Cache-Control"] = "no-store"
            return response
        redirect = web.HTTPSeeOther("/ops")
        redirect.set_cookie(COOKIE, self._session, httponly=True, samesite="Strict", secure=request.secure, path="/")
        raise redirect

    async def logout(self, request: web.Request) -> web.Response:
        redirect = web.HTTPSeeOther("/ops")
        redirect.del_cookie(COOKIE, path="/")
        raise redirect

    async def publish_page(self, request: web.Request) -> web.Response:
        self._require(request)
        response = aiohttp_jinja2.render_template(
            "publish.html", request, {"whip_url": "/whip", "token": self._services.tokens.publish},
        )
        response.headers["Cache-Control"] = "no-store"
        return response

    async def api_status(self, request: web.Request) -> web.Response:
        self._require(request)
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
        }

    async def api_event(self, request: web.Request) -> web.Response:
        self._require(request)
        if request.content_type != "application/json":
            raise web.HTTPUnsupportedMediaType(text="send JSON: {\"action\": \"schedule\"|\"live\"|\"end\", \"start_at\"?: ISO 8601}")
        if request.content_length is not None and request.content_length > MAX_BODY:
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=request.content_length)
        body = await request.read()
        if len(body) > MAX_BODY:
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=len(body))
        action, start_at = _parse_event_request(body)
        try:
            event = await self._services.events.apply(action, start_at)
        except TransitionError as error:
            raise web.HTTPConflict(text=str(error)) from None
        await self._services.on_event_changed()
        return web.json_response(event.to_json())


def _parse_event_request(body: bytes) -> tuple[str, datetime | None]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise web.HTTPBadRequest(text="the body is not valid JSON") from None
    if not isinstance(data, dict) or data.get("action") not in TRANSITIONS:
        raise web.HTTPBadRequest(text='expected {"action": "schedule"|"live"|"end"}')
    start_at = data.get("start_at")
    if start_at is None:
        return data["action"], None
    try:
        parsed = datetime.fromisoformat(str(start_at).replace("Z", "+00:00"))
    except ValueError:
        raise web.HTTPBadRequest(text="start_at must be an ISO 8601 time with a UTC offset") from None
    if parsed.tzinfo is None:
        raise web.HTTPBadRequest(text="start_at needs a UTC offset (e.g. 2026-12-01T14:00:00+01:00)")
    return data["action"], parsed
