"""Credentials and who may do what (the README's threat model is the user-facing version):

| credential | variable | who holds it | what it allows |
| --- | --- | --- | --- |
| publish token | LAUNCHKIT_PUBLISH_TOKEN | encoders (OBS, FFmpeg, a browser) | WHIP, RTMP, SRT ingest |
| ops token | LAUNCHKIT_OPS_TOKEN | operators, `launchkit event` | console, event state, wall moderation, all below |
| edge token | LAUNCHKIT_EDGE_TOKEN | edges | the origin's WebRTC feed (`/api/webrtc/feed`) |
| metrics token | LAUNCHKIT_METRICS_TOKEN | Prometheus | `/metrics` |

Tokens are 16-256 characters from A-Z a-z 0-9 . _ ~ - (they go into RTMP/SRT URLs) with at least
64 bits of estimated strength: `aaaaaaaaaaaaaaaa` is refused at startup. A role started without the
publish or ops token generates strong ones and prints them once. The edge and metrics tokens
default to keys derived from the ops token, so a deployment sharing only the ops token keeps
working; production gives edges and Prometheus their own and keeps the ops token on the origin.

Failed credentials are slowed the way OpenSSH, Dovecot and PostgreSQL's auth_delay do it: each
failure is answered after FAILURE_DELAY, and a client that keeps failing is locked out (429 +
Retry-After, without looking at what it presents) until its bucket refills.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import math
import re
import secrets
from dataclasses import dataclass
from typing import Mapping

from launchkit import metrics
from launchkit.web.ratelimit import Limit, RateLimiter

MIN_TOKEN_LENGTH = 16
MAX_TOKEN_LENGTH = 256
MIN_STRENGTH_BITS = 64
TOKEN_CHARACTERS = re.compile(r"^[A-Za-z0-9._~-]+$")
ENV = {
    "publish": "LAUNCHKIT_PUBLISH_TOKEN",
    "ops": "LAUNCHKIT_OPS_TOKEN",
    "edge": "LAUNCHKIT_EDGE_TOKEN",
    "metrics": "LAUNCHKIT_METRICS_TOKEN",
}
DERIVED = ("edge", "metrics")  # default to keys derived from the ops token
FAILURE_DELAY = 1.0  # seconds before a failed credential is answered
# Ten failures back to back, then one per 10 s: an operator who mistypes is never locked out for
# long, a guesser gets 6 tries a minute from one address.
FAILURES = Limit(per_minute=6, burst=10)


class TokenError(ValueError):
    """A configured token that is not acceptable; the message names its variable."""


@dataclass(frozen=True, slots=True)
class Tokens:
    publish: str
    ops: str
    edge: str = ""
    metrics: str = ""
    generated: tuple[str, ...] = ()  # names of the tokens made up for this run (printed once)

    def __post_init__(self) -> None:
        for name in DERIVED:
            if not getattr(self, name):
                object.__setattr__(self, name, derive(self.ops, name))

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Tokens:
        given = {name: environ.get(variable) or "" for name, variable in ENV.items()}
        for name, value in given.items():
            if value:
                check_token(ENV[name], value)
        generated = tuple(name for name in ENV if not given[name] and (name not in DERIVED or not given["ops"]))
        publish = given["publish"] or generate_token()
        ops = given["ops"] or generate_token()
        return cls(publish, ops, given["edge"], given["metrics"], generated)

    @classmethod
    def from_values(cls, publish: str | None, ops: str | None) -> Tokens:
        return cls.from_env({ENV["publish"]: publish or "", ENV["ops"]: ops or ""})

    def is_publish(self, presented: str | None) -> bool:
        return _matches(presented, self.publish)

    def is_ops(self, presented: str | None) -> bool:
        return _matches(presented, self.ops)

    def is_edge(self, presented: str | None) -> bool:
        return _matches(presented, self.edge)

    def is_metrics(self, presented: str | None) -> bool:
        """Prometheus's token, or the ops token (an operator may look at /metrics too)."""
        return _matches(presented, self.metrics) or _matches(presented, self.ops)


