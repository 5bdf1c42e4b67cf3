"""The recorder: every segment of every rendition while the event is live, on disk, for the replay.

Segments are the CMAF segments viewers got (no second encode). Files are written by a worker
thread; a segment enters the SQLite index only after its file is complete, so the index never
names a missing file, and the replay survives an origin restart. Gaps in the recording (an
origin restart while live) become EXT-X-DISCONTINUITY in the VOD playlist.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from stream.packager.hls import RenditionPackager, Segment
from stream.packager.playlist import VERSION, program_date_time, target_duration
from stream.worker import Worker

log = logging.getLogger(__name__)

SAFE_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{0,63}$")


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
class _Write:
    rendition: str
    init_uri: str
    init: bytes
    segment: Segment


class Recorder(Worker):
    def __init__(self, directory: Path) -> None:
        super().__init__("recorder")
        self.directory = directory
        self._queue: queue.Queue[_Write] = queue.Queue()
        self.recording = False
        # The index is read by HTTP handlers on the event loop, so it lives in memory too; SQLite
        # is only read at startup and written by the worker thread.
        self._lock = threading.Lock()
        self._index: dict[str, list[RecordedSegment]] = {}
        self._names: dict[str, set[str]] = {}
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._connect() as connection:
            connection.execute(
                "CREATE TABLE IF NOT EXISTS segments (rendition TEXT NOT NULL, sequence INTEGER NOT NULL, "
                "duration REAL NOT NULL, pdt REAL NOT NULL, init_uri TEXT NOT NULL, PRIMARY KEY (rendition, sequence))"
            )
            rows = connection.execute(
                "SELECT rendition, sequence, duration, pdt, init_uri FROM segments ORDER BY rendition, sequence"
            ).fetchall()
        for row in rows:
            self._remember(RecordedSegment(*row))

    def _remember(self, segment: RecordedSegment) -> None:
        with self._lock:
            self._index.setdefault(segment.rendition, []).append(segment)
            self._names.setdefault(segment.rendition, set()).update((segment.uri, segment.init_uri))

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.directory / "index.sqlite3")

    def on_segment(self, rendition: RenditionPackager, segment: Segment) -> None:
        """Segment listener (event loop): queue the write, never block."""
        if self.recording:
            self._queue.put(_Write(rendition.info.name, rendition.init_uri, rendition.init, segment))

    def run(self) -> None:
        with self._connect() as connection:
            while not (self.stopping.is_set() and self._queue.empty()):
                try:
                    write = self._queue.get(timeout=0.1)
                except queue.Empty:
                    continue
                self._write(connection, write)

    def _write(self, connection: sqlite3.Connection, write: _Write) -> None:
        folder = self.directory / write.rendition
        folder.mkdir(exist_ok=True)
        init_path = folder / write.init_uri
        if not init_path.exists():
            _write_atomically(init_path, write.init)
        _write_atomically(folder / write.segment.uri, write.segment.data)
        recorded = RecordedSegment(write.rendition, write.segment.sequence, write.segment.duration,
                                   write.segment.program_date_time, write.init_uri)
        connection.execute("INSERT OR REPLACE INTO segments VALUES (?, ?, ?, ?, ?)",
                           (recorded.rendition, recorded.sequence, recorded.duration,
                            recorded.program_date_time, recorded.init_uri))
        connection.commit()
        self._remember(recorded)

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until queued segments are on disk (used when the event ends)."""
        deadline_checks = int(timeout / 0.05)
        for _ in range(deadline_checks):
            if self._queue.empty():
                return
            self.stopping.wait(0.05)

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


def vod_playlist(segments: list[RecordedSegment], configured_duration: float) -> str:
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{VERSION}",
        "#EXT-X-PLAYLIST-TYPE:VOD",
        f"#EXT-X-TARGETDURATION:{target_duration(segments, configured_duration)}",
        f"#EXT-X-MEDIA-SEQUENCE:{segments[0].sequence if segments else 0}",
    ]
    previous: RecordedSegment | None = None
    for segment in segments:
        if previous is None or segment.init_uri != previous.init_uri:
            if previous is not None:
                lines.append("#EXT-X-DISCONTINUITY")
            lines.append(f'#EXT-X-MAP:URI="{segment.init_uri}"')
        elif segment.sequence != previous.sequence + 1:
            lines.append("#EXT-X-DISCONTINUITY")  # the origin restarted while live
        lines += [
            f"#EXT-X-PROGRAM-DATE-TIME:{program_date_time(segment.program_date_time)}",
            f"#EXTINF:{segment.duration:.5f},",
            segment.uri,
        ]
        previous = segment
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_suffix(path.suffix + ".part")
    with open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
