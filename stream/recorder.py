"""The recorder: every segment of every rendition while the event is live, on disk, for the replay.

Segments are the CMAF segments viewers got (no second encode). Files are written by a worker
thread; a segment enters the SQLite index only after its file is complete, so the index never
names a missing file, and the replay survives an origin restart.

Faults are the recorder's problem, never the live stream's:
- A failed write (ENOSPC, EIO, a read-only file system, "database or disk is full") loses that
  segment: it is counted, a line is logged when writes start failing and one (with the missing
  sequence ranges) when they succeed again, and the next segment tries again. Nothing a disk can
  raise stops the thread, and a full disk gets back whatever a failed attempt took.
- The backlog is bounded in bytes (BACKLOG_LIMIT_BYTES): a disk that stalls (a hung network
  volume, another process holding the index) costs the recording its oldest queued segments, not
  the origin its memory.
- Holes in the recording (lost segments, or an origin restart while live) are marked in the VOD
  playlist with EXT-X-GAP segments, which keep the replay's timeline true: hls.js does not load
  them and skips the hole; Safari plays through them; FFmpeg (5.1, which predates the tag) tries
  their URI, gets a 404 and carries on. An EXT-X-DISCONTINUITY follows each hole: after a restart
  the timestamps start again, and the index cannot tell a restart from a full disk.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import sqlite3
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from stream import telemetry
from stream.packager.hls import RenditionPackager, Segment
from stream.packager.playlist import VERSION, program_date_time, target_duration
from stream.worker import Worker

log = logging.getLogger(__name__)

SAFE_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{0,63}$")
# Segments waiting for the disk are held in memory up to this many bytes. The default ladder makes
# about 1 MB of segments a second (~3.5 GB an hour), so 64 MiB rides out about a minute of a stalled
# disk without losing anything, and costs a few percent of the origin's 2 GiB memory limit
# (k8s/base/origin.yaml) however long the stall lasts.
BACKLOG_LIMIT_BYTES = 64 * 1024 * 1024
# EXT-X-GAP needs protocol version 8 (Apple, "About the EXT-X-VERSION tag"); a recording without
# holes keeps the live playlists' version.
GAP_VERSION = 8
# A hole longer than this (in time or in segments) is cut out of the replay's timeline (a
# discontinuity; PROGRAM-DATE-TIME still shows the jump) instead of being listed segment by segment:
# an origin restarted a day later would otherwise add tens of thousands of empty entries to a
# playlist rendered per request. Segments last at least a second (--segment-duration).
MAX_MARKED_GAP_SECONDS = 3600.0
MAX_MARKED_GAP_SEGMENTS = 3600
WRITE_ERRORS = ("no_space", "io_error")  # the write error reasons counted (_reason)


@dataclass(frozen=True, slots=True)
class RecordedSegment:
    rendition: str
    sequence: int
    duration: float
    program_date_time: float
    init_uri: str

    @property
    def uri(self) -> str:
        return f"{self.sequence}.m4s"


@dataclass(frozen=True, slots=True)
class Gap:
    """Segments missing from a rendition's recording: from `first` to `last` (sequence numbers)."""

    rendition: str
    first: int
    last: int
    starts_at: float  # wall clock: where the segment before the hole ends
    ends_at: float  # wall clock: where the segment after the hole starts

    def to_json(self) -> dict:
        return {"rendition": self.rendition, "first": self.first, "last": self.last,
                "from": program_date_time(self.starts_at), "to": program_date_time(self.ends_at),
                "seconds": round(self.ends_at - self.starts_at, 3)}


@dataclass(frozen=True, slots=True)
class _Write:
    rendition: str
    init_uri: str
    init: bytes
    segment: Segment

    @property
    def size(self) -> int:
        return len(self.segment.data)  # the init is shared with the packager: not held for us


