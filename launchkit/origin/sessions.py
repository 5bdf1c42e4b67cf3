"""Operator sessions: what the console's login form hands out instead of the ops token.

A session is a random id (256 bits) in an HttpOnly, SameSite=Strict cookie, `Secure` when the
client reached us over HTTPS (behind `--trusted-proxies`, as the proxy says). The server keeps
only a hash of each id with its expiry (LIFETIME) and the ops token it was opened under, so:
- a session ends by itself after LIFETIME, when the operator signs out (the id is deleted: a
  copied cookie stops working at once), and when the ops token changes (rotation signs everyone out);
- with `--data-dir` the sessions live in SQLite as well (written off the event loop), so an origin
  restart neither signs operators out nor brings a signed-out cookie back;
- a stolen database holds no usable cookie (hashes only).

Lookups are in memory: `is_operator` runs on every guarded media request when admission is on.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import sqlite3
import time
from pathlib import Path

LIFETIME = 12 * 3600.0  # a launch day
MAX_SESSIONS = 1000  # the oldest are dropped beyond: a login flood cannot grow memory
_ID_LENGTH = 43  # token_urlsafe(32)


class OpsSessions:
    def __init__(self, ops_token: str, path: Path | None = None) -> None:
        self._token = hashlib.sha256(b"launchkit ops session\x00" + ops_token.encode()).hexdigest()
        self._path = path
        self._sessions: dict[str, float] = {}  # sha256(id) -> expires (unix time), oldest first
        if path is not None:
            self._sessions = self._load(path)

    def _load(self, path: Path) -> dict[str, float]:
        path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(path) as connection:
            connection.execute("CREATE TABLE IF NOT EXISTS sessions (hash TEXT PRIMARY KEY, token TEXT NOT NULL, "
                               "expires REAL NOT NULL)")
            connection.execute("DELETE FROM sessions WHERE expires <= ? OR token != ?", (time.time(), self._token))
            rows = connection.execute("SELECT hash, expires FROM sessions ORDER BY expires").fetchall()
        return dict(rows)

    def valid(self, cookie: str | None) -> bool:
        key = _hash(cookie)
        expires = self._sessions.get(key) if key else None
        return expires is not None and expires > time.time()

    async def open(self) -> str:
        """A new session's id (the cookie value)."""
        session_id = secrets.token_urlsafe(32)
        key, expires = _hash(session_id), time.time() + LIFETIME
        assert key is not None
        self._forget_expired()
        while len(self._sessions) >= MAX_SESSIONS:
            oldest = next(iter(self._sessions))
            await self._delete(oldest)
        self._sessions[key] = expires
        await self._write("INSERT OR REPLACE INTO sessions VALUES (?, ?, ?)", (key, self._token, expires))
        return session_id

    async def close(self, cookie: str | None) -> None:
        key = _hash(cookie)
        if key is not None and key in self._sessions:
            await self._delete(key)

    async def _delete(self, key: str) -> None:
        self._sessions.pop(key, None)
        await self._write("DELETE FROM sessions WHERE hash = ?", (key,))

    def _forget_expired(self) -> None:
        now = time.time()
        for key in [key for key, expires in self._sessions.items() if expires <= now]:
            del self._sessions[key]

    async def _write(self, statement: str, values: tuple) -> None:
        if self._path is not None:
            await asyncio.to_thread(self._execute, self._path, statement, values)

    @staticmethod
    def _execute(path: Path, statement: str, values: tuple) -> None:
        with sqlite3.connect(path) as connection:
            connection.execute(statement, values)


def _hash(cookie: str | None) -> str | None:
    """The stored form of a session id; None for anything that cannot be one (never an error)."""
    if not cookie or len(cookie) != _ID_LENGTH or not cookie.isascii():
        return None
    return hmac.new(b"launchkit ops session id", cookie.encode("ascii"), hashlib.sha256).hexdigest()
