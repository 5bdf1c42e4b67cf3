"""The waiting room's use of capacity, from the viewers' own timestamps: idle places while anyone
waits, time from a place freeing to the next viewer admitted (and playing), FIFO order.

Measured at the clients, not the server: every simulated viewer records, in seconds since the
rehearsal's start, when it joined the line (its first waiting-room answer), when it was admitted
(the held line's admitting answer, or its first 2xx), when it started playing, and when it left
(the moment it sent its leave beacon, or gave up); a queued viewer also keeps its place, the
sequence number in its queue ticket, which is the order the server promised to serve. The load
generator is the whole audience, so these intervals are the whole truth about the places: a place
is taken from `admitted_at` to `left_at`, a viewer waits from `queued_at` until admitted (or gone).
The capacity is the target's `/api/status` `max_viewers` at the start (shared across edges with Redis).

Each figure leans against the system, never for it: a place counts as free from the moment its
viewer *sent* its leave (before the server knew) and as taken only once the next viewer *received*
its admission (after the server decided), so request latencies and the generator's own delays all
count as idle time.

- Idle place-seconds while anyone waits: the integral over time of max(0, capacity − admitted)
  while at least one viewer waits, and its share of the capacity-seconds of those same periods.
- Freed → admitted: places are matched to admissions first in, first out (a place freed earlier is
  taken first); for an admission from the line, the time from its place freeing, or from the moment
  someone began to wait if the place was free before, to the admission arriving. Freed → playing is
  the same up to the viewer's playback start.
- FIFO: for viewers admitted from the same queue, a pair is inverted when the later place was
  admitted more than `FIFO_JITTER` seconds before the earlier one; `jumped` counts viewers admitted
  without a place while an earlier arrival waited and got in more than the jitter later. The jitter
  the design allows: places are served in order (a place is admitted only when its position is
  within the headroom), but the admission *answer* depends on where the request is held: each edge
  pumps its held requests every 0.25 s (a leave wakes only the edge that received it), a held request
  that ran out is asked again within 0.25 s, and one round trip; when several places free together,
  the positions within the headroom are admitted in whatever order their edges get to them. Hence
  0.5 s. Inversions at any lead are counted too, with the worst lead.
"""

from __future__ import annotations

import bisect
from collections import deque
from typing import Any

from loadtests.player import percentiles

FIFO_JITTER = 0.5  # seconds (see above)
_FREE, _JOIN, _ADMIT, _DEPART = range(4)  # order of simultaneous events


def figures(arrivals: list[dict[str, Any]], capacity: int | None, end: float) -> dict[str, Any]:
    """The line's figures for the viewers among `arrivals` (raw arrival records), the run having
    lasted `end` seconds."""
    viewers = [a for a in arrivals if a.get("admitted_at") is not None or a.get("queued_at") is not None]
    sweep = _sweep(viewers, capacity, end)
    queue_seconds = sweep["queue_seconds"]
    capacity_seconds = capacity * queue_seconds if capacity else None
    return {
        "capacity": capacity,
        "queue_seconds": round(queue_seconds, 3),
        "capacity_seconds_while_waiting": round(capacity_seconds, 3) if capacity_seconds is not None else None,
        "idle_place_seconds_while_waiting": round(sweep["idle"], 3) if capacity else None,
        "idle_ratio_while_waiting": round(sweep["idle"] / capacity_seconds, 5) if capacity_seconds else None,
        "admitted_from_queue": sum(_from_queue(v) for v in viewers),
        "freed_to_admitted": percentiles(sweep["to_admitted"], 3),
        "freed_to_playing": percentiles(sweep["to_playing"], 3),
        "admitted_beyond_capacity": sweep["unmatched"],
        "fifo": fifo(viewers),
    }


def series(arrivals: list[dict[str, Any]], capacity: int | None, end: float) -> list[list[float]]:
    """[t, waiting, admitted, idle places while anyone waits] at every change (a step function)."""
    viewers = [a for a in arrivals if a.get("admitted_at") is not None or a.get("queued_at") is not None]
    return _sweep(viewers, capacity, end)["series"]


def _from_queue(viewer: dict[str, Any]) -> bool:
    return viewer.get("queued_at") is not None and viewer.get("admitted_at") is not None


def _events(viewers: list[dict[str, Any]], end: float) -> list[tuple[float, int, dict[str, Any]]]:
    events = []
    for viewer in viewers:
        admitted, queued = viewer.get("admitted_at"), viewer.get("queued_at")
        left = viewer.get("left_at")
        left = end if left is None else left
        if queued is not None:
            events.append((queued, _JOIN, viewer))
            events.append((admitted if admitted is not None else max(queued, left), _DEPART, viewer))
        if admitted is not None:
            events.append((admitted, _ADMIT, viewer))
            events.append((max(admitted, left), _FREE, viewer))
    events.sort(key=lambda e: (e[0], e[1]))
    return events


