"""`Refusal`: the one way a handler says no. Raised anywhere below a handler, it becomes a JSON
answer `{"error": message}` with its status (and headers such as Retry-After) in the `observe`
middleware: a client always learns what was wrong, never how the server is written."""

from __future__ import annotations

from aiohttp import web

from launchkit.web.cors import ALLOW_ANY_ORIGIN

NO_STORE = {"Cache-Control": "no-store"}


class Refusal(Exception):
    """A request refused: HTTP `status`, a `message` for the client, a bounded metric `reason`."""

    def __init__(self, status: int, message: str, reason: str = "bad_request",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.reason = status, message, reason
        self.headers = headers or {}

    def response(self) -> web.Response:
        return error_response(self.status, self.message, self.headers)


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status,
                             headers={**NO_STORE, **ALLOW_ANY_ORIGIN, **(headers or {})})
