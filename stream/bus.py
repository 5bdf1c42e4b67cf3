"""Encoded packet bus: one encoder publishes, any number of consumers subscribe.

Publishing happens on the encoder threads; delivery happens on the event loop, so subscribers
are plain callbacks that never need locks. Each subscriber receives the same immutable
`EncodedPacket` objects: fan-out costs one function call per packet per subscriber.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from stream.packet import EncodedPacket

log = logging.getLogger(__name__)

PacketCallback = Callable[[EncodedPacket], None]


class Subscription:
    def __init__(self, bus: PacketBus, callback: PacketCallback) -> None:
        self._bus = bus
        self.callback = callback

    def close(self) -> None:
        self._bus._subscribers.discard(self)


class PacketBus:
    """`loop` is needed only to publish from other threads (encoders); a bus fed on the event loop
    itself (an edge's WebRTC feed) does without."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop
        self._subscribers: set[Subscription] = set()
        self.published = 0

    def subscribe(self, callback: PacketCallback) -> Subscription:
        subscription = Subscription(self, callback)
        self._subscribers.add(subscription)
        return subscription

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def publish_threadsafe(self, packets: Sequence[EncodedPacket]) -> None:
        """Hand packets from an encoder thread to the event loop (one wake-up per batch)."""
        assert self._loop is not None, "a bus published from threads needs its event loop"
        if packets and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.publish, packets)

    def publish(self, packets: Sequence[EncodedPacket]) -> None:
        for packet in packets:
            self.published += 1
            for subscription in tuple(self._subscribers):
                try:
                    subscription.callback(packet)
                except Exception:
                    # One broken consumer must not starve the others of media.
                    log.exception("packet subscriber failed; unsubscribing it")
                    subscription.close()
