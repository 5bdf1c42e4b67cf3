"""A media file played in a loop, in real time: the rehearsal source (the real show's intro
video, a recording of last year's keynote) and a backup to put on air instead of the slate.

Frames are released when the wall clock reaches their timestamp, so the program sees a
publisher-like stream, not a file decoded as fast as the CPU allows. Each pass is re-opened
rather than seeked to the start: every container can be read from its beginning, not every
one can seek. The wall-clock mapping carries on across passes (the next pass starts where the
previous one's last frame ended), so stamps keep increasing and the loop is just more stream.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import av

from stream.source import CapturedFrame, FrameSink


class LoopedFile:
    """A `Source` playing the first video (and audio, if any) stream of a file, forever."""

    name = "file"

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        _check(self.path)

    def run(self, emit: FrameSink, stop: threading.Event) -> None:
        start_wall, start_mono = time.time(), time.monotonic()
        offset = 0.0  # where the current pass starts on the output timeline, in seconds
        while not stop.is_set():
            offset = self._play(emit, stop, start_wall, start_mono + offset, offset)

    def _play(self, emit: FrameSink, stop: threading.Event, start_wall: float, pass_mono: float,
              offset: float) -> float:
        """One pass over the file; returns where the next pass starts on the output timeline."""
        end = offset
        with av.open(str(self.path)) as container:
            streams = [*container.streams.video[:1], *container.streams.audio[:1]]
            streams[0].thread_type = "AUTO"  # frame threads: decoding a large file must keep up in real time
            base = container.start_time / av.time_base if container.start_time is not None else 0.0
            for frame in container.decode(*streams):
                if frame.time is None:
                    continue  # no timestamp, no place on the timeline
                at = frame.time - base
                if stop.wait(max(0.0, pass_mono + at - time.monotonic())):
                    break
                emit(CapturedFrame(frame, start_wall + offset + at))
                end = max(end, offset + at + _length(frame, streams[0]))
        if end == offset and not stop.is_set():
            raise ValueError(f"{self.path}: no frames decoded, nothing to loop")
        return end


def _length(frame: av.VideoFrame | av.AudioFrame, video: av.video.stream.VideoStream) -> float:
    if frame.duration:
        # The container's own duration: it excludes AAC's trimmed padding, so passes join exactly.
        return float(frame.duration * frame.time_base)
    if isinstance(frame, av.AudioFrame):
        return frame.samples / frame.sample_rate
    return float(1 / video.average_rate) if video.average_rate else 0.0


def _check(path: Path) -> None:
    """Fail at configuration time, with a message an operator can act on."""
    if not path.is_file():
        raise ValueError(f"media file not found: {path}")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"{path} has no video stream; a looped source needs a picture")
    except av.FFmpegError as error:
        raise ValueError(f"{path} is not a media file FFmpeg can read: {error}") from None
