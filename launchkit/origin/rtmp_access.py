"""The RTMP ingest's questions about publishers (stream/ingest/rtmp `PublisherAccess`), answered
with launchkit's rules: the publish token, the process-wide memory of failed credentials (guesses
against RTMP and the console add up) and a connection rate per address."""

from __future__ import annotations

from launchkit.auth import FailedCredentials, Tokens, address_group
from launchkit.web.ratelimit import Limit, RateLimiter

CREDENTIAL = "publish"  # the AUTH_FAILURES / AUTH_LOCKED_OUT label
# New connections per address: an encoder reconnects every few seconds at most, a flood far faster.
CONNECTIONS_PER_ADDRESS = Limit(per_minute=30, burst=10)


class RtmpPublishers:
    def __init__(self, tokens: Tokens, failures: FailedCredentials) -> None:
        self.tokens = tokens
        self.failures = failures
        self._connections = RateLimiter(CONNECTIONS_PER_ADDRESS)

    def client(self, address: str) -> str:
        return address_group(address)

    def over_rate(self, client: str) -> bool:
        return self._connections.take(client) > 0

    def is_publish_key(self, presented: str) -> bool:
        return self.tokens.is_publish(presented)

    def locked_out(self, address: str) -> int:
        return self.failures.locked_out(address, CREDENTIAL)

    def retry_after(self, address: str) -> int:
        return self.failures.retry_after(address)

    async def failed(self, address: str) -> None:
        await self.failures.failed(address, CREDENTIAL)
