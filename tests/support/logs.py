"""Server logs as the tests read them. Attack tests (tests/security) check that each attack gets a
clear 4xx (or is refused before any media), leaves no traceback in the server's log, and leaves
other clients served."""

from __future__ import annotations


def assert_no_traceback(log: str) -> None:
    """A hostile request is answered, never crashes a handler: no Python traceback in the log."""
    assert "Traceback" not in log, log[log.index("Traceback") - 2000:][:6000]
