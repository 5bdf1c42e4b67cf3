"""AAC (ISO/IEC 14496-3) AudioSpecificConfig fields."""

from __future__ import annotations

from dataclasses import dataclass

_SAMPLE_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)


@dataclass(frozen=True, slots=True)
class AudioSpecificConfig:
    object_type: int
    sample_rate: int
    channels: int
    raw: bytes

    @classmethod
    def parse(cls, raw: bytes) -> AudioSpecificConfig:
        if len(raw) < 2:
            raise ValueError("AudioSpecificConfig is at least 2 bytes")
        object_type = raw[0] >> 3
        frequency_index = ((raw[0] & 0x07) << 1) | (raw[1] >> 7)
        if frequency_index >= len(_SAMPLE_RATES):
            raise ValueError("explicit AAC sampling frequencies are not supported")
        channels = (raw[1] >> 3) & 0x0F
        return cls(object_type, _SAMPLE_RATES[frequency_index], channels, raw)

    @property
    def codec_string(self) -> str:
        """RFC 6381 `mp4a.40.N`."""
        return f"mp4a.40.{self.object_type}"
