"""The narrow interface the media engine reports its numbers through.

`stream` names what it counts by a short key and bounded labels; which metrics system holds the
numbers, and under which names, is the business of the server that embeds the engine (it installs
its implementation). Until something is installed every handle is a no-op, so the engine runs alone.

    frames = telemetry.counter("encoder_frames", rendition)   # look a handle up once...
    frames.inc()                                              # ...and use it per frame

A lookup may cost a dict search and a lock: hot paths keep their handles (per viewer, per
rendition), never look them up per packet.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class Gauge(Protocol):
    def set(self, value: float) -> None: ...

    def inc(self, amount: float = 1) -> None: ...

    def dec(self, amount: float = 1) -> None: ...

    def set_function(self, function: Callable[[], float]) -> None: ...


class Histogram(Protocol):
    def observe(self, amount: float) -> None: ...


class Telemetry(Protocol):
    """Handles by key and label values; an unknown key raises KeyError (a typo, not a new metric)."""

    def counter(self, key: str, *labels: str) -> Counter: ...

    def gauge(self, key: str, *labels: str) -> Gauge: ...

    def histogram(self, key: str, *labels: str) -> Histogram: ...


class _Nothing:
    """Every handle of the no-op telemetry: accepts every call, keeps nothing."""

    def inc(self, amount: float = 1) -> None:
        pass

    def dec(self, amount: float = 1) -> None:
        pass

    def set(self, value: float) -> None:
        pass

    def set_function(self, function: Callable[[], float]) -> None:
        pass

    def observe(self, amount: float) -> None:
        pass


class NoTelemetry:
    _nothing = _Nothing()

    def counter(self, key: str, *labels: str) -> Counter:
        return self._nothing

    def gauge(self, key: str, *labels: str) -> Gauge:
        return self._nothing

    def histogram(self, key: str, *labels: str) -> Histogram:
        return self._nothing


_installed: Telemetry = NoTelemetry()


def install(telemetry: Telemetry) -> None:
    """Report through `telemetry` from now on. Handles looked up before keep their old target, so
    install before building pipelines, ingests or fan-outs."""
    global _installed
    _installed = telemetry


def counter(key: str, *labels: str) -> Counter:
    return _installed.counter(key, *labels)


def gauge(key: str, *labels: str) -> Gauge:
    return _installed.gauge(key, *labels)


def histogram(key: str, *labels: str) -> Histogram:
    return _installed.histogram(key, *labels)
