"""The recorder under faults, on a real file system: a tiny tmpfs that fills up, turns read-only,
leaves room for a segment but not for its index entry, or an index held by another process. Real
CMAF segments (the product's encoders and packager), real SQLite, real ffprobe on the replay.

Every test checks the same promise: the thread survives, every segment handed to the recorder is
either on disk and indexed or counted lost and marked as a gap, memory stays within the backlog
bound, one log line says writes fail and one says they resume (with the missing range).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

import launchkit.metrics  # noqa: F401  (installs the Prometheus telemetry these tests read back)
from stream.packager import cmaf
from stream.packager.hls import RenditionInfo, RenditionPackager, Segment
from stream.recorder import MAX_MARKED_GAP_SECONDS, RecordedSegment, Recorder, vod_playlist
from tests.support.disk import PAGE, fill, tiny_disk
from tests.support.media import encode_lavfi


@pytest.fixture(scope="module")
def media() -> tuple[RenditionPackager, list[Segment]]:
    """Twelve real one-second CMAF segments (320x180, 500 kbit/s, AAC) and the rendition they belong to."""
    video, audio, packets = encode_lavfi(12.2)
    rendition = RenditionPackager(
        RenditionInfo("180p", 320, 180, 30, 600_000, 500_000),
        cmaf.VideoTrack(1, 90000, 320, 180, video.parameter_sets), cmaf.AudioTrack(2, audio.config),
        segment_duration=1.0, window=3,
    )
    segments: list[Segment] = []
    rendition.segment_listeners.append(lambda _, segment: segments.append(segment))
    for packet in packets:
        rendition.on_packet(packet)
    assert len(segments) >= 11
    return rendition, segments


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def counters() -> dict[str, float]:
    return {
        "no_space": sample("launchkit_recorder_write_errors_total", reason="no_space"),
        "io_error": sample("launchkit_recorder_write_errors_total", reason="io_error"),
        "lost": sample("launchkit_recorder_segments_lost_total"),
    }


def increase(before: dict[str, float]) -> dict[str, float]:
    return {key: value - before[key] for key, value in counters().items()}


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"timed out waiting for {what}"
        time.sleep(0.02)
    return time.monotonic() - started


def settled(recorder: Recorder) -> Callable[[], bool]:
    """Everything handed to the recorder is written or lost."""
    return lambda: recorder.status()["backlog"]["bytes"] == 0


def recorded(recorder: Recorder) -> list[int]:
    return [segment.sequence for segment in recorder.segments("180p")]


def feed(recorder: Recorder, rendition: RenditionPackager, segments: list[Segment]) -> None:
    for segment in segments:
        recorder.on_segment(rendition, segment)


def recorder_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "stream.recorder"]


def assert_consistent(directory: Path, recorder: Recorder, segments: dict[int, Segment]) -> None:
    """The index names exactly the complete files on disk, in SQLite as in memory; nothing partial is left."""
    files = {int(path.stem) for path in (directory / "180p").glob("*.m4s")}
    assert files == set(recorded(recorder))
    for sequence in files:
        assert (directory / "180p" / f"{sequence}.m4s").read_bytes() == segments[sequence].data
    assert not list(directory.rglob("*.part"))
    with contextlib.closing(sqlite3.connect(directory / "index.sqlite3")) as index:
        rows = [row[0] for row in index.execute("SELECT sequence FROM segments ORDER BY sequence")]
    assert rows == recorded(recorder)


def ffprobe_replay(playlist: Path) -> tuple[float, int]:
    """Duration and decoded video frames of a VOD playlist, through FFmpeg's HLS demuxer."""
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v", "-show_entries",
         "format=duration:stream=nb_read_frames", "-of", "json", str(playlist)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    answer = json.loads(result.stdout)
    return float(answer["format"]["duration"]), int(answer["streams"][0]["nb_read_frames"])


def gap_uris(playlist: str) -> list[str]:
    return re.findall(r"#EXT-X-GAP\n#EXTINF:[0-9.]+,\n(\S+)", playlist)


@contextlib.contextmanager
def recording(directory: Path, **kwargs) -> Iterator[Recorder]:
    """A started recorder, recording as while live; stopped (its files closed) before its disk goes."""
    recorder = Recorder(directory, **kwargs)
    recorder.recording = True
    recorder.start()
    try:
        yield recorder
    finally:
        recorder.stop(5.0)


