import math

from stream.packager import cmaf
from stream.packager.hls import RETAINED_AFTER_WINDOW, HlsPackager, RenditionInfo, RenditionPackager
from tests.stream.conftest import encode_lavfi


def _packager(window: int):
    video, audio, packets = encode_lavfi(8.2)
    info = RenditionInfo("180p", 320, 180, 30, 600_000, 500_000)
    rendition = RenditionPackager(
        info, cmaf.VideoTrack(1, 90000, 320, 180, video.parameter_sets), cmaf.AudioTrack(2, audio.config),
        segment_duration=1.0, window=window,
    )
    return rendition, packets


def test_window_slides_and_old_segments_expire():
    rendition, packets = _packager(window=3)
    for packet in packets:
        rendition.on_packet(packet)
    sequences = [s.sequence for s in rendition.segments]
    assert len(sequences) == 3 and sequences == list(range(sequences[0], sequences[0] + 3))
    first = math.floor(1_700_000_000 / 1.0)
    assert sequences[-1] == first + 7  # eight complete segments, numbered from the wall clock
    # Recently expired segments stay fetchable; older ones are gone from memory.
    assert rendition.segment(f"{sequences[0] - RETAINED_AFTER_WINDOW}.m4s") is not None
    assert rendition.segment(f"{sequences[0] - RETAINED_AFTER_WINDOW - 1}.m4s") is None
    assert rendition.playlist.decode().count(".m4s") == 3


def test_multivariant_declares_codecs_resolution_bandwidth():
    rendition, packets = _packager(window=3)
    text = HlsPackager([rendition]).multivariant.decode()
    sps = rendition._video_track.parameter_sets.sps
    assert f'CODECS="avc1.{sps[1]:02x}{sps[2]:02x}{sps[3]:02x},mp4a.40.2"' in text
    assert "RESOLUTION=320x180" in text and "BANDWIDTH=600000,AVERAGE-BANDWIDTH=500000" in text
    assert text.rstrip().endswith("180p/index.m3u8")


def test_not_live_until_segments_flow():
    rendition, packets = _packager(window=3)
    packager = HlsPackager([rendition])
    assert not packager.is_live()
    for packet in packets:
        packager.on_packet(packet)
    assert packager.is_live()
