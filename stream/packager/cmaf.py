"""CMAF / fragmented MP4 writer (ISO/IEC 14496-12, ISO/IEC 23000-19).

Written by hand rather than through FFmpeg's mov muxer so the packager decides exactly where
fragments start and what they carry: one `moof`+`mdat` (a CMAF chunk) per LL-HLS part, a segment
being its parts back to back, with no muxer-side buffering between the encoder and the viewer.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

from stream.codecs.aac import AudioSpecificConfig
from stream.codecs.h264 import ParameterSets

_MATRIX = struct.pack(">9I", 0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000)
# trun sample_flags (§8.8.3.1): sync samples depend on nothing; others are non-sync.
SYNC_SAMPLE_FLAGS = 0x02000000
NON_SYNC_SAMPLE_FLAGS = 0x01010000


def box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I", 8 + len(body)) + kind + body


def full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return box(kind, struct.pack(">I", (version << 24) | flags), *payload)


@dataclass(frozen=True, slots=True)
class VideoTrack:
    track_id: int
    timescale: int
    width: int
    height: int
    parameter_sets: ParameterSets
    kind: Literal["video"] = "video"

    @property
    def codec_string(self) -> str:
        return self.parameter_sets.parsed_sps.codec_string


@dataclass(frozen=True, slots=True)
class AudioTrack:
    track_id: int
    config: AudioSpecificConfig
    kind: Literal["audio"] = "audio"

    @property
    def timescale(self) -> int:
        return self.config.sample_rate

    @property
    def codec_string(self) -> str:
        return self.config.codec_string


Track = VideoTrack | AudioTrack


@dataclass(frozen=True, slots=True)
class Sample:
    data: bytes
    duration: int
    sync: bool
    composition_offset: int = 0


@dataclass(frozen=True, slots=True)
class TrackRun:
    track_id: int
    base_media_decode_time: int
    samples: list[Sample]


def init_segment(tracks: list[Track]) -> bytes:
    """`ftyp` + `moov`: the media initialization section (`EXT-X-MAP`)."""
    ftyp = box(b"ftyp", b"iso6", struct.pack(">I", 0), b"iso6", b"cmfc", b"mp41", b"avc1")
    mvhd = full_box(
        b"mvhd", 0, 0,
        struct.pack(">IIII", 0, 0, 1000, 0),
        struct.pack(">IH", 0x00010000, 0x0100), bytes(10), _MATRIX, bytes(24),
        struct.pack(">I", max(t.track_id for t in tracks) + 1),
    )
    mvex = box(b"mvex", *(full_box(b"trex", 0, 0, struct.pack(">IIIII", t.track_id, 1, 0, 0, 0)) for t in tracks))
    return ftyp + box(b"moov", mvhd, *(_trak(t) for t in tracks), mvex)


def _trak(track: Track) -> bytes:
    is_video = isinstance(track, VideoTrack)
    width, height = (track.width, track.height) if is_video else (0, 0)
    tkhd = full_box(
        b"tkhd", 0, 0x3,  # enabled | in_movie
        struct.pack(">IIIII", 0, 0, track.track_id, 0, 0), bytes(8),
        struct.pack(">hhhH", 0, 0, 0 if is_video else 0x0100, 0), _MATRIX,
        struct.pack(">II", width << 16, height << 16),
    )
    mdhd = full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, track.timescale, 0, 0x55C4, 0))  # 'und'
    handler, name = (b"vide", b"VideoHandler\0") if is_video else (b"soun", b"SoundHandler\0")
    hdlr = full_box(b"hdlr", 0, 0, bytes(4), handler, bytes(12), name)
    media_header = full_box(b"vmhd", 0, 1, bytes(8)) if is_video else full_box(b"smhd", 0, 0, bytes(4))
    dinf = box(b"dinf", full_box(b"dref", 0, 0, struct.pack(">I", 1), full_box(b"url ", 0, 1)))
    sample_entry = _avc1(track) if isinstance(track, VideoTrack) else _mp4a(track)
    stbl = box(
        b"stbl",
        full_box(b"stsd", 0, 0, struct.pack(">I", 1), sample_entry),
        full_box(b"stts", 0, 0, bytes(4)),
        full_box(b"stsc", 0, 0, bytes(4)),
        full_box(b"stsz", 0, 0, bytes(8)),
        full_box(b"stco", 0, 0, bytes(4)),
    )
    minf = box(b"minf", media_header, dinf, stbl)
    return box(b"trak", tkhd, box(b"mdia", mdhd, hdlr, minf))


def _avc1(track: VideoTrack) -> bytes:
    return box(
        b"avc1",
        bytes(6), struct.pack(">H", 1),  # reserved, data_reference_index
        bytes(16), struct.pack(">HH", track.width, track.height),
        struct.pack(">IIIH", 0x00480000, 0x00480000, 0, 1), bytes(32),  # 72 dpi, 1 frame/sample
        struct.pack(">Hh", 0x0018, -1),
        box(b"avcC", track.parameter_sets.avc_decoder_configuration_record()),
    )


def _mp4a(track: AudioTrack) -> bytes:
    asc = track.config.raw
    decoder_specific = _descriptor(0x05, asc)
    decoder_config = _descriptor(0x04, bytes([0x40, 0x15]) + bytes(3) + bytes(8) + decoder_specific)
    es = _descriptor(0x03, struct.pack(">HB", 0, 0) + decoder_config + _descriptor(0x06, b"\x02"))
    return box(
        b"mp4a",
        bytes(6), struct.pack(">H", 1),
        bytes(8), struct.pack(">HHHH", track.config.channels or 2, 16, 0, 0),
        struct.pack(">I", track.config.sample_rate << 16),
        full_box(b"esds", 0, 0, es),
    )


def _descriptor(tag: int, payload: bytes) -> bytes:
    """MPEG-4 descriptor with the 4-byte size form every parser accepts."""
    size = len(payload)
    return bytes([tag, 0x80 | (size >> 21) & 0x7F, 0x80 | (size >> 14) & 0x7F, 0x80 | (size >> 7) & 0x7F, size & 0x7F]) + payload


def fragment(sequence_number: int, runs: list[TrackRun]) -> bytes:
    """One `moof` + `mdat`: a CMAF chunk holding every given track's samples."""
    runs = [run for run in runs if run.samples]
    if not runs:
        raise ValueError("a fragment needs at least one sample")
    moof_size = len(_moof(sequence_number, runs, [0] * len(runs)))
    offsets, position = [], moof_size + 8
    for run in runs:
        offsets.append(position)
        position += sum(len(sample.data) for sample in run.samples)
    moof = _moof(sequence_number, runs, offsets)
    mdat = box(b"mdat", *(sample.data for run in runs for sample in run.samples))
    return moof + mdat


def _moof(sequence_number: int, runs: list[TrackRun], data_offsets: list[int]) -> bytes:
    mfhd = full_box(b"mfhd", 0, 0, struct.pack(">I", sequence_number))
    trafs = []
    for run, offset in zip(runs, data_offsets):
        tfhd = full_box(b"tfhd", 0, 0x020000, struct.pack(">I", run.track_id))  # default-base-is-moof
        tfdt = full_box(b"tfdt", 1, 0, struct.pack(">Q", run.base_media_decode_time))
        entries = b"".join(
            struct.pack(">IIIi", s.duration, len(s.data), SYNC_SAMPLE_FLAGS if s.sync else NON_SYNC_SAMPLE_FLAGS, s.composition_offset)
            for s in run.samples
        )
        # data-offset | sample-duration | sample-size | sample-flags | sample-composition-time-offset
        trun = full_box(b"trun", 1, 0x000F01, struct.pack(">Ii", len(run.samples), offset), entries)
        trafs.append(box(b"traf", tfhd, tfdt, trun))
    return box(b"moof", mfhd, *trafs)
