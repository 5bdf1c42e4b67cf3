"""The admission decisions: capacity, the queue, the held line, status, and sharing them through Redis.

`Admitter` decides; `Admission` (service.py) puts it on HTTP. One decision admits a viewer within
capacity (an admitted ticket bound to its client key) or gives it a place in a FIFO queue, this
process's own or, with Redis, the one every edge shares.

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
import logging
import random
import secrets
import time
from typing import Sequence

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
    AdmittedTicket,
    QueueTicket,
    TicketError,
    TicketSigner,
    bind,
    new_ticket_id,
)

log = logging.getLogger(__name__)

SHARED_SCOPE = "g"
REDIS_ERRORS = (RedisError, OSError, asyncio.TimeoutError)
# Timeouts in a row before Redis is declared down. One slow answer (a busy event loop reads replies
# late too) only sends that decision to the local path; a refused or reset connection counts at once.
TIMEOUTS_BEFORE_DOWN = 3
STOP_TIMEOUT = 2.0


class Admitter:
    """Admission decisions for one process, with its background tasks (`start`/`stop`): expiry, the
    held line, and the heartbeat that shares capacity and the queue through Redis when configured."""

    def __init__(self, settings: AdmissionSettings, keys: Sequence[bytes], *, edge_id: str | None = None) -> None:
        self.settings = settings
        self.edge_id = edge_id or secrets.token_hex(6)
        self._signer = TicketSigner(keys)
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

    # ---- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        self._stopping = False
        self._lag.start()
        if self._shared is not None:
            try:
                await self._heartbeat(list(self._touched))
            except REDIS_ERRORS as error:
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
                except REDIS_ERRORS:
                    pass  # the edge disappears from the registry after edge_ttl anyway
            await self._shared.close()

    # ---- capacity ---------------------------------------------------------------------------------

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

    # ---- status -----------------------------------------------------------------------------------

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

    # ---- decisions --------------------------------------------------------------------------------

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
            except REDIS_ERRORS as error:
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

    @staticmethod
    def _held(ticket: AdmittedTicket, key: str) -> bool:
        """Whether the ticket is this client's; a copied one is counted and not honoured."""
        if ticket.held_by(key):
            return True
        metrics.ADMISSION_INVALID_TICKETS.labels("copied").inc()
        return False

    async def _release(self, ticket_id: str) -> None:
        """A viewer's place is free again: the head of the line gets it now, on this edge or another."""
        self._local.active.remove(ticket_id)
        self._touched.discard(ticket_id)
        self._line.wake()
        if self._shared is not None and self._shared_up:
            try:
                await self._shared.leave(ticket_id)
            except REDIS_ERRORS as error:
                self._redis_failed(error)

    # ---- the held line (line.py) ------------------------------------------------------------------

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
            except REDIS_ERRORS as error:
                self._redis_failed(error)
            else:
                for waiter in shared:
                    waiter.position = positions_shared.get(waiter.seq, waiter.position)
        for waiter in local:
            waiter.position = positions.get(waiter.seq, waiter.position)

    # ---- background: expiry, heartbeat, Redis health ----------------------------------------------

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
                except REDIS_ERRORS:
                    pass
                else:
                    self._mark_up(f"Redis at {self._redis_location()} answers again: shared admission resumed")
        self._update_gauges()

    async def _heartbeat_or_fall_back(self) -> None:
        touched, self._touched = list(self._touched), set()
        try:
            await self._heartbeat(touched)
        except REDIS_ERRORS as error:
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
