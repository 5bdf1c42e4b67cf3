"""Sources produce decoded frames, paced to real time, for the ladder encoder."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Protocol

import av


@dataclass(frozen=True, slots=True)
class CapturedFrame:
    """A decoded frame and the wall-clock time (Unix seconds) it represents."""

    frame: av.VideoFrame | av.AudioFrame
    wallclock: float

    @property
    def is_video(self) -> bool:
        return isinstance(self.frame, av.VideoFrame)


FrameSink = Callable[[CapturedFrame], None]


class Source(Protocol):
    name: str

    def run(self, emit: FrameSink, stop: threading.Event) -> None:
        """Produce frames until `stop` is set (runs on a worker thread)."""
