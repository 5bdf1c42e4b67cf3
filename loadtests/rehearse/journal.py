"""The rehearsal's journal: raw results written as the run goes, so a crash, a kill or a full disk
late in a long rehearsal still leaves something to report (`launchkit rehearse report DIR`).

One JSON object per line, each written whole and flushed at once (a killed process loses at most
the line it was writing; the kernel keeps what was written):

    {"type": "start", "format", "shard", "target", "targets", "profile", "started_at", "capacity",
     "schedule": [[index, at, kind], ...]}
    {"type": "arrival", ...}   one arrival's record, when it is over
    {"type": "tick", ...}      one timeline row per second, with the driver's own tick lag
    {"type": "server", ...}    one /metrics sample per second
    {"type": "end", "wall_seconds", "cancelled"}

Reading it back gives the raw document results.py reads. Without an `end` line the run is
incomplete: its duration is the last tick, arrivals scheduled before then that never reported (or
reported only that they were cut short by the stop) are `unfinished` (in flight when the run
stopped), later ones never started; a torn last line is skipped.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import IO, Any

from loadtests.rehearse.results import FORMAT

NAME = "journal.jsonl"
_SHARD_NAME = re.compile(r"^journal-(\d+)-of-(\d+)\.jsonl$")


def name(worker: int, workers: int) -> str:
    return NAME if workers == 1 else f"journal-{worker}-of-{workers}.jsonl"


class Journal:
    """Appends lines to `path` (created afresh)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = open(path, "w", encoding="utf-8")

    def write(self, kind: str, data: dict[str, Any]) -> None:
        if self._file is None:
            return
        self._file.write(json.dumps({"type": kind, **data}, separators=(",", ":")) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def find(directory: Path) -> list[Path]:
    """The journals of one rehearsal in `directory`: journal.jsonl, else the workers' ones."""
    single = directory / NAME
    if single.is_file():
        return [single]
    return sorted(p for p in directory.glob("journal-*-of-*.jsonl") if _SHARD_NAME.match(p.name))


def read(path: Path) -> dict[str, Any]:
    """The raw document of what the journal recorded (see the module docstring)."""
    start: dict[str, Any] | None = None
    end: dict[str, Any] | None = None
    arrivals: dict[int, dict[str, Any]] = {}
    timeline: list[dict[str, Any]] = []
    server: list[dict[str, Any]] = []
    lag: list[float] = []
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # the line being written when the process died
            if not isinstance(entry, dict):
                continue
            kind = entry.pop("type", None)
            if kind == "start":
                start = entry
            elif kind == "arrival" and isinstance(entry.get("index"), int):
                arrivals[entry["index"]] = entry
            elif kind == "tick" and isinstance(entry.get("t"), (int, float)):
                lag.append(entry.pop("lag", 0.0))
                timeline.append(entry)
            elif kind == "server":
                server.append(entry)
            elif kind == "end":
                end = entry
    if start is None or start.get("format") != FORMAT:
        raise ValueError(f"{path}: not a rehearsal journal (no start line)")
    stopped = end["wall_seconds"] if end is not None else max((row["t"] for row in timeline), default=0.0)
    if end is None:  # arrivals cut short when the run was stopped are unfinished, not failures
        arrivals = {i: a for i, a in arrivals.items() if not a.get("detail", {}).get("cancelled")}
    unfinished = [i for i, at, _ in start["schedule"] if i not in arrivals and at <= stopped]
    return {
        "format": FORMAT, "shard": start["shard"], "target": start["target"], "targets": start.get("targets"),
        "profile": start["profile"], "started_at": start["started_at"], "capacity": start.get("capacity"),
        "wall_seconds": stopped, "arrivals": [arrivals[i] for i in sorted(arrivals)],
        "cancelled": end["cancelled"] if end is not None else len(unfinished),
        "timeline": timeline, "server": server, "generator_lag": lag,
        "complete": end is not None, "unfinished": 0 if end is not None else len(unfinished),
        "never_started": 0 if end is not None else len(start["schedule"]) - len(arrivals) - len(unfinished),
    }
