"""Secrets and who may do what: the publish token (ingest) and the ops token (console, event
control). Tokens come from LAUNCHKIT_PUBLISH_TOKEN / LAUNCHKIT_OPS_TOKEN; a role that starts
without them generates strong ones and prints them once.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

MIN_TOKEN_LENGTH = 16
MAX_TOKEN_LENGTH = 256


@dataclass(frozen=True, slots=True)
class Tokens:
    publish: str
    ops: str
    generated: bool = False

    @classmethod
    def from_values(cls, publish: str | None, ops: str | None) -> Tokens:
        generated = not publish or not ops
        return cls(publish or generate_token(), ops or generate_token(), generated)

    def is_publish(self, presented: str | None) -> bool:
        return _matches(presented, self.publish)

    def is_ops(self, presented: str | None) -> bool:
        return _matches(presented, self.ops)


def generate_token() -> str:
    return secrets.token_urlsafe(24)


def _matches(presented: str | None, expected: str) -> bool:
    """Constant-time comparison: the time taken never tells how much of a guess was right."""
    if not presented or len(presented) > MAX_TOKEN_LENGTH:
        return False
    return hmac.compare_digest(presented.encode(), expected.encode())


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None
