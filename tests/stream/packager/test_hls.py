import math
import struct
from dataclasses import replace

import pytest

from stream.packager import cmaf
from stream.packager.hls import (
    PART_AVAILABILITY_TARGET_DURATIONS,
    RETAINED_AFTER_WINDOW,
    HlsPackager,
    RenditionInfo,
    RenditionPackager,
    default_part_duration,
    part_frames,
)
from tests.support.media import encode_lavfi

FIRST = math.floor(1_700_000_000 / 1.0)  # encode_lavfi's wall clock starts here


@pytest.fixture(scope="module")
def eight_seconds():
    return encode_lavfi(8.2)


def _packager(encoded, window: int = 3, part_duration: float | None = None, name: str = "180p"):
    video, audio, packets = encoded
    info = RenditionInfo(name, 320, 180, 30, 600_000, 500_000)
    rendition = RenditionPackager(
        info, cmaf.VideoTrack(1, 90000, 320, 180, video.parameter_sets), cmaf.AudioTrack(2, audio.config),
        segment_duration=1.0, window=window, part_duration=part_duration,
    )
    return rendition, packets


def _video_decode_time(part_data) -> int:
    """tfdt of the first traf (video) of a part: where the part starts on the 90 kHz timeline."""
    data = bytes(part_data)
    offset = data.index(b"tfdt") + 8  # box type, then version/flags
    return struct.unpack(">Q", data[offset : offset + 8])[0]


def test_window_slides_and_old_segments_expire(eight_seconds):
    rendition, packets = _packager(eight_seconds)
    for packet in packets:
        rendition.on_packet(packet)
    sequences = [s.sequence for s in rendition.segments]
    assert len(sequences) == 3 and sequences == list(range(sequences[0], sequences[0] + 3))
    assert sequences[-1] == FIRST + 7  # eight complete segments, numbered from the wall clock
    # Recently expired segments stay fetchable; older ones are gone from memory.
    assert rendition.segment(f"{sequences[0] - RETAINED_AFTER_WINDOW}.m4s") is not None
    assert rendition.segment(f"{sequences[0] - RETAINED_AFTER_WINDOW - 1}.m4s") is None
    assert [line for line in rendition.playlist.decode().splitlines() if line.endswith(".m4s")] == [
        f"{s}.m4s" for s in sequences
    ]


def test_parts_are_cut_on_the_part_grid_and_at_keyframes(eight_seconds):
    rendition, packets = _packager(eight_seconds, part_duration=1 / 3)
    published = []
    rendition.part_listeners.append(lambda r, part: published.append(part))
    for packet in packets:
        rendition.on_packet(packet)
    assert rendition.part_duration == pytest.approx(1 / 3) and rendition.parts_per_segment == 3
    for part in published:
        start = _video_decode_time(part.data)
        assert start == (part.sequence - FIRST) * 90000 + part.index * 30000, part.uri
        assert part.duration == pytest.approx(1 / 3)
        # INDEPENDENT only where a keyframe starts the part: the first part of every segment.
        assert part.independent == (part.index == 0) == (start % 90000 == 0)
    assert [p.position for p in published[:4]] == [(FIRST, 0), (FIRST, 1), (FIRST, 2), (FIRST + 1, 0)]
    for segment in rendition.segments:
        assert [p.index for p in segment.parts] == [0, 1, 2]
        assert sum(p.duration for p in segment.parts) == pytest.approx(segment.duration)


def test_a_part_is_published_with_the_first_packet_at_or_past_its_end():
    # The frame on the 0.5 s boundary is lost: the part ends at the next frame that arrives.
    video, audio, packets = encode_lavfi(1.2, skip_frames=frozenset({15}))
    rendition, _ = _packager((video, audio, packets))
    seen: list[int] = []
    ends = []
    rendition.part_listeners.append(lambda r, part: ends.append((part.uri, seen[-1])))
    for packet in packets:
        if packet.kind == "video":
            seen.append(packet.dts)
        rendition.on_packet(packet)
    assert ends == [(f"{FIRST}.0.m4s", 16 * 3000), (f"{FIRST}.1.m4s", 30 * 3000)]
    first, second = rendition.segments[0].parts
    assert first.duration == pytest.approx(16 / 30) and second.duration == pytest.approx(14 / 30)


