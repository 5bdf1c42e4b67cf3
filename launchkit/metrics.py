"""Every Prometheus metric Launchkit exports, in one place.

Labels are bounded by configuration (rendition names, route templates, status codes), never
by viewers or addresses. The README's metrics table mirrors this module.
"""

from __future__ import annotations

from typing import TypeVar

from prometheus_client import Counter, Gauge, Histogram, Info

from launchkit import __version__
from stream import telemetry

BUILD = Info("launchkit_build", "Launchkit version")
BUILD.info({"version": __version__})

ENCODER_FRAMES = Counter(
    "launchkit_encoder_frames", "Video frames encoded", ["rendition"]
)
ENCODER_FRAMES_DROPPED = Counter(
    "launchkit_encoder_frames_dropped", "Video frames dropped because the encoder fell behind", ["rendition"]
)
ENCODE_SECONDS = Histogram(
    "launchkit_encode_seconds", "Time to encode one video frame", ["rendition"],
    buckets=(0.002, 0.005, 0.01, 0.02, 0.033, 0.05, 0.1, 0.25),
)
ENCODER_LAG = Gauge(
    "launchkit_encoder_lag_seconds", "Wall clock minus capture time of the last encoded frame", ["rendition"]
)
HLS_SEGMENTS = Counter(
    "launchkit_hls_segments", "HLS media segments produced", ["rendition"]
)
HLS_VIEWERS = Gauge(
    "launchkit_hls_viewers", "Estimated HLS viewers: segment fetches per segment duration over the last window", ["rendition"]
)
STREAM_LIVE = Gauge(
    "launchkit_stream_live", "1 while the stream publishes fresh segments, else 0"
)
HTTP_REQUESTS = Counter(
    "launchkit_http_requests", "HTTP requests served", ["route", "method", "status"]
)
HTTP_REQUEST_SECONDS = Histogram(
    "launchkit_http_request_duration_seconds", "Time to produce an HTTP response (headers)", ["route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
HTTP_RESPONSE_BYTES = Counter(
    "launchkit_http_response_bytes", "Response body bytes sent", ["route"]
)
INGEST_CONNECTIONS = Counter(
    "launchkit_ingest_connections", "Publisher sessions accepted", ["protocol", "role"]
)
INGEST_REJECTED = Counter(
    "launchkit_ingest_rejected", "Publisher attempts refused before any media was accepted (bad_key: wrong or "
    "locked-out key; busy: slot taken, connection evicted or over the per-address rate)",
    ["protocol", "reason"],  # reason: bad_key, busy, bad_request, unsupported, locked_out
)
CREDENTIALS = ("publish", "ops", "edge", "metrics")
AUTH_FAILURES = Counter(
    "launchkit_auth_failures", "Credentials presented and refused (each answered after a delay)", ["credential"]
)
AUTH_LOCKED_OUT = Counter(
    "launchkit_auth_locked_out", "Attempts refused unread because the client failed too often (429)", ["credential"]
)
RECORDER_UP = Gauge(
    "launchkit_recorder_up", "1 while the recorder writes every segment it is given, 0 while writes fail"
)
RECORDER_WRITE_ERRORS = Counter(
    "launchkit_recorder_write_errors", "Segment writes that failed", ["reason"]  # stream/recorder.py WRITE_ERRORS
)
RECORDER_SEGMENTS_LOST = Counter(
    "launchkit_recorder_segments_lost", "Segments left out of the recording (write failures, backlog over its bound)"
)
RECORDER_BACKLOG_BYTES = Gauge(
    "launchkit_recorder_backlog_bytes", "Bytes of segments waiting to be written (bounded)"
)
INGEST_BYTES = Counter(
    "launchkit_ingest_bytes", "Bytes received from publishers (rate() gives the ingest bitrate)", ["role"]
)
INGEST_FRAMES = Counter(
    "launchkit_ingest_frames", "Video frames decoded from publishers", ["role"]
)
INGEST_FRAMES_DROPPED = Counter(
    "launchkit_ingest_frames_dropped", "Publisher frames skipped to keep up (faster than the program rate, or a backlog)",
    ["role"],
)
INGEST_FPS = Gauge(
    "launchkit_ingest_fps", "Video frames received from the publisher over the last second", ["role"]
)
INGEST_KEYFRAME_INTERVAL = Gauge(
    "launchkit_ingest_keyframe_interval_seconds", "Seconds between the publisher's last two keyframes", ["role"]
)
INGEST_CONNECTED = Gauge(
    "launchkit_ingest_connected", "1 while a publisher holds the role", ["role"]
)
PROGRAM_ON_AIR = Gauge(
    "launchkit_program_on_air", "1 for the source currently on air (primary, backup or slate)", ["source"]
)
SLATE_SWITCHES = Counter(
    "launchkit_slate_switches", "Times the slate took over from a publisher"
)
EVENT_STATE = Gauge(
    "launchkit_event_state", "1 for the event's current state", ["state"]
)

# Edge relay. Gauges say how worker processes combine (prometheus multiprocess mode: an edge with
# --workers N aggregates them in /metrics).
# Object kinds, from the request path: playlist (*.m3u8), segment (N.m4s, init-*.mp4), part (any
# other media name under /hls/: LL-HLS parts), status (/api/status, the edge's own poll), other.
KINDS = ("playlist", "part", "segment", "status", "other")
# How the edge answered a viewer: hit (fresh in cache), miss (this request fetched it upstream),
# coalesced (waited for another request's upstream fetch of the same object), stale (the origin
# failed or was slow and a stale copy was served), error (503: nothing to serve).
RESULTS = ("hit", "miss", "coalesced", "stale", "error")
# Upstream outcome: ok (2xx/3xx), not_found (404/410), client_error (other 4xx), server_error (5xx),
# timeout, unreachable (connection refused/reset, DNS), too_large (over the per-object limit).
OUTCOMES = ("ok", "not_found", "client_error", "server_error", "timeout", "unreachable", "too_large")

EDGE_REQUESTS = Counter(
    "launchkit_edge_requests", "Viewer requests for relayed objects (/hls, /replay) by object kind and how the edge "
    "answered: hit, miss, coalesced (followers of a single-flight fetch), stale, error", ["kind", "result"],
)
EDGE_UPSTREAM_REQUESTS = Counter(
    "launchkit_edge_upstream_requests", "Requests this edge sent upstream (origin or parent edge) by object kind "
    "and outcome", ["kind", "outcome"],
)
EDGE_UPSTREAM_SECONDS = Histogram(
    "launchkit_edge_upstream_request_duration_seconds", "Time to fetch one object from upstream (whole body)",
    ["kind"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
EDGE_UPSTREAM_BYTES = Counter(
    "launchkit_edge_upstream_bytes", "Body bytes fetched from upstream", ["kind"]
)
EDGE_UPSTREAM_IN_FLIGHT = Gauge(
    "launchkit_edge_upstream_in_flight", "Distinct objects being fetched from upstream right now",
    multiprocess_mode="livesum",
)
EDGE_CACHE_BYTES = Gauge(
    "launchkit_edge_cache_bytes", "Bytes held by the edge cache (bodies and headers), all workers",
    multiprocess_mode="livesum",
)
EDGE_CACHE_OBJECTS = Gauge(
    "launchkit_edge_cache_objects", "Objects held by the edge cache, all workers", multiprocess_mode="livesum",
)
EDGE_CACHE_EVICTIONS = Counter(
    "launchkit_edge_cache_evictions", "Objects dropped from the edge cache: budget (LRU, to stay within --cache-mb) "
    "or expired (past freshness and stale-if-error)", ["reason"],
)
EDGE_ORIGIN_UP = Gauge(
    "launchkit_edge_origin_up", "1 while upstream answers (min over workers: 0 if any worker cannot reach it)",
    multiprocess_mode="livemin",
)
EDGE_DRAINING = Gauge(
    "launchkit_edge_draining", "1 while the edge drains after SIGTERM (not ready, still serving)",
    multiprocess_mode="livemax",
)
EVENT_LOOP_LAG = Gauge(
    "launchkit_event_loop_lag_seconds", "Largest event-loop lag over the last second (a periodic timer's lateness)",
    multiprocess_mode="livemax",
)

# Admission and the waiting room. `scope="local"`: this process's own view (sum over processes and
# edges); `scope="shared"`: the deployment-wide value from Redis, the same in every process (max).
SCOPES = ("local", "shared")
SOURCES = ("direct", "queue")  # admitted at once, or from the waiting room
REFUSALS = ("capacity", "loop_lag", "queue_full")  # why a viewer got the waiting-room answer
INVALID = ("malformed", "forged", "expired", "copied")  # tickets not honoured (copied: another client's)

ADMISSION_VIEWERS = Gauge(
    "launchkit_admission_viewers", "Admitted viewers: distinct tickets admitted or seen within the ticket lifetime "
    "(local: this process; shared: all edges, from Redis)", ["scope"], multiprocess_mode="liveall",
)
ADMISSION_QUEUED = Gauge(
    "launchkit_admission_queued", "Viewers waiting in the waiting room (local: this process's queue; shared: the "
    "queue in Redis)", ["scope"], multiprocess_mode="liveall",
)
ADMISSION_HEADROOM = Gauge(
    "launchkit_admission_headroom", "Viewers that could be admitted now (capacity minus admitted viewers; -1 when "
    "unlimited)", ["scope"], multiprocess_mode="liveall",
)
ADMISSION_ADMITTED = Counter(
    "launchkit_admission_admitted", "Viewers admitted (new tickets), directly or from the waiting room", ["source"],
)
ADMISSION_REFUSED = Counter(
    "launchkit_admission_refused", "Waiting-room answers (429 with a position and a retry time), by reason",
    ["reason"],
)
ADMISSION_INVALID_TICKETS = Counter(
    "launchkit_admission_invalid_tickets", "Tickets presented but not honoured (malformed, forged, expired)",
    ["reason"],
)
ADMISSION_QUEUE_WAIT = Histogram(
    "launchkit_admission_queue_wait_seconds", "Time from joining the waiting room to admission",
    buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600),
)
ADMISSION_LAG_GUARD = Gauge(
    "launchkit_admission_lag_guard", "1 while nobody new is admitted because the event loop lags (sustained)"
)
ADMISSION_LAG_GUARD_CLOSED = Counter(
    "launchkit_admission_lag_guard_closed", "Times sustained event-loop lag closed admission to newcomers"
)
ADMISSION_HELD = Gauge(
    "launchkit_admission_held", "Waiting-room requests held open until their turn (this process)"
)
ADMISSION_REDIS_UP = Gauge(
    "launchkit_admission_redis_up", "1 while the shared admission state in Redis answers, 0 while this process falls "
    "back to local admission (absent without --redis)", multiprocess_mode="livemin",
)


# WebRTC viewers (WHEP): one encoded rendition fanned out (stream/webrtc/fanout.py).
KEYFRAME_REASONS = ("new viewer", "picture loss", "slow viewer", "downstream edge")
WHEP_REFUSALS = ("capacity", "pending", "bad_request", "unsupported", "not_live")

WEBRTC_VIEWERS = Gauge(
    "launchkit_webrtc_viewers", "WHEP viewers being sent media by this server", multiprocess_mode="livesum",
)
WHEP_SESSIONS = Counter(
    "launchkit_whep_sessions", "WHEP sessions started (201 answers)"
)
WHEP_REFUSED = Counter(
    "launchkit_whep_refused", "WHEP offers refused: capacity (503 + Retry-After: players fall back to LL-HLS), "
    "bad_request, unsupported (no H.264 offered), not_live", ["reason"],
)
WEBRTC_FRAMES_SENT = Counter(
    "launchkit_webrtc_frames_sent", "Encoded frames handed to WHEP viewers' senders (video frames, audio packets)",
    ["kind"],
)
WEBRTC_BYTES_SENT = Counter(
    "launchkit_webrtc_bytes_sent", "RTP payload bytes handed to WHEP viewers' senders (before SRTP and headers)"
)
WEBRTC_FRAMES_DROPPED = Counter(
    "launchkit_webrtc_frames_dropped", "Video frames skipped for viewers whose sender fell behind (they resume at "
    "the next keyframe)",
)
WEBRTC_KEYFRAME_REQUESTS = Counter(
    "launchkit_webrtc_keyframe_requests", "Keyframes asked for, by reason (viewer PLI/FIR, new viewer, slow viewer, "
    "a downstream edge)", ["reason"],
)
WEBRTC_KEYFRAMES_REQUESTED = Counter(
    "launchkit_webrtc_keyframes_requested", "Keyframe requests passed to the encoder (or upstream) after rate "
    "limiting: at most one per second however many viewers ask",
)
WEBRTC_RTT = Histogram(
    "launchkit_webrtc_round_trip_seconds", "Viewers' round-trip time from RTCP receiver reports (one sample per "
    "viewer every 5 s)", buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6),
)
WEBRTC_FRACTION_LOST = Histogram(
    "launchkit_webrtc_fraction_lost", "Viewers' packet loss fraction from RTCP receiver reports (one sample per "
    "viewer every 5 s)", buckets=(0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
)
WEBRTC_FEED_DOWNSTREAMS = Gauge(
    "launchkit_webrtc_feed_downstreams", "Edges receiving the WebRTC rendition from this server (one feed each)",
    multiprocess_mode="livesum",
)
WEBRTC_FEED_CONNECTED = Gauge(
    "launchkit_webrtc_feed_connected", "1 while this edge receives the WebRTC rendition from upstream",
    multiprocess_mode="livemin",
)


def init_auth_labels() -> None:
    for credential in CREDENTIALS:
        AUTH_FAILURES.labels(credential)
        AUTH_LOCKED_OUT.labels(credential)


def init_admission_labels() -> None:
    """Create every bounded label combination up front, so dashboards see zeros, not gaps."""
    for scope in SCOPES:
        ADMISSION_VIEWERS.labels(scope)
        ADMISSION_QUEUED.labels(scope)
        ADMISSION_HEADROOM.labels(scope)
    for source in SOURCES:
        ADMISSION_ADMITTED.labels(source)
    for reason in REFUSALS:
        ADMISSION_REFUSED.labels(reason)
    for reason in INVALID:
        ADMISSION_INVALID_TICKETS.labels(reason)


def init_webrtc_labels() -> None:
    for kind in ("video", "audio"):
        WEBRTC_FRAMES_SENT.labels(kind)
    for reason in KEYFRAME_REASONS:
        WEBRTC_KEYFRAME_REQUESTS.labels(reason)
    for reason in WHEP_REFUSALS:
        WHEP_REFUSED.labels(reason)


class PrometheusTelemetry:
    """The media engine's metrics interface (stream/telemetry.py) over the metrics above: `stream`
    looks them up by key, their names and help texts stay here."""

    def __init__(self, counters: dict[str, Counter], gauges: dict[str, Gauge],
                 histograms: dict[str, Histogram]) -> None:
        self._counters, self._gauges, self._histograms = counters, gauges, histograms

    def counter(self, key: str, *labels: str) -> Counter:
        return _child(self._counters[key], labels)

    def gauge(self, key: str, *labels: str) -> Gauge:
        return _child(self._gauges[key], labels)

    def histogram(self, key: str, *labels: str) -> Histogram:
        return _child(self._histograms[key], labels)


Metric = TypeVar("Metric", Counter, Gauge, Histogram)


def _child(metric: Metric, labels: tuple[str, ...]) -> Metric:
    return metric.labels(*labels) if labels else metric


MEDIA_TELEMETRY = PrometheusTelemetry(
    counters={
        "encoder_frames": ENCODER_FRAMES, "encoder_frames_dropped": ENCODER_FRAMES_DROPPED,
        "hls_segments": HLS_SEGMENTS, "ingest_connections": INGEST_CONNECTIONS, "ingest_rejected": INGEST_REJECTED,
        "ingest_bytes": INGEST_BYTES, "ingest_frames": INGEST_FRAMES, "ingest_frames_dropped": INGEST_FRAMES_DROPPED,
        "slate_switches": SLATE_SWITCHES, "recorder_write_errors": RECORDER_WRITE_ERRORS,
        "recorder_segments_lost": RECORDER_SEGMENTS_LOST, "webrtc_frames_sent": WEBRTC_FRAMES_SENT,
        "webrtc_bytes_sent": WEBRTC_BYTES_SENT, "webrtc_frames_dropped": WEBRTC_FRAMES_DROPPED,
        "webrtc_keyframe_requests": WEBRTC_KEYFRAME_REQUESTS,
        "webrtc_keyframes_requested": WEBRTC_KEYFRAMES_REQUESTED,
    },
    gauges={
        "encoder_lag": ENCODER_LAG, "ingest_fps": INGEST_FPS, "ingest_keyframe_interval": INGEST_KEYFRAME_INTERVAL,
        "ingest_connected": INGEST_CONNECTED, "program_on_air": PROGRAM_ON_AIR, "recorder_up": RECORDER_UP,
        "recorder_backlog_bytes": RECORDER_BACKLOG_BYTES, "webrtc_viewers": WEBRTC_VIEWERS,
        "webrtc_feed_connected": WEBRTC_FEED_CONNECTED,
    },
    histograms={
        "encode_seconds": ENCODE_SECONDS, "webrtc_round_trip": WEBRTC_RTT,
        "webrtc_fraction_lost": WEBRTC_FRACTION_LOST,
    },
)
# Installed on import rather than at each role's start: every process that can serve /metrics has
# imported this module (the registry holds these metrics only then), edge workers and tests that
# build stream objects directly included, and the import comes before any stream object looks
# its handles up. A role start that forgot an explicit install would report zeros silently.
telemetry.install(MEDIA_TELEMETRY)


# ---- social wall (launchkit/wall) -------------------------------------------------------------------
# Labels are bounded: sources (page, mastodon, rss, webhook), states, connectors and reasons below.
WALL_STATES = ("pending", "approved", "rejected", "pinned", "answered")
WALL_CONNECTORS = ("mastodon", "rss")
WALL_CONNECTOR_REASONS = ("rate_limited", "server_error", "client_error", "timeout", "unreachable", "too_large",
                          "malformed", "redirect", "internal")
WALL_REFUSALS = ("too_large", "malformed", "unsupported", "invalid", "rate_limited", "bad_signature", "stale",
                 "replay", "unavailable")

WALL_POSTS = Gauge(
    "launchkit_wall_posts", "Wall posts stored, by source and moderation state (origin)", ["source", "state"],
    multiprocess_mode="livemax",
)
WALL_POSTS_RECEIVED = Counter(
    "launchkit_wall_posts_received", "Wall posts taken in (duplicates excluded), by source and the state they "
    "started in", ["source", "state"],
)
WALL_MODERATION_QUEUE = Gauge(
    "launchkit_wall_moderation_queue", "Wall posts waiting for a moderator (pending)", multiprocess_mode="livemax",
)
WALL_SSE_CLIENTS = Gauge(
    "launchkit_wall_sse_clients", "Open wall event streams (SSE), all workers", multiprocess_mode="livesum",
)
WALL_SSE_DROPPED = Counter(
    "launchkit_wall_sse_dropped", "Wall streams cut because the client read too slowly (it resumes by Last-Event-ID)",
)
WALL_DELIVERY_LAG = Histogram(
    "launchkit_wall_delivery_lag_seconds", "From a post's approval (the logged event) to its write to one SSE client",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
WALL_CONNECTOR_ERRORS = Counter(
    "launchkit_wall_connector_errors", "Failed connector polls, by connector and reason (each is retried with backoff)",
    ["connector", "reason"],
)
WALL_REQUESTS_REFUSED = Counter(
    "launchkit_wall_requests_refused", "Wall requests answered 4xx/503, by reason", ["reason"],
)
WALL_REDIS_UP = Gauge(
    "launchkit_wall_redis_up", "1 while the wall's Redis fan-out answers (absent without Redis)",
    multiprocess_mode="livemin",
)


def init_wall_labels() -> None:
    """Every bounded label combination up front, so dashboards see zeros, not gaps."""
    for connector in WALL_CONNECTORS:
        for reason in WALL_CONNECTOR_REASONS:
            WALL_CONNECTOR_ERRORS.labels(connector, reason)
    for reason in WALL_REFUSALS:
        WALL_REQUESTS_REFUSED.labels(reason)


# ---- QoE beacons from viewers' players (launchkit/qoe.py) ---------------------------------------------
# Labels are bounded: the protocols and error types below (anything else is refused with a 400).
QOE_PROTOCOLS = ("webrtc", "llhls", "hls", "none")  # none: an error before anything played
QOE_ERROR_TYPES = ("network", "media", "player", "other")
QOE_RESULTS = ("accepted", "malformed", "too_large", "unsupported", "rate_limited")
# How a page's WebRTC attempt beside LL-HLS ended: won (the picture switched to it), refused (503/429),
# failed (negotiation, ICE or DTLS), timeout (no picture in time), lost (the connection on screen failed).
QOE_WEBRTC_OUTCOMES = ("won", "refused", "failed", "timeout", "lost")

QOE_BEACONS = Counter(
    "launchkit_qoe_beacons", "QoE beacons received, by result (accepted or why refused)", ["result"],
)
QOE_STARTUP = Histogram(
    "launchkit_qoe_startup_seconds", "Players' startup time: from loading the stream to the first frame playing",
    ["protocol"], buckets=(0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0),
)
QOE_PLAYING = Counter(
    "launchkit_qoe_playing_seconds", "Seconds of playback reported by players; rate() = viewers playing now",
    ["protocol"],
)
QOE_STALLS = Counter(
    "launchkit_qoe_stalls", "Playback stalls (rebuffering after playback had started)", ["protocol"],
)
QOE_REBUFFER = Counter(
    "launchkit_qoe_rebuffer_seconds", "Seconds players spent rebuffering; / playing seconds = rebuffer ratio",
    ["protocol"],
)
QOE_ERRORS = Counter(
    "launchkit_qoe_errors", "Fatal player errors, by protocol and type", ["protocol", "type"],
)
QOE_WEBRTC_ATTEMPTS = Counter(
    "launchkit_qoe_webrtc_attempts", "Players' WebRTC attempts beside LL-HLS, by how they ended", ["outcome"],
)


def init_qoe_labels() -> None:
    """Every bounded label combination up front, so dashboards see zeros, not gaps."""
    for result in QOE_RESULTS:
        QOE_BEACONS.labels(result)
    for protocol in QOE_PROTOCOLS:
        QOE_STARTUP.labels(protocol)
        QOE_PLAYING.labels(protocol)
        QOE_STALLS.labels(protocol)
        QOE_REBUFFER.labels(protocol)
        for kind in QOE_ERROR_TYPES:
            QOE_ERRORS.labels(protocol, kind)
    for outcome in QOE_WEBRTC_OUTCOMES:
        QOE_WEBRTC_ATTEMPTS.labels(outcome)
# ---- end of QoE beacons -----------------------------------------------------------------------------