def test_a_full_disk_costs_segments_not_the_recorder_and_the_replay_marks_the_gap(media, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="stream.recorder")
    rendition, segments = media
    by_sequence = {segment.sequence: segment for segment in segments}
    with tiny_disk(tmp_path / "disk", 1024) as disk, recording(disk / "recording") as recorder:
        directory = recorder.directory
        feed(recorder, rendition, segments[:3])
        wait_until(lambda: len(recorded(recorder)) == 3, "the first three segments on disk")
        assert sample("launchkit_recorder_up") == 1

        ballast = fill(disk)
        before = counters()
        feed(recorder, rendition, segments[3:7])
        wait_until(settled(recorder), "the writes to fail")
        assert recorder._thread.is_alive()
        assert sample("launchkit_recorder_up") == 0
        assert increase(before) == {"no_space": 4, "io_error": 0, "lost": 4}
        assert recorded(recorder) == [s.sequence for s in segments[:3]]
        assert_consistent(directory, recorder, by_sequence)  # failed attempts gave their pages back
        assert recorder.status()["writing"] is False
        assert len(recorder_lines(caplog)) == 1 and "No space left on device" in recorder_lines(caplog)[0]

        ballast.unlink()
        resumed = time.monotonic()
        feed(recorder, rendition, segments[7:10])
        wait_until(lambda: len(recorded(recorder)) == 6, "recording to resume")
        print(f"\nfull disk: 4 segments lost, recording resumed {time.monotonic() - resumed:.3f} s after space "
              f"returned")
        assert sample("launchkit_recorder_up") == 1
        missing = [s.sequence for s in segments[3:7]]
        lines = recorder_lines(caplog)
        assert len(lines) == 2 and f"180p {missing[0]}-{missing[-1]}" in lines[1], lines
        status = recorder.status()
        assert status["writing"] and status["segments_lost"] == 4 and status["failed_writes"] == 4
        assert [(g["rendition"], g["first"], g["last"]) for g in status["gaps"]] == [("180p", missing[0], missing[-1])]
        assert_consistent(directory, recorder, by_sequence)

        playlist = vod_playlist(recorder.segments("180p"), 1.0)
        assert gap_uris(playlist) == [f"{sequence}.m4s" for sequence in missing]
        assert "#EXT-X-VERSION:8" in playlist and playlist.count("#EXT-X-DISCONTINUITY") == 1
        (directory / "180p" / "replay.m3u8").write_text(playlist)
        duration, frames = ffprobe_replay(directory / "180p" / "replay.m3u8")
        print(f"replay: {duration:.2f} s on its timeline (the gap included), {frames} video frames decoded")
        assert frames == 6 * 30  # every recorded frame, none invented
        assert duration == pytest.approx(sum(s.duration for s in segments[:10]), abs=0.2)

        recorder.stop(5.0)
        reopened = Recorder(directory)  # what an origin restart reads back: the same index
        assert recorded(reopened) == recorded(recorder)


def test_a_read_only_volume_is_an_io_error_and_recording_resumes(media, tmp_path, caplog):
    """The origin restarts on a volume that came back read-only (what ext4 does after an I/O error):
    it starts, streams, counts every refused write as an io_error, and records again once writable."""
    caplog.set_level(logging.INFO, logger="stream.recorder")
    rendition, segments = media
    with tiny_disk(tmp_path / "disk", 1024) as disk:
        with recording(disk / "recording") as recorder:
            feed(recorder, rendition, segments[:2])
            wait_until(lambda: len(recorded(recorder)) == 2, "two segments on disk")
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        try:
            with recording(disk / "recording") as restarted:
                assert len(recorded(restarted)) == 2  # the index still reads
                before = counters()
                feed(restarted, rendition, segments[2:5])
                wait_until(settled(restarted), "the writes to fail")
                assert increase(before) == {"no_space": 0, "io_error": 3, "lost": 3}
                assert restarted._thread.is_alive() and sample("launchkit_recorder_up") == 0
                assert "Read-only file system" in recorder_lines(caplog)[0]
                subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)
                feed(restarted, rendition, segments[5:7])
                wait_until(lambda: len(recorded(restarted)) == 4, "recording to resume")
                assert sample("launchkit_recorder_up") == 1 and len(recorder_lines(caplog)) == 2
        finally:
            subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)