def test_part_audio_is_what_decodes_before_the_part_ends(eight_seconds):
    rendition, packets = _packager(eight_seconds)
    for packet in packets:
        rendition.on_packet(packet)
    for segment in rendition.segments:
        for part in segment.parts:
            data = bytes(part.data)
            audio_traf = data.index(b"tfdt", data.index(b"tfdt") + 4) + 8
            audio_start = struct.unpack(">Q", data[audio_traf : audio_traf + 8])[0] / 48000
            video_end = _video_decode_time(part.data) / 90000 + part.duration
            assert audio_start < video_end


def test_part_duration_must_be_whole_frames_that_tile_the_segment():
    assert part_frames(0.5, 30, 2.0) == 15
    with pytest.raises(ValueError, match="whole number of frames"):
        part_frames(0.45, 30, 2.0)
    with pytest.raises(ValueError, match="whole multiple"):
        part_frames(0.4, 30, 1.0)
    for bad in (0.0, -0.5, float("nan"), float("inf"), 0.01):
        with pytest.raises(ValueError):
            part_frames(bad, 30, 2.0)
    assert default_part_duration(30, 2.0) == 0.5
    assert default_part_duration(15, 4.0) == pytest.approx(0.4)  # 7.5 frames do not fit: 6 do
    assert default_part_duration(15, 1.0) == pytest.approx(1 / 3)
    assert default_part_duration(1, 1.0) == 1.0  # one frame per part at the least


def test_the_packager_refuses_a_part_duration_that_does_not_fit(eight_seconds):
    with pytest.raises(ValueError, match="whole multiple"):
        _packager(eight_seconds, part_duration=0.4)


def test_parts_memory_is_bounded_and_shared_with_segments():
    rendition, packets = _packager(encode_lavfi(14.2), window=3)
    listed_until: dict[str, float] = {}
    evicted_at: dict[str, float] = {}
    clock = [0.0]

    def on_part(r, part):
        clock[0] += part.duration
        text = r.playlist.decode() if r.playlist else ""
        for uri in list(listed_until) + [part.uri]:
            if f'"{uri}"' in text:
                listed_until[uri] = clock[0]
            if r.part(uri) is None and uri not in evicted_at:
                evicted_at[uri] = clock[0]

    rendition.part_listeners.append(on_part)
    for packet in packets:
        rendition.on_packet(packet)
    retained = PART_AVAILABILITY_TARGET_DURATIONS  # segments of 1 s, target duration 1
    assert len(rendition._parts) <= (retained + 1) * rendition.parts_per_segment
    for segment in list(rendition._segments)[-retained:]:
        for part in segment.parts:
            # Views into the segment's bytes: the media is held once.
            assert rendition.part(part.uri).data.obj is segment.data
    # §6.2.2: fetchable for at least three target durations after leaving the playlist.
    assert evicted_at
    for uri, gone in evicted_at.items():
        assert gone - listed_until[uri] >= 3 * rendition.target_duration, uri


def test_rendition_reports_name_every_other_rendition(eight_seconds):
    low, packets = _packager(eight_seconds)
    high, _ = _packager(eight_seconds, name="360p")
    packager = HlsPackager([high, low])
    reports = []
    low.part_listeners.append(lambda r, part: reports.append(
        [line for line in r.playlist.decode().splitlines() if line.startswith("#EXT-X-RENDITION-REPORT")]
        if r.playlist else None
    ))
    for packet in packets:
        if packet.kind == "video":  # the same picture for 360p, published just before 180p's
            packager.on_packet(replace(packet, rendition="360p"))
        packager.on_packet(packet)
    last = high.last_part
    assert reports[-1] == [f'#EXT-X-RENDITION-REPORT:URI="../360p/index.m3u8",LAST-MSN={last.sequence},'
                           f"LAST-PART={last.index}"]
    assert '#EXT-X-RENDITION-REPORT:URI="../180p/index.m3u8"' in high.playlist.decode()


def test_multivariant_declares_codecs_resolution_bandwidth(eight_seconds):
    rendition, packets = _packager(eight_seconds)
    text = HlsPackager([rendition]).multivariant.decode()
    sps = rendition._video_track.parameter_sets.sps
    assert f'CODECS="avc1.{sps[1]:02x}{sps[2]:02x}{sps[3]:02x},mp4a.40.2"' in text
    assert "RESOLUTION=320x180" in text and "BANDWIDTH=600000,AVERAGE-BANDWIDTH=500000" in text
    assert text.rstrip().endswith("180p/index.m3u8")


def test_not_live_until_segments_flow(eight_seconds):
    rendition, packets = _packager(eight_seconds)
    packager = HlsPackager([rendition])
    assert not packager.is_live()
    for packet in packets:
        packager.on_packet(packet)
    assert packager.is_live()
