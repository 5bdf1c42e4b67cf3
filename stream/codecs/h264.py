"""H.264 (ITU-T H.264) bitstream helpers: Annex B parsing, SPS fields, avcC, RFC 6381 codec string."""

from __future__ import annotations

import struct
from dataclasses import dataclass

NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9
_HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}


def split_annexb(data: bytes) -> list[bytes]:
    """NAL units of an Annex B byte stream, without their start codes."""
    units: list[bytes] = []
    start = _next_start_code(data, 0)
    while start is not None:
        payload_start = start[1]
        following = _next_start_code(data, payload_start)
        end = following[0] if following else len(data)
        unit = data[payload_start:end].rstrip(b"\x00") if following else data[payload_start:end]
        if unit:
            units.append(unit)
        start = following
    return units


def _next_start_code(data: bytes, offset: int) -> tuple[int, int] | None:
    """(start of the start code, start of the NAL payload) or None."""
    index = data.find(b"\x00\x00\x01", offset)
    if index < 0:
        return None
    begin = index - 1 if index > 0 and data[index - 1] == 0 else index
    return begin, index + 3


def nal_type(unit: bytes) -> int:
    return unit[0] & 0x1F


def to_length_prefixed(data: bytes) -> bytes:
    """Annex B → the 4-byte length-prefixed form MP4 samples carry (AUDs dropped: MP4 forbids none
    but they only waste bytes)."""
    return b"".join(
        struct.pack(">I", len(unit)) + unit for unit in split_annexb(data) if nal_type(unit) != NAL_AUD
    )


@dataclass(frozen=True, slots=True)
class SequenceParameterSet:
    profile_idc: int
    constraint_flags: int
    level_idc: int
    chroma_format_idc: int
    bit_depth_luma: int
    bit_depth_chroma: int

    @property
    def codec_string(self) -> str:
        """RFC 6381 `avc1.PPCCLL`, as HLS `CODECS` wants it."""
        return f"avc1.{self.profile_idc:02x}{self.constraint_flags:02x}{self.level_idc:02x}"


class _BitReader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._bit = 0

    def bits(self, count: int) -> int:
        value = 0
        for _ in range(count):
            byte = self._data[self._bit >> 3]
            value = (value << 1) | ((byte >> (7 - (self._bit & 7))) & 1)
            self._bit += 1
        return value

    def exp_golomb(self) -> int:
        zeros = 0
        while self.bits(1) == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("invalid Exp-Golomb code in SPS")
        return (1 << zeros) - 1 + self.bits(zeros)


def _unescape(rbsp: bytes) -> bytes:
    """Remove emulation-prevention bytes (00 00 03 → 00 00)."""
    return rbsp.replace(b"\x00\x00\x03", b"\x00\x00")


def parse_sps(unit: bytes) -> SequenceParameterSet:
    if len(unit) < 4 or nal_type(unit) != NAL_SPS:
        raise ValueError("not an H.264 SPS NAL unit")
    profile_idc, constraint_flags, level_idc = unit[1], unit[2], unit[3]
    chroma_format_idc, depth_luma, depth_chroma = 1, 8, 8
    if profile_idc in _HIGH_PROFILES:
        reader = _BitReader(_unescape(unit[4:]))
        reader.exp_golomb()  # seq_parameter_set_id
        chroma_format_idc = reader.exp_golomb()
        if chroma_format_idc == 3:
            reader.bits(1)  # separate_colour_plane_flag
        depth_luma = reader.exp_golomb() + 8
        depth_chroma = reader.exp_golomb() + 8
    return SequenceParameterSet(
        profile_idc, constraint_flags, level_idc, chroma_format_idc, depth_luma, depth_chroma
    )


@dataclass(frozen=True, slots=True)
class ParameterSets:
    sps: bytes
    pps: bytes

    @classmethod
    def from_annexb(cls, data: bytes) -> ParameterSets:
        units = split_annexb(data)
        sps = next((u for u in units if nal_type(u) == NAL_SPS), None)
        pps = next((u for u in units if nal_type(u) == NAL_PPS), None)
        if sps is None or pps is None:
            raise ValueError("H.264 stream carries no SPS/PPS")
        return cls(sps, pps)

    @property
    def parsed_sps(self) -> SequenceParameterSet:
        return parse_sps(self.sps)

    def avc_decoder_configuration_record(self) -> bytes:
        """The `avcC` payload (ISO/IEC 14496-15 §5.3.3.1)."""
        sps = self.parsed_sps
        record = bytes([1, sps.profile_idc, sps.constraint_flags, sps.level_idc, 0xFF, 0xE1])
        record += struct.pack(">H", len(self.sps)) + self.sps
        record += b"\x01" + struct.pack(">H", len(self.pps)) + self.pps
        if sps.profile_idc in _HIGH_PROFILES:
            record += bytes([
                0xFC | sps.chroma_format_idc,
                0xF8 | (sps.bit_depth_luma - 8),
                0xF8 | (sps.bit_depth_chroma - 8),
                0,  # numOfSequenceParameterSetExt
            ])
        return record
