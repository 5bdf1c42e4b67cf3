"""Media threads with an explicit lifecycle: start, request_stop, join."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)


class Worker:
    """A named thread running `run()` until `stopping` is set.

    Threads are daemons only as a last resort: shutdown always joins them, and a join that
    times out is logged; but a codec stuck in native code must never keep the process alive.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def request_stop(self) -> None:
        self.stopping.set()

    def join(self, timeout: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("%s did not stop within %.1f s", self.name, timeout)

    def stop(self, timeout: float) -> None:
        self.request_stop()
        self.join(timeout)

    def run(self) -> None:
        raise NotImplementedError

    def _main(self) -> None:
        try:
            self.run()
        except Exception:
            log.exception("%s failed", self.name)
