"""The edge's object cache: whole responses in memory, fresh as long as the origin's Cache-Control
says, within a byte budget (least recently used objects go first).

Freshness is the shared-cache reading of RFC 9111: `s-maxage`, else `max-age`, minus the `Age` the
upstream already spent (an edge behind an edge must not extend the origin's lifetime);
`no-store` and `private` responses are not stored (they are still coalesced); `no-cache` ones are
marked `revalidate` (the relay decides how long it holds them). There is no heuristic freshness:
a response without a lifetime is not stored. After freshness an object may still be served while
the upstream fails, for `stale_if_error` seconds: the origin's own `stale-if-error`, or the
relay's default for playlists (two target durations).

Every size counts towards the budget: body, header bytes and a fixed per-object overhead.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

# Python object overhead of one entry (dict slot, dataclass, bytes header, key string), measured
# roughly; it makes a flood of tiny objects (404s) count too.
ENTRY_OVERHEAD = 400


def cache_control(value: str | None) -> dict[str, str | None]:
    """`public, max-age=5` -> {"public": None, "max-age": "5"} (names lower-cased)."""
    directives: dict[str, str | None] = {}
    for item in (value or "").split(","):
        name, has_argument, argument = item.partition("=")
        if name.strip():
            directives[name.strip().lower()] = argument.strip().strip('"') if has_argument else None
    return directives


def _seconds(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = int(text.strip())
    except ValueError:
        return None
    return float(value) if value >= 0 else None


@dataclass(frozen=True, slots=True)
class Freshness:
    ttl: float  # seconds the response may be served from cache (0: not stored)
    stale_if_error: float  # seconds after that during which it may be served if upstream fails
    revalidate: bool = False  # `no-cache`: storable, but every use must be checked with the upstream


def freshness(headers: Mapping[str, str], default_stale_if_error: float = 0.0) -> Freshness:
    directives = cache_control(headers.get("Cache-Control"))
    if {"no-store", "private"} & directives.keys():
        return Freshness(0.0, 0.0)
    stale = max(_seconds(directives.get("stale-if-error")) or 0.0, default_stale_if_error)
    if "no-cache" in directives:
        return Freshness(0.0, stale, revalidate=True)
    lifetime = _seconds(directives.get("s-maxage"))
    if lifetime is None:
        lifetime = _seconds(directives.get("max-age"))
    if lifetime is None:
        return Freshness(0.0, 0.0)
    age = _seconds(headers.get("Age")) or 0.0
    return Freshness(max(0.0, lifetime - age), stale)


@dataclass(slots=True)
class CachedObject:
    """One upstream response, as stored and as served."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    stored_at: float  # time.monotonic()
    fresh_until: float
    stale_until: float  # >= fresh_until; serving after fresh_until only when the upstream fails
    size: int = field(init=False)

    def __post_init__(self) -> None:
        self.size = len(self.body) + sum(len(k) + len(v) for k, v in self.headers) + ENTRY_OVERHEAD

    def is_fresh(self, now: float) -> bool:
        return now < self.fresh_until

    def can_serve_stale(self, now: float) -> bool:
        return self.status == 200 and now < self.stale_until

    def age(self, now: float) -> float:
        return max(0.0, now - self.stored_at)

    @classmethod
    def build(cls, status: int, headers: Iterable[tuple[str, str]], body: bytes, ttl: float,
              stale_if_error: float = 0.0, now: float | None = None) -> CachedObject:
        now = time.monotonic() if now is None else now
        return cls(status, tuple(headers), body, now, now + ttl, now + ttl + stale_if_error)


class ObjectCache:
    """LRU within `max_bytes`; objects above `max_object_bytes` are refused (the caller streams them)."""

    def __init__(self, max_bytes: int, max_object_bytes: int | None = None,
                 on_evict: Callable[[str, int], None] | None = None) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.max_bytes = max_bytes
        self.max_object_bytes = min(max_object_bytes or max_bytes, max_bytes)
        self._entries: OrderedDict[str, CachedObject] = OrderedDict()
        self._bytes = 0
        self._on_evict = on_evict or (lambda reason, count: None)

    @property
    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def keys(self) -> list[str]:
        return list(self._entries)

    def get(self, key: str, now: float | None = None) -> CachedObject | None:
        """The object (fresh or still usable when stale) and mark it recently used; None if absent or dead."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        now = time.monotonic() if now is None else now
        if now >= entry.stale_until:
            self._remove(key)
            self._on_evict("expired", 1)
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: str, entry: CachedObject) -> bool:
        """Store (replacing any previous version); False if the object alone is over the limit."""
        if entry.size > self.max_object_bytes:
            return False
        if key in self._entries:
            self._remove(key)
        self._entries[key] = entry
        self._bytes += entry.size
        evicted = 0
        while self._bytes > self.max_bytes:
            oldest = next(iter(self._entries))
            self._remove(oldest)
            evicted += 1
        if evicted:
            self._on_evict("budget", evicted)
        return True

    def sweep(self, now: float | None = None) -> int:
        """Drop every object past its stale window; returns how many."""
        now = time.monotonic() if now is None else now
        dead = [key for key, entry in self._entries.items() if now >= entry.stale_until]
        for key in dead:
            self._remove(key)
        if dead:
            self._on_evict("expired", len(dead))
        return len(dead)

    def count(self, predicate: Callable[[str, CachedObject], bool]) -> int:
        return sum(1 for key, entry in self._entries.items() if predicate(key, entry))

    def _remove(self, key: str) -> None:
        entry = self._entries.pop(key)
        self._bytes -= entry.size
