"""Admission control and the waiting room.

A viewer asks `POST /api/admission` (or simply requests media): within capacity it gets a signed
ticket (cookie `lk_ticket` and JSON, for `?t=` on cross-origin embeds) and is served at full
quality from then on, whatever the load; beyond capacity it gets `429` with its place in a FIFO
queue, an estimated wait and `Retry-After` = base + bounded positive jitter. When capacity frees
(viewers leave, limits are raised, an edge joins), the head of the queue gets in first.

Modules, in the order a request meets them:

* `tickets`  - HMAC-signed admitted/queue tickets, verified without any state.
* `capacity` - what this server can take: max viewers, egress limit, event-loop lag guard.
* `state`    - the decision rule and its in-memory state (one process).
* `shared`   - the same rule as Lua scripts over Redis: one queue and one count for every edge.
* `line`     - the held line: waiting requests answered when their turn comes.
* `admitter` - `Admitter`: decisions, status, the background heartbeat, Redis fallback.
* `service`  - `Admission`, an `Admitter` on HTTP: the admission API, media guard (middleware), cookies.
"""

from launchkit.admission.service import QUEUE_COOKIE, TICKET_COOKIE, TICKET_HEADER, Admission
from launchkit.admission.settings import AdmissionSettings
from launchkit.admission.tickets import SECRET_ENV, admission_secrets

__all__ = [
    "Admission", "AdmissionSettings", "admission_secrets", "SECRET_ENV", "TICKET_COOKIE", "QUEUE_COOKIE",
    "TICKET_HEADER",
]
