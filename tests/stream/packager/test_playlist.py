from stream.packager.hls import Segment
from stream.packager.playlist import media_playlist, program_date_time, target_duration


def _segments(durations, first=100):
    return [Segment(first + i, d, 1_700_000_000 + 2 * i, b"") for i, d in enumerate(durations)]


def test_target_duration_is_never_below_a_rounded_extinf():
    assert target_duration(_segments([2.0, 2.0]), 2.0) == 2
    assert target_duration(_segments([2.0, 2.6]), 2.0) == 3
    assert target_duration(_segments([2.4]), 2.0) == 2  # 2.4 rounds to 2 (RFC 8216 §4.3.3.1)


def test_program_date_time_is_iso8601_utc_with_milliseconds():
    assert program_date_time(1_700_000_000.123) == "2023-11-14T22:13:20.123Z"


def test_media_playlist_lists_the_window_with_pdt_for_each_segment():
    text = media_playlist("init-abc.mp4", _segments([2.0, 2.0, 2.0]), 2.0)
    lines = text.splitlines()
    assert lines[0] == "#EXTM3U"
    assert "#EXT-X-MEDIA-SEQUENCE:100" in lines
    assert '#EXT-X-MAP:URI="init-abc.mp4"' in lines
    assert [l for l in lines if l.endswith(".m4s")] == ["100.m4s", "101.m4s", "102.m4s"]
    assert sum(l.startswith("#EXT-X-PROGRAM-DATE-TIME:") for l in lines) == 3
    assert "#EXT-X-ENDLIST" not in lines  # live
