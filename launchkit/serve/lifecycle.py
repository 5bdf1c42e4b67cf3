"""One process serving an aiohttp app on a bound socket until it is told to stop.

SIGINT and SIGTERM stop the origin at once: cleanup joins every media thread within its 2 s
budget. A role with a drain (`drain_seconds`, the edge) turns the first signal into a drain
instead: `on_drain` runs (readiness false at once), serving goes on for `drain_seconds` (responses
ask clients to reconnect, so load balancers move them), then the process stops; a second Ctrl-C
stops at once. A supervised worker ignores SIGINT (a terminal's Ctrl-C reaches the supervisor,
who decides), takes a second SIGTERM as that second Ctrl-C, and stops if its supervisor dies.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from typing import AsyncIterator, Awaitable, Callable

from aiohttp import web

from launchkit.serve.listening import BACKLOG, ListenError
from launchkit.web import limits

log = logging.getLogger("launchkit")

# Seconds given to in-flight requests at shutdown (once the drain is over, or on a second Ctrl-C);
# the origin's media threads get the rest of a 2 s budget.
SHUTDOWN_GRACE = 0.5


async def serve(app: web.Application, sock: socket.socket, *, access_log: bool,
                drain_seconds: float | None = None, on_drain: Callable[[], Awaitable[None]] | None = None,
                supervised: bool = False, on_listening: Callable[[], None] | None = None) -> int:
    """Serve `app` on `sock` until stopped (see the module's docstring); returns the exit status.
    Raises ListenError when starting the app fails to bind (an ingest port)."""
    limits.raise_open_file_limit()
    draining, stopping = asyncio.Event(), asyncio.Event()
    _handle_signals(draining, stopping, drain_seconds, supervised)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=SHUTDOWN_GRACE,
                           keepalive_timeout=limits.IDLE_TIMEOUT,
                           access_log=logging.getLogger("launchkit.access") if access_log else None)
    try:
        await runner.setup()  # starts ingest listeners too: a busy RTMP port fails here
    except OSError as error:
        await runner.cleanup()
        raise ListenError(error.strerror or str(error)) from None
    watchdog = asyncio.create_task(_watch_parent(os.getppid(), stopping, draining)) if supervised else None
    try:
        await web.SockSite(runner, sock, backlog=BACKLOG).start()  # SockSite listens again: its default is 128
        if on_listening is not None:
            on_listening()
        await draining.wait()
        if on_drain is not None:
            await on_drain()
        if not stopping.is_set() and drain_seconds:
            log.info("draining: not ready any more, serving for %g s%s", drain_seconds,
                     "" if supervised else " (Ctrl-C stops at once)")
            try:
                await asyncio.wait_for(stopping.wait(), drain_seconds)
            except TimeoutError:
                pass
        log.info("shutting down")
    finally:
        if watchdog is not None:
            watchdog.cancel()
        await runner.cleanup()
    log.info("stopped")
    return 0


def _handle_signals(draining: asyncio.Event, stopping: asyncio.Event, drain_seconds: float | None,
                    supervised: bool) -> None:
    loop = asyncio.get_running_loop()

    def on_sigterm() -> None:
        if not draining.is_set():
            draining.set()
        elif supervised:
            stopping.set()  # the supervisor's second signal: a second Ctrl-C
        elif drain_seconds is not None:
            log.info("already draining (Ctrl-C stops at once)")

    def on_sigint() -> None:
        if draining.is_set():
            stopping.set()
        draining.set()

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    if not supervised:  # workers ignore SIGINT: a terminal's Ctrl-C reaches the supervisor, who decides
        loop.add_signal_handler(signal.SIGINT, on_sigint)


async def _watch_parent(parent: int, stopping: asyncio.Event, draining: asyncio.Event) -> None:
    """A worker whose supervisor died (SIGKILL) stops instead of serving on, orphaned."""
    while os.getppid() == parent:
        await asyncio.sleep(1.0)
    log.warning("supervisor %d is gone: stopping", parent)
    stopping.set()
    draining.set()


def lifespan(start: Callable[[], Awaitable[None]],
             stop: Callable[[], Awaitable[None]]) -> Callable[[web.Application], AsyncIterator[None]]:
    """An `app.cleanup_ctx` entry for a component's start() and stop(): components start in the order
    they were registered and stop in the reverse; stop() runs even if start() failed half-way."""
    async def run(app: web.Application) -> AsyncIterator[None]:
        try:
            await start()
            yield
        finally:
            await stop()
    return run