class Recorder(Worker):
    def __init__(self, directory: Path, backlog_limit: int = BACKLOG_LIMIT_BYTES) -> None:
        super().__init__("recorder")
        self.directory = directory
        self.backlog_limit = backlog_limit
        self.recording = False
        # The backlog is filled on the event loop and drained by the worker thread. Its bytes count
        # the segment being written too: that is memory held until the write ends.
        self._condition = threading.Condition()
        self._backlog: deque[_Write] = deque()
        self._backlog_bytes = 0
        # Sequences lost since writes last succeeded, per rendition: logged as ranges on recovery.
        self._lost: dict[str, list[int]] = {}
        self._failing_since: float | None = None  # monotonic time of the first failure or loss
        self._failed_writes = 0
        self._segments_lost = 0
        self._database: sqlite3.Connection | None = None
        # The index is read by HTTP handlers on the event loop, so it lives in memory too; SQLite
        # is only read at startup and written by the worker thread.
        self._lock = threading.Lock()
        self._index: dict[str, list[RecordedSegment]] = {}
        self._names: dict[str, set[str]] = {}
        # Every reason up front, so dashboards see zeros, not gaps.
        self._write_errors = {reason: telemetry.counter("recorder_write_errors", reason) for reason in WRITE_ERRORS}
        self._up = telemetry.gauge("recorder_up")
        self._backlog_gauge = telemetry.gauge("recorder_backlog_bytes")
        self._up.set(1)
        self._backlog_gauge.set(0)
        self.directory.mkdir(parents=True, exist_ok=True)
        _remove_partial_files(self.directory)
        for row in self._load_index():
            self._remember(RecordedSegment(*row))

    def _load_index(self) -> list[tuple]:
        """The recorded segments; none if the index cannot be read (the disk is full before a first
        write, or failing): the origin must still start and stream, and the worker retries."""
        try:
            with contextlib.closing(_open_index(self.directory)) as connection:
                return connection.execute(
                    "SELECT rendition, sequence, duration, pdt, init_uri FROM segments ORDER BY rendition, sequence"
                ).fetchall()
        except sqlite3.Error as error:
            log.error("the recording index %s cannot be read (%s): the replay starts empty",
                      self.directory / "index.sqlite3", error)
            return []

    def _remember(self, segment: RecordedSegment) -> None:
        with self._lock:
            self._index.setdefault(segment.rendition, []).append(segment)
            self._names.setdefault(segment.rendition, set()).update((segment.uri, segment.init_uri))

    # ---- the backlog: filled on the event loop, drained by the worker ---------------------------

    def on_segment(self, rendition: RenditionPackager, segment: Segment) -> None:
        """Segment listener (event loop): queue the write, never block."""
        if not self.recording:
            return
        write = _Write(rendition.info.name, rendition.init_uri, rendition.init, segment)
        with self._condition:
            self._backlog.append(write)
            self._backlog_bytes += write.size
            dropped = self._trim()
            self._condition.notify()
        self._backlog_gauge.set(self._backlog_bytes)
        if dropped:
            self._lose(dropped)
            if self._begin_trouble():
                log.error("recording: the disk is not keeping up: over %d MiB of segments wait, dropping the "
                          "oldest; the replay will have a gap", self.backlog_limit // 2**20)

    def _trim(self) -> list[_Write]:
        """Drop the oldest queued segments until the backlog fits (call with the condition held).
        The segment being written is no longer queued, so it is never dropped under the writer."""
        dropped = []
        while self._backlog_bytes > self.backlog_limit and self._backlog:
            oldest = self._backlog.popleft()
            self._backlog_bytes -= oldest.size
            dropped.append(oldest)
        return dropped

    def _take(self) -> _Write | None:
        with self._condition:
            if not self._backlog:
                self._condition.wait(0.1)
            return self._backlog.popleft() if self._backlog else None

    def _done(self, write: _Write) -> None:
        with self._condition:
            self._backlog_bytes -= write.size
            self._condition.notify_all()
        self._backlog_gauge.set(self._backlog_bytes)

    def _lose(self, writes: list[_Write]) -> None:
        with self._condition:
            for write in writes:
                self._lost.setdefault(write.rendition, []).append(write.segment.sequence)
            self._segments_lost += len(writes)
        telemetry.counter("recorder_segments_lost").inc(len(writes))
        self._up.set(0)

    def _begin_trouble(self) -> bool:
        """Note when segments started failing or being dropped; True the first time (log once)."""
        with self._condition:
            first = self._failing_since is None
            if first:
                self._failing_since = time.monotonic()
        return first

    # ---- the worker ---------------------------------------------------------------------------------

    def run(self) -> None:
        try:
            while True:
                write = self._take()
                if write is None:
                    if self.stopping.is_set():
                        return
                    continue
                self._attempt(write)
                self._done(write)
        except BaseException:
            self._up.set(0)  # a bug, not a disk: the alert must say the recording stopped
            raise
        finally:
            self._abandon_backlog()
            self._close_database()

    def _attempt(self, write: _Write) -> None:
        """Write one segment and index it; if the disk refuses, the segment is lost (counted, logged
        once) and the next one tries again."""
        try:
            self._write(write)
        except (OSError, sqlite3.Error) as error:
            self._failed(write, error)
        else:
            self._succeeded()

    def _write(self, write: _Write) -> None:
        folder = self.directory / write.rendition
        folder.mkdir(exist_ok=True)
        init_path = folder / write.init_uri
        if not init_path.exists():
            _write_atomically(init_path, write.init)
        segment_path = folder / write.segment.uri
        _write_atomically(segment_path, write.segment.data)
        recorded = RecordedSegment(write.rendition, write.segment.sequence, write.segment.duration,
                                   write.segment.program_date_time, write.init_uri)
        try:
            database = self._connection()
            database.execute("INSERT OR REPLACE INTO segments VALUES (?, ?, ?, ?, ?)",
                             (recorded.rendition, recorded.sequence, recorded.duration,
                              recorded.program_date_time, recorded.init_uri))
            database.commit()
        except sqlite3.Error:
            # An unindexed file is never served; removing it gives its space back to the index.
            self._close_database()
            with contextlib.suppress(OSError):
                segment_path.unlink()
            raise
        self._remember(recorded)

    def _connection(self) -> sqlite3.Connection:
        if self._database is None:
            self._database = _open_index(self.directory)
        return self._database

    def _close_database(self) -> None:
        """Forget the connection after a failure: a fresh one starts from a clean transaction."""
        if self._database is not None:
            with contextlib.suppress(sqlite3.Error):
                self._database.close()
            self._database = None

    def _failed(self, write: _Write, error: OSError | sqlite3.Error) -> None:
        reason = _reason(error)
        self._write_errors[reason].inc()
        with self._condition:
            self._failed_writes += 1
        self._lose([write])
        if self._begin_trouble():
            log.error("recording: writing %s/%s failed (%s: %s); segments are lost until writes succeed again",
                      write.rendition, write.segment.uri, reason, error)

    def _succeeded(self) -> None:
        with self._condition:
            since, self._failing_since = self._failing_since, None
            lost, self._lost = self._lost, {}
        if since is None:
            return
        self._up.set(1)
        ranges = "; ".join(f"{rendition} {_ranges(sequences)}" for rendition, sequences in sorted(lost.items()))
        log.warning("recording: writes succeed again after %.1f s; segments lost: %s", time.monotonic() - since,
                    ranges or "none")

    def _abandon_backlog(self) -> None:
        """At shutdown, what could not be written is lost: say so."""
        with self._condition:
            left, self._backlog = list(self._backlog), deque()
            self._backlog_bytes = 0
        self._backlog_gauge.set(0)
        if left:
            self._lose(left)
            log.error("recording: %d segments were not written before the origin stopped", len(left))

    # ---- readers (event loop) -------------------------------------------------------------------------

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until queued segments are written or lost (used when the event ends)."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while self._backlog_bytes:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._condition.wait(min(remaining, 0.1))

    def segments(self, rendition: str) -> list[RecordedSegment]:
        with self._lock:
            return list(self._index.get(rendition, ()))

    def renditions(self) -> list[str]:
        with self._lock:
            return list(self._index)

    def path(self, rendition: str, name: str) -> Path | None:
        """The file of a recorded segment or init, or None: only indexed names ever reach the disk."""
        with self._lock:
            known = name in self._names.get(rendition, ())
        return self.directory / rendition / name if known and SAFE_NAME.match(name) else None

    def gaps(self) -> list[Gap]:
        """Every hole in the recording, per rendition (the replay marks them with EXT-X-GAP, or
        with a discontinuity alone when longer than an hour)."""
        return [Gap(rendition, before.sequence + 1, after.sequence - 1, before.program_date_time + before.duration,
                    after.program_date_time)
                for rendition in sorted(self.renditions())
                for before, after in _holes(self.segments(rendition))]

    def status(self) -> dict:
        """For operators: is the recorder writing, what it holds, what it lost, where the holes are."""
        with self._condition:
            failing_since = self._failing_since
            backlog = {"segments": len(self._backlog), "bytes": self._backlog_bytes, "limit": self.backlog_limit}
            failed, lost = self._failed_writes, self._segments_lost
        return {
            "recording": self.recording,
            "writing": failing_since is None,
            "failing_for": round(time.monotonic() - failing_since, 1) if failing_since is not None else None,
            "backlog": backlog,
            "failed_writes": failed,
            "segments_lost": lost,
            "gaps": [gap.to_json() for gap in self.gaps()],
        }


def vod_playlist(segments: list[RecordedSegment], configured_duration: float) -> str:
    target = target_duration(segments, configured_duration)
    before_holes = {before for before, after in _holes(segments) if _marked(before, after)}
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{GAP_VERSION if before_holes else VERSION}",
        "#EXT-X-PLAYLIST-TYPE:VOD",
        f"#EXT-X-TARGETDURATION:{target}",
        f"#EXT-X-MEDIA-SEQUENCE:{segments[0].sequence if segments else 0}",
    ]
    previous: RecordedSegment | None = None
    for segment in segments:
        if previous in before_holes:
            lines += _gap_lines(previous, segment, target, configured_duration)
        if previous is not None and (segment.init_uri != previous.init_uri
                                     or segment.sequence != previous.sequence + 1):
            lines.append("#EXT-X-DISCONTINUITY")  # a hole, or the origin restarted while live
        if previous is None or segment.init_uri != previous.init_uri:
            lines.append(f'#EXT-X-MAP:URI="{segment.init_uri}"')
        lines += [
            f"#EXT-X-PROGRAM-DATE-TIME:{program_date_time(segment.program_date_time)}",
            f"#EXTINF:{segment.duration:.5f},",
            segment.uri,
        ]
        previous = segment
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def _holes(segments: list[RecordedSegment]) -> Iterator[tuple[RecordedSegment, RecordedSegment]]:
    """(before, after) around each run of missing sequence numbers."""
    for before, after in zip(segments, segments[1:]):
        if after.sequence > before.sequence + 1:
            yield before, after


