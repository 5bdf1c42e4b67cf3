"""Why a publisher is turned away before any media: every check of the RTMP ingest raises these."""

from __future__ import annotations


class Refused(Exception):
    """The publisher is turned away; `reason` is the INGEST_REJECTED label."""

    def __init__(self, reason: str, why: str) -> None:
        super().__init__(why)
        self.reason = reason


class LockedOut(Refused):
    """The client's address failed too many keys lately: refused without looking at what it presents."""

    def __init__(self) -> None:
        super().__init__("bad_key", "locked out after repeated wrong keys")


def malformed(why: str) -> Refused:
    return Refused("bad_request", why)
