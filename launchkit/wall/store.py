"""Durable wall state in SQLite: posts and their moderation state, banned posters, connector cursors,
and the event log that SSE clients resume from (`Last-Event-ID` = an event's `seq`, monotonic).

Every call runs on one dedicated thread (SQLite connections are not shared across threads, and one
writer never waits on a lock), so the event loop never blocks on disk. WAL with synchronous=FULL:
a post is on disk before its 202 is sent, so nothing accepted is lost across a crash or restart.
A post's state change and its event are written in one transaction: the log never misses one.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

from launchkit.wall.posts import VISIBLE, Candidate, Kind, Post, State, dumps, new_post_id, post_from_row

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS posts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL, kind TEXT NOT NULL, text TEXT NOT NULL, author TEXT NOT NULL,
    name TEXT NOT NULL, outlet TEXT NOT NULL, url TEXT,
    state TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL,
    source_key TEXT UNIQUE
);
CREATE INDEX IF NOT EXISTS posts_state ON posts (state, seq);
CREATE INDEX IF NOT EXISTS posts_author ON posts (author);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    type TEXT NOT NULL, post_id TEXT NOT NULL, data TEXT NOT NULL, at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS bans (author TEXT PRIMARY KEY, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS cursors (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_COLUMNS = "id, source, kind, text, author, name, outlet, url, state, created_at, updated_at"


@dataclass(frozen=True, slots=True)
class Event:
    """One change viewers see: `post` (show or update this post) or `remove` (hide it)."""

    seq: int
    type: str
    data: str   # JSON, already escaped for HTML contexts (posts.dumps)
    at: float   # when it happened (wall clock), for the delivery-lag histogram


class Duplicate(Exception):
    """The source already delivered this item (same source key or id): stored once."""


class Store:
    def __init__(self, path: Path | None) -> None:
        # None: an in-memory database (the demo writes nothing to disk); it lives as long as the Wall.
        self._path = str(path) if path is not None else ":memory:"
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wall-store")
        self._db: sqlite3.Connection | None = None

    async def _run(self, function: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def open(self) -> None:
        await self._run(self._open)

    async def close(self) -> None:
        await self._run(self._close)
        self._executor.shutdown(wait=True)

    def _open(self) -> None:
        if self._path != ":memory:":
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self._path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None, "Store.open() first"
        return self._db

    # ---- writes (each one transaction) -------------------------------------------------------

    async def add(self, candidate: Candidate, decide: Callable[[Candidate, bool], State]) -> tuple[Post, Event | None]:
        """Store a new post in the state `decide(candidate, author_banned)` gives. Raises Duplicate."""
        return await self._run(self._add, candidate, decide)

    def _add(self, candidate: Candidate, decide: Callable[[Candidate, bool], State]) -> tuple[Post, Event | None]:
        db = self.db
        banned = db.execute("SELECT 1 FROM bans WHERE author = ?", (candidate.author,)).fetchone() is not None
        state = decide(candidate, banned)
        now = time.time()
        post = Post(candidate.id or new_post_id(), candidate.source, candidate.kind, candidate.text, candidate.author,
                    candidate.name, candidate.outlet, candidate.url, state, now, now)
        with _transaction(db):
            try:
                db.execute(
                    f"INSERT INTO posts ({_COLUMNS}, source_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (post.id, post.source, post.kind.value, post.text, post.author, post.name, post.outlet, post.url,
                     post.state.value, post.created_at, post.updated_at, candidate.source_key),
                )
            except sqlite3.IntegrityError:
                raise Duplicate(candidate.source_key or post.id) from None
            event = self._log(post) if post.visible else None
        return post, event

    async def transition(self, post_id: str, state: State) -> tuple[Post, Event | None] | None:
        """Move a post to `state`; None if there is no such post."""
        return await self._run(self._transition, post_id, state)

    def _transition(self, post_id: str, state: State) -> tuple[Post, Event | None] | None:
        db = self.db
        with _transaction(db):
            before = self._get(post_id)
            if before is None:
                return None
            now = time.time()
            db.execute("UPDATE posts SET state = ?, updated_at = ? WHERE id = ?", (state.value, now, post_id))
            after = self._get(post_id)
            assert after is not None
            # Viewers hear of a change only if they saw the post before or see it now.
            changed = before.state is not state and (before.visible or after.visible)
            event = self._log(after) if changed else None
        return after, event

    async def ban(self, author: str) -> list[Event]:
        """Ban a poster: their pending and visible posts are rejected (hidden everywhere), and any
        later post of theirs is rejected on arrival."""
        return await self._run(self._ban, author)

    def _ban(self, author: str) -> list[Event]:
        db = self.db
        events = []
        with _transaction(db):
            db.execute("INSERT OR IGNORE INTO bans (author, at) VALUES (?, ?)", (author, time.time()))
            rows = db.execute(f"SELECT {_COLUMNS} FROM posts WHERE author = ? AND state != ?",
                              (author, State.REJECTED.value)).fetchall()
            now = time.time()
            for row in rows:
                post = post_from_row(row)
                db.execute("UPDATE posts SET state = ?, updated_at = ? WHERE id = ?", (State.REJECTED.value, now, post.id))
                if post.visible:
                    events.append(self._log(post, hide=True))
        return events

    async def set_cursor(self, key: str, value: str) -> None:
        await self._run(self._set_cursor, key, value)

    def _set_cursor(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO cursors (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = ?",
                        (key, value, value))

    def _log(self, post: Post, *, hide: bool = False) -> Event:
        """Append the event viewers need for this change (called inside the caller's transaction)."""
        if post.visible and not hide:
            kind, data = "post", dumps(post.public())
        else:
            kind, data = "remove", dumps({"id": post.id})
        at = time.time()
        cursor = self.db.execute("INSERT INTO events (type, post_id, data, at) VALUES (?, ?, ?, ?)",
                                 (kind, post.id, data, at))
        return Event(int(cursor.lastrowid), kind, data, at)

    # ---- reads ---------------------------------------------------------------------------------

    def _get(self, post_id: str) -> Post | None:
        row = self.db.execute(f"SELECT {_COLUMNS} FROM posts WHERE id = ?", (post_id,)).fetchone()
        return post_from_row(row) if row else None

    async def get(self, post_id: str) -> Post | None:
        return await self._run(self._get, post_id)

    async def cursor(self, key: str) -> str | None:
        return await self._run(self._cursor, key)

    def _cursor(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM cursors WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    async def events_after(self, seq: int, limit: int) -> list[Event]:
        return await self._run(self._events_after, seq, limit)

    def _events_after(self, seq: int, limit: int) -> list[Event]:
        rows = self.db.execute("SELECT seq, type, data, at FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                               (seq, limit)).fetchall()
        return [Event(*row) for row in rows]

    async def last_seq(self) -> int:
        return await self._run(lambda: self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0])

    async def visible(self, limit: int) -> list[Post]:
        """The wall as viewers see it now: pinned posts, then the newest others, oldest first."""
        return await self._run(self._visible, limit)

    def _visible(self, limit: int) -> list[Post]:
        states = tuple(s.value for s in VISIBLE)
        rows = self.db.execute(
            f"SELECT {_COLUMNS} FROM (SELECT * FROM posts WHERE state IN (?, ?, ?) "
            "ORDER BY state = 'pinned' DESC, seq DESC LIMIT ?) ORDER BY seq", (*states, limit)).fetchall()
        return [post_from_row(row) for row in rows]

    async def queue(self, limit: int) -> dict[str, list[Post]]:
        """For moderators: pending posts (oldest first), and the questions for the Q&A view."""
        return await self._run(self._queue, limit)

    def _queue(self, limit: int) -> dict[str, list[Post]]:
        pending = self.db.execute(f"SELECT {_COLUMNS} FROM posts WHERE state = ? ORDER BY seq LIMIT ?",
                                  (State.PENDING.value, limit)).fetchall()
        questions = self.db.execute(
            f"SELECT {_COLUMNS} FROM (SELECT * FROM posts WHERE kind = ? AND state IN (?, ?, ?) ORDER BY seq DESC "
            "LIMIT ?) ORDER BY seq", (Kind.QUESTION.value, State.APPROVED.value, State.PINNED.value,
                                      State.ANSWERED.value, limit)).fetchall()
        return {"pending": [post_from_row(r) for r in pending], "questions": [post_from_row(r) for r in questions]}

    async def counts(self) -> dict[tuple[str, str], int]:
        """Posts by (source, state), for the metrics."""
        return await self._run(lambda: {(source, state): n for source, state, n in self.db.execute(
            "SELECT source, state, COUNT(*) FROM posts GROUP BY source, state")})


class _transaction:
    """BEGIN IMMEDIATE … COMMIT, ROLLBACK on error (the connection is in autocommit mode)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: type | None, *rest: object) -> None:
        self._db.execute("COMMIT" if kind is None else "ROLLBACK")