def _marked(before: RecordedSegment, after: RecordedSegment) -> bool:
    """Whether the replay lists the hole as gap segments (else it only marks a discontinuity)."""
    seconds = after.program_date_time - (before.program_date_time + before.duration)
    return after.sequence - before.sequence - 1 <= MAX_MARKED_GAP_SEGMENTS and seconds <= MAX_MARKED_GAP_SECONDS


def _gap_lines(before: RecordedSegment, after: RecordedSegment, target: int, configured: float) -> list[str]:
    """One EXT-X-GAP segment per missing sequence number, together as long as the hole. Each one
    must round to at most the target duration; a clock that jumped falls back to the nominal one."""
    missing = after.sequence - before.sequence - 1
    each = (after.program_date_time - (before.program_date_time + before.duration)) / missing
    if not 0 < each < target + 0.5:
        each = min(configured, target)
    lines = [f"#EXT-X-PROGRAM-DATE-TIME:{program_date_time(before.program_date_time + before.duration)}"]
    for sequence in range(before.sequence + 1, after.sequence):
        lines += ["#EXT-X-GAP", f"#EXTINF:{each:.5f},", f"{sequence}.m4s"]
    return lines


def _ranges(sequences: list[int]) -> str:
    """"12-15, 18" from [12, 13, 14, 15, 18]."""
    runs: list[list[int]] = []
    for sequence in sorted(set(sequences)):
        if runs and sequence == runs[-1][1] + 1:
            runs[-1][1] = sequence
        else:
            runs.append([sequence, sequence])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _reason(error: OSError | sqlite3.Error) -> str:
    if isinstance(error, OSError):
        return "no_space" if error.errno in (errno.ENOSPC, errno.EDQUOT) else "io_error"
    return "no_space" if getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL else "io_error"


def _open_index(directory: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(directory / "index.sqlite3")
    try:
        connection.execute(
            "CREATE TABLE IF NOT EXISTS segments (rendition TEXT NOT NULL, sequence INTEGER NOT NULL, "
            "duration REAL NOT NULL, pdt REAL NOT NULL, init_uri TEXT NOT NULL, PRIMARY KEY (rendition, sequence))"
        )
    except sqlite3.Error:
        connection.close()
        raise
    return connection


def _write_atomically(path: Path, data: bytes) -> None:
    """Write then rename: a file under its final name is complete. A failed write removes its
    partial file, so a full disk gets back what the attempt took."""
    temporary = path.with_suffix(path.suffix + ".part")
    try:
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def _remove_partial_files(directory: Path) -> None:
    """Partial files left by a process that died mid-write hold space and are never served."""
    for partial in directory.glob("*/*.part"):
        with contextlib.suppress(OSError):
            partial.unlink()
