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

Redis unreachable: admitted tickets are verified without Redis, so admitted viewers keep being
served everywhere (fail open for them). New arrivals are decided by this process alone against its
own capacity and its own queue (a log line says so, `launchkit_admission_redis_up` drops to 0); a
background probe resumes shared admission when Redis answers again, and re-registers the viewers
this process saw meanwhile. Failing closed would turn a Redis outage into a full outage for new
viewers; failing fully open would admit the whole flash crowd at once. Per-edge admission keeps each
edge within its own capacity, which sums to the shared capacity.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets
import time
from dataclasses import replace
from typing import Awaitable, Callable, Sequence

from aiohttp import web
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from launchkit import metrics
from launchkit.admission import capacity as capacity_module
from launchkit.admission.capacity import EgressMeter, LoopLagMonitor
from launchkit.admission.line import HeldLine, Waiter
from launchkit.admission.settings import AdmissionSettings
from launchkit.admission.shared import SharedSnapshot, SharedState
from launchkit.admission.state import Decision, LocalState
from launchkit.admission.tickets import (
    MAX_TICKET_LENGTH,
    AdmittedTicket,
    QueueTicket,
    TicketError,
    TicketSigner,
    bind,
    new_client_key,
    new_ticket_id,
    valid_client_key,
)
from launchkit.web.cors import cors, preflight

log = logging.getLogger(__name__)