def test_room_for_the_segment_but_not_its_index_entry_loses_the_segment_cleanly(media, tmp_path, caplog):
    """SQLite's "database or disk is full": the segment file was complete, its index entry could not be
    written; the file goes (an unindexed file is never served), the index stays as it was."""
    caplog.set_level(logging.INFO, logger="stream.recorder")
    rendition, segments = media
    by_sequence = {segment.sequence: segment for segment in segments}
    with tiny_disk(tmp_path / "disk", 1024) as disk, recording(disk / "recording") as recorder:
        directory = recorder.directory
        feed(recorder, rendition, segments[:2])
        wait_until(lambda: len(recorded(recorder)) == 2, "two segments on disk")
        ballast = fill(disk)
        pages = -(-len(segments[2].data) // PAGE)
        os.truncate(ballast, ballast.stat().st_size - pages * PAGE)  # room for the file, none for the journal
        before = counters()
        feed(recorder, rendition, segments[2:3])
        wait_until(settled(recorder), "the index write to fail")
        assert increase(before) == {"no_space": 1, "io_error": 0, "lost": 1}
        assert "database or disk is full" in recorder_lines(caplog)[0]
        assert_consistent(directory, recorder, by_sequence)
        assert os.statvfs(disk).f_bavail == pages  # the segment's pages are free again
        ballast.unlink()
        feed(recorder, rendition, segments[3:5])
        wait_until(lambda: len(recorded(recorder)) == 4, "recording to resume")
        assert_consistent(directory, recorder, by_sequence)


def test_a_stalled_disk_keeps_the_backlog_within_its_bound(media, tmp_path, caplog):
    """Another process holds the index (an operator's `sqlite3` shell, a backup): the writer waits on
    SQLite's lock, the stream goes on, and the backlog keeps only the newest segments that fit."""
    caplog.set_level(logging.INFO, logger="stream.recorder")
    rendition, segments = media
    largest = max(len(segment.data) for segment in segments)
    limit = 2 * largest + largest // 2
    with recording(tmp_path / "recording", backlog_limit=limit) as recorder:
        feed(recorder, rendition, segments[:1])
        wait_until(lambda: len(recorded(recorder)) == 1, "the first segment on disk")
        before = counters()
        index = tmp_path / "recording" / "index.sqlite3"
        with contextlib.closing(sqlite3.connect(index, isolation_level=None)) as other:
            other.execute("BEGIN EXCLUSIVE")
            peak = 0.0
            for segment in segments[1:9]:  # the writer takes the first and waits on the lock
                recorder.on_segment(rendition, segment)
                peak = max(peak, sample("launchkit_recorder_backlog_bytes"))
                time.sleep(0.05)
            assert sample("launchkit_recorder_up") == 0
            other.execute("COMMIT")
        wait_until(settled(recorder), "the backlog to drain")
        lost = int(increase(before)["lost"])
        print(f"\nstalled disk: backlog peak {peak / 1024:.0f} KiB (bound {limit / 1024:.0f} KiB + the segment "
              f"being written), {lost} segments lost")
        assert peak <= limit + largest  # the bound, plus the one segment the writer holds
        assert lost >= 4 and increase(before)["no_space"] == increase(before)["io_error"] == 0
        survivors = recorded(recorder)
        assert len(survivors) == 9 - lost and survivors[:2] == [segments[0].sequence, segments[1].sequence]
        assert sample("launchkit_recorder_up") == 1
        lines = recorder_lines(caplog)
        assert len(lines) == 2 and "not keeping up" in lines[0] and "writes succeed again" in lines[1], lines
        missing = sorted({s.sequence for s in segments[:9]} - set(survivors))
        assert gap_uris(vod_playlist(recorder.segments("180p"), 1.0)) == [f"{sequence}.m4s" for sequence in missing]


def _recorded(sequence: int, pdt: float, duration: float = 2.0, init: str = "init-a.mp4") -> RecordedSegment:
    return RecordedSegment("720p", sequence, duration, pdt, init)


def test_the_vod_playlist_marks_holes_with_gap_segments_as_long_as_the_hole():
    whole = [_recorded(10, 1000.0), _recorded(11, 1002.0), _recorded(12, 1004.0)]
    playlist = vod_playlist(whole, 2.0)
    assert "#EXT-X-VERSION:7" in playlist and "GAP" not in playlist and "DISCONTINUITY" not in playlist

    holed = [_recorded(10, 1000.0), _recorded(11, 1002.0), _recorded(14, 1008.0), _recorded(15, 1010.0)]
    playlist = vod_playlist(holed, 2.0)
    assert "#EXT-X-VERSION:8" in playlist and gap_uris(playlist) == ["12.m4s", "13.m4s"]
    after_hole = playlist.split("11.m4s\n", 1)[1]
    assert after_hole.startswith("#EXT-X-PROGRAM-DATE-TIME:1970-01-01T00:16:44.000Z\n#EXT-X-GAP\n#EXTINF:2.00000,\n"
                                 "12.m4s\n#EXT-X-GAP\n#EXTINF:2.00000,\n13.m4s\n#EXT-X-DISCONTINUITY\n")
    durations = [float(d) for d in re.findall(r"#EXTINF:([0-9.]+),", playlist)]
    assert sum(durations) == pytest.approx(1010.0 + 2.0 - 1000.0)  # the timeline is the event's

    restarted_a_day_later = [_recorded(10, 1000.0), _recorded(50_000, 1002.0 + MAX_MARKED_GAP_SECONDS * 24)]
    numbers_jumped = [_recorded(10, 1000.0), _recorded(10_000_000, 1012.0)]  # a clock set wrong, then right
    for holed in (restarted_a_day_later, numbers_jumped):
        playlist = vod_playlist(holed, 2.0)
        assert "GAP" not in playlist and playlist.count("#EXT-X-DISCONTINUITY") == 1 and len(playlist) < 1000

    new_init = [_recorded(10, 1000.0), _recorded(11, 1002.0, init="init-b.mp4")]
    playlist = vod_playlist(new_init, 2.0)
    assert '#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI="init-b.mp4"' in playlist and "GAP" not in playlist
