"""The event's lifecycle: scheduled → live → ended, persisted so an origin restart resumes it.

State lives in SQLite under --data-dir (one small table; writes are rare and run off the event
loop). The demo keeps it in memory and starts live.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path

from launchkit import metrics


class State(str, Enum):
    SCHEDULED = "scheduled"
    LIVE = "live"
    ENDED = "ended"


# Which action leads where, from which states. A rehearsal can be reset to scheduled after it ended.
TRANSITIONS: dict[str, tuple[tuple[State, ...], State]] = {
    "schedule": ((State.SCHEDULED, State.ENDED), State.SCHEDULED),
    "live": ((State.SCHEDULED,), State.LIVE),
    "end": ((State.LIVE,), State.ENDED),
}


class TransitionError(ValueError):
    """An action that does not apply in the current state (HTTP 409)."""


@dataclass(frozen=True, slots=True)
class Event:
    state: State
    start_at: datetime | None
    changed_at: float
    live_at: float | None = None
    ended_at: float | None = None

    def to_json(self) -> dict:
        data = asdict(self)
        data["state"] = self.state.value
        data["start_at"] = self.start_at.isoformat() if self.start_at else None
        return data


class EventStore:
    """The current event, in memory and (when a path is given) in SQLite."""

    def __init__(self, path: Path | None, initial: Event) -> None:
        self._path = path
        self._lock = asyncio.Lock()
        self.event = self._load() or initial
        if self._path is not None:
            self._save(self.event)
        self._publish_metric()

    @classmethod
    def open(cls, data_dir: Path | None, start_at: datetime | None, *, live: bool = False) -> EventStore:
        now = time.time()
        initial = Event(State.LIVE if live else State.SCHEDULED, start_at, now, live_at=now if live else None)
        store = cls(data_dir / "event.sqlite3" if data_dir else None, initial)
        if start_at is not None and store.event.state is State.SCHEDULED and store.event.start_at != start_at:
            store.event = replace(store.event, start_at=start_at)
            if store._path is not None:
                store._save(store.event)
        return store

    async def apply(self, action: str, start_at: datetime | None = None) -> Event:
        if action not in TRANSITIONS:
            raise TransitionError(f"unknown action {action!r}: use one of {', '.join(TRANSITIONS)}")
        allowed, target = TRANSITIONS[action]
        async with self._lock:
            current = self.event
            if current.state not in allowed:
                raise TransitionError(f"cannot {action} an event that is {current.state.value}")
            now = time.time()
            updated = replace(
                current, state=target, changed_at=now,
                start_at=start_at if action == "schedule" and start_at else current.start_at,
                live_at=now if target is State.LIVE else (None if target is State.SCHEDULED else current.live_at),
                ended_at=now if target is State.ENDED else None,
            )
            if self._path is not None:
                await asyncio.to_thread(self._save, updated)
            self.event = updated
        self._publish_metric()
        return updated

    def _publish_metric(self) -> None:
        for state in State:
            metrics.EVENT_STATE.labels(state.value).set(1.0 if state is self.event.state else 0.0)

    def _connect(self) -> sqlite3.Connection:
        assert self._path is not None
        self._path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self._path)
        connection.execute(
            "CREATE TABLE IF NOT EXISTS event (id INTEGER PRIMARY KEY CHECK (id = 1), state TEXT NOT NULL, "
            "start_at TEXT, changed_at REAL NOT NULL, live_at REAL, ended_at REAL)"
        )
        return connection

    def _load(self) -> Event | None:
        if self._path is None or not self._path.exists():
            return None
        with self._connect() as connection:
            row = connection.execute("SELECT state, start_at, changed_at, live_at, ended_at FROM event").fetchone()
        if row is None:
            return None
        state, start_at, changed_at, live_at, ended_at = row
        return Event(State(state), datetime.fromisoformat(start_at) if start_at else None, changed_at, live_at, ended_at)

    def _save(self, event: Event) -> None:
        # WAL + a single upsert: the row is either the old or the new state after a crash.
        with self._connect() as connection:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(
                "INSERT INTO event (id, state, start_at, changed_at, live_at, ended_at) VALUES (1, ?, ?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET state=excluded.state, start_at=excluded.start_at, "
                "changed_at=excluded.changed_at, live_at=excluded.live_at, ended_at=excluded.ended_at",
                (event.state.value, event.start_at.isoformat() if event.start_at else None,
                 event.changed_at, event.live_at, event.ended_at),
            )


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