TICKET_COOKIE = "lk_ticket"
QUEUE_COOKIE = "lk_queue"
TICKET_HEADER = "Launchkit-Ticket"
TICKET_PARAM = "t"
KEY_HEADER = "Launchkit-Key"  # the client key an admitted ticket is bound to (tickets.py)
KEY_COOKIE = "lk_key"
MAX_BODY = 4096
SHARED_SCOPE = "g"
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
_REDIS_ERRORS = (RedisError, OSError, asyncio.TimeoutError)
# Timeouts in a row before Redis is declared down. One slow answer (a busy event loop reads replies
# late too) only sends that decision to the local path; a refused or reset connection counts at once.
TIMEOUTS_BEFORE_DOWN = 3
STOP_TIMEOUT = 2.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Admission:
    def __init__(self, settings: AdmissionSettings, keys: Sequence[bytes], *,
                 bypass: Callable[[web.Request], bool] | None = None, edge_id: str | None = None) -> None:
        self.settings = settings
        self.edge_id = edge_id or secrets.token_hex(6)
        self._signer = TicketSigner(keys)
        self._bypass = bypass
        self._scope = "l" + secrets.token_hex(5)  # queue tickets of this process's own queue
        self._max_viewers, self._max_egress_mbps = settings.max_viewers, settings.max_egress_mbps
        self._local = LocalState(settings)
        self._shared = SharedState(settings, self.edge_id) if settings.redis_url else None
        self._shared_up = False
        self._snapshot = SharedSnapshot()
        self._touched: set[str] = set()
        self._egress = EgressMeter()
        self._lag = LoopLagMonitor(settings.max_loop_lag, settings.lag_cooldown, settings.lag_sustain)
        self._task: asyncio.Task | None = None
        self._line = HeldLine(self._decide_held, self._keep_held, settings.hold_tick)
        self._line_task: asyncio.Task | None = None
        self._freed_task: asyncio.Task | None = None
        self._stopping = False
        self._draining = False
        self._timeouts = 0
        metrics.init_admission_labels()

    # ---- wiring -------------------------------------------------------------------------------

    def setup(self, app: web.Application) -> None:
        """Guard middleware (innermost so far), egress meter, start/stop with the app. Call before the
        app starts; the routes are separate (`routes()`) so the app keeps one routing table."""
        app.middlewares.append(self.middleware)
        app.on_response_prepare.append(self._count_egress)
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/api/admission", self.handle),
            web.options("/api/admission", self.preflight),
            web.post("/api/admission/leave", self.handle_leave),
            web.options("/api/admission/leave", self.preflight),
        ]

    async def _on_startup(self, app: web.Application) -> None:
        await self.start()

    async def _on_cleanup(self, app: web.Application) -> None:
        await self.stop()

    async def start(self) -> None:
        self._stopping = False
        self._lag.start()
        if self._shared is not None:
            try:
                await self._heartbeat(list(self._touched))
            except _REDIS_ERRORS as error:
                self._mark_down(error, force_log=True)
            else:
                self._mark_up(f"admission state is shared through Redis at {self._redis_location()}")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="admission")
        self._line_task = asyncio.get_running_loop().create_task(self._line.run(), name="admission-line")
        if self._shared is not None:  # a place freed on another edge pumps this edge's line at once
            self._freed_task = asyncio.get_running_loop().create_task(self._shared.listen_freed(self._line.wake),
                                                                      name="admission-freed")

    async def stop(self) -> None:
        self._stopping = True
        for task in (self._line_task, self._freed_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._line_task = self._freed_task = None
        if self._task is not None:
            self._task.cancel()
            done, _ = await asyncio.wait({self._task}, timeout=STOP_TIMEOUT)
            if not done:
                log.warning("admission background task did not stop within %.0f s", STOP_TIMEOUT)
            self._task = None
        await self._lag.stop()
        if self._shared is not None:
            if self._shared_up:
                try:
                    await self._shared.deregister()
                except _REDIS_ERRORS:
                    pass  # the edge disappears from the registry after edge_ttl anyway
            await self._shared.close()

    # ---- capacity -----------------------------------------------------------------------------

    @property
    def enforced(self) -> bool:
        if self.settings.enforce is not None:
            return self.settings.enforce
        return self._max_viewers > 0 or self._max_egress_mbps > 0

    def capacity(self) -> int | None:
        """Viewers this process can serve (None: unlimited or not enforced)."""
        if not self.enforced:
            return None
        return capacity_module.capacity(self._max_viewers, self._max_egress_mbps, self.settings.viewer_mbps,
                                        len(self._local.active), self._egress.mbps())

    async def set_limits(self, max_viewers: int | None = None, max_egress_mbps: float | None = None) -> None:
        """Change the limits at run time (ops, autoscaler). With Redis the new capacity is published at
        once, so the queue moves on every edge."""
        if max_viewers is not None:
            self._max_viewers = max(0, int(max_viewers))
        if max_egress_mbps is not None:
            self._max_egress_mbps = max(0.0, float(max_egress_mbps))
        if self._shared is not None and self._shared_up:
            await self._heartbeat_or_fall_back()

    def lagging(self) -> bool:
        return self._lag.lagging()

    # ---- status -------------------------------------------------------------------------------

    def status(self) -> dict:
        """For /api/status `capacity` (synchronous: the shared numbers are the last heartbeat's)."""
        self._local.expire(time.monotonic())
        cap = self.capacity()
        if self._shared_up:
            snap = self._snapshot
            viewers, queued, total, scope = snap.viewers, snap.queued, snap.capacity if self.enforced else None, "shared"
        else:
            viewers, queued, total, scope = len(self._local.active), len(self._local.queue), cap, "local"
        return {
            "max_viewers": total,
            "headroom": None if total is None else max(0, total - viewers),
            "viewers": viewers,
            "queued": queued,
            "enforced": self.enforced,
            "scope": scope,
            "admitting": not (self.enforced and self._lag.lagging()),
        }

    def edges(self) -> list[str]:
        """URLs of the live edges that take new viewers (with Redis and advertised URLs), most
        headroom first: players move to the next one when theirs drains or dies."""
        if not self._shared_up:
            return []
        ranked = []
        for info in self._snapshot.edges.values():
            url = info.get("url")
            if not isinstance(url, str) or not url or info.get("lagging") or info.get("draining"):
                continue
            headroom = info.get("headroom")
            headroom = float("inf") if not isinstance(headroom, int) or headroom < 0 else headroom
            if headroom > 0:
                ranked.append(((headroom, -int(info.get("viewers") or 0)), url))
        ranked.sort(key=lambda item: item[0], reverse=True)
        return list(dict.fromkeys(url for _, url in ranked))  # workers of one edge share its URL

    def recommended_edge(self) -> str | None:
        """URL of the live edge with the most headroom, else None."""
        edges = self.edges()
        return edges[0] if edges else None

    def begin_drain(self) -> None:
        """This server is going away: it adds no capacity and is nobody's recommended edge any more
        (from the next heartbeat); the viewers it admitted keep their tickets wherever they move."""
        self._draining = True

    # ---- HTTP: the admission API --------------------------------------------------------------

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

    async def _decide_held(self, waiter: Waiter) -> tuple[Decision, str | None]:
        return await self._decide(QueueTicket(waiter.scope, waiter.seq, waiter.issued_ms), waiter.key,
                                  hold=self.settings.hold_grace)

    async def _keep_held(self, waiters: list[Waiter]) -> None:
        """Keep the held places alive and learn their positions (places in another scope are left to lapse)."""
        shared = [w for w in waiters if w.scope == SHARED_SCOPE]
        local = [w for w in waiters if w.scope == self._scope]
        positions = self._local.refresh([w.seq for w in local], time.monotonic() + self.settings.hold_grace)
        if shared and self._shared is not None and self._shared_up:
            try:
                positions_shared = await self._shared.refresh([w.seq for w in shared], self.settings.hold_grace)
            except _REDIS_ERRORS as error:
                self._redis_failed(error)
            else:
                for waiter in shared:
                    waiter.position = positions_shared.get(waiter.seq, waiter.position)
        for waiter in local:
            waiter.position = positions.get(waiter.seq, waiter.position)

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

    async def _release(self, ticket_id: str) -> None:
        """A viewer's place is free again: the head of the line gets it now, on this edge or another."""
        self._local.active.remove(ticket_id)
        self._touched.discard(ticket_id)
        self._line.wake()
        if self._shared is not None and self._shared_up:
            try:
                await self._shared.leave(ticket_id)
            except _REDIS_ERRORS as error:
                self._redis_failed(error)

    async def preflight(self, request: web.Request) -> web.Response:
        return web.Response(status=204, headers=preflight(("POST", "OPTIONS"), headers=("Content-Type", KEY_HEADER),
                                                          expose=("Retry-After", TICKET_HEADER)))

    # ---- client keys (one ticket, one viewer: tickets.py) ---------------------------------------

    def _client_key(self, request: web.Request) -> str:
        """The client's key (header, else cookie); a new one (sent back as a cookie) if it has none."""
        key = valid_client_key(request.headers.get(KEY_HEADER)) or valid_client_key(request.cookies.get(KEY_COOKIE))
        if key is None:
            key = request[_NEW_KEY] = new_client_key()
        return key

    @staticmethod
    def _held(ticket: AdmittedTicket, key: str) -> bool:
        """Whether the ticket is this client's; a copied one is counted and not honoured."""
        if ticket.held_by(key):
            return True
        metrics.ADMISSION_INVALID_TICKETS.labels("copied").inc()
        return False

    # ---- HTTP: guarding media -----------------------------------------------------------------

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

    # ---- decisions ----------------------------------------------------------------------------

    async def _decide(self, queue_ticket: QueueTicket | None, key: str,
                      hold: float = 0.0) -> tuple[Decision, str | None]:
        """One admission decision; returns it with the ticket to hand out (admitted or queue, the
        admitted one bound to `key`). `hold`: the place's life while its request is held (line.py)."""
        settings = self.settings
        ticket_id = new_ticket_id()
        allow = not (self.enforced and self._lag.lagging())
        cap = self.capacity()
        jitter = random.randint(0, settings.retry_jitter)
        decision, scope = None, SHARED_SCOPE
        if self._shared is not None and self._shared_up and self.enforced:
            seq = queue_ticket.seq if queue_ticket and queue_ticket.scope == SHARED_SCOPE else None
            try:
                decision = await self._shared.admit(ticket_id, seq, self._registered_capacity(), allow, jitter, hold)
            except _REDIS_ERRORS as error:
                self._redis_failed(error)
            else:
                self._timeouts = 0
                if decision.admitted:
                    self._local.active.add(ticket_id, time.monotonic() + settings.probation)  # this process's view
                snap = self._snapshot
                snap.viewers, snap.queued, snap.capacity = decision.viewers, decision.queue_length, decision.capacity
        if decision is None:
            scope = self._scope
            seq = queue_ticket.seq if queue_ticket and queue_ticket.scope == scope else None
            decision = self._local.admit(ticket_id, seq, cap, allow, jitter, time.monotonic(), hold)
        now = time.time()
        if decision.admitted:
            metrics.ADMISSION_ADMITTED.labels("queue" if decision.from_queue else "direct").inc()
            if decision.from_queue and queue_ticket is not None:
                metrics.ADMISSION_QUEUE_WAIT.observe(max(0.0, now - queue_ticket.issued_ms / 1000))
            return decision, self._signer.admitted(ticket_id, now + settings.ticket_ttl, bind(key))
        metrics.ADMISSION_REFUSED.labels(decision.reason or "capacity").inc()
        if decision.seq is None:
            return decision, None
        same_place = queue_ticket is not None and queue_ticket.scope == scope and queue_ticket.seq == decision.seq
        issued_ms = queue_ticket.issued_ms if same_place else int(now * 1000)
        return decision, self._signer.queued(scope, decision.seq, issued_ms)

    def _renew(self, ticket: AdmittedTicket, now: float) -> str:
        self._touch(ticket.id)
        return self._signer.admitted(ticket.id, now + self.settings.ticket_ttl, ticket.binding)

    def _touch(self, ticket_id: str) -> None:
        self._local.active.touch(ticket_id, time.monotonic() + self.settings.ticket_ttl)
        if self._shared is not None and self.enforced:  # a server without limits is not counted
            self._touched.add(ticket_id)

    def _verified(self, text: str | None, now: float) -> AdmittedTicket | QueueTicket | None:
        """The ticket `text` carries, or None (absent, or not honoured: counted by reason)."""
        if not text:
            return None
        try:
            return self._signer.verify(text, now)
        except TicketError as error:
            metrics.ADMISSION_INVALID_TICKETS.labels(error.reason).inc()
            return None

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

    # ---- responses ----------------------------------------------------------------------------

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

    # ---- background: expiry, heartbeat, Redis health ------------------------------------------

    async def _run(self) -> None:
        task = asyncio.current_task()
        while not self._stopping:
            await asyncio.sleep(self.settings.tick)
            try:
                await self._tick()
            except Exception:  # never let the admission loop die: log and keep ticking
                log.exception("admission tick failed")
            # Python 3.11's asyncio.timeout (used by redis-py) can turn a cancellation arriving as its
            # timeout expires into TimeoutError, which the Redis fallback then catches: honour it here.
            if task is not None and task.cancelling():
                raise asyncio.CancelledError

    async def _tick(self) -> None:
        self._local.expire(time.monotonic())
        self._lag.take_peak()
        if self._shared is not None:
            if self._shared_up:
                await self._heartbeat_or_fall_back()
            else:
                self._touched.clear()  # re-registered from the local view on recovery
                try:
                    await self._shared.ping()
                    await self._heartbeat(self._local.active.ids() if self.enforced else [])
                except _REDIS_ERRORS:
                    pass
                else:
                    self._mark_up(f"Redis at {self._redis_location()} answers again: shared admission resumed")
        self._update_gauges()

    async def _heartbeat_or_fall_back(self) -> None:
        touched, self._touched = list(self._touched), set()
        try:
            await self._heartbeat(touched)
        except _REDIS_ERRORS as error:
            self._touched.update(touched)  # flushed with the next heartbeat, or re-registered on recovery
            self._redis_failed(error)
        else:
            self._timeouts = 0

    def _registered_capacity(self) -> int | None:
        """What this server adds to the shared capacity. A server without limits (an origin sharing
        the Redis, say) takes no part: it adds no capacity, its viewers are not counted, it admits
        everyone itself, and it never lifts the limits of the edges that have some."""
        return self.capacity() if self.enforced and not self._draining else 0

    async def _heartbeat(self, touched: list[str]) -> None:
        assert self._shared is not None
        cap = self.capacity()
        local_viewers = len(self._local.active)
        info = {"url": self.settings.advertise_url, "viewers": local_viewers,
                "headroom": -1 if cap is None else max(0, cap - local_viewers),
                "lagging": self.enforced and self._lag.lagging(), "draining": self._draining}
        self._snapshot = await self._shared.heartbeat(self._registered_capacity(), info, touched)

    def _redis_failed(self, error: BaseException) -> None:
        if isinstance(error, (TimeoutError, asyncio.TimeoutError, RedisTimeoutError)):
            self._timeouts += 1
            if self._timeouts < TIMEOUTS_BEFORE_DOWN:
                log.debug("Redis answered late (%s): this decision was taken locally", error)
                return
        self._mark_down(error)

    def _mark_down(self, error: BaseException, force_log: bool = False) -> None:
        if self._shared_up or force_log:
            log.warning(
                "Redis at %s unreachable (%s): admission falls back to this process alone (its own capacity "
                "and queue); admitted tickets stay valid", self._redis_location(), error or type(error).__name__)
        self._shared_up = False
        self._timeouts = 0
        metrics.ADMISSION_REDIS_UP.set(0)

    def _mark_up(self, message: str) -> None:
        self._shared_up = True
        metrics.ADMISSION_REDIS_UP.set(1)
        log.info("%s", message)

    def _redis_location(self) -> str:
        assert self._shared is not None
        kwargs = self._shared.client.connection_pool.connection_kwargs
        return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"  # never the password

    def _update_gauges(self) -> None:
        cap = self.capacity()
        local = len(self._local.active)
        metrics.ADMISSION_VIEWERS.labels("local").set(local)
        metrics.ADMISSION_QUEUED.labels("local").set(len(self._local.queue))
        metrics.ADMISSION_HEADROOM.labels("local").set(-1 if cap is None else max(0, cap - local))
        if self._shared is not None:
            snap = self._snapshot
            metrics.ADMISSION_VIEWERS.labels("shared").set(snap.viewers)
            metrics.ADMISSION_QUEUED.labels("shared").set(snap.queued)
            metrics.ADMISSION_HEADROOM.labels("shared").set(
                -1 if snap.capacity is None else max(0, snap.capacity - snap.viewers))


async def _read_json_object(request: web.Request) -> dict | web.Response:
    """The request's JSON object ({} for an empty body), or a 4xx response saying what is wrong."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        return _error(413, f"request body over {MAX_BODY} bytes")
    data = b""
    while len(data) <= MAX_BODY:
        chunk = await request.content.read(MAX_BODY + 1 - len(data))
        if not chunk:
            break
        data += chunk
    if len(data) > MAX_BODY:
        return _error(413, f"request body over {MAX_BODY} bytes")
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

