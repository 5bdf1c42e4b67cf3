"""Single-flight request coalescing: concurrent callers for the same key share one execution.

The first caller (the leader) starts the work as its own task; everyone who asks for the same key
while it runs (the followers) awaits that task. The result or the exception reaches all of them.
The task is shielded: a viewer who hangs up (its handler is cancelled) does not cancel the fetch
the others are waiting for. The key is forgotten as soon as the task ends, so the next caller
starts afresh (the cache in front decides whether it needs to).
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Generic, Hashable, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    def __init__(self) -> None:
        self._flights: dict[K, asyncio.Task[V]] = {}

    def __len__(self) -> int:
        return len(self._flights)

    def __contains__(self, key: K) -> bool:
        return key in self._flights

    def start(self, key: K, work: Callable[[], Awaitable[V]]) -> tuple[asyncio.Task[V], bool]:
        """The running task for `key` (started from `work()` if none runs) and whether we started it."""
        task = self._flights.get(key)
        if task is not None and not task.done():
            return task, False
        task = asyncio.ensure_future(work())
        self._flights[key] = task
        task.add_done_callback(lambda done, key=key: self._finished(key, done))
        return task, True

    async def do(self, key: K, work: Callable[[], Awaitable[V]]) -> tuple[V, bool]:
        """Run or join the work for `key`: (result, True for the leader). Exceptions reach every caller."""
        task, leader = self.start(key, work)
        return await asyncio.shield(task), leader

    def _finished(self, key: K, task: asyncio.Task[V]) -> None:
        if self._flights.get(key) is task:
            del self._flights[key]
        if not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" when nobody waited
