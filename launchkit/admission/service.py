"""The admission service: decides who is admitted, runs the waiting room, guards media, reports status.

Mount on any aiohttp app (edge or origin):

    admission = Admission(settings, admission_secrets(os.environ, tokens.ops), bypass=ops.is_operator)
    admission.setup(app)                  # guard middleware, egress meter, start/stop with the app
    app.add_routes(admission.routes())    # POST /api/admission, POST /api/admission/leave, OPTIONS

Waiting-room answers are `429 Too Many Requests` with `Retry-After`, never 503: a 5xx counts as a
server failure everywhere (load-balancer outlier detection ejects the edge, CDNs serve stale or fail
over, error-rate SLOs and alerts fire), while this server is healthy and doing what it was told.
429 is not cached by default, hls.js does not blindly retry it (the page shows the waiting room
instead), and it says exactly what we mean: come back after Retry-After.

`Admitter` (admitter.py) takes the decisions, with or without Redis; this module is their HTTP face.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Awaitable, Callable, Sequence

from aiohttp import web

from launchkit import metrics
from launchkit.admission.admitter import Admitter
from launchkit.admission.line import Waiter
from launchkit.admission.settings import AdmissionSettings
from launchkit.admission.state import Decision
from launchkit.admission.tickets import (
    MAX_TICKET_LENGTH,
    AdmittedTicket,
    QueueTicket,
    TicketError,
    new_client_key,
    valid_client_key,
)
from launchkit.serve.lifecycle import lifespan
from launchkit.web.body import read_body
from launchkit.web.cors import cors, preflight
from launchkit.web.refusal import Refusal

TICKET_COOKIE = "lk_ticket"
QUEUE_COOKIE = "lk_queue"
TICKET_HEADER = "Launchkit-Ticket"
TICKET_PARAM = "t"
KEY_HEADER = "Launchkit-Key"  # the client key an admitted ticket is bound to (tickets.py)
KEY_COOKIE = "lk_key"
MAX_BODY = 4096
# The ticket to attach to a served media response (renewed or new). RequestKey: aiohttp >= 3.12.
_RENEWED = (web.RequestKey("launchkit.admission.renewed", str) if hasattr(web, "RequestKey")
            else "launchkit.admission.renewed")
# The ticket of a viewer admitted by this very request (an implicit arrival).
_ARRIVED = (web.RequestKey("launchkit.admission.arrived", str) if hasattr(web, "RequestKey")
            else "launchkit.admission.arrived")
# A client key made up for this request's client (no header, no cookie): sent back as a cookie.
_NEW_KEY = (web.RequestKey("launchkit.admission.new_key", str) if hasattr(web, "RequestKey")
            else "launchkit.admission.new_key")
_CORS = cors(expose=("Retry-After", TICKET_HEADER))
_NO_STORE = {"Cache-Control": "no-store", **_CORS}
# Pages on another edge send the key header with media and WHEP requests: their preflights.
_MEDIA_PREFLIGHT = preflight(("GET", "POST", "OPTIONS"), headers=("Content-Type", KEY_HEADER),
                             expose=("Retry-After", TICKET_HEADER))

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Admission(Admitter):
    """The admission service on an aiohttp app: its API, the media guard, cookies and headers.
    `bypass`: requests it lets through unguarded (the operator's)."""

    def __init__(self, settings: AdmissionSettings, keys: Sequence[bytes], *,
                 bypass: Callable[[web.Request], bool] | None = None, edge_id: str | None = None) -> None:
        super().__init__(settings, keys, edge_id=edge_id)
        self._bypass = bypass

    # ---- wiring -----------------------------------------------------------------------------------

    def setup(self, app: web.Application) -> None:
        """Guard middleware (innermost so far), egress meter, start/stop with the app. Call before the
        app starts; the routes are separate (`routes()`) so the app keeps one routing table."""
        app.middlewares.append(self.middleware)
        app.on_response_prepare.append(self._count_egress)
        app.cleanup_ctx.append(lifespan(self.start, self.stop))

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/api/admission", self.handle),
            web.options("/api/admission", self.preflight),
            web.post("/api/admission/leave", self.handle_leave),
            web.options("/api/admission/leave", self.preflight),
        ]

    # ---- HTTP: the admission API ------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        """POST /api/admission[?wait=S], JSON body optional: {"ticket": <admitted or queue ticket>}.
        With `wait`, a viewer who has to wait is held up to S seconds and answered when its turn comes
        (line.py)."""
        body = await _read_json_object(request)
        if isinstance(body, web.Response):
            return body
        hold = self._hold_seconds(request)
        if isinstance(hold, web.Response):
            return hold
        key = self._client_key(request)
        explicit = body.get("ticket")
        if explicit is None:
            explicit = request.query.get(TICKET_PARAM)
        if explicit is not None and not isinstance(explicit, str):
            return _error(400, "ticket must be a string")
        now = time.time()
        queue_ticket = None
        if explicit:
            try:
                ticket = self._signer.verify(explicit, now)
            except TicketError as error:
                metrics.ADMISSION_INVALID_TICKETS.labels(error.reason).inc()
                if error.reason != "expired":  # a forged or mangled ticket changes nothing
                    return _error(400, f"invalid ticket: {error}")
                ticket = None  # expired: the viewer left too long ago; a new arrival
            if isinstance(ticket, AdmittedTicket) and self._held(ticket, key):
                return self._admitted(request, self._renew(ticket, now))
            queue_ticket = ticket if isinstance(ticket, QueueTicket) else None
        else:
            admitted, queue_ticket = self._from_cookies(request, now, key)
            if admitted is not None:
                return self._admitted(request, self._renew(admitted, now))
        decision, ticket = await self._decide(queue_ticket, key, hold=self.settings.hold_grace if hold else 0.0)
        if not decision.admitted and hold and decision.seq is not None and ticket is not None:
            decision, ticket = await self._hold(request, decision, ticket, key, hold)
        if decision.admitted:
            return self._admitted(request, ticket)
        return self._waiting(request, decision, ticket, held=bool(hold))

    def _hold_seconds(self, request: web.Request) -> float | web.Response:
        raw = request.query.get("wait")
        if raw is None:
            return 0.0
        if not raw.isascii() or not raw.isdigit() or len(raw) > 4:
            return _error(400, "wait must be whole seconds")
        return min(float(raw), self.settings.hold_max)

    async def _hold(self, request: web.Request, decision: Decision, ticket: str, key: str,
                    seconds: float) -> tuple[Decision, str | None]:
        """Held until admitted, or `seconds` pass: then the place as it stands (still in line)."""
        place = self._signer.verify(ticket, time.time())
        assert isinstance(place, QueueTicket)
        waiter = Waiter(place.scope, place.seq, place.issued_ms, key, decision.position or 1,
                        gone=lambda: request.transport is None or request.transport.is_closing())
        answer = await self._line.hold(waiter, seconds)
        if answer is not None:
            return answer
        if not waiter.gone():
            # The page asks again at once, but the place was last kept alive up to a keep-alive round
            # ago (more on a busy loop): keep it `hold_grace` from this answer, as promised, so a slow
            # round trip does not send the viewer to the end of the line.
            await self._keep_held([waiter])
        if waiter.seq != place.seq:  # the line gave it a new place (e.g. Redis came back)
            ticket = self._signer.queued(waiter.scope, waiter.seq, place.issued_ms)
        return replace(decision, position=waiter.position), ticket

    async def handle_leave(self, request: web.Request) -> web.Response:
        """POST /api/admission/leave (navigator.sendBeacon on pagehide): frees the slot at once."""
        body = await _read_json_object(request)
        if isinstance(body, web.Response):
            return body
        text = body.get("ticket") or request.cookies.get(TICKET_COOKIE)
        if not isinstance(text, str) or not text:
            return _error(400, "no ticket to release")
        try:
            ticket = self._signer.verify(text, time.time())
        except TicketError as error:
            if error.reason == "expired":
                return web.Response(status=204, headers=_NO_STORE)
            metrics.ADMISSION_INVALID_TICKETS.labels(error.reason).inc()
            return _error(400, f"invalid ticket: {error}")
        if not isinstance(ticket, AdmittedTicket):
            return _error(400, "not an admitted ticket")
        await self._release(ticket.id)
        response = web.Response(status=204, headers=_NO_STORE)
        response.del_cookie(TICKET_COOKIE, path="/")
        return response

    async def preflight(self, request: web.Request) -> web.Response:
        return web.Response(status=204, headers=preflight(("POST", "OPTIONS"), headers=("Content-Type", KEY_HEADER),
                                                          expose=("Retry-After", TICKET_HEADER)))

    # ---- client keys (one ticket, one viewer: tickets.py) -----------------------------------------

    def _client_key(self, request: web.Request) -> str:
        """The client's key (header, else cookie); a new one (sent back as a cookie) if it has none."""
        key = valid_client_key(request.headers.get(KEY_HEADER)) or valid_client_key(request.cookies.get(KEY_COOKIE))
        if key is None:
            key = request[_NEW_KEY] = new_client_key()
        return key

    def _from_cookies(self, request: web.Request, now: float,
                      key: str) -> tuple[AdmittedTicket | None, QueueTicket | None]:
        """Cookies are ours, so an unreadable one (an old secret) is ignored rather than refused."""
        admitted = queued = None
        for name in (TICKET_COOKIE, QUEUE_COOKIE):
            ticket = self._verified(request.cookies.get(name), now)
            if ticket is None:
                continue
            if isinstance(ticket, AdmittedTicket):
                if self._held(ticket, key):
                    admitted = admitted or ticket
            else:
                queued = queued or ticket
        return admitted, queued

    # ---- HTTP: guarding media ---------------------------------------------------------------------

    def guards(self, path: str) -> bool:
        return path.startswith(self.settings.guarded_prefixes)

    async def check(self, request: web.Request) -> web.StreamResponse | None:
        """None: serve the request (a renewed or new ticket to attach is left in the request, see
        `attach_ticket`). Otherwise the waiting-room answer to send instead."""
        if not self.guards(request.path):
            return None
        if request.method == "OPTIONS":  # a preflight: answered here unless the route answers its own
            unrouted = isinstance(request.match_info.http_exception, web.HTTPMethodNotAllowed)
            return web.Response(status=204, headers=_MEDIA_PREFLIGHT) if unrouted else None
        if self._bypass is not None and self._bypass(request):
            return None
        now = time.time()
        queue_ticket = None
        key = self._client_key(request)
        for text in (request.query.get(TICKET_PARAM), request.headers.get(TICKET_HEADER),
                     request.cookies.get(TICKET_COOKIE), request.cookies.get(QUEUE_COOKIE)):
            ticket = self._verified(text, now)
            if ticket is None:
                continue
            if isinstance(ticket, AdmittedTicket):
                if not self._held(ticket, key):
                    continue
                self._touch(ticket.id)
                if ticket.expires - now < self.settings.ticket_ttl / 2:
                    request[_RENEWED] = self._signer.admitted(ticket.id, now + self.settings.ticket_ttl, ticket.binding)
                return None  # admitted viewers are served, whatever the load now
            queue_ticket = queue_ticket or ticket
        if not self.enforced:
            return None
        # No valid ticket: an implicit arrival (a player that did not ask /api/admission first).
        decision, ticket = await self._decide(queue_ticket, key)
        if decision.admitted:
            request[_RENEWED] = request[_ARRIVED] = ticket
            return None
        return self._waiting(request, decision, ticket)

    def attach_ticket(self, request: web.Request, response: web.StreamResponse) -> None:
        """Adds a renewed/new ticket to a served media response: cookie, header for ?t= players."""
        ticket = request.get(_RENEWED)
        if not ticket or response.prepared:
            return
        self._set_key_cookie(request, response)
        response.headers[TICKET_HEADER] = ticket
        exposed = [h.strip() for h in response.headers.get("Access-Control-Expose-Headers", "").split(",") if h.strip()]
        exposed += [h for h in ("Retry-After", TICKET_HEADER) if h not in exposed]  # add: the handler's stay readable
        response.headers["Access-Control-Expose-Headers"] = ", ".join(exposed)
        # A per-viewer cookie must never be stored by a shared cache for everyone.
        cache = response.headers.get("Cache-Control", "")
        response.headers["Cache-Control"] = cache.replace("public", "private") if "public" in cache else "private"
        self._set_ticket_cookie(request, response, ticket)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        refusal = await self.check(request)
        if refusal is not None:
            return refusal
        response = await handler(request)
        arrived = request.get(_ARRIVED)
        if arrived and response.status >= 500:
            # Admitted on this very request, which the handler could not serve (WHEP at WebRTC capacity,
            # an origin outage): the place goes back to the line rather than idling through probation.
            await self._release(arrived.split(".")[1])
            return response
        self.attach_ticket(request, response)
        return response

    async def _count_egress(self, request: web.Request, response: web.StreamResponse) -> None:
        if request.method != "HEAD" and response.content_length:
            self._egress.add(response.content_length)

    # ---- responses --------------------------------------------------------------------------------

    def _set_key_cookie(self, request: web.Request, response: web.StreamResponse) -> None:
        key = request.get(_NEW_KEY)
        if key:
            response.set_cookie(KEY_COOKIE, key, path="/", httponly=True, samesite="Lax",
                                max_age=int(self.settings.ticket_ttl) * 60, secure=request.secure or None)

    def _admitted(self, request: web.Request, ticket: str) -> web.Response:
        response = web.json_response(
            {"admitted": True, "ticket": ticket, "expires_in": int(self.settings.ticket_ttl),
             "edge": self.recommended_edge()},
            headers=_NO_STORE,
        )
        self._set_ticket_cookie(request, response, ticket)
        self._set_key_cookie(request, response)
        if QUEUE_COOKIE in request.cookies:
            response.del_cookie(QUEUE_COOKIE, path="/")
        return response

    def _waiting(self, request: web.Request, decision: Decision, ticket: str | None,
                 held: bool = False) -> web.Response:
        """429 with the place; `held`: the request was held open, so the page may ask again at once."""
        response = web.json_response(
            {"admitted": False, "position": decision.position, "queue_length": decision.queue_length,
             "estimated_wait": decision.estimated_wait, "retry_after": decision.retry_after, "ticket": ticket,
             "reason": decision.reason, "edge": self.recommended_edge(),
             "held": held and decision.seq is not None},
            status=429, headers={**_NO_STORE, "Retry-After": str(decision.retry_after)},
        )
        if ticket is not None:
            response.set_cookie(QUEUE_COOKIE, ticket, path="/", httponly=True, samesite="Lax",
                                max_age=decision.retry_after + int(self.settings.queue_grace),
                                secure=request.secure or None)
        self._set_key_cookie(request, response)
        return response

    def _set_ticket_cookie(self, request: web.Request, response: web.StreamResponse, ticket: str) -> None:
        response.set_cookie(TICKET_COOKIE, ticket, path="/", httponly=True, samesite="Lax",
                            max_age=int(self.settings.ticket_ttl), secure=request.secure or None)


async def _read_json_object(request: web.Request) -> dict | web.Response:
    """The request's JSON object ({} for an empty body), or a 4xx response saying what is wrong."""
    try:
        data = await read_body(request, MAX_BODY)
    except Refusal as refusal:
        return _error(refusal.status, refusal.message)
    if not data.strip():
        return {}
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        return _error(400, f"malformed JSON: {error}")
    if not isinstance(body, dict):
        return _error(400, 'expected a JSON object such as {"ticket": "..."}')
    ticket = body.get("ticket")
    if ticket is not None and (not isinstance(ticket, str) or len(ticket) > MAX_TICKET_LENGTH):
        return _error(400, f"ticket must be a string of at most {MAX_TICKET_LENGTH} characters")
    return body


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=_NO_STORE)
