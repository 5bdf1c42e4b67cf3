"""What one rehearsal (or one worker's shard of it) measured, how shards merge, and the summary
the SLOs and the report read.

The raw results are a JSON document: one record per arrival, a timeline sampled every second by
the driver (gauges and per-second increments only, so shards add up by second), the server's
metrics scraped every second (by worker 0 only: the target is the same for every worker), and the
target's capacity at the start. The same facts are written as the run goes to a journal
(journal.py), from which a killed run is reported too (`complete` false, `unfinished` arrivals).

The waiting room's figures (places.py) come from timestamps the viewers take themselves, in
seconds since the start: joined the line (first waiting-room answer), admitted (the admitting
answer received), playing, left (leave beacon sent, or gave up), and the place in line (the queue
ticket's sequence number, the server's FIFO order). The simulated audience is the whole audience,
so these intervals say exactly when places were taken and freed and who waited, with every latency
counted against the system: a place is free from the moment its viewer sent its leave, and taken
again only when the next viewer received its admission. Capacity is the target's `/api/status`
`max_viewers` (shared by all edges with Redis). Shards are merged by shifting each worker's
timestamps by its start time (wall clocks of one cluster).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from loadtests.player import percentiles
from loadtests.rehearse import places
from loadtests.rehearse.profiles import VIEWER_KINDS

FORMAT = "launchkit-rehearsal-raw/1"
# Timeline columns: per-second increments (summed across shards) and gauges (also summed).
INCREMENTS = ("arrived", "errors", "bytes")
GAUGES = ("loading", "waiting", "playing", "stalled", "visiting")


@dataclass
class ArrivalResult:
    """One arrival, whatever it did. Viewers: `joined` = started playing (HLS: enough media
    buffered; WHEP: a first frame). Visitors: `joined` = the page loaded."""

    index: int
    at: float  # scheduled arrival, seconds after the start
    kind: str  # hls | llhls | whep | visitor
    joined: bool = False
    startup: float | None = None  # first request → playing, waiting room included
    waited: float = 0.0  # seconds the waiting room asked for (Retry-After honoured)
    position: int | None = None  # first place in line the waiting room gave
    played: float = 0.0
    stalls: int = 0
    rebuffer: float = 0.0
    bytes: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # by type: http_404, timeout, reset, ...
    http_5xx: int = 0  # 5xx answers seen (a WHEP 503 "at capacity, play LL-HLS" is the contract, not counted)
    ttfb: dict[str, list[float]] = field(default_factory=dict)  # segment / part → seconds
    detail: dict[str, Any] = field(default_factory=dict)  # kind-specific (WHEP frames, wall, ...)
    # Viewers, seconds since the start (places.py): joined the line, admitted, playing, left or gave up;
    # the last place in line (queue scope, sequence number); which target (edge) it was sent to.
    queued_at: float | None = None
    admitted_at: float | None = None
    playing_at: float | None = None
    left_at: float | None = None
    place: list | None = None
    target: int = 0
    state: str = field(default="pending", repr=False)  # live only: pending|loading|waiting|playing|stalled|visiting|done

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["state"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArrivalResult:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "state"})


def merge(raws: list[dict[str, Any]]) -> dict[str, Any]:
    """One raw document from M workers' documents: arrivals concatenated, timelines added by
    wall-clock second (workers may start a little apart), server series from the worker that
    scraped."""
    if not raws:
        raise ValueError("nothing to merge")
    for raw in raws:
        if raw.get("format") != FORMAT:
            raise ValueError(f"not a rehearsal raw result (format {raw.get('format')!r})")
    shards = sorted(tuple(r["shard"]) for r in raws)
    workers = shards[0][1]
    if [s[1] for s in shards] != [workers] * len(shards) or len({s[0] for s in shards}) != len(shards):
        raise ValueError(f"shards do not belong together: {shards}")
    origin = min(r["started_at"] for r in raws)
    timeline: dict[int, dict[str, float]] = {}
    arrivals = []
    for raw in raws:
        arrivals.extend(_shifted(a, raw["started_at"] - origin) for a in raw["arrivals"])
    for raw in raws:
        offset = round(raw["started_at"] - origin)
        for row in raw["timeline"]:
            merged = timeline.setdefault(row["t"] + offset, {"t": row["t"] + offset})
            for key in (*INCREMENTS, *GAUGES):
                merged[key] = merged.get(key, 0) + row.get(key, 0)
    scraped = [r for r in raws if r.get("server")]
    server = []
    if scraped:
        offset = scraped[0]["started_at"] - origin
        server = [{**sample, "t": round(sample["t"] + offset, 3)} for sample in scraped[0]["server"]]
    first = raws[0]
    return {
        "format": FORMAT, "shard": [None, workers], "workers": [r["shard"] for r in raws],
        "missing_shards": sorted(set(range(workers)) - {s[0] for s in shards}),
        "target": first["target"], "targets": first.get("targets"), "profile": first["profile"], "started_at": origin,
        "wall_seconds": max(r["started_at"] - origin + r["wall_seconds"] for r in raws),
        "arrivals": sorted(arrivals, key=lambda a: a["index"]),
        "cancelled": sum(r["cancelled"] for r in raws),
        "capacity": first.get("capacity"), "complete": all(r.get("complete", True) for r in raws),
        "unfinished": sum(r.get("unfinished", 0) for r in raws),
        "timeline": [timeline[t] for t in sorted(timeline)],
        "server": server,
        "generator_lag": [v for r in raws for v in r.get("generator_lag", [])],
    }


TIMESTAMPS = ("queued_at", "admitted_at", "playing_at", "left_at")


def _shifted(arrival: dict[str, Any], offset: float) -> dict[str, Any]:
    """An arrival record with its timestamps on the merged clock."""
    if not offset:
        return arrival
    moved = {key: round(arrival[key] + offset, 3) for key in TIMESTAMPS if arrival.get(key) is not None}
    return {**arrival, **moved}


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    """What the SLOs and the report read: viewer experience, WHEP delivery, visitors, errors, and
    the queue as the clients and the server saw it."""
    arrivals = [ArrivalResult.from_dict(a) for a in raw["arrivals"]]
    viewers = [a for a in arrivals if a.kind in VIEWER_KINDS]
    joined = [a for a in viewers if a.joined]
    errors: Counter = Counter()
    for arrival in arrivals:
        errors.update(arrival.errors)
    played = sum(a.played for a in joined)
    rebuffer = sum(a.rebuffer for a in joined)
    return {
        "arrivals": len(arrivals),
        "by_kind": dict(Counter(a.kind for a in arrivals)),
        "viewers": {
            "arrivals": len(viewers), "joined": len(joined), "gave_up": len(viewers) - len(joined),
            "join_success": round(len(joined) / len(viewers), 5) if viewers else None,
            "waited": sum(a.waited > 0 for a in viewers),
            "wait_seconds": percentiles([a.waited for a in viewers if a.waited > 0], 3),
            "max_position": max((a.position for a in viewers if a.position is not None), default=None),
        },
        # Startup as a viewer feels it once let in (the waiting room has its own figure above), and in full.
        "startup_after_admission": percentiles([max(0.0, a.startup - a.waited) for a in joined
                                                if a.startup is not None], 3),
        "startup_with_wait": percentiles([a.startup for a in joined if a.startup is not None], 3),
        "rebuffer": {"stalls": sum(a.stalls for a in joined), "viewers_with_stalls": sum(a.stalls > 0 for a in joined),
                     "seconds": round(rebuffer, 3), "played_seconds": round(played, 1),
                     "ratio": round(rebuffer / (played + rebuffer), 5) if played + rebuffer > 0 else None},
        "ttfb": {kind: percentiles([t for a in arrivals for t in a.ttfb.get(kind, [])])
                 for kind in ("segment", "part")},
        "whep": _whep(arrivals),
        "visitors": _visitors(arrivals),
        "errors": dict(errors), "error_count": sum(errors.values()),
        "http_5xx": sum(a.http_5xx for a in arrivals),
        "bytes": sum(a.bytes for a in arrivals),
        "queue": _queue(raw["timeline"], raw.get("server", [])),
        "server": _server(raw.get("server", [])),
        "cancelled": raw["cancelled"],
        "line": places.figures(raw["arrivals"], raw.get("capacity"), raw["wall_seconds"]),
        "complete": raw.get("complete", True), "unfinished": raw.get("unfinished", 0),
        # How late the driver's 1 s tick fired: large values mean the load generator, not the
        # target, was the bottleneck (its timings are then inflated).
        "generator_lag": percentiles(raw.get("generator_lag", []), 3),
        "wall_seconds": round(raw["wall_seconds"], 1),
    }


def _whep(arrivals: list[ArrivalResult]) -> dict[str, Any]:
    whep = [a for a in arrivals if a.kind == "whep"]
    connected = [a for a in whep if a.detail.get("status") == 201]
    frames = sum(a.detail.get("frames", 0) for a in connected)
    expected = sum(a.detail.get("expected_frames", 0) for a in connected)
    return {
        "arrivals": len(whep), "connected": len(connected),
        "fell_back_to_llhls": sum(bool(a.detail.get("fallback")) for a in whep),
        "frames": frames, "expected_frames": expected,
        "frame_delivery": round(frames / expected, 4) if expected else None,
        "first_frame_seconds": percentiles([a.detail["first_frame_after"] for a in connected
                                            if a.detail.get("first_frame_after") is not None], 3),
    }


def _visitors(arrivals: list[ArrivalResult]) -> dict[str, Any]:
    visitors = [a for a in arrivals if a.kind == "visitor"]

    def total(key: str) -> int:
        return sum(a.detail.get(key, 0) for a in visitors)

    return {
        "arrivals": len(visitors), "page_ok": sum(a.joined for a in visitors),
        "page_seconds": percentiles([a.startup for a in visitors if a.startup is not None], 3),
        "status_polls": total("status_polls"), "wall_unavailable": sum(a.detail.get("wall") == "unavailable"
                                                                        for a in visitors),
        "wall_events": total("wall_events"), "posts": total("posts"), "posts_accepted": total("posts_accepted"),
        "posts_rate_limited": total("posts_rate_limited"),
    }


def _queue(timeline: list[dict[str, Any]], server: list[dict[str, Any]]) -> dict[str, Any]:
    """Did a queue form, and did it drain? From the clients' view (viewers waiting) and, when
    scraped, the server's (launchkit_admission_queued)."""
    def formed_and_drained(values: list[float]) -> dict[str, Any]:
        peak = max(values, default=0)
        return {"peak": peak, "final": values[-1] if values else None,
                "drained": bool(values) and peak > 0 and values[-1] == 0}

    client = formed_and_drained([row["waiting"] for row in timeline])
    client["peak_admitted"] = max((row["playing"] + row["stalled"] for row in timeline), default=0)
    queued = [s["queued"] for s in server if s.get("queued") is not None]
    return {"clients": client, "server": formed_and_drained(queued) if queued else None}


def _server(samples: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not samples:
        return None

    def peak(key: str) -> float | None:
        values = [s[key] for s in samples if s.get(key) is not None]
        return round(max(values), 4) if values else None

    def increase(key: str) -> float | None:
        values = [s[key] for s in samples if s.get(key) is not None]
        return round(values[-1] - values[0], 3) if values else None

    return {"samples": len(samples), "scrape_errors": sum(bool(s.get("error")) for s in samples),
            "peak_viewers": peak("viewers"), "peak_queued": peak("queued"), "peak_webrtc_viewers": peak("webrtc_viewers"),
            "peak_egress_mbps": peak("egress_mbps"), "peak_encoder_lag_seconds": peak("encoder_lag"),
            "peak_event_loop_lag_seconds": peak("loop_lag"), "http_5xx_during_run": increase("http_5xx")}