def generate_token() -> str:
    return secrets.token_urlsafe(24)


def derive(secret: str, purpose: str) -> str:
    """A token for `purpose` derived from `secret`: the same everywhere `secret` is, never `secret` itself."""
    digest = hmac.new(secret.encode(), f"launchkit {purpose} token".encode(), hashlib.sha256).digest()[:24]
    return base64.urlsafe_b64encode(digest).decode("ascii")


def strength_bits(value: str) -> float:
    """A crude, conservative estimate: length × log2(distinct characters). Random tokens score far
    above 64 (token_urlsafe(24): ~150); repeated or tiny alphabets score low."""
    distinct = len(set(value))
    return len(value) * math.log2(distinct) if distinct > 1 else 0.0


def check_strength(variable: str, value: str, minimum_length: int = MIN_TOKEN_LENGTH) -> None:
    """Raises TokenError when `value` is too short or too guessable for a secret."""
    if len(value) < minimum_length or strength_bits(value) < MIN_STRENGTH_BITS:
        raise TokenError(f"{variable} is too weak (at least {minimum_length} characters and "
                         f"{MIN_STRENGTH_BITS} bits; about {strength_bits(value):.0f} here): use a random value, "
                         "e.g. the output of `openssl rand -hex 24`")


def check_token(variable: str, value: str) -> None:
    if not (MIN_TOKEN_LENGTH <= len(value) <= MAX_TOKEN_LENGTH and TOKEN_CHARACTERS.match(value)):
        raise TokenError(f"{variable}: use {MIN_TOKEN_LENGTH}–{MAX_TOKEN_LENGTH} characters from A–Z a–z 0–9 . _ ~ - "
                         "(it goes into RTMP/SRT URLs)")
    check_strength(variable, value)


def _matches(presented: str | None, expected: str) -> bool:
    """Constant-time comparison: the time taken never tells how much of a guess was right. Anything
    that is not a plausible token (not ASCII, too long) is simply wrong, never an error."""
    if not presented or not expected or len(presented) > MAX_TOKEN_LENGTH or not presented.isascii():
        return False
    return hmac.compare_digest(presented.encode("ascii"), expected.encode("ascii"))


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def address_group(address: str) -> str:
    """Who a client is for per-client limits: an IPv4 address, or the /64 of an IPv6 one (a single
    subscriber is given a whole /64 and could otherwise rotate addresses within it)."""
    if ":" not in address:  # IPv4, the common case under a flood: no parsing
        return address
    try:
        ip = ipaddress.IPv6Address(address)
    except ValueError:
        return address
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((ip, 64), strict=False))


class FailedCredentials:
    """Per-client memory of failed credentials (bounded, in memory, keyed by `address_group`):
    shared by every credential check of a process, so guesses against RTMP and the console add up."""

    def __init__(self, limit: Limit = FAILURES, delay: float = FAILURE_DELAY) -> None:
        self._failures = RateLimiter(limit)
        self.delay = delay

    def retry_after(self, client: str | None) -> int:
        """0 when `client` may present a credential now; else the seconds it must wait (locked out)."""
        return self._failures.wait(address_group(client or "unknown"))

    def locked_out(self, client: str | None, credential: str) -> int:
        """`retry_after`, counting a refused attempt in the metrics."""
        wait = self.retry_after(client)
        if wait:
            metrics.AUTH_LOCKED_OUT.labels(credential).inc()
        return wait

    def record(self, client: str | None, credential: str) -> None:
        """Count a failure of `credential` (a bounded label) without holding anything up."""
        self._failures.take(address_group(client or "unknown"))
        metrics.AUTH_FAILURES.labels(credential).inc()

    async def failed(self, client: str | None, credential: str) -> None:
        """Count a failure and hold the answer for `delay` seconds."""
        self.record(client, credential)
        await asyncio.sleep(self.delay)
