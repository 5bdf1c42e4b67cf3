"""The hand-written CMAF writer, checked by FFmpeg's own demuxer and decoder."""

import json
import struct
import subprocess

import pytest

from stream.packager import cmaf
from stream.packager.hls import RenditionInfo, RenditionPackager
from stream.pipeline import declared_bandwidth


def _packager(video, audio) -> RenditionPackager:
    peak, average = declared_bandwidth(video.settings, audio.settings, 1.0)
    info = RenditionInfo("180p", 320, 180, 30, peak, average)
    video_track = cmaf.VideoTrack(1, 90000, 320, 180, video.parameter_sets)
    return RenditionPackager(info, video_track, cmaf.AudioTrack(2, audio.config), segment_duration=1.0, window=6)


def _top_level_boxes(data: bytes) -> list[bytes]:
    kinds, offset = [], 0
    while offset < len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        kinds.append(kind)
        offset += size
    assert offset == len(data)
    return kinds


def _ffprobe(path, *args) -> dict:
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-of", "json", *args, str(path)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return json.loads(result.stdout)


def test_init_and_segments_are_well_formed_boxes(encoded):
    video, audio, packets = encoded
    packager = _packager(video, audio)
    for packet in packets:
        packager.on_packet(packet)
    assert _top_level_boxes(packager.init) == [b"ftyp", b"moov"]
    assert [s.duration for s in packager.segments] == [1.0, 1.0, 1.0]
    for segment in packager.segments:
        # A segment is its parts back to back: one CMAF chunk (moof+mdat) per 0.5 s part.
        assert _top_level_boxes(segment.data) == [b"moof", b"mdat"] * 2
        assert segment.data == b"".join(bytes(part.data) for part in segment.parts)
        for part in segment.parts:
            assert _top_level_boxes(bytes(part.data)) == [b"moof", b"mdat"]


def test_ffmpeg_decodes_every_frame_without_error(encoded, tmp_path):
    video, audio, packets = encoded
    packager = _packager(video, audio)
    for packet in packets:
        packager.on_packet(packet)
    path = tmp_path / "stream.mp4"
    path.write_bytes(packager.init + b"".join(s.data for s in packager.segments))
    streams = _ffprobe(path, "-show_streams")["streams"]
    assert [(s["codec_name"], s.get("width")) for s in streams] == [("h264", 320), ("aac", None)]
    frames = _ffprobe(path, "-show_frames", "-show_entries", "frame=media_type,key_frame,pts_time")["frames"]
    video_frames = [f for f in frames if f["media_type"] == "video"]
    audio_frames = [f for f in frames if f["media_type"] == "audio"]
    assert len(video_frames) == 90  # three 1 s segments at 30 fps
    assert [float(f["pts_time"]) for f in video_frames if f["key_frame"]] == [0.0, 1.0, 2.0]
    assert abs(len(audio_frames) * 1024 / 48000 - 3.0) < 0.05


def test_each_segment_alone_starts_with_an_idr(encoded, tmp_path):
    video, audio, packets = encoded
    packager = _packager(video, audio)
    for packet in packets:
        packager.on_packet(packet)
    for segment in packager.segments:
        path = tmp_path / segment.uri
        path.write_bytes(packager.init + segment.data)
        first = _ffprobe(path, "-select_streams", "v", "-show_frames", "-read_intervals", "%+#1",
                         "-show_entries", "frame=key_frame,pict_type")["frames"][0]
        assert (first["key_frame"], first["pict_type"]) == (1, "I")


def test_a_segment_of_parts_is_one_decodable_cmaf_segment(encoded, tmp_path):
    video, audio, packets = encoded
    packager = _packager(video, audio)
    for packet in packets:
        packager.on_packet(packet)
    segment = packager.segments[1]
    path = tmp_path / segment.uri
    path.write_bytes(packager.init + segment.data)
    frames = _ffprobe(path, "-show_frames", "-show_entries", "frame=media_type,pts_time")["frames"]
    video_times = [float(f["pts_time"]) for f in frames if f["media_type"] == "video"]
    assert video_times == pytest.approx([1 + i / 30 for i in range(30)])
    assert sum(f["media_type"] == "audio" for f in frames) * 1024 / 48000 == pytest.approx(1.0, abs=0.05)


def test_independent_parts_decode_alone_from_their_keyframe(encoded, tmp_path):
    video, audio, packets = encoded
    packager = _packager(video, audio)
    for packet in packets:
        packager.on_packet(packet)
    for segment in packager.segments:
        first = segment.parts[0]
        path = tmp_path / first.uri
        path.write_bytes(packager.init + first.data)
        frames = _ffprobe(path, "-select_streams", "v", "-show_frames", "-show_entries", "frame=key_frame,pict_type")
        assert first.independent and [f["pict_type"] for f in frames["frames"]] == ["I"] + ["P"] * 14


def test_fragment_needs_samples():
    with pytest.raises(ValueError):
        cmaf.fragment(1, [cmaf.TrackRun(1, 0, [])])


def test_declared_bandwidth_covers_the_measured_peak(encoded):
    video, audio, packets = encoded
    packager = _packager(video, audio)
    for packet in packets:
        packager.on_packet(packet)
    rates = [len(s.data) * 8 / s.duration for s in packager.segments]
    assert max(rates) <= packager.info.bandwidth
    # The nominal rate is what ABR should plan with: the encoder must not overshoot it.
    assert sum(rates) / len(rates) <= packager.info.average_bandwidth * 1.1
