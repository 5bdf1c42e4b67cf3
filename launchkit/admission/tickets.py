"""Signed admission and queue tickets: HMAC-SHA256 with a secret shared by every edge.

Two kinds, both short ASCII strings safe in a cookie, a header, a JSON field or a query parameter:

    a.<id>.<expires>.<binding>.<sig>     admitted: a viewer slot, valid until <expires> (unix seconds),
                                         for the client holding the key whose hash is <binding>
    q.<scope>.<seq>.<issued_ms>.<sig>    queued: place <seq> in the queue named <scope>

One ticket, one viewer: an admitted ticket is bound to a client key that the ticket does not
contain (only a hash of it) and that never travels in a URL: the page keeps a random key in
sessionStorage and sends it as the `Launchkit-Key` header; clients without script (native HLS,
curl) get it as an HttpOnly cookie. A ticket copied into someone else's `?t=` comes without the
key, so it admits nobody else: that client is a new arrival (and waits in line at capacity).

Validation is stateless (signature, then expiry), so an admitted viewer is honoured by every edge
and keeps being served while Redis is down (fail open for admitted viewers). The admitted ticket is
renewed (same id, later expiry) while its viewer keeps fetching media. A queue ticket never expires
by itself: its place lives server-side and is lost when the viewer stops retrying.

Several secrets may be configured (rotation): the first signs, all verify.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import secrets
from dataclasses import dataclass
from typing import Mapping, Sequence

from launchkit.auth import check_strength

MAX_TICKET_LENGTH = 256
MIN_SECRET_LENGTH = 16
SECRET_ENV = "LAUNCHKIT_ADMISSION_SECRET"
_DOMAIN = b"launchkit-admission-ticket-v1\x00"
_ID = re.compile(r"^[A-Za-z0-9_-]{16}$")
_SCOPE = re.compile(r"^[a-z0-9]{1,16}$")
_DIGITS = re.compile(r"^[0-9]{1,15}$")
_SIG = re.compile(r"^[A-Za-z0-9_-]{24}$")
_BINDING = re.compile(r"^[A-Za-z0-9_-]{16}$")
CLIENT_KEY = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


class TicketError(ValueError):
    """A ticket that is not honoured. `reason` is a bounded metric label: malformed, forged, expired."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class AdmittedTicket:
    id: str
    expires: int
    binding: str

    def held_by(self, client_key: str | None) -> bool:
        return client_key is not None and hmac.compare_digest(self.binding, bind(client_key))


@dataclass(frozen=True, slots=True)
class QueueTicket:
    scope: str
    seq: int
    issued_ms: int


def new_ticket_id() -> str:
    return secrets.token_urlsafe(12)  # 16 characters, 96 random bits


def new_client_key() -> str:
    return secrets.token_urlsafe(16)  # 22 characters, 128 random bits


def valid_client_key(text: str | None) -> str | None:
    return text if text and CLIENT_KEY.match(text) else None


def bind(client_key: str) -> str:
    """What an admitted ticket carries of its client's key: a hash, so the ticket never reveals it."""
    digest = hashlib.sha256(b"launchkit client key\x00" + client_key.encode("ascii")).digest()[:12]
    return base64.urlsafe_b64encode(digest).decode("ascii")  # 16 characters


class TicketSigner:
    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys or any(len(key) < MIN_SECRET_LENGTH for key in keys):
            raise ValueError(f"admission secrets must be at least {MIN_SECRET_LENGTH} bytes")
        self._keys = tuple(keys)

    def _sign(self, body: str, key: bytes) -> str:
        digest = hmac.new(key, _DOMAIN + body.encode("ascii"), hashlib.sha256).digest()[:18]
        return base64.urlsafe_b64encode(digest).decode("ascii")  # 24 characters, no padding

    def admitted(self, ticket_id: str, expires: float, binding: str) -> str:
        body = f"a.{ticket_id}.{math.ceil(expires)}.{binding}"  # rounded up: never shorter than asked
        return f"{body}.{self._sign(body, self._keys[0])}"

    def queued(self, scope: str, seq: int, issued_ms: int) -> str:
        body = f"q.{scope}.{seq}.{issued_ms}"
        return f"{body}.{self._sign(body, self._keys[0])}"

    def verify(self, text: str, now: float) -> AdmittedTicket | QueueTicket:
        """The ticket, or TicketError. Never touches any state: cheap enough for every media request."""
        if not isinstance(text, str) or not text or len(text) > MAX_TICKET_LENGTH or not text.isascii():
            raise TicketError("malformed", "malformed ticket")
        parts = text.split(".")
        kind = parts[0]
        if kind == "a" and len(parts) == 5:
            ok = bool(_ID.match(parts[1]) and _DIGITS.match(parts[2]) and _BINDING.match(parts[3]))
        elif kind == "q" and len(parts) == 5:
            ok = bool(_SCOPE.match(parts[1]) and _DIGITS.match(parts[2]) and _DIGITS.match(parts[3]))
        else:
            ok = False
        if not ok or not _SIG.match(parts[-1]):
            raise TicketError("malformed", "malformed ticket")
        body, signature = text.rpartition(".")[::2]
        if not any(hmac.compare_digest(signature, self._sign(body, key)) for key in self._keys):
            raise TicketError("forged", "ticket signature does not match")
        if kind == "a":
            expires = int(parts[2])
            if expires <= now:
                raise TicketError("expired", "ticket expired")
            return AdmittedTicket(parts[1], expires, parts[3])
        return QueueTicket(parts[1], int(parts[2]), int(parts[3]))


def wall_identity_secret(environ: Mapping[str, str], ops_token: str) -> str:
    """The key the wall hashes viewers' addresses with (bans, rate limits), derived from the admission
    key: the origin and every edge hold that one (edges hold no ops token), so a viewer is the same
    author on all of them and across restarts."""
    key = admission_secrets(environ, ops_token)[0]
    return hmac.new(key, b"launchkit wall identity", hashlib.sha256).hexdigest()


def admission_secrets(environ: Mapping[str, str], ops_token: str) -> list[bytes]:
    """Keys from LAUNCHKIT_ADMISSION_SECRET (comma-separated, newest first, for rotation), else one
    derived from the ops token: every edge of a deployment shares the ops token, so they share this
    key too, and a ticket is never signed with the ops token itself."""
    raw = environ.get(SECRET_ENV, "").strip()
    if raw:
        secrets_ = [part.strip() for part in raw.split(",") if part.strip()]
        if not secrets_:
            raise ValueError(f"{SECRET_ENV}: each secret needs at least {MIN_SECRET_LENGTH} characters")
        for secret in secrets_:
            check_strength(SECRET_ENV, secret, MIN_SECRET_LENGTH)
        return [secret.encode() for secret in secrets_]
    return [hmac.new(ops_token.encode(), b"launchkit admission ticket key", hashlib.sha256).digest()]
