"""A WHIP or WHEP session's life, the same for both: its peer connection, the tasks it runs, its
expiry when it never connects or its connection fails, and one idempotent end."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Coroutine
from typing import Any

from aiortc import RTCPeerConnection

log = logging.getLogger(__name__)

# From the answer to a connected ICE + DTLS: a client that never connects frees its place.
CONNECT_TIMEOUT = 15.0


class PeerSession:
    """Subclasses set `protocol`, start their own tasks with `_spawn`, call `_watch()` once the
    answer is set, and free what they hold in `_release()`."""

    protocol = "WebRTC"

    def __init__(self, session_id: str, pc: RTCPeerConnection, on_closed: Callable[[Any], None]) -> None:
        self.id = session_id
        # Identifies the ICE session (RFC 9725 §4.3.1); only an ICE restart would change it.
        self.etag = f'"{secrets.token_urlsafe(12)}"'
        self.pc = pc
        self._on_closed = on_closed
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def connected(self) -> bool:
        return self.pc.connectionState == "connected"

    def _watch(self) -> None:
        """End the session when its connection fails or closes, or never comes up."""
        self.pc.on("connectionstatechange", self._on_connection_state)
        self._spawn(self._expire_unless_connected())

    def _on_connection_state(self) -> None:
        if self.pc.connectionState in ("failed", "closed"):
            self._spawn(self.close(f"connection {self.pc.connectionState}"))

    async def _expire_unless_connected(self) -> None:
        await asyncio.sleep(CONNECT_TIMEOUT)
        if self.pc.connectionState != "connected":
            await self.close(f"not connected after {CONNECT_TIMEOUT:g} s")

    def _release(self) -> None:
        """Free the session's place (a program slot, a fan-out viewer) before the teardown."""

    async def close(self, why: str) -> None:
        """End the session (idempotent): free its place first, then tear the connection down."""
        if self._closed:
            return
        self._closed = True
        self._release()
        self._on_closed(self)
        log.info("%s session %s… ended: %s", self.protocol, self.id[:6], why)
        current = asyncio.current_task()
        others = [task for task in self._tasks if task is not current]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        await self.pc.close()