def _sweep(viewers: list[dict[str, Any]], capacity: int | None, end: float) -> dict[str, Any]:
    """One pass over joins, admissions, departures from the line and freed places, in time order."""
    admitted = waiting = unmatched = 0
    idle = queue_seconds = 0.0
    waiting_since: float | None = None
    free: deque[float] = deque([0.0] * (capacity or 0))  # when each free place became free
    to_admitted: list[float] = []
    to_playing: list[float] = []
    series: list[list[float]] = [[0.0, 0, 0, 0]]
    last = 0.0
    for at, kind, viewer in _events(viewers, end):
        if waiting > 0:
            queue_seconds += at - last
            if capacity:
                idle += max(0, capacity - admitted) * (at - last)
        last = at
        if kind == _JOIN:
            waiting += 1
            waiting_since = at if waiting == 1 else waiting_since
        elif kind == _DEPART:
            waiting -= 1
            waiting_since = None if waiting == 0 else waiting_since
        elif kind == _FREE:
            admitted -= 1
            free.append(at)
        else:
            admitted += 1
            if capacity is not None and not free:
                unmatched += 1  # more admitted than the capacity, as the clients saw it
            freed = free.popleft() if free else None
            if freed is not None and _from_queue(viewer):
                start = max(freed, waiting_since if waiting_since is not None else viewer["queued_at"])
                to_admitted.append(max(0.0, at - start))
                if viewer.get("playing_at") is not None:
                    to_playing.append(max(0.0, viewer["playing_at"] - start))
        idle_now = max(0, capacity - admitted) if capacity and waiting > 0 else 0
        point = [round(at, 3), waiting, admitted, idle_now]
        if point[1:] != series[-1][1:]:
            series.append(point)
    return {"idle": idle, "queue_seconds": queue_seconds, "to_admitted": to_admitted, "to_playing": to_playing,
            "unmatched": unmatched, "series": series}


def fifo(viewers: list[dict[str, Any]], jitter: float = FIFO_JITTER) -> dict[str, Any]:
    """Inverted pairs among places of one queue, beyond the jitter and at any lead, and viewers
    admitted without a place ahead of someone already waiting."""
    by_scope: dict[str, list[tuple[int, float]]] = {}
    for viewer in viewers:
        place = viewer.get("place")
        if _from_queue(viewer) and place:
            by_scope.setdefault(place[0], []).append((place[1], viewer["admitted_at"]))
    compared = inversions = any_lead = 0
    worst = 0.0
    for places in by_scope.values():
        places.sort()
        earlier: list[float] = []  # admission times of the earlier places, sorted
        for _, admitted in places:
            if earlier:
                worst = max(worst, earlier[-1] - admitted)
                any_lead += len(earlier) - bisect.bisect_right(earlier, admitted)
                inversions += len(earlier) - bisect.bisect_right(earlier, admitted + jitter)
            bisect.insort(earlier, admitted)
            compared += 1
    jumped = _jumped(viewers, jitter)
    return {"jitter_seconds": jitter, "compared": compared, "inversions": inversions, "inversions_any_lead": any_lead,
            "worst_lead_seconds": round(worst, 3), "jumped": jumped, "violations": inversions + jumped}


def _jumped(viewers: list[dict[str, Any]], jitter: float) -> int:
    """Direct admissions (no place) of viewers who arrived after someone had joined the line and got
    in more than `jitter` before that someone stopped waiting (admitted, or gone)."""
    waits = sorted((v["queued_at"], _wait_end(v)) for v in viewers if v.get("queued_at") is not None)
    joined = [queued for queued, _ in waits]
    latest_end: list[float] = []  # latest end of a wait among the first k to join the line
    for _, end in waits:
        latest_end.append(max(end, latest_end[-1]) if latest_end else end)
    jumped = 0
    for viewer in viewers:
        if viewer.get("queued_at") is not None or viewer.get("admitted_at") is None:
            continue
        ahead = bisect.bisect_left(joined, viewer["at"] - jitter)  # joined the line before this one arrived
        if ahead and latest_end[ahead - 1] > viewer["admitted_at"] + jitter:
            jumped += 1
    return jumped


def _wait_end(viewer: dict[str, Any]) -> float:
    for key in ("admitted_at", "left_at"):
        if viewer.get(key) is not None:
            return viewer[key]
    return float("inf")  # still waiting when the run stopped
