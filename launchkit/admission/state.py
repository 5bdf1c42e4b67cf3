"""The admission decision and the in-memory state it runs on (one process, no Redis).

The rule, the same here and in the Redis script (`shared.py`):

* headroom = capacity - admitted viewers (capacity None: unlimited).
* A new arrival is admitted only if headroom > queue length: free slots belong to the queue first.
* A queued viewer presenting its queue ticket is admitted if its position <= headroom. Admitting one
  of the first `headroom` viewers lowers headroom and the positions behind it by one, so exactly the
  head of the queue gets in, whatever order its members retry in; nobody jumps the queue.
* Positions only decrease: places are appended at the tail and only ever leave (admitted, expired).
* Nobody new is admitted while `allow` is false (event-loop lag guard); places are kept.

Admitted tickets are counted per id with a deadline: `probation` for a new ticket, `ticket_ttl`
once it is seen on a media request (and after every later one). Memory is bounded by the viewers
of the last ticket lifetime and by `max_queue`.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict, deque
from dataclasses import dataclass

from launchkit.admission.settings import AdmissionSettings

_BUCKET_BITS = 10  # queue ranks are counted per 1024 consecutive sequence numbers


@dataclass(frozen=True, slots=True)
class Decision:
    admitted: bool
    position: int | None = None  # 1-based place in the queue (waiting answers)
    queue_length: int = 0
    seq: int | None = None  # the place held, None when the queue is full
    retry_after: int = 0
    estimated_wait: int | None = None  # seconds; None while no admission rate is known
    from_queue: bool = False
    reason: str | None = None  # capacity | loop_lag | queue_full (waiting answers)
    viewers: int = 0  # admitted viewers after this decision
    capacity: int | None = None  # None: unlimited


def estimate_wait(position: int, admitted_in_window: int, window: float) -> int | None:
    """Seconds until `position` is admitted at the rate the queue moved over the last window."""
    if admitted_in_window <= 0:
        return None
    return math.ceil(position * window / admitted_in_window)


def retry_after(estimated_wait: int | None, jitter: int, settings: AdmissionSettings) -> int:
    """Base + jitter. The base grows with the expected wait (a viewer 20 minutes away need not ask
    every 5 s), within retry_after..retry_after_max."""
    base = settings.retry_after
    if estimated_wait is not None:
        base = max(settings.retry_after, min(settings.retry_after_max, estimated_wait // 4))
    return base + jitter


class ActiveSet:
    """Admitted ticket ids with deadlines. Two insertion-ordered dicts whose deadlines grow with
    insertion order (all probation entries get now + probation, all confirmed now + ttl and move to
    the end when touched), so expiry pops from the front: O(1) per ticket."""

    def __init__(self) -> None:
        self._probation: OrderedDict[str, float] = OrderedDict()
        self._confirmed: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._probation) + len(self._confirmed)

    def __contains__(self, ticket_id: str) -> bool:
        return ticket_id in self._confirmed or ticket_id in self._probation

    def add(self, ticket_id: str, deadline: float) -> None:
        if ticket_id not in self._confirmed:
            self._probation[ticket_id] = deadline

    def touch(self, ticket_id: str, deadline: float) -> None:
        self._probation.pop(ticket_id, None)
        self._confirmed[ticket_id] = deadline
        self._confirmed.move_to_end(ticket_id)

    def remove(self, ticket_id: str) -> bool:
        found = self._probation.pop(ticket_id, None) is not None
        return self._confirmed.pop(ticket_id, None) is not None or found

    def expire(self, now: float) -> int:
        expired = 0
        for entries in (self._probation, self._confirmed):
            while entries:
                ticket_id, deadline = next(iter(entries.items()))
                if deadline > now:
                    break
                del entries[ticket_id]
                expired += 1
        return expired

    def ids(self) -> list[str]:
        return [*self._probation, *self._confirmed]


class LocalQueue:
    """FIFO places by sequence number, each with a deadline (the viewer must retry before it).

    Sequence numbers only grow, so insertion order is queue order. rank() counts the live places
    ahead with per-1024 bucket counts (O(queue span / 1024 + 1024)); expiry uses a lazy min-heap of
    deadlines, compacted when stale entries pile up.
    """

    def __init__(self) -> None:
        self._deadlines: dict[int, float] = {}
        self._buckets: dict[int, int] = {}  # seq >> _BUCKET_BITS -> live places; keys in ascending order
        self._heap: list[tuple[float, int]] = []
        self._next = 1

    def __len__(self) -> int:
        return len(self._deadlines)

    def push(self, deadline: float) -> int:
        seq, self._next = self._next, self._next + 1
        self._deadlines[seq] = deadline
        bucket = seq >> _BUCKET_BITS
        self._buckets[bucket] = self._buckets.get(bucket, 0) + 1
        heapq.heappush(self._heap, (deadline, seq))
        return seq

    def rank(self, seq: int) -> int | None:
        """Places ahead of `seq`, or None when `seq` holds no place."""
        if seq not in self._deadlines:
            return None
        mine = seq >> _BUCKET_BITS
        ahead = 0
        for bucket, count in self._buckets.items():
            if bucket >= mine:
                break
            ahead += count
        return ahead + sum(1 for s in range(mine << _BUCKET_BITS, seq) if s in self._deadlines)

    def refresh(self, seq: int, deadline: float) -> None:
        self._deadlines[seq] = deadline
        heapq.heappush(self._heap, (deadline, seq))
        if len(self._heap) > 2 * len(self._deadlines) + 1024:
            self._heap = [(d, s) for s, d in self._deadlines.items()]
            heapq.heapify(self._heap)

    def remove(self, seq: int) -> None:
        if self._deadlines.pop(seq, None) is None:
            return
        bucket = seq >> _BUCKET_BITS
        self._buckets[bucket] -= 1
        if not self._buckets[bucket]:
            del self._buckets[bucket]  # only the tail bucket can get places again: key order holds

    def expire(self, now: float) -> int:
        expired = 0
        while self._heap and self._heap[0][0] <= now:
            deadline, seq = heapq.heappop(self._heap)
            if self._deadlines.get(seq) == deadline:
                self.remove(seq)
                expired += 1
        return expired


class LocalState:
    """Admission state of one process. Every method is synchronous: a decision is atomic on the event loop."""

    def __init__(self, settings: AdmissionSettings) -> None:
        self.settings = settings
        self.active = ActiveSet()
        self.queue = LocalQueue()
        self._admitted_from_queue: deque[float] = deque()

    def expire(self, now: float) -> None:
        self.active.expire(now)
        self.queue.expire(now)
        horizon = now - self.settings.rate_window
        while self._admitted_from_queue and self._admitted_from_queue[0] <= horizon:
            self._admitted_from_queue.popleft()

    def admit(self, ticket_id: str, queue_seq: int | None, capacity: int | None, allow: bool, jitter: int,
              now: float, hold: float = 0.0) -> Decision:
        """One decision. `hold` > 0: the viewer's request is held open, so its place lasts `hold`
        seconds (kept alive by `refresh`) instead of until its next retry is due."""
        settings = self.settings
        self.expire(now)
        viewers, length = len(self.active), len(self.queue)

        def room(slots: int) -> bool:
            return capacity is None or capacity - viewers >= slots

        def admit(from_queue: bool) -> Decision:
            self.active.add(ticket_id, now + settings.probation)
            return Decision(True, queue_length=len(self.queue), from_queue=from_queue, viewers=viewers + 1,
                            capacity=capacity)

        def wait(seq: int | None, position: int) -> Decision:
            wait_s = estimate_wait(position, len(self._admitted_from_queue), settings.rate_window)
            retry = retry_after(wait_s, jitter, settings)
            deadline = now + (hold or retry + settings.queue_grace)
            if seq is None:
                seq = self.queue.push(deadline)
            else:
                self.queue.refresh(seq, deadline)
            return Decision(False, position, len(self.queue), seq, retry, wait_s,
                            reason="capacity" if allow else "loop_lag", viewers=viewers, capacity=capacity)

        if queue_seq is not None:
            ahead = self.queue.rank(queue_seq)
            if ahead is not None:
                if allow and room(ahead + 1):
                    self.queue.remove(queue_seq)
                    self._admitted_from_queue.append(now)
                    return admit(True)
                return wait(queue_seq, ahead + 1)
        if allow and room(length + 1):
            return admit(False)
        if length >= settings.max_queue:
            return Decision(False, length + 1, length, None, settings.retry_after_max + jitter, None,
                            reason="queue_full", viewers=viewers, capacity=capacity)
        return wait(None, length + 1)

    def refresh(self, seqs: list[int], deadline: float) -> dict[int, int]:
        """Keep the places of held requests until `deadline`; their positions now (gone ones left out)."""
        positions = {}
        for seq in seqs:
            ahead = self.queue.rank(seq)
            if ahead is not None:
                self.queue.refresh(seq, deadline)
                positions[seq] = ahead + 1
        return positions
