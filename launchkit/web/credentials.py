"""One way for HTTP endpoints to demand a bearer credential: locked-out clients get 429 +
Retry-After without their credential being looked at, wrong or missing ones 401 after the
failure delay (launchkit.auth.FailedCredentials), right ones pass."""

from __future__ import annotations

from typing import Awaitable, Callable

from aiohttp import web

from launchkit.auth import FailedCredentials, Tokens, bearer_token
from launchkit.web.refusal import Refusal


def presented(request: web.Request) -> str | None:
    return bearer_token(request.headers.get("Authorization"))


def locked_out(request: web.Request, failures: FailedCredentials, credential: str) -> None:
    """Raises Refusal(429) while the client is locked out for failing too often."""
    wait = failures.locked_out(request.remote, credential)
    if wait:
        raise Refusal(429, f"too many failed credentials from your address: retry in {wait} s", "locked_out",
                      {"Retry-After": str(wait)})


async def require_bearer(request: web.Request, failures: FailedCredentials, credential: str,
                         valid: Callable[[str | None], bool], realm: str, hint: str) -> None:
    """Passes when `valid(<the bearer token>)`; else raises the 429 or the 401. A wrong token is a
    guess: counted and answered after the delay. No token at all (a console whose session ended,
    a curious visitor) is not: it must not lock the operator out of signing in again."""
    locked_out(request, failures, credential)
    token = presented(request)
    if valid(token):
        return
    if token is not None:
        await failures.failed(request.remote, credential)
    raise Refusal(401, f"{hint} required (Authorization: Bearer <token>)", "unauthorized",
                  {"WWW-Authenticate": f'Bearer realm="{realm}"'})


def edge_credential(tokens: Tokens, failures: FailedCredentials) -> Callable[[web.Request], Awaitable[None]]:
    """The check of what only edges may take (the WebRTC feed)."""
    async def authorize(request: web.Request) -> None:
        await require_bearer(request, failures, "edge", tokens.is_edge, "launchkit-edge",
                             "the edge token (LAUNCHKIT_EDGE_TOKEN)")
    return authorize
