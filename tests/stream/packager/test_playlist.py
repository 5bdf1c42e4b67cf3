import time

from stream.packager.hls import OpenSegment, Part, Segment
from stream.packager.playlist import RenditionReport, media_playlist, program_date_time, target_duration


def _parts(sequence, count=4, duration=0.5):
    return tuple(Part(sequence, i, duration, i == 0, b"") for i in range(count))


def _segments(durations, first=100):
    return [Segment(first + i, d, 1_700_000_000 + 2 * i, b"", _parts(first + i)) for i, d in enumerate(durations)]


def _render(segments, open_parts=0, reports=()):
    last = segments[-1].sequence + 1
    open_segment = OpenSegment(last, 1_700_000_100.0, 0, list(_parts(last, open_parts))) if open_parts else None
    hint = f"{last}.{open_parts}.m4s"
    return media_playlist("init-abc.mp4", segments, 2.0, part_target=0.5, open_segment=open_segment,
                          preload_hint=hint, reports=list(reports))


def test_target_duration_is_never_below_a_rounded_extinf():
    assert target_duration(_segments([2.0, 2.0]), 2.0) == 2
    assert target_duration(_segments([2.0, 2.6]), 2.0) == 3
    assert target_duration(_segments([2.4]), 2.0) == 2  # 2.4 rounds to 2 (RFC 8216 §4.3.3.1)


def test_program_date_time_is_iso8601_utc_with_milliseconds():
    assert program_date_time(1_700_000_000.123) == "2023-11-14T22:13:20.123Z"


def test_media_playlist_lists_the_window_with_pdt_for_each_segment():
    lines = _render(_segments([2.0, 2.0, 2.0])).splitlines()
    assert lines[0] == "#EXTM3U"
    assert "#EXT-X-MEDIA-SEQUENCE:100" in lines
    assert '#EXT-X-MAP:URI="init-abc.mp4"' in lines
    assert [line for line in lines if line.endswith(".m4s")] == ["100.m4s", "101.m4s", "102.m4s"]
    for uri in ("100.m4s", "101.m4s", "102.m4s"):  # classic clients: PDT, EXTINF, URI per segment
        extinf = lines.index(uri) - 1
        assert lines[extinf] == "#EXTINF:2.00000,"
        assert [line for line in lines[:extinf] if line.startswith("#EXT-X-PROGRAM-DATE-TIME")]
    assert "#EXT-X-ENDLIST" not in lines  # live


def test_low_latency_tags_announce_parts_and_blocking_reload():
    lines = _render(_segments([2.0] * 6), open_parts=2).splitlines()
    assert lines[1:5] == [
        "#EXT-X-VERSION:7",
        "#EXT-X-TARGETDURATION:2",
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.50000",
        "#EXT-X-PART-INF:PART-TARGET=0.50000",
    ]
    assert "CAN-SKIP-UNTIL" not in "\n".join(lines)  # no delta updates: _HLS_skip is ignored
    assert lines[-1] == '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="106.2.m4s"'
    # The segment in progress: its PDT first (it applies to its first part), then its parts.
    assert lines[-4:-1] == [
        f"#EXT-X-PROGRAM-DATE-TIME:{program_date_time(1_700_000_100.0)}",
        '#EXT-X-PART:DURATION=0.50000,URI="106.0.m4s",INDEPENDENT=YES',
        '#EXT-X-PART:DURATION=0.50000,URI="106.1.m4s"',
    ]


def test_parts_are_listed_within_three_target_durations_of_the_end():
    segments = _segments([2.0] * 6)
    # 6 s of complete segments fit when nothing of the next one is out yet...
    listed = [line for line in _render(segments).splitlines() if line.startswith("#EXT-X-PART:")]
    assert [line.split('"')[1] for line in listed[::4]] == ["103.0.m4s", "104.0.m4s", "105.0.m4s"]
    # ...and the oldest of them goes once the live edge moves on, a whole segment at a time.
    text = _render(segments, open_parts=1)
    assert '"103.' not in text and '"104.0.m4s"' in text and '"106.0.m4s"' in text
    lines = text.splitlines()
    first_part = lines.index('#EXT-X-PART:DURATION=0.50000,URI="104.0.m4s",INDEPENDENT=YES')
    assert lines[first_part - 1].startswith("#EXT-X-PROGRAM-DATE-TIME:")


def test_rendition_reports_close_the_playlist():
    text = _render(_segments([2.0] * 3), open_parts=1, reports=[RenditionReport("../360p/index.m3u8", 103, 0)])
    assert text.endswith('#EXT-X-RENDITION-REPORT:URI="../360p/index.m3u8",LAST-MSN=103,LAST-PART=0\n')


def test_rendering_a_full_window_costs_well_under_a_millisecond():
    segments = _segments([2.0] * 6)
    reports = [RenditionReport(f"../{name}/index.m3u8", 106, 2) for name in ("720p", "480p")]
    started = time.perf_counter()
    for _ in range(200):
        _render(segments, open_parts=3, reports=reports)
    assert (time.perf_counter() - started) / 200 < 0.001
