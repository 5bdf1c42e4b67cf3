"""The standby card shown while no publisher is live ("We'll be right back")."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from stream.source.testcard import TextOverlay, clock_text

DEFAULT_TEXT = "We'll be right back"


@dataclass(frozen=True, slots=True)
class SlateSettings:
    text: str = DEFAULT_TEXT
    image: Path | None = None


class Slate:
    """Renders the card once; each call returns a fresh frame with the current time burned in,
    so viewers can tell a live slate from a frozen player."""

    def __init__(self, width: int, height: int, settings: SlateSettings, title: str = "") -> None:
        self._base = np.ascontiguousarray(_render(width, height, settings).to_ndarray())
        self._overlay = TextOverlay(width, height, title or settings.text)
        self._frames = 0

    def frame(self, wallclock: float) -> av.VideoFrame:
        frame = av.VideoFrame.from_ndarray(self._base.copy(), format="yuv420p")
        self._overlay.draw(frame, clock_text(wallclock, self._frames))
        self._frames += 1
        return frame


def _render(width: int, height: int, settings: SlateSettings) -> av.VideoFrame:
    if settings.image is not None:
        image = Image.open(settings.image).convert("RGB").resize((width, height))
    else:
        image = Image.new("RGB", (width, height), (22, 27, 38))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=max(16, height // 12))
    box = draw.textbbox((0, 0), settings.text, font=font)
    position = ((width - (box[2] - box[0])) // 2, (height - (box[3] - box[1])) // 3)
    draw.text(position, settings.text, fill=(240, 240, 240), font=font)
    return av.VideoFrame.from_image(image).reformat(format="yuv420p")
