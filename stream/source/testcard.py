"""The built-in test card: a moving picture with the wall-clock time and frame counter burned in,
and a 1 kHz tone that beeps once a second (so A/V sync can be checked by eye and ear).

The picture and tone come from FFmpeg's lavfi generators (C, cheap); the text is drawn by us
because PyAV's FFmpeg build has no `drawtext`. Glyphs are rendered once with Pillow and then
composed per frame straight into the luma plane, which costs tens of microseconds per frame.

A timecode strip across the top-left corner carries the capture time as TIMECODE_BITS black or
white blocks (milliseconds since the epoch, most significant bit first): a player's glass-to-glass
latency is read from the picture itself (loadtests/browser.py `READ_TIMECODE`), whatever the
protocol, without trusting any timestamp the stream carries.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from stream.source import CapturedFrame, FrameSink

_BLACK, _WHITE = 16, 235  # video-range luma


@dataclass(frozen=True, slots=True)
class TestCardSettings:
    width: int = 1280
    height: int = 720
    fps: int = 30
    title: str = "Launchkit"
    tone_hz: int = 1000
    sample_rate: int = 48000


class TextOverlay:
    """Burns two lines (a fixed title, a changing clock line) into the luma plane."""

    def __init__(self, width: int, height: int, title: str) -> None:
        size = max(12, height // 18)
        self._font = ImageFont.load_default(size=size)
        self._line_height = int(size * 1.35)
        self._margin = max(4, height // 40)
        self._glyphs: dict[str, np.ndarray] = {}
        self._title = self._render(title[:60])
        self._box_width = min(width - 2 * self._margin, max(self._title.shape[1], int(size * 16)) + 2 * self._margin)
        self._top = height - 2 * self._line_height - 3 * self._margin

    def _render(self, text: str) -> np.ndarray:
        width = max(1, int(self._font.getlength(text)) + 1)
        image = Image.new("L", (width, self._line_height), 0)
        ImageDraw.Draw(image).text((0, 0), text, fill=255, font=self._font)
        return _BLACK + (np.asarray(image, dtype=np.uint16) * (_WHITE - _BLACK) // 255).astype(np.uint8)

    def _line(self, text: str) -> np.ndarray:
        parts = []
        for char in text:
            glyph = self._glyphs.get(char)
            if glyph is None:
                glyph = self._glyphs[char] = self._render(char)
            parts.append(glyph)
        return np.hstack(parts)

    def draw(self, frame: av.VideoFrame, clock_text: str) -> None:
        luma = np.frombuffer(frame.planes[0], np.uint8).reshape(frame.height, frame.planes[0].line_size)
        top, left, margin = self._top, self._margin, self._margin
        luma[top : top + 2 * self._line_height + 2 * margin, left : left + self._box_width] = _BLACK
        for row, pixels in enumerate((self._title, self._line(clock_text))):
            y = top + margin + row * self._line_height
            width = min(pixels.shape[1], self._box_width - 2 * margin)
            luma[y : y + self._line_height, left + margin : left + margin + width] = pixels[:, :width]
        self._neutral_chroma(frame, top, left)

    def _neutral_chroma(self, frame: av.VideoFrame, top: int, left: int) -> None:
        rows = slice(top // 2, (top + 2 * self._line_height + 2 * self._margin) // 2)
        cols = slice(left // 2, (left + self._box_width) // 2)
        for plane in frame.planes[1:3]:
            chroma = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
            chroma[rows, cols] = 128


TIMECODE_BITS = 44  # milliseconds since the epoch fit until the year 2527


def timecode_block(height: int) -> int:
    """Block size in pixels: big enough to survive scaling to a quarter and low bitrates."""
    return max(4, height // 45)


class Timecode:
    """Burns the capture time, in milliseconds, as a row of blocks at the top-left corner."""

    def __init__(self, width: int, height: int) -> None:
        self._block = timecode_block(height)
        if self._block * (TIMECODE_BITS + 2) > width:
            raise ValueError(f"a {width}x{height} picture is too narrow for the timecode strip")

    def draw(self, frame: av.VideoFrame, wallclock: float) -> None:
        block = self._block
        millis = int(round(wallclock * 1000)) & ((1 << TIMECODE_BITS) - 1)
        bits = np.array([(millis >> (TIMECODE_BITS - 1 - i)) & 1 for i in range(TIMECODE_BITS)], dtype=np.uint8)
        row = np.repeat(np.where(bits == 1, _WHITE, _BLACK).astype(np.uint8), block)
        luma = np.frombuffer(frame.planes[0], np.uint8).reshape(frame.height, frame.planes[0].line_size)
        luma[0:block, 0 : TIMECODE_BITS * block] = row
        for plane in frame.planes[1:3]:
            chroma = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
            chroma[0 : block // 2, 0 : TIMECODE_BITS * block // 2] = 128


def clock_text(wallclock: float, frame_number: int) -> str:
    stamp = datetime.fromtimestamp(wallclock).strftime("%H:%M:%S.%f")[:-3]
    return f"{stamp}  frame {frame_number:06d}"


class TestCard:
    """A `Source` generating the card in real time."""

    name = "testcard"

    def __init__(self, settings: TestCardSettings) -> None:
        self.settings = settings

    def _graph(self) -> str:
        s = self.settings
        return (
            f"testsrc2=size={s.width}x{s.height}:rate={s.fps},format=yuv420p[out0];"
            f"sine=frequency={s.tone_hz}:beep_factor=4:sample_rate={s.sample_rate}[out1]"
        )

    def run(self, emit: FrameSink, stop: threading.Event) -> None:
        overlay = TextOverlay(self.settings.width, self.settings.height, self.settings.title)
        timecode = Timecode(self.settings.width, self.settings.height)
        start_wall, start_mono = time.time(), time.monotonic()
        frame_number = 0
        with av.open(self._graph(), format="lavfi") as container:
            for frame in container.decode(*container.streams):
                offset = float(frame.pts * frame.time_base)
                if stop.wait(max(0.0, start_mono + offset - time.monotonic())):
                    return
                wallclock = start_wall + offset
                if isinstance(frame, av.VideoFrame):
                    overlay.draw(frame, clock_text(wallclock, frame_number))
                    timecode.draw(frame, wallclock)
                    frame_number += 1
                emit(CapturedFrame(frame, wallclock))
