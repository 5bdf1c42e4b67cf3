"""The held line: waiting-room requests kept open (long poll) until their turn comes.

A waiting page asks `POST /api/admission?wait=25`. Instead of a 429 at once and a retry after
Retry-After (seconds in which a freed place idles), the request is held:
- every `hold_tick` the line is pumped: this process's held requests are decided again in queue
  order, up to the first one that still has to wait (the queue is one FIFO: nobody behind it can
  get in before it), and each admitted one is answered at once (`wake()` pumps sooner, e.g. when a
  viewer leaves);
- every second the places of all held requests are kept alive in one call (Redis: one script per
  thousand places), which also brings their positions up to date; requests whose viewer is gone
  (the tab closed: the connection is lost) are dropped then;
- a place nobody keeps alive any more lapses `hold_grace` seconds later, so a closed tab stops
  holding up the line within seconds, not after its Retry-After and grace (~30 s);
- after `hold_max` the request is answered 429 with its position, and the page asks again at once;
  if the line is deciding that very request just then, the hold ends with that decision: an
  admission already taken in Redis (the place left the queue) must reach its viewer, or the viewer
  would come back as a newcomer at the end of the line while its admitted place idles through
  probation.
Clients that cannot hold a connection keep polling with Retry-After, as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from launchkit import metrics
from launchkit.admission.state import Decision

log = logging.getLogger(__name__)

REFRESH_INTERVAL = 1.0  # seconds between keep-alives of the held places (well under hold_grace)
Answer = tuple[Decision, "str | None"]


@dataclass(eq=False)
class Waiter:
    """One held request: its place, its client's key, and how to tell that its viewer left."""

    scope: str
    seq: int
    issued_ms: int
    key: str
    position: int
    gone: Callable[[], bool]
    # The admission's answer, or None when the viewer is gone.
    answer: asyncio.Future[Answer | None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    # Done once the line's latest decision about this waiter has been acted on (None: never decided).
    decided: asyncio.Future[None] | None = None


Decide = Callable[[Waiter], Awaitable[Answer]]
Refresh = Callable[[list[Waiter]], Awaitable[None]]


class HeldLine:
    def __init__(self, decide: Decide, refresh: Refresh, tick: float) -> None:
        self._decide, self._refresh, self._tick = decide, refresh, tick
        self._waiters: set[Waiter] = set()
        self._wake = asyncio.Event()

    def __len__(self) -> int:
        return len(self._waiters)

    def wake(self) -> None:
        self._wake.set()

    async def hold(self, waiter: Waiter, seconds: float) -> Answer | None:
        """The answer once `waiter` is admitted, or None when `seconds` pass first (or its viewer left)."""
        self._waiters.add(waiter)
        metrics.ADMISSION_HELD.set(len(self._waiters))
        self._wake.set()
        try:
            return await asyncio.wait_for(asyncio.shield(waiter.answer), seconds)
        except TimeoutError:
            return await self._last_decision(waiter)
        finally:
            self._waiters.discard(waiter)
            metrics.ADMISSION_HELD.set(len(self._waiters))
            if not waiter.answer.done():
                waiter.answer.set_result(None)

    async def run(self) -> None:
        """Pump and keep alive until cancelled; a failure is logged, never stops the line."""
        loop = asyncio.get_running_loop()
        refreshed = loop.time()
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self._tick)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self._pump()
                if loop.time() - refreshed >= REFRESH_INTERVAL:
                    refreshed = loop.time()
                    await self._keep_alive()
            except Exception:
                log.exception("the held line failed a round; it goes on")

    async def _last_decision(self, waiter: Waiter) -> Answer | None:
        """The hold ran out: no new decision for `waiter`, but the one under way (if any) stands."""
        self._waiters.discard(waiter)  # the pump skips it from now on, even later in this round
        if waiter.decided is not None:
            await asyncio.shield(waiter.decided)
        return waiter.answer.result() if waiter.answer.done() else None

    async def _pump(self) -> None:
        for waiter in sorted(self._waiters, key=lambda w: w.position):
            if waiter not in self._waiters or waiter.answer.done() or waiter.gone():
                continue
            waiter.decided = asyncio.get_running_loop().create_future()
            try:
                admitted = await self._decide_one(waiter)
            finally:
                waiter.decided.set_result(None)
            if not admitted:
                return

    async def _decide_one(self, waiter: Waiter) -> bool:
        """Decide `waiter` and act on it: answered when admitted (True), else its place brought up to date."""
        decision, ticket = await self._decide(waiter)
        if decision.admitted:
            if not waiter.answer.done():
                waiter.answer.set_result((decision, ticket))
            return True
        if decision.seq is not None:
            waiter.seq, waiter.position = decision.seq, decision.position or waiter.position
        return False

    async def _keep_alive(self) -> None:
        for waiter in [w for w in self._waiters if w.gone()]:
            self._waiters.discard(waiter)  # its place is not kept: it lapses after hold_grace
            waiter.answer.set_result(None)
        if self._waiters:
            await self._refresh(list(self._waiters))
