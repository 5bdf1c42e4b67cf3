"""The unit of the packet bus: one encoded access unit, shared read-only by every consumer."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

MediaKind = Literal["video", "audio"]


@dataclass(frozen=True, slots=True)
class EncodedPacket:
    """An encoded access unit as it leaves the encoder.

    Video payloads are H.264 Annex B (start codes, SPS/PPS repeated before each IDR), which is
    what RTP packetizers want; the CMAF writer converts to length-prefixed NAL units itself.
    Consumers share the same object: nothing here is ever copied per consumer.
    """

    kind: MediaKind
    rendition: str
    data: bytes
    pts: int
    dts: int
    duration: int
    time_base: Fraction
    keyframe: bool
    # Wall-clock (Unix seconds) at which the source captured this media: drives
    # EXT-X-PROGRAM-DATE-TIME and the encoder-lag metric.
    wallclock: float

    @property
    def seconds(self) -> float:
        return float(self.pts * self.time_base)
